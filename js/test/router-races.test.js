// Interleavings of the router's own operations (rotation, re-key, logout, wipe), each found by a
// review as a bug and reproduced here first: the real module, the fake session server of
// helpers.js, its answers held and released in a chosen order.
import test from "node:test";
import assert from "node:assert/strict";
import { Router } from "../router.js";
import { fakeSessionServer, newInstance } from "./helpers.js";

const ORIGIN = "https://app.example";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function gate() { let open; const p = new Promise((r) => (open = r)); return { p, open }; }

/**
 * A logged-in router on the fake server. fetchWrap(path, url, init, srv) stands between them (the
 * default passes through); sent lists the paths requested.
 */
async function setupWrapped(fetchWrap = (p, u, init, srv) => srv.fetch(u, init), opts = {}) {
  const srv = fakeSessionServer();
  const posted = [];
  const sent = [];
  const router = new Router({
    instance: await newInstance(), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/", ...opts,
    fetch: async (u, init) => { const p = new URL(u).pathname; sent.push(p); return fetchWrap(p, u, init, srv); },
  });
  await router.onMessage({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  return { srv, posted, sent, router };
}

/** setupWrapped whose requests for a path in holds reach the server only once its gate opens. */
async function setup(opts = {}) {
  const holds = {};
  const r = await setupWrapped(async (p, u, init, srv) => {
    if (holds[p]) {
      // As a browser's fetch: an abort of the request's signal rejects it.
      await new Promise((resolve, reject) => {
        holds[p].p.then(resolve);
        init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")), { once: true });
      });
    }
    return srv.fetch(u, init);
  }, opts);
  return { ...r, holds };
}
const revokeAll = (srv, why = "revoked") => { for (const s of srv.sessions.values()) if (s.live) { s.live = false; s.gone = why; } };
const events = (posted) => posted.filter((m) => m.event).map((m) => m.event + (m.detail.reason ? ":" + m.detail.reason : m.detail.code ? ":" + m.detail.code : ""));

test("a re-key of a revoked lane that fails after the next login changes nothing of the new lane", async () => {
  const { srv, posted, router, holds } = await setup();
  holds["/sv/rekey"] = gate();
  srv.action = "rekey";
  await router.onMessage({ id: 3, op: "fetch", url: "/api/x" }); // hint: re-key A (its request held)
  srv.action = null;
  revokeAll(srv); // admin revokes A
  await router.onMessage({ id: 4, op: "fetch", url: "/api/x" }); // 401 revoked: wiped, page told
  await router.onMessage({ id: 5, op: "login", credentials: { password: "pw" } }); // user logs in: lane B
  assert.ok(posted.find((m) => m.id === 5).ok);
  holds["/sv/rekey"].open(); // A's re-key is refused 401 revoked
  await sleep(20);
  // B's application asks for a step-up.
  const before = srv.rekeyGrants.length;
  srv.action = "rekey";
  await router.onMessage({ id: 6, op: "fetch", url: "/api/elevate", method: "POST" });
  srv.action = null;
  await sleep(20);
      assert.ok(!events(posted).includes("rekey_failed:revoked"), "lane A's re-key failure reached lane B's page");
  assert.equal(srv.rekeyGrants.length - before, 1, "lane B's re-key hint was ignored");
});

test("a re-key queued behind a hung rotation of lane A does not re-key lane B (the next login's session)", async () => {
  const { srv, posted, router, holds, sent } = await setup();
  holds["/sv/rotate"] = gate();
  srv.action = "rotate";
  await router.onMessage({ id: 3, op: "fetch", url: "/api/x" }); // rotation of A: request held
  srv.action = "rekey";
  await router.onMessage({ id: 4, op: "fetch", url: "/api/x" }); // re-key of A: waits for the rotation
  srv.action = null;
  revokeAll(srv);
  await router.onMessage({ id: 5, op: "fetch", url: "/api/x" }); // 401 revoked: A wiped
  await router.onMessage({ id: 6, op: "login", credentials: { password: "pw" } }); // lane B
  const B = [...srv.sessions.values()].find((s) => s.live);
  holds["/sv/rotate"].open(); // A's rotation: 401 revoked
  await sleep(30);
    assert.ok(B.live, "lane B's session was re-keyed (" + B.gone + ") by lane A's hint");
});

test("a stale re-key of lane A does not keep lane B's end (rekeyed by another tab) from wiping and telling the page", async () => {
  const { srv, posted, router, holds } = await setup();
  holds["/sv/rekey"] = gate();
  srv.action = "rekey";
  await router.onMessage({ id: 3, op: "fetch", url: "/api/x" }); // re-key of A, held
  srv.action = null;
  revokeAll(srv);
  await router.onMessage({ id: 4, op: "fetch", url: "/api/x" }); // A wiped
  await router.onMessage({ id: 5, op: "login", credentials: { password: "pw" } }); // lane B
  revokeAll(srv, "rekeyed"); // another tab of B's session re-keyed it: B is gone
  const n = events(posted).length;
  await router.onMessage({ id: 6, op: "fetch", url: "/api/x" }); // 401 rekeyed
  const st = router.status();
  holds["/sv/rekey"].open();
  await sleep(20);
  assert.equal(st.state, "wiped", "B's lane was not wiped on 401 rekeyed, the page was not told, while A's re-key was in flight");
});

test("a logout whose request gets no answer resolves after its bound and wipes the key", async () => {
  const { srv, posted, router, holds } = await setup({ logoutWaitMs: 200 });
  holds["/sv/logout"] = gate(); // the server (or a proxy) never answers
  router.onMessage({ id: 3, op: "logout" });
  await sleep(1000); // well past the logout's bound (logoutWaitMs)
  const reply = posted.find((m) => m.id === 3);
  await router.onMessage({ id: 4, op: "login", credentials: { password: "pw" } });
  holds["/sv/logout"].open();
  assert.ok(reply, "no answer to the logout: the page's logout() hangs, the key stays in the worker (state " + router.status().state + ")");
});

test("a logout after a revocation the worker had not heard of tells the page revoked once", async () => {
  const { srv, posted, router } = await setup();
  revokeAll(srv); // admin revoke; the event socket is down
  await router.onMessage({ id: 3, op: "logout" }); // signed logout: 401 revoked
    assert.equal(events(posted).filter((e) => e.startsWith("revoked")).length, 1);
});

test("a rotation hint during a re-key does not switch rotation off for the rest of the worker's life", async () => {
  const srv = fakeSessionServer();
  const posted = [];
  const sent = [];
  let openRekey; const rekeyGate = new Promise((r) => (openRekey = r));
  const router = new Router({
    instance: await newInstance(), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/",
    fetch: async (u, init) => { const p = new URL(u).pathname; sent.push(p); if (p === "/sv/rekey") await rekeyGate; return srv.fetch(u, init); },
  });
  await router.onMessage({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  srv.action = "rekey";
  await router.onMessage({ id: 3, op: "fetch", url: "/api/x" }); // re-key in flight
  srv.action = "rotate"; // the lane's rotation falls due meanwhile
  await router.onMessage({ id: 4, op: "fetch", url: "/api/x" });
  srv.action = null;
  openRekey();
  while (router.rekeying) await router.rekeying.catch(() => {});
  // The new lane is asked to rotate, and asked again.
  srv.action = "rotate";
  for (let i = 0; i < 3; i++) { await router.onMessage({ id: 10 + i, op: "fetch", url: "/api/x" }); await sleep(10); }
  srv.action = null;
  // Even a logout and a new login do not bring rotation back.
  await router.onMessage({ id: 20, op: "logout" });
  await router.onMessage({ id: 21, op: "login", credentials: { password: "pw" } });
  srv.action = "rotate";
  await router.onMessage({ id: 22, op: "fetch", url: "/api/x" }); await sleep(10);
  srv.action = null;
  assert.ok(sent.includes("/sv/rotate"), "no rotation request was ever sent again");
});

test("a rotation whose reply was lost is sent again (same key) until it completes", async () => {
  // The server rotated; its answer never came. It sends no hint to requests signed under the
  // previous epoch, and seals events under the new one: without a retry the lane stays half
  // rotated until the grace ends and the server revokes it as reuse_detected.
  let lost = null; // the committed answer, which a retry with the same key gets again
  const { srv, posted, sent, router } = await setupWrapped(async (p, u, init, srv) => {
    if (p === "/sv/rotate") {
      if (lost === null) {
        lost = await (await srv.fetch(u, init)).text();
        throw new TypeError("network error"); // the connection dropped before the answer
      }
      return new Response(lost, { status: 200, headers: { "Content-Type": "application/json" } });
    }
    return srv.fetch(u, init);
  });
  srv.action = "rotate";
  await router.onMessage({ id: 3, op: "fetch", url: "/api/x" });
  srv.action = null;
  await sleep(50);
  assert.equal(router.status().state, "rotating", "half rotated after the lost answer");
  for (let i = 0; i < 60 && router.status().state !== "active"; i++) await sleep(50);
  assert.deepEqual(sent.filter((p) => p === "/sv/rotate").length, 2, "the rotation was not sent again");
  assert.deepEqual(router.status(), { state: "active", epoch: 1, expires: router.status().expires });
  assert.ok(posted.some((m) => m.event === "rotated" && m.detail.epoch === 1));
});

// A second review, of the fixes above.
test("a resend timer left by a failed rotation starts no rotation after a hint completed it", async () => {
  let dropFirst = true;
  const { srv, sent, router } = await setupWrapped(async (p, u, init, srv) => {
    if (p === "/sv/rotate" && dropFirst) { dropFirst = false; throw new TypeError("network error"); } // never reached the server
    return srv.fetch(u, init);
  });
  srv.action = "rotate";
  await router.onMessage({ id: 3, op: "fetch", url: "/api/x" }); // hint: rotation 0->1, request lost
  srv.action = null;
  await sleep(20);
  assert.equal(router.status().state, "rotating");
  srv.action = "rotate"; // the server did not rotate, so it hints again on the next answer
  await router.onMessage({ id: 4, op: "fetch", url: "/api/x" });
  srv.action = null;
  await sleep(50);
  assert.deepEqual([router.status().state, router.status().epoch], ["active", 1], "the hint completed the rotation");
  await sleep(1200); // past the 1 s resend timer set by the failed attempt
  assert.equal([...srv.sessions.values()][0].epoch, 1, "an unhinted second rotation ran");
  assert.equal(sent.filter((p) => p === "/sv/rotate").length, 2);
});

test("a signed logout refused 503 restarted with a Retry-After past the logout's bound is still sent again", async () => {
  // Right after a node restart the wait is about 6 s, over the 5 s bound: the bound is on each
  // wait for an answer, not on the server's Retry-After (else the session and its cookie live on).
  let first = true;
  const { srv, sent, router } = await setupWrapped(async (p, u, init, srv) => {
    if (p === "/sv/logout" && first) {
      first = false;
      return new Response('{"error":"restarted"}', { status: 503, headers: { "Content-Type": "application/json", "Sv-Error": "restarted", "Retry-After": "2" } });
    }
    return srv.fetch(u, init);
  }, { logoutWaitMs: 1000 });
  await router.onMessage({ id: 3, op: "logout" });
  assert.equal(sent.filter((p) => p === "/sv/logout").length, 2, "the logout was not sent again");
  assert.equal([...srv.sessions.values()][0].live, false, "the logout never reached the server");
  assert.equal(router.status().state, "wiped");
});
