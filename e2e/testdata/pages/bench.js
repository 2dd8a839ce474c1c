// The browser benchmark page (e2e/bench_test.go drives it). It logs in as alice through the real
// page client and exposes the measurements as functions on window; the test calls them.
import { Vault } from "/sv/client.js";

const data = document.body.dataset;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The vault worker allows 50 operations per second (burst 100): pace the signed calls under it.
const PACE_MS = 21;

/** Timings in ms of n plain fetches and n signed fetches of the same handler, interleaved. */
window.benchFetch = async (n, warm) => {
  const plainInit = { credentials: "omit", cache: "no-store" };
  const one = async (signed) => {
    const t0 = performance.now();
    const res = signed ? await window.vault.fetch("/bench/signed") : await fetch("/bench/plain", plainInit);
    await res.text();
    if (res.status !== 200) throw new Error((signed ? "signed" : "plain") + " fetch: HTTP " + res.status);
    return performance.now() - t0;
  };
  for (let i = 0; i < warm; i++) {
    await one(false);
    await one(true);
    await sleep(PACE_MS);
  }
  const plain = [], signed = [], worker = [];
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) {
      plain.push(await one(false));
      worker.push(await viaWorker());
      signed.push(await one(true));
    } else {
      signed.push(await one(true));
      worker.push(await viaWorker());
      plain.push(await one(false));
    }
    await sleep(PACE_MS);
  }
  return { plain, signed, worker };
};

// The same plain request made by a plain worker (no signing, no verification): separates the
// cost of the worker hop from the vault's own.
const fw = new Worker("/t/fetch-worker.js");
const viaWorker = () =>
  new Promise((resolve, reject) => {
    const t0 = performance.now();
    fw.onmessage = (e) => {
      const r = new Response(e.data.body, { status: e.data.status });
      r.text().then(() => (e.data.status === 200 ? resolve(performance.now() - t0) : reject(new Error("worker fetch: HTTP " + e.data.status))));
    };
    fw.postMessage("/bench/plain");
  });

/** Timings in ms of n vault.fetch() calls that the policy refuses inside wasm: a page -> worker ->
 * wasm -> page round trip with the router's checks and no network, paced like the fetches. It
 * tells how much of a signed fetch's extra cost is the worker hop and the vault's own work. */
window.benchDenied = async (n) => {
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const code = await window.vault.fetch("/outside/x").then(() => "ok", (e) => e.code);
    times.push(performance.now() - t0);
    if (code !== "policy_denied") throw new Error("expected policy_denied, got " + code);
    await sleep(PACE_MS);
  }
  return times;
};

/** Timings in ms of n paced round trips to a worker that echoes (the bare thread hop, both
 * ways) and of n paced vault.status() calls (the hop plus the router and one wasm call): with
 * benchDenied they attribute the vault's extra cost. */
window.benchHops = async (n) => {
  const echo = new Worker("/t/echo-worker.js");
  const ping = () =>
    new Promise((resolve) => {
      const t0 = performance.now();
      echo.onmessage = () => resolve(performance.now() - t0);
      echo.postMessage({ id: 1, op: "status" });
    });
  const hop = [], status = [];
  for (let i = 0; i < n; i++) {
    hop.push(await ping());
    const t0 = performance.now();
    await window.vault.status();
    status.push(performance.now() - t0);
    await sleep(PACE_MS);
  }
  echo.terminate();
  return { hop, status };
};

/** Times from new Worker to its "ready" event, in ms; the module and scripts are cached by then. */
window.benchWorker = async (n, warm) => {
  const one = () =>
    new Promise((resolve, reject) => {
      const t0 = performance.now();
      const w = new Worker("/sv/worker.js", { type: "module" });
      w.onmessage = (e) => {
        if (e.data && e.data.event === "ready") {
          resolve(performance.now() - t0);
          w.terminate();
        } else if (e.data && e.data.event === "fatal") {
          reject(new Error("worker: fatal " + JSON.stringify(e.data.detail)));
          w.terminate();
        }
      };
      w.onerror = () => reject(new Error("worker failed to start"));
    });
  const cold = [];
  for (let i = 0; i < warm; i++) cold.push(await one());
  const times = [];
  for (let i = 0; i < n; i++) times.push(await one());
  return { cold, times };
};

try {
  window.vault = await Vault.create({ workerURL: "/sv/worker.js", policy: { prefixes: ["/bench/", "/sv/"] } });
  await window.vault.login({ user: "alice", password: "alice-password" });
  data.isolated = String(self.crossOriginIsolated);
  data.state = (await window.vault.status()).state;
} catch (e) {
  data.error = (e && e.code ? e.code + ": " : "") + (e && e.message);
  data.state = "error";
}
