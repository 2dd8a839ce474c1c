// A plain worker that fetches what the page asks and posts the response back as the vault's
// worker does (status, statusText, headers as pairs, body as a transferred ArrayBuffer), but
// with no signing: the benchmark's middle point between a page fetch() and a signed
// vault.fetch(). Any design that keeps the key in a worker and hands the page a usable Response
// pays at least this.
self.onmessage = async (e) => {
  const res = await fetch(e.data, { credentials: "omit", cache: "no-store", redirect: "error" });
  const body = await res.arrayBuffer();
  const headers = [];
  res.headers.forEach((v, k) => headers.push([k, v]));
  self.postMessage({ status: res.status, statusText: res.statusText, headers, body }, [body]);
};
