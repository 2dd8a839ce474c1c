// The browser benchmark page (e2e/bench_test.go drives it). It logs in as alice through the real
// page client and exposes the measurements as functions on window; the test calls them.
import { Vault } from "/sv/client.js";

const data = document.body.dataset;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The vault worker allows 50 operations per second (burst 100): pace the signed calls under it.
const PACE_MS = 21;

/**
 * Timings in ms of n plain fetches, n plain-worker fetches and n signed fetches of the same
 * handler. Each round makes one of each, in an order that rotates from round to round, so that
 * each kind comes first (after the idle pause, the slowest place) as often as the others; then
 * pauses pace ms. With pace 0 and burst > 1, rounds run back to back in bursts of `burst` rounds
 * with a 200 ms pause between bursts, and only rounds after a burst's first are kept: the warm
 * figure of an app that makes several calls at once.
 */
window.benchFetch = async (n, warm, pace = PACE_MS, burst = 1) => {
  const plainInit = { credentials: "omit", cache: "no-store" };
  const kinds = [
    () => fetch("/bench/plain", plainInit),
    viaWorker,
    () => window.vault.fetch("/bench/signed"),
  ];
  const one = async (k) => {
    const t0 = performance.now();
    const res = await kinds[k]();
    await res.text();
    if (res.status !== 200) throw new Error(["plain", "worker", "signed"][k] + " fetch: HTTP " + res.status);
    return performance.now() - t0;
  };
  for (let i = 0; i < warm; i++) {
    for (let k = 0; k < 3; k++) await one(k);
    await sleep(PACE_MS);
  }
  const out = [[], [], []];
  for (let i = 0, kept = 0; kept < n; i++) {
    const times = [];
    for (let j = 0; j < 3; j++) {
      const k = (i + j) % 3;
      times[k] = await one(k);
    }
    if (burst <= 1 || i % burst !== 0) {
      for (let k = 0; k < 3; k++) out[k].push(times[k]);
      kept++;
    }
    if (burst > 1) {
      if (i % burst === burst - 1) await sleep(200);
    } else await sleep(pace);
  }
  return { plain: out[0], worker: out[1], signed: out[2] };
};

// The same plain request made by a plain worker (no signing, no verification) that hands the page
// the same Response the vault does (status, statusText, headers, body): what any design that
// keeps the key in a worker pays, separated from the vault's own cost.
const fw = new Worker("/t/fetch-worker.js");
const viaWorker = () =>
  new Promise((resolve) => {
    fw.onmessage = (e) => {
      const r = e.data;
      resolve(new Response(r.body, { status: r.status, statusText: r.statusText, headers: r.headers }));
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
