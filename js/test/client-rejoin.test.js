// client.js's own logic in node, with fake workers: following logins in other tabs (rejoin),
// create() failures and fetch's argument forms. Each case was a bug found in review, reproduced
// here first. A fake worker answers like the router; one whose "ticket" is set joins at init.
import nodeTest from "node:test";
import assert from "node:assert/strict";

const PAGE = "https://app.example/app/page";
globalThis.location = new URL(PAGE);
Object.defineProperty(globalThis, Symbol.for("undici.globalOrigin.1"), { value: new URL(PAGE), configurable: true });

const workers = [];
// Each fake worker: state "empty"; behaviour hooks decide replies.
class FakeWorker extends EventTarget {
  constructor(url, opts) {
    super();
    this.url = url; this.sent = []; this.terminated = false; this.state = "empty";
    this.hold = new Map(); // id -> reply fn, for replies the test releases by hand
    this.onmessage = null; this.onerror = null;
    this.addEventListener("message", (e) => this.onmessage?.(e));
    workers.push(this);
    FakeWorker.onCreate?.(this);
  }
  post(m) { if (!this.terminated) this.dispatchEvent(Object.assign(new Event("message"), { data: m })); }
  postMessage(m) {
    this.sent.push(m);
    if (this.terminated) return;
    const h = FakeWorker.handler?.(this, m);
    if (h === "hold") return;
    setTimeout(() => this.reply(m), 1);
  }
  reply(m) {
    if (m.op === "init") {
      if (this.ticket) { this.state = "active"; this.post({ event: "active", detail: { joined: true } }); this.post({ id: m.id, ok: true, result: { bound: true, joined: true, state: "active" } }); }
      else this.post({ id: m.id, ok: true, result: { bound: true, state: this.state } });
    } else if (m.op === "status") this.post({ id: m.id, ok: true, result: { state: this.state, epoch: 0 } });
    else if (m.op === "login") { this.state = "active"; this.user = m.credentials.user; this.post({ event: "active", detail: {} }); this.post({ id: m.id, ok: true, result: { state: "active", epoch: 0 } }); }
    else if (m.op === "fetch") this.post({ id: m.id, ok: false, error: { code: this.state === "active" ? "x" : "no_session", message: "" } });
    else this.post({ id: m.id, ok: true, result: {} });
  }
  terminate() { this.terminated = true; }
}
globalThis.Worker = FakeWorker;
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
const { Vault } = await import("../client.js");

// A regression here tends to hang (a worker or channel left open): fail instead.
const test = (name, fn) => nodeTest(name, { timeout: 15_000 }, fn);
const CHANNEL = "sessionvault https://app.example/sv/worker.js";
const reset = () => {
  FakeWorker.onCreate = FakeWorker.handler = null;
  workers.length = 0;
};

test("a login during a rejoin is not thrown away by the swap", async () => {
  reset();
  const v = await Vault.create({ workerURL: "/sv/worker.js" });
  const bWorker = workers[0];
  let joining = null;
  FakeWorker.onCreate = (w) => { w.ticket = true; joining = w; };             // browser holds alice's cookie
  FakeWorker.handler = (w, m) => (w === joining && m.op === "init" ? "hold" : undefined);
  const events = [];
  v.addEventListener("active", (e) => events.push(e.detail));
  const other = new BroadcastChannel(CHANNEL);
  other.postMessage({ type: "login" });                                        // tab A: alice logged in
  await tick(30);
  assert.ok(joining, "rejoin started a worker");
  const st = await v.login({ user: "bob" });                                   // user logs in as bob in this tab
  assert.equal(st.state, "active");
  joining.reply(joining.sent[0]);                                              // the join finishes
  await tick(10);
  assert.equal(bWorker.terminated, false, "the worker holding bob's fresh session was terminated by the swap; events: " + JSON.stringify(events));
  assert.ok(joining.terminated, "the joined worker was let go");
  other.close(); v.terminate();
});

test("a call in flight at swap time defers the rejoin, it does not drop it", async () => {
  reset();
  const v = await Vault.create({ workerURL: "/sv/worker.js" });
  const old = workers[0];
  let joining = null, heldFetch = null;
  FakeWorker.onCreate = (w) => { w.ticket = true; joining ??= w; };
  FakeWorker.handler = (w, m) => {
    if (w === joining && m.op === "init" && w.sent.length === 1) return "hold";
    if (w === old && m.op === "fetch") { heldFetch = m; return "hold"; }
  };
  const other = new BroadcastChannel(CHANNEL);
  other.postMessage({ type: "login" });
  await tick(30);
  const p = v.fetch("/api/poll").catch(() => {});           // the SPA polls; still pending
  joining.reply(joining.sent[0]);                           // join done while the fetch is in flight
  await tick(10);
  old.reply(heldFetch); await p;                            // the fetch settles right after
  await tick(2600);                                         // past the 2 s spacing
  const st = await v.status();
  other.close(); v.terminate();
  assert.equal(joining.terminated, true);
  assert.equal(st.state, "active", "the tab never followed the login: workers started " + workers.length);
});

