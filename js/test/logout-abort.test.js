// A logout that stops waiting, and aborts: races found in review, each of which failed before
// its fix. The fake server keeps the cookie jar as the browser sees it (Set-Cookie applied on
// delivery; every same-origin logout answer clears it, as the Go server's logout does).
import test from "node:test";
import assert from "node:assert/strict";
import { Router, LIMITS } from "../router.js";
import { fakeSessionServer, newInstance } from "./helpers.js";

const ORIGIN = "https://app.example";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const reply = (status, obj, headers = {}) => new Response(obj === null ? null : JSON.stringify(obj), { status, headers: { "Content-Type": "application/json", ...headers } });

const at = (ms) => new Promise((r) => setTimeout(r, ms));

test("a re-key queued behind a slow rotation starts no request once a logout runs, and leaves no live session's cookie", async () => {
  const srv = fakeSessionServer();
  const posted = [];
  const router = new Router({ instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/", logoutWaitMs: 50 });
  await router.onMessage({ id: 1, op: "init" });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  srv.t0 = Date.now(); srv.sent.length = 0;
  router.logoutWaitMs = 200;
  srv.gates.rotate = at(400); // the rotation's answer takes 400 ms (the logout waits only 200)
  srv.gates.logout = at(600); // the logout is processed after the re-key
  srv.delay.rekey = 600; // ... and the re-key's answer (with its Set-Cookie) is delivered last
  router.rotate().catch(() => {});
  const rk = router.rekey().catch((e) => e); // a rekey hint: waits for the rotation first
  const lo = router.onMessage({ id: 3, op: "logout" });
  await lo; await rk; await sleep(50);
  const order = srv.sent.map((s) => s.name + "@" + s.at);
  const logoutAt = srv.sent.find((s) => s.name === "logout").at;
  const lateRekey = srv.sent.find((s) => s.name === "rekey" && s.at >= logoutAt);
  const live = srv.cookie && srv.sessions.get(srv.cookie)?.live;
  assert.ok(!lateRekey && !live, `a re-key request was sent after the logout (${order.join(", ")}); the jar's cookie now names a live session: ${live}`);
});

test("a login a logout aborts after its headers arrived rejects aborted (PROTOCOL 3.4)", async () => {
  const posted = [];
  const router = new Router({
    instance: await newInstance(), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/", logoutWaitMs: 50,
    fetch: async (u, init) => {
      if (new URL(u).pathname === "/sv/login") {
        // Headers (and Set-Cookie) in; the body stalls until the abort errors it, as in a browser.
        const body = new ReadableStream({ start(c) { init.signal.addEventListener("abort", () => c.error(new DOMException("aborted", "AbortError"))); } });
        return new Response(body, { status: 200, headers: { "Content-Type": "application/json" } });
      }
      return reply(401, { error: "missing_signature" });
    },
  });
  await router.onMessage({ id: 1, op: "init" });
  const li = router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  await router.onMessage({ id: 3, op: "logout" });
  await li;
  assert.equal(posted.find((m) => m.id === 2).error.code, "aborted");
});

test("the rate limiter never refuses an abort: a busy page can still stop its request", async () => {
  let now = 0;
  const posted = [];
  const srv = fakeSessionServer();
  let slowSignal = null;
  const router = new Router({
    instance: await newInstance(), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/", now: () => now,
    fetch: (u, i) => {
      if (new URL(u).pathname === "/api/slow") { slowSignal = i.signal; return new Promise(() => {}); }
      return srv.fetch(u, i);
    },
  });
  await router.onMessage({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  router.onMessage({ id: 3, op: "fetch", url: "/api/slow", abortable: true });
  for (let i = 0; i < LIMITS.burst; i++) await router.onMessage({ id: 100 + i, op: "status" }); // a busy page
  await router.onMessage({ id: 4, op: "abort", target: 3 });
  const ab = posted.find((m) => m.id === 4);
  assert.ok(ab.ok && slowSignal.aborted, "abort: " + JSON.stringify(ab) + ", worker request aborted: " + slowSignal.aborted);
});
