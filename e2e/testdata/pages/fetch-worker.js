// A plain worker that fetches what the page asks and posts the body back as an ArrayBuffer, as
// the vault's worker does but with no signing: the benchmark's middle point between a page
// fetch() and a signed vault.fetch().
self.onmessage = async (e) => {
  const res = await fetch(e.data, { credentials: "omit", cache: "no-store", redirect: "error" });
  const body = await res.arrayBuffer();
  self.postMessage({ status: res.status, body }, [body]);
};
