// client.js in node, with a fake worker: what it posts for what the page passes.
import test from "node:test";
import assert from "node:assert/strict";

// A page at https://app.example/app/page: location for client.js, the base URL for Request.
const PAGE = "https://app.example/app/page";
globalThis.location = new URL(PAGE);
Object.defineProperty(globalThis, Symbol.for("undici.globalOrigin.1"), { value: new URL(PAGE), configurable: true });
const { Vault } = await import("../client.js");
const { simpleURL } = await import("../router.js");

class FakeWorker extends EventTarget {
  constructor() { super(); this.sent = []; }
  postMessage(m) { this.sent.push(m); }
  terminate() {}
}
// Where the worker sends msg.url (router.js signedFetch's resolution).
const workerPath = (u) => (simpleURL(u, location.origin) || new URL(u, location.origin + "/")).pathname;

test("a relative URL resolves against the page (as fetch does) on both paths of vault.fetch", async () => {
  const w = new FakeWorker();
  const v = new Vault(w);
  v.fetch("items", { method: "POST", body: "x" }).catch(() => {});
  v.fetch("items", { method: "POST", body: new URLSearchParams({ x: "1" }) }).catch(() => {});
  await new Promise((r) => setTimeout(r, 20));
  const [a, b] = w.sent.map((m) => workerPath(m.url));
  assert.equal(new Request("items").url, "https://app.example/app/items", "fetch's resolution");
  assert.deepEqual([a, b], ["/app/items", "/app/items"]);
});

test("vault.fetch works detached, and a signal that is not an AbortSignal is refused up front", async () => {
  const w = new FakeWorker();
  const v = new Vault(w);
  const detached = v.fetch;
  detached("/api/x").catch(() => {});
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(w.sent.at(-1).url, "/api/x");
  const n = w.sent.length;
  await assert.rejects(v.fetch("/api/y", { signal: {} }), (e) => e.code === "bad_input");
  assert.equal(w.sent.length, n, "nothing posted");
});

test("an invalid header name is a VaultError, and a fetch without a signal is not abortable", async () => {
  const w = new FakeWorker();
  const v = new Vault(w);
  await assert.rejects(v.fetch("/api/x", { headers: [["bad header", "x"]] }), (e) => e.code === "bad_input");
  v.fetch("/api/y", { method: "POST", body: new URLSearchParams({ a: "1" }) }).catch(() => {});
  v.fetch("/api/z", { signal: new AbortController().signal }).catch(() => {});
  await new Promise((r) => setTimeout(r, 10));
  const sent = Object.fromEntries(w.sent.map((m) => [m.url, m.abortable === true]));
  assert.deepEqual(sent, { "/api/y": false, "/api/z": true });
});

test("a worker that cannot start (another origin's script) is a VaultError fatal, as the types say", async () => {
  const saved = globalThis.Worker;
  globalThis.Worker = class {
    constructor(url) {
      if (new URL(url).origin !== location.origin) throw new DOMException("Script at '" + url + "' cannot be accessed from origin", "SecurityError");
    }
  };
  try {
    await assert.rejects(Vault.create({ workerURL: "https://evil.example/sv/worker.js" }), (e) => e.name === "VaultError" && e.code === "fatal" && /cannot start the vault worker/.test(e.message));
    await assert.rejects(Vault.create({ workerURL: "http://[bad" }), (e) => e.code === "fatal");
  } finally {
    globalThis.Worker = saved;
  }
});