test("terminate() stops a rejoin's worker too", async () => {
  reset();
  const v = await Vault.create({ workerURL: "/sv/worker.js" });
  let joining = null;
  FakeWorker.onCreate = (w) => { w.ticket = true; joining = w; };
  FakeWorker.handler = (w, m) => (w === joining && m.op === "init" ? "hold" : undefined);
  const other = new BroadcastChannel(CHANNEL);
  other.postMessage({ type: "login" });
  await tick(30);
  v.terminate();
  await tick(10);
  other.close();
  const alive = !joining.terminated;
  joining.reply(joining.sent[0]);
  assert.equal(alive, false, "the joining worker outlived terminate()");
});

test("a login notice during create() is followed", async () => {
  reset();
  let first = null;
  FakeWorker.onCreate = (w) => { if (first) w.ticket = true; else first = w; };
  FakeWorker.handler = (w, m) => (w === first && m.op === "init" ? "hold" : undefined);
  const p = Vault.create({ workerURL: "/sv/worker.js" });
  await tick(5);
  const other = new BroadcastChannel(CHANNEL);
  other.postMessage({ type: "login" });                  // tab A logs in while the module loads
  await tick(20);
  first.reply(first.sent[0]);
  const v = await p;
  await tick(600); // the notice waited for create's init, then for its own worker
  const st = await v.status();
  other.close(); v.terminate();
  assert.equal(st.state, "active", "notice lost; workers started: " + workers.length);
});

test("a failed create() terminates its worker", async () => {
  reset();
  FakeWorker.handler = (w, m) => { if (m.op === "init") { setTimeout(() => w.post({ id: m.id, ok: false, error: { code: "bad_input", message: "prefix must look like /sv/" } }), 1); return "hold"; } };
  await assert.rejects(Vault.create({ prefix: "sv" }), (e) => e.code === "bad_input");
  assert.equal(workers[0].terminated, true, "worker left running");
});

test("vault.fetch(url, null) behaves like fetch(url)", async () => {
  reset();
  const w = new FakeWorker(); FakeWorker.handler = () => "hold";
  const v = new Vault(w);
  new Request("https://app.example/x", null); // fetch accepts it
  v.fetch("/api/x", null).catch((e) => { throw e; });
  await tick(5);
  assert.equal(w.sent.at(-1)?.url, "/api/x");
});

test("create() gives up after timeoutMs and terminates its worker", async () => {
  reset();
  FakeWorker.handler = (w, m) => (m.op === "init" ? "hold" : undefined); // a module that never loads
  const t0 = Date.now();
  await assert.rejects(Vault.create({ workerURL: "/sv/worker.js", timeoutMs: 50 }), (e) => e.code === "fatal" && /50 ms/.test(e.message));
  assert.ok(Date.now() - t0 < 1000);
  assert.equal(workers[0].terminated, true);
});

// SECURITY.md: a login notice is unauthenticated (any script of the origin can post it), so all
// it may cause is what a reload causes, only in a vault with no session, at most once every 2 s.
test("a login notice to a vault that holds a session starts no worker", async () => {
  reset();
  const v = await Vault.create({ workerURL: "/sv/worker.js" });
  await v.login({ user: "bob" });
  const other = new BroadcastChannel(CHANNEL);
  try {
    for (let i = 0; i < 3; i++) other.postMessage({ type: "login" });
    await tick(100);
    assert.equal(workers.length, 1, "a worker was started for a vault with a session");
  } finally {
    other.close(); v.terminate();
  }
});

test("login notices start at most one worker every 2 s, and a later notice is still followed", async () => {
  reset();
  const v = await Vault.create({ workerURL: "/sv/worker.js" });
  const other = new BroadcastChannel(CHANNEL);
  const started = [];
  FakeWorker.onCreate = () => started.push(Date.now());
  try {
    for (let i = 0; i < 5; i++) {
      other.postMessage({ type: "login" });
      await tick(20);
    }
    await tick(300);
    assert.equal(started.length, 1, "notices within 2 s started " + started.length + " workers");
    await tick(2000); // the coalesced notices are followed once the 2 s are up: none is lost
    assert.equal(started.length, 2, "the notices after the first were dropped, or followed more than once");
    assert.ok(started[1] - started[0] >= 1900, "second worker " + (started[1] - started[0]) + " ms after the first");
  } finally {
    other.close(); v.terminate();
  }
});
