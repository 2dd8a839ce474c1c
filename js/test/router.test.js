// The worker's message router with the real module, against a fake network whose server side is
// written independently with node:crypto. Hostile page messages are refused and change nothing;
// nothing the page receives contains key material.
import test from "node:test";
import assert from "node:assert/strict";
import { Router, LIMITS, simpleURL } from "../router.js";
import crypto from "node:crypto";
import { newInstance, serverLogin, serverRotate, signKey, eventKey, sealEvent, verifyProfile, b64url } from "./helpers.js";

const ORIGIN = "https://app.example";

/** A fake server: login, rotate, logout, and /api/* that verifies signatures. */
function fakeServer() {
  const srv = { lane: null, key: null, epoch: 0, seen: [], action: null, error: null, keys: [], prefix: "/sv/" };
  srv.fetch = async (url, init) => {
    const u = new URL(url);
    const h = new Headers(init.headers);
    const body = init.body ? Buffer.from(init.body) : null;
    const reply = (status, obj, headers = {}) => new Response(obj === null ? null : JSON.stringify(obj), { status, headers: { "Content-Type": "application/json", ...headers } });
    if (u.pathname === srv.prefix + "login") {
      assert.equal(init.credentials, "same-origin");
      const req = JSON.parse(body.toString());
      if (req.credentials.password !== "pw") return reply(401, { error: "bad_credentials" });
      const s = serverLogin(Buffer.from(req.pub, "base64url"));
      Object.assign(srv, { lane: s.lane, key: s.key, epoch: 0 });
      srv.keys.push(s.key, signKey(s.key));
      return reply(200, { lane: b64url(s.lane), pub: b64url(s.pub), confirm: b64url(s.confirm), epoch: 0, serverTime: Date.now(), expires: Date.now() + 3600e3 });
    }
    // Everything else must be signed under the current key.
    const withCookie = u.pathname === srv.prefix + "logout" || u.pathname === srv.prefix + "rekey";
    assert.equal(init.credentials, withCookie ? "same-origin" : "omit", "signed API requests go without cookies");
    const ok = verifyProfile(signKey(srv.key), {
      method: init.method,
      authority: u.host,
      path: u.pathname,
      query: u.search.slice(1),
      signatureInput: h.get("signature-input"),
      signature: h.get("signature"),
      contentDigest: h.get("content-digest") ?? undefined,
    });
    srv.seen.push({ path: u.pathname, ok });
    if (!ok) return reply(401, { error: "bad_signature" }, { "Sv-Error": "bad_signature" });
    if (srv.error) return reply(401, { error: srv.error }, { "Sv-Error": srv.error });
    if (u.pathname === srv.prefix + "rotate") {
      const req = JSON.parse(body.toString());
      const r = serverRotate(srv.key, srv.lane, srv.epoch + 1, Buffer.from(req.pub, "base64url"));
      Object.assign(srv, { key: r.key, epoch: srv.epoch + 1 });
      srv.keys.push(r.key, signKey(r.key));
      return reply(200, { pub: b64url(r.pub), epoch: srv.epoch, confirm: b64url(r.confirm) });
    }
    if (u.pathname === srv.prefix + "logout") return reply(204, null);
    const extra = srv.action ? { "Sv-Action": srv.action } : {};
    srv.action = null;
    return reply(200, { hello: "world", path: u.pathname }, extra);
  };
  return srv;
}

async function setup() {
  const srv = fakeServer();
  const posted = [];
  let now = 0;
  const router = new Router({ instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: (m) => posted.push(m), origin: ORIGIN, now: () => now, WebSocket: null, reserved: "/sv/" });
  const send = async (msg) => {
    const before = posted.length;
    await router.onMessage(msg);
    const replies = posted.slice(before).filter((m) => !("event" in m));
    assert.equal(replies.length, 1, "exactly one reply per message");
    return replies[0];
  };
  return { srv, router, posted, send, tick: (ms) => (now += ms) };
}

test("login, signed fetch, rotation on a hint, logout", async () => {
  const { srv, send, posted } = await setup();
  assert.ok((await send({ id: 1, op: "init", policy: { prefixes: ["/api/", "/sv/"] } })).ok);
  const bad = await send({ id: 2, op: "login", credentials: { user: "a", password: "nope" } });
  assert.deepEqual(bad.error, { code: "bad_credentials", message: "the server refused the credentials" });
  // A prefix where nothing of ours is mounted: the code says the status, the message the path.
  const inner = srv.fetch;
  srv.fetch = async (url, init) => (new URL(url).pathname === "/sv/login" ? Object.defineProperty(new Response("404 page not found", { status: 404 }), "url", { value: url }) : inner(url, init));
  const notMounted = await send({ id: 20, op: "login", credentials: { password: "pw" } });
  assert.deepEqual(notMounted.error, { code: "http_404", message: "/sv/login answered 404 without a sessionvault reason (is mgr.Handler() mounted there?)" });
  srv.fetch = inner;
  const li = await send({ id: 3, op: "login", credentials: { user: "a", password: "pw" } });
  assert.ok(li.ok, JSON.stringify(li));
  assert.equal(li.result.state, "active");
  const r = await send({ id: 4, op: "fetch", url: "/api/thing?q=1", method: "POST", body: '{"a":1}', headers: [["X-Test", "1"]] });
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.result.status, 200);
  assert.deepEqual(srv.seen.at(-1), { path: "/api/thing", ok: true });
  srv.action = "rotate";
  await send({ id: 5, op: "fetch", url: "/api/x" });
  await new Promise((res) => setTimeout(res, 50));
  assert.equal(srv.epoch, 1);
  assert.ok(posted.some((m) => m.event === "rotated" && m.detail.epoch === 1));
  const after = await send({ id: 6, op: "fetch", url: "/api/y" });
  assert.equal(after.result.status, 200);
  assert.ok(srv.seen.every((s) => s.ok), "every request verified");
  const out = await send({ id: 7, op: "logout" });
  assert.equal(out.result.state, "wiped");
  const nf = await send({ id: 8, op: "fetch", url: "/api/z" });
  assert.equal(nf.error.code, "no_session");
  // Nothing posted to the page contains any key (raw, hex, base64, base64url).
  const dump = JSON.stringify(posted, (k, v) => (v instanceof ArrayBuffer ? Buffer.from(v).toString("latin1") : v));
  for (const key of srv.keys) {
    for (const form of [key.toString("hex"), key.toString("base64"), key.toString("base64url"), key.toString("latin1")]) {
      assert.ok(!dump.includes(form.slice(0, 16)), "key material reached the page");
    }
  }
});

test("server revocation wipes the key and tells the page", async () => {
  const { srv, send, posted } = await setup();
  await send({ id: 1, op: "init" });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  srv.error = "revoked";
  const r = await send({ id: 3, op: "fetch", url: "/data" });
  assert.equal(r.result.status, 401);
  assert.ok(!r.result.headers.some(([k]) => k === "sv-error"), "protocol headers are stripped");
  assert.ok(posted.some((m) => m.event === "revoked" && m.detail.reason === "revoked"));
  const st = (await send({ id: 4, op: "status" })).result;
  assert.equal(st.state, "wiped");
  assert.equal(st.reason, "revoked", "status says why the key was wiped");
});

test("an evicted lane (lane_evicted) wipes the key and tells the page revoked", async () => {
  const { srv, send, posted } = await setup();
  await send({ id: 1, op: "init" });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  srv.error = "lane_evicted";
  assert.equal((await send({ id: 3, op: "fetch", url: "/data" })).result.status, 401);
  assert.ok(posted.some((m) => m.event === "revoked" && m.detail.reason === "lane_evicted"));
  const st = (await send({ id: 4, op: "status" })).result;
  assert.equal(st.state, "wiped");
  assert.equal(st.reason, "lane_evicted");
});

test("server expiry wipes the key; status says expired until the next login", async () => {
  const { srv, send, posted } = await setup();
  await send({ id: 1, op: "init" });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  srv.error = "expired";
  assert.equal((await send({ id: 3, op: "fetch", url: "/data" })).result.status, 401);
  assert.ok(posted.some((m) => m.event === "expired" && m.detail.reason === "expired"));
  assert.deepEqual((await send({ id: 4, op: "status" })).result.reason, "expired");
  assert.equal((await send({ id: 5, op: "fetch", url: "/data" })).error.code, "no_session");
  srv.error = null;
  await send({ id: 6, op: "login", credentials: { password: "pw" } });
  const st = (await send({ id: 7, op: "status" })).result;
  assert.equal(st.state, "active");
  assert.equal(st.reason, undefined);
  const out = (await send({ id: 8, op: "logout" })).result;
  assert.equal(out.reason, "logout");
});

test("hostile page messages are refused with typed errors and change nothing", async () => {
  const { srv, send } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const cases = [
    [null, "bad_message"],
    ["string", "bad_message"],
    [{ op: "status" }, "bad_message"],
    [{ id: -1, op: "status" }, "bad_message"],
    [{ id: 9, op: "steal" }, "unknown_op"],
    [{ id: 9, op: "init", policy: { origins: ["https://evil.example"] } }, "policy_bound"],
    [{ id: 9, op: "init", policy: { evil: true } }, "bad_input"],
    [{ id: 9, op: "fetch", url: 42 }, "bad_input"],
    [{ id: 9, op: "fetch", url: "x".repeat(9000) }, "bad_input"],
    [{ id: 9, op: "fetch", url: "https://evil.example/api/x" }, "policy_denied"],
    [{ id: 9, op: "fetch", url: "/admin/x" }, "policy_denied"],
    [{ id: 9, op: "fetch", url: "/api/%2e%2e/admin" }, "policy_denied"],
    [{ id: 9, op: "fetch", url: "https://u:p@app.example/api/x" }, "policy_denied"],
    [{ id: 9, op: "fetch", url: "/api/x", method: "get" }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", method: "TRACE" }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: [["Signature", "x"]] }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: [["X-HTTP-Method-Override", "DELETE"]] }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: [["x-http-method", "DELETE"]] }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: [["X-Method-Override", "PUT"]] }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: [["X-Original-URL", "/admin/delete"]] }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: [["x-rewrite-url", "/admin/delete"]] }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: [["X-Forwarded-Host", "evil.example"]] }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: [["Forwarded", "host=evil.example"]] }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", headers: { a: "b" } }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", method: "POST", body: { a: 1 } }, "bad_input"],
    [{ id: 9, op: "fetch", url: "/api/x", method: "POST", body: new ArrayBuffer(LIMITS.maxBody + 1) }, "too_large"],
    [{ id: 9, op: "fetch", url: "/api/x", body: "x" }, "bad_input"],
    [{ id: 9, op: "login", credentials: { x: "y".repeat(20000) } }, "bad_input"],
  ];
  for (const [msg, code] of cases) {
    const r = await send(msg);
    assert.equal(r.ok, false, JSON.stringify(msg)?.slice(0, 80));
    assert.equal(r.error.code, code, JSON.stringify(msg)?.slice(0, 80));
  }
  const st = await send({ id: 10, op: "status" });
  assert.equal(st.result.state, "active", "the session is intact");
  const ok = await send({ id: 11, op: "fetch", url: "/api/ok" });
  assert.equal(ok.result.status, 200);
  assert.ok(srv.seen.every((s) => s.ok));
});

test("the page cannot have the worker fetch the vault's own endpoints, by any spelling or origin", async () => {
  for (const prefix of [undefined, "/auth/v1/"]) {
    const { srv, send } = await setup();
    // A policy that allows everything the vault's endpoints are under, as apps configure it.
    const init = { id: 1, op: "init", policy: { origins: [ORIGIN, "https://api.example"], prefixes: ["/api/", "/sv/", "/auth/"] } };
    if (prefix) init.prefix = srv.prefix = prefix;
    assert.ok((await send(init)).ok);
    const li = await send({ id: 2, op: "login", credentials: { password: "pw" } });
    assert.ok(li.ok, JSON.stringify(li.error));
    const before = srv.seen.length;
    const urls = [
      "/sv/rotate", "/sv/rekey", "/sv/logout", "/sv/login", "/sv/join", "/sv/events", "/sv/worker.js",
      "/s%76/rotate", "/sv%2Frekey", "/%73%76/logout", "https://app.example/sv/rotate", "https://api.example/sv/rekey",
    ];
    if (prefix) urls.push("/auth/v1/rotate", "/auth/v%31/rekey");
    for (const url of urls) {
      const r = await send({ id: 3, op: "fetch", url, method: "POST", body: '{"pub":"x"}' });
      assert.equal(r.ok, false, url);
      assert.equal(r.error.code, "policy_denied", url);
    }
    const bad = await send({ id: 4, op: "fetch", url: "/api/%E0%A4%A" });
    assert.equal(bad.error.code, "bad_input", "a malformed percent-encoding");
    assert.equal(srv.seen.length, before, "nothing was sent");
    assert.equal((await send({ id: 5, op: "status" })).result.state, "active", "the session is intact");
    assert.equal((await send({ id: 6, op: "fetch", url: "/api/svc/x" })).result.status, 200, "other paths still go");
  }
});

test("init refuses an endpoint prefix that leaves its path or the origin, and binds nothing", async () => {
  const { send } = await setup();
  for (const prefix of ["/../", "/./", "/sv/../", "//evil.example/", "/a//b/", "/", "/sv", "sv/", 42]) {
    const r = await send({ id: 1, op: "init", prefix });
    assert.equal(r.ok, false, JSON.stringify(prefix));
    assert.equal(r.error.code, "bad_input", JSON.stringify(prefix));
  }
  assert.ok((await send({ id: 2, op: "init", prefix: "/auth/v1/" })).ok, "a clean prefix binds");
  assert.equal((await send({ id: 3, op: "init" })).error.code, "policy_bound");
});

test("too many operations per second are refused", async () => {
  const { send, tick } = await setup();
  await send({ id: 1, op: "init" });
  let limited = 0;
  for (let i = 0; i < LIMITS.burst + 20; i++) {
    const r = await send({ id: 100 + i, op: "status" });
    if (!r.ok && r.error.code === "rate_limited") limited++;
  }
  assert.ok(limited >= 19, "the burst is bounded");
  tick(1000);
  assert.ok((await send({ id: 5, op: "status" })).ok, "tokens refill");
});

test("simpleURL gives what new URL gives, or declines", () => {
  const origin = "https://app.example:8443";
  const alphabet = ["/", "/", "a", "Z", "0", ".", ".", "%", "2", "e", "E", "f", "?", "?", "#", "\\", " ", "'", "^", "`", "{", "}", "<", "\"", "@", ":", "~", "&", "=", "+", "!", "$", ";", ",", "*", "(", "-", "_", "é", "\t", "\u0000", "[", "|"];
  let seed = 11;
  const rnd = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
  const inputs = ["/bench/signed", "/a?b=1&c=d", "/a/./b", "/a/../b", "/a/%2e/b", "/a/%2E%2e/", "/.", "/a/.%2e", "//evil.example/x", "/a?", "/a?x'y", "/a#f", "/a\\b", "/ä", "/a//b", "/%zz", "/a?b?c", "/@:~", "/a/.b/c.", "/..a/b"];
  for (let i = 0; i < 20000; i++) {
    let s = "/";
    for (let n = rnd(12); n > 0; n--) s += alphabet[rnd(alphabet.length)];
    inputs.push(s);
  }
  let fast = 0;
  for (const s of inputs) {
    const got = simpleURL(s, origin);
    if (got === null) continue;
    fast++;
    const u = new URL(s, origin + "/");
    for (const k of ["origin", "pathname", "search", "href", "username", "password"]) {
      assert.equal(got[k], u[k], s + ": " + k);
    }
  }
  assert.ok(fast > 2000, "the fast path was taken " + fast + " times");
  assert.deepEqual(simpleURL("/bench/signed", origin), { origin, pathname: "/bench/signed", search: "", href: origin + "/bench/signed", username: "", password: "" });
  for (const s of ["/a/./b", "/a/%2E%2e/", "//evil.example/x", "/a?x'y", "/a\\b", "https://app.example:8443/x", "x/y", "", "/a?"]) {
    assert.equal(simpleURL(s, origin), null, s);
  }
});

test("a refusal of a request signed under a lane since replaced, or a rekeyed during the worker's own re-key, does not wipe", async () => {
  const { send, router, posted } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/", "/sv/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const refusal = (reason) => new Response(null, { status: 401, headers: { "Sv-Error": reason } });
  const revoked = () => posted.filter((m) => m.event === "revoked").length;
  const gen = router.gen;
  router.react(refusal("rekeyed"), gen - 1); // signed under the lane before this one
  assert.equal((await send({ id: 3, op: "status" })).result.state, "active", "an older lane's refusal");
  router.rekeying = Promise.resolve(); // as while a re-key is in flight
  router.react(refusal("rekeyed"), gen);
  assert.equal((await send({ id: 4, op: "status" })).result.state, "active", "rekeyed during the re-key");
  assert.equal(router.laneGone, "rekeyed", "remembered for the re-key's outcome");
  router.react(refusal("revoked"), gen);
  assert.equal((await send({ id: 5, op: "status" })).result.state, "wiped", "any other end during the re-key wipes");
  assert.equal(revoked(), 1);
  router.rekeying = null;
});

test("logout during a login in flight waits for it and ends the session the login made", async () => {
  const { srv, send, router, posted } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/", "/sv/"] } });
  const reply = (id) => posted.find((m) => m.id === id);
  let release;
  const gate = new Promise((r) => (release = r));
  const inner = srv.fetch;
  srv.fetch = async (url, init) => {
    if (new URL(url).pathname === "/sv/login") await gate;
    return inner(url, init);
  };
  const both = Promise.all([router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } }), router.onMessage({ id: 3, op: "logout" })]);
  await new Promise((r) => setTimeout(r, 10));
  release();
  await both;
  const li = reply(2), lo = reply(3);
  assert.ok(li.ok, "the login completed");
  assert.equal(lo.result.state, "wiped");
  assert.deepEqual(srv.seen.map((s) => s.path + " " + s.ok), ["/sv/logout true"], "the logout reached the server, signed");
});

test("a worker that joins uses its script's directory as the endpoint prefix, whatever the page says", async () => {
  const srv = fakeServer();
  let ticket = "A".repeat(43);
  const router = new Router({
    instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: () => {}, origin: ORIGIN, WebSocket: null,
    reserved: "/sv/", joinURL: ORIGIN + "/sv/join", hasTicket: () => ticket !== "", takeTicket: () => { const t = ticket; ticket = ""; return t; },
  });
  await router.onMessage({ id: 1, op: "init", prefix: "/x/" });
  assert.equal(router.prefix, "/sv/", "a joining worker's endpoints are where its script came from");
  const plain = new Router({ instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: () => {}, origin: ORIGIN, WebSocket: null, reserved: "/static/" });
  await plain.onMessage({ id: 1, op: "init", prefix: "/auth/" });
  assert.equal(plain.prefix, "/auth/", "without a ticket (a script served as a plain file) the page's prefix holds");
});

test("logout waits for a login in flight only so long: a hung request does not hang it", async () => {
  const srv = fakeServer();
  const posted = [];
  const router = new Router({
    instance: await newInstance(), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/", logoutWaitMs: 50,
    fetch: (u, i) => (new URL(u).pathname === "/sv/login" ? new Promise(() => {}) : srv.fetch(u, i)),
  });
  await router.onMessage({ id: 1, op: "init" });
  router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } }); // never answered
  const t0 = Date.now();
  await router.onMessage({ id: 3, op: "logout" });
  const lo = posted.find((m) => m.id === 3);
  assert.ok(lo && lo.ok, "logout answered");
  assert.equal(lo.result.state, "wiped");
  assert.ok(Date.now() - t0 < 2000, "within the bound");
});

/** A fetch for path that answers only its abort signal, with the AbortError a browser gives. */
const hangUntilAborted = (init) =>
  new Promise((_, reject) => init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));

test("a logout that stops waiting aborts the login in flight, and its unsigned logout drops the cookie", async () => {
  const srv = fakeServer();
  const posted = [];
  const sent = [];
  const router = new Router({
    instance: await newInstance(), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/", logoutWaitMs: 50,
    fetch: (u, i) => {
      const path = new URL(u).pathname;
      sent.push({ path, credentials: i.credentials, signed: new Headers(i.headers).has("signature"), signal: i.signal });
      if (path === "/sv/login") return hangUntilAborted(i);
      if (path === "/sv/logout") return Promise.resolve(new Response('{"error":"missing_signature"}', { status: 401 }));
      return srv.fetch(u, i);
    },
  });
  await router.onMessage({ id: 1, op: "init" });
  const login = router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  await router.onMessage({ id: 3, op: "logout" });
  await login;
  const li = posted.find((m) => m.id === 2), lo = posted.find((m) => m.id === 3);
  assert.equal(li.ok, false);
  assert.equal(li.error.code, "aborted", "the page learns why its login failed");
  assert.ok(lo.ok && lo.result.state === "wiped", JSON.stringify(lo));
  assert.ok(sent[0].signal.aborted, "the login request was aborted");
  assert.deepEqual(sent.slice(1).map((s) => [s.path, s.credentials, s.signed]), [["/sv/logout", "same-origin", false]], "one unsigned logout, with the cookie, whose answer clears it");
  assert.equal(router.aborts.size, 0);
});

test("a logout that stops waiting aborts a re-key in flight, then logs the lane it keeps out, signed", async () => {
  const { srv, send, router, posted } = await setup();
  router.logoutWaitMs = 50;
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/", "/sv/"] } });
  assert.equal((await send({ id: 2, op: "login", credentials: { password: "pw" } })).result.state, "active");
  const inner = srv.fetch;
  let rekeySignal = null;
  srv.fetch = (url, init) => {
    if (new URL(url).pathname === "/sv/rekey") {
      rekeySignal = init.signal;
      return hangUntilAborted(init);
    }
    return inner(url, init);
  };
  const rekey = router.rekey().catch((e) => e);
  const lo = await send({ id: 3, op: "logout" });
  assert.equal((await rekey).code, "aborted");
  assert.ok(rekeySignal && rekeySignal.aborted, "the re-key request was aborted");
  assert.equal(lo.result.state, "wiped");
  assert.deepEqual(srv.seen.map((s) => s.path + " " + s.ok), ["/sv/logout true"], "the old lane's logout, signed under its key");
  assert.deepEqual(posted.filter((m) => m.event === "rekey_failed").map((m) => m.detail.code), ["aborted"]);
});

test("a fetch that gets no answer is refused with code network, and changes nothing", async () => {
  const { srv, send } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/", "/sv/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const inner = srv.fetch;
  srv.fetch = (url, init) => (new URL(url).pathname === "/api/down" ? Promise.reject(new TypeError("Failed to fetch")) : inner(url, init));
  const r = await send({ id: 3, op: "fetch", url: "/api/down" });
  assert.equal(r.error.code, "network");
  assert.equal((await send({ id: 4, op: "status" })).result.state, "active");
  assert.ok((await send({ id: 5, op: "fetch", url: "/api/up" })).ok);
});

test("the page aborts a signed fetch in flight: the worker's request is aborted, nothing else changes", async () => {
  const { srv, send, router, posted } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const inner = srv.fetch;
  let seenSignal = null;
  srv.fetch = (url, init) => {
    if (new URL(url).pathname === "/api/slow") {
      seenSignal = init.signal;
      return hangUntilAborted(init);
    }
    return inner(url, init);
  };
  const slow = router.onMessage({ id: 3, op: "fetch", url: "/api/slow", abortable: true });
  const ab = await send({ id: 4, op: "abort", target: 3 });
  assert.deepEqual(ab.result, { aborted: true });
  await slow;
  assert.ok(seenSignal.aborted, "the network request was aborted");
  assert.equal(posted.find((m) => m.id === 3).error.code, "aborted");
  assert.equal(router.fetching.size, 0);
  assert.deepEqual((await send({ id: 5, op: "abort", target: 3 })).result, { aborted: false }, "done: nothing to abort");
  assert.deepEqual((await send({ id: 6, op: "abort", target: 99 })).result, { aborted: false });
  for (const target of [undefined, -1, "3", 1.5]) assert.equal((await send({ id: 7, op: "abort", target })).error.code, "bad_input");
  assert.equal((await send({ id: 8, op: "status" })).result.state, "active");
  assert.equal((await send({ id: 9, op: "fetch", url: "/api/ok" })).result.status, 200);
  // A fetch the page sent without a signal gets no AbortController (it costs time): nothing to abort.
  seenSignal = "unset";
  const plain = router.onMessage({ id: 10, op: "fetch", url: "/api/slow" });
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(seenSignal, null);
  assert.deepEqual((await send({ id: 11, op: "abort", target: 10 })).result, { aborted: false });
  void plain;
});

test("one login at a time, and none over an active session; the first login is unharmed", async () => {
  const { srv, send, router, posted } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  let release;
  const gate = new Promise((r) => (release = r));
  const inner = srv.fetch;
  let logins = 0;
  srv.fetch = async (url, init) => {
    if (new URL(url).pathname === "/sv/login") {
      logins++;
      await gate;
    }
    return inner(url, init);
  };
  const first = router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  const second = await send({ id: 3, op: "login", credentials: { password: "pw" } });
  assert.equal(second.error.code, "bad_state");
  release();
  await first;
  assert.equal(posted.find((m) => m.id === 2).result.state, "active", "the first login completed");
  assert.equal(logins, 1, "the second never reached the server");
  assert.equal((await send({ id: 4, op: "login", credentials: { password: "pw" } })).error.code, "bad_state", "log out first");
  assert.equal((await send({ id: 5, op: "fetch", url: "/api/x" })).result.status, 200);
  await send({ id: 6, op: "logout" });
  assert.equal((await send({ id: 7, op: "login", credentials: { password: "pw" } })).result.state, "active", "after logout");
});

test("the endpoint prefix defaults to the boot script's directory", async () => {
  const srv = fakeServer();
  srv.prefix = "/app/sv/";
  const posted = [];
  const router = new Router({ instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/app/sv/" });
  await router.onMessage({ id: 1, op: "init" });
  assert.equal(router.prefix, "/app/sv/");
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  assert.equal(posted.find((m) => m.id === 2).result.state, "active");
  for (const reserved of [null, "/a b/"]) {
    const r = new Router({ instance: await newInstance(), fetch: () => {}, post: () => {}, origin: ORIGIN, WebSocket: null, reserved });
    await r.onMessage({ id: 1, op: "init" });
    assert.equal(r.prefix, "/sv/", "no usable script directory: /sv/");
  }
});

test("a redirect is not followed and is told apart from a network failure", async () => {
  const { srv, send } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const inner = srv.fetch;
  let redirect = null;
  srv.fetch = (url, init) => {
    if (new URL(url).pathname !== "/api/moved") return inner(url, init);
    redirect = init.redirect;
    // What fetch gives for a 3xx with redirect: "manual".
    return Promise.resolve({ type: "opaqueredirect", status: 0, ok: false, headers: new Headers() });
  };
  assert.equal((await send({ id: 3, op: "fetch", url: "/api/moved" })).error.code, "redirected");
  assert.equal(redirect, "manual");
  assert.equal((await send({ id: 4, op: "status" })).result.state, "active");
});

test("a page policy of /api/ and GET (the README's) does not stop the worker's own rotate and logout", async () => {
  const { srv, send, router } = await setup();
  assert.ok((await send({ id: 1, op: "init", policy: { prefixes: ["/api/"], methods: ["GET"] } })).ok);
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  await router.rotate();
  assert.equal((await send({ id: 3, op: "status" })).result.epoch, 1, "rotated");
  assert.equal((await send({ id: 4, op: "fetch", url: "/api/x", method: "POST", body: "{}" })).error.code, "policy_denied", "the page's methods hold");
  assert.equal((await send({ id: 5, op: "fetch", url: "/sv/rotate", method: "POST", body: "{}" })).error.code, "policy_denied");
  assert.equal((await send({ id: 6, op: "logout" })).result.state, "wiped");
  assert.deepEqual(srv.seen.map((s) => s.path + " " + s.ok), ["/sv/rotate true", "/sv/logout true"], "both reached the server, signed");
});

test("a joining worker's endpoints are its script's directory only: the page's prefix gains nothing", async () => {
  const srv = fakeServer();
  let ticket = "A".repeat(43);
  const posted = [];
  const router = new Router({
    instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null,
    reserved: "/sv/", joinURL: ORIGIN + "/sv/join", hasTicket: () => ticket !== "", takeTicket: () => { const t = ticket; ticket = ""; return t; },
  });
  // The join fails against this fake server (no join endpoint): the worker ends empty, policy bound.
  await router.onMessage({ id: 1, op: "init", prefix: "/api/", policy: { prefixes: ["/api/"], methods: ["GET"] } });
  assert.equal(router.prefix, "/sv/");
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  await router.onMessage({ id: 3, op: "fetch", url: "/api/transfer", method: "POST", body: "{}" });
  assert.equal(posted.find((m) => m.id === 3).error.code, "policy_denied", "a POST the page's methods refuse stays refused");
});

test("an abortable fetch with an id already in flight is refused, and the first stays abortable", async () => {
  const { srv, send, router, posted } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const inner = srv.fetch;
  srv.fetch = (url, init) => (new URL(url).pathname === "/api/slow" ? hangUntilAborted(init) : inner(url, init));
  const first = router.onMessage({ id: 7, op: "fetch", url: "/api/slow", abortable: true });
  assert.equal((await send({ id: 7, op: "fetch", url: "/api/slow", abortable: true })).error.code, "bad_message");
  assert.deepEqual((await send({ id: 8, op: "abort", target: 7 })).result, { aborted: true });
  await first;
  assert.equal(posted.find((m) => m.id === 7 && !m.ok && m.error.code === "aborted")?.error.code, "aborted");
});

test("logout from a wiped lane still sends a logout, unsigned, for its answer to drop the cookie", async () => {
  const { srv, send, router } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  router.endLane("lane_evicted");
  const sent = [];
  const inner = srv.fetch;
  srv.fetch = (url, init) => {
    sent.push([new URL(url).pathname, init.credentials, new Headers(init.headers).has("signature")]);
    return new URL(url).pathname === "/sv/logout" ? Promise.resolve(new Response('{"error":"missing_signature"}', { status: 401 })) : inner(url, init);
  };
  assert.equal((await send({ id: 3, op: "logout" })).result.state, "wiped");
  assert.deepEqual(sent, [["/sv/logout", "same-origin", false]]);
});

test("503 restarted (a node back from a crash): the worker signs an idempotent request again after Retry-After and resends it, within bounds", async () => {
  const { srv, send, router, posted } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const inner = srv.fetch;
  let refuse = 0;
  let retryAfter = "1";
  const tries = [];
  srv.fetch = async (url, init) => {
    const path = new URL(url).pathname;
    if (!path.startsWith("/api/") && path !== "/sv/logout") return inner(url, init);
    const h = new Headers(init.headers);
    tries.push({ at: Date.now(), path, input: h.get("signature-input"), body: init.body ? Buffer.from(init.body).toString() : null });
    if (refuse > 0) {
      refuse--;
      return new Response('{"error":"restarted"}', { status: 503, headers: { "Sv-Error": "restarted", "Retry-After": retryAfter, "Content-Type": "application/json" } });
    }
    return inner(url, init);
  };

  // A PUT refused once: answered 200 after a second, signed anew (another nonce), the same body.
  refuse = 1;
  const r = await send({ id: 3, op: "fetch", url: "/api/notes/1", method: "PUT", body: '{"n":1}', headers: [["Content-Type", "application/json"]] });
  assert.equal(r.result.status, 200);
  assert.equal(tries.length, 2);
  assert.notEqual(tries[0].input, tries[1].input, "the resent request carries a new signature");
  assert.deepEqual([tries[0].body, tries[1].body], ['{"n":1}', '{"n":1}']);
  assert.ok(tries[1].at - tries[0].at >= 950, "waited Retry-After");
  assert.ok(srv.seen.slice(-1)[0].ok, "the server verified the resent signature");

  // A POST may have run on the crashed node (a proxy may have sent that very request again):
  // never resent; the page gets the 503 with its Retry-After.
  tries.length = 0;
  refuse = 1;
  const post = await send({ id: 4, op: "fetch", url: "/api/transfer", method: "POST", body: "{}" });
  assert.equal(post.result.status, 503);
  assert.ok(post.result.headers.some(([k, v]) => k === "retry-after" && v === "1"));
  assert.equal(tries.length, 1);

  // A POST with an Idempotency-Key (the application deduplicates by it) is resent, key and all.
  tries.length = 0;
  refuse = 1;
  const keyed = await send({ id: 40, op: "fetch", url: "/api/transfer", method: "POST", body: "{}", headers: [["Idempotency-Key", '"8e03978e-40d5"']] });
  assert.equal(keyed.result.status, 200);
  assert.equal(tries.length, 2);

  // Refused every time: two resends, then the page gets the 503 (and the key stays).
  tries.length = 0;
  refuse = 99;
  const r2 = await send({ id: 5, op: "fetch", url: "/api/x" });
  assert.equal(r2.result.status, 503);
  assert.equal(tries.length, 3);
  assert.ok(!r2.result.headers.some(([k]) => k === "sv-error"), "Sv-Error stripped");

  // A wait longer than 10 s is not waited for.
  tries.length = 0;
  refuse = 1;
  retryAfter = "60";
  assert.equal((await send({ id: 6, op: "fetch", url: "/api/x" })).result.status, 503);
  assert.equal(tries.length, 1);

  // The page aborts during the wait: aborted, nothing resent.
  tries.length = 0;
  refuse = 1;
  retryAfter = "5";
  const slow = router.onMessage({ id: 7, op: "fetch", url: "/api/x", abortable: true });
  await new Promise((res) => setTimeout(res, 50));
  await send({ id: 8, op: "abort", target: 7 });
  await slow;
  assert.equal(posted.find((m) => m.id === 7).error.code, "aborted");
  assert.equal(tries.length, 1);

  // The worker's own logout is resent (the server answers a repeated one as the first).
  tries.length = 0;
  refuse = 1;
  retryAfter = "1";
  assert.equal((await send({ id: 9, op: "logout" })).result.state, "wiped");
  assert.deepEqual(tries.map((x) => x.path), ["/sv/logout", "/sv/logout"]);
});

test("a request waiting to be resent is not sent once a logout begins, nor under the next user's session", async () => {
  const { srv, send, router, posted } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const inner = srv.fetch;
  let refuse = 0;
  let holdLogout = null;
  const tries = [];
  srv.fetch = async (url, init) => {
    const path = new URL(url).pathname;
    if (path === "/sv/logout" && holdLogout) await holdLogout;
    if (!path.startsWith("/api/")) return inner(url, init);
    tries.push(new Headers(init.headers).get("signature-input"));
    if (refuse > 0) {
      refuse--;
      return new Response("{}", { status: 503, headers: { "Sv-Error": "restarted", "Retry-After": "1" } });
    }
    return inner(url, init);
  };
  const tick = (ms) => new Promise((r) => setTimeout(r, ms));

  // A logout begins (its request held) while a GET waits: the GET is not resent.
  refuse = 1;
  let release;
  holdLogout = new Promise((r) => (release = r));
  const waiting = router.onMessage({ id: 3, op: "fetch", url: "/api/a" });
  await tick(50);
  const out = router.onMessage({ id: 4, op: "logout" });
  await waiting;
  assert.equal(posted.find((m) => m.id === 3).error.code, "no_session");
  assert.equal(tries.length, 1);
  release();
  await out;
  holdLogout = null;

  // Alice's GET waits; she logs out and bob logs in: it is not signed under bob's lane.
  await send({ id: 5, op: "login", credentials: { password: "pw" } });
  tries.length = 0;
  refuse = 1;
  const alices = router.onMessage({ id: 6, op: "fetch", url: "/api/mine" });
  await tick(50);
  await send({ id: 7, op: "logout" });
  await send({ id: 8, op: "login", credentials: { password: "pw" } });
  await alices;
  assert.equal(posted.find((m) => m.id === 6).error.code, "no_session");
  assert.equal(tries.length, 1, "nothing was sent under the new session");
});


/** A router with an event socket (a fake whose latest instance is Socket.last), logged in. */
async function socketRouter() {
  class Socket {
    static last = null;
    constructor() {
      this.sent = [];
      Socket.last = this;
    }
    send(m) {
      this.sent.push(m);
    }
    close() {}
  }
  const srv = fakeServer();
  const posted = [];
  const router = new Router({ instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: (m) => posted.push(m), origin: ORIGIN, now: () => 0, WebSocket: Socket, reserved: "/sv/" });
  let id = 0;
  const send = async (msg) => {
    await router.onMessage({ id: ++id, ...msg });
    return posted.filter((m) => m.id === id)[0];
  };
  await send({ op: "init", policy: { prefixes: ["/api/"] } });
  await send({ op: "login", credentials: { password: "pw" } });
  // Authenticates the socket: the channel is up.
  const up = (ws) => {
    ws.onmessage({ data: JSON.stringify({ type: "challenge", challenge: crypto.randomBytes(32).toString("base64url") }) });
    ws.onmessage({ data: JSON.stringify({ type: "ready" }) });
  };
  return { srv, router, posted, send, Socket, up };
}

test("logout while the server's logout event arrives on the socket first: one revoked event, not two", async () => {
  const { srv, posted, send, Socket, up } = await socketRouter();
  // The socket authenticates; the server then pushes the session's end to every lane, this one
  // included, before its answer to the logout reaches the worker.
  const ws = Socket.last;
  assert.ok(ws, "the event channel opened");
  up(ws);
  const inner = srv.fetch;
  srv.fetch = async (url, init) => {
    if (new URL(url).pathname === "/sv/logout") {
      const res = await inner(url, init);
      ws.onmessage({ data: sealEvent(eventKey(srv.key), { type: 1, lane: srv.lane, epoch: srv.epoch, seq: 1, reason: "logout" }) });
      return res;
    }
    return inner(url, init);
  };
  const r = await send({ op: "logout" });
  assert.equal(r.result.state, "wiped");
  assert.equal(r.result.reason, "logout");
  const revoked = posted.filter((m) => m.event === "revoked");
  assert.deepEqual(revoked, [{ event: "revoked", detail: { reason: "logout" } }], "the page hears of the logout once");
});

test("a fetch the page sends after logout(), while the logout is in flight, is not sent", async () => {
  const { srv, send, router, posted } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const inner = srv.fetch;
  let release;
  const held = new Promise((r) => (release = r));
  srv.fetch = async (url, init) => {
    if (new URL(url).pathname === "/sv/logout") await held;
    return inner(url, init);
  };
  const out = router.onMessage({ id: 3, op: "logout" });
  await new Promise((r) => setTimeout(r, 10));
  const before = srv.seen.length;
  const r = await send({ id: 4, op: "fetch", url: "/api/after-logout" });
  assert.equal(r.error.code, "no_session");
  release();
  await out;
  assert.equal(posted.find((m) => m.id === 3).result.state, "wiped");
  assert.ok(!srv.seen.slice(before).some((s) => s.path === "/api/after-logout"), "the fetch never reached the server");
});

test("a GET refused replay (a proxy's retry of it got there first) is signed again and resent once; a POST is not", async () => {
  const { srv, send } = await setup();
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  await send({ id: 2, op: "login", credentials: { password: "pw" } });
  const inner = srv.fetch;
  let replays = 0;
  const tries = [];
  srv.fetch = async (url, init) => {
    if (!new URL(url).pathname.startsWith("/api/")) return inner(url, init);
    tries.push({ method: init.method, input: new Headers(init.headers).get("signature-input") });
    if (replays > 0) {
      replays--;
      return new Response('{"error":"replay"}', { status: 401, headers: { "Sv-Error": "replay", "Content-Type": "application/json" } });
    }
    return inner(url, init);
  };
  replays = 1;
  assert.equal((await send({ id: 3, op: "fetch", url: "/api/x" })).result.status, 200);
  assert.equal(tries.length, 2);
  assert.notEqual(tries[0].input, tries[1].input, "signed anew");
  // Refused twice: resent once only, and the page gets the 401.
  tries.length = 0;
  replays = 2;
  assert.equal((await send({ id: 4, op: "fetch", url: "/api/x", method: "HEAD" })).result.status, 401);
  assert.equal(tries.length, 2);
  // A POST may have run: never resent.
  tries.length = 0;
  replays = 1;
  assert.equal((await send({ id: 5, op: "fetch", url: "/api/x", method: "POST", body: "{}" })).result.status, 401);
  assert.equal(tries.length, 1);
  assert.equal((await send({ id: 6, op: "status" })).result.state, "active", "a replay refusal leaves the session alone");
});

test("channel events reach the page on changes only, across the lane's event channels", async () => {
  const { router, posted, Socket, up } = await socketRouter();
  const channel = () => posted.filter((m) => m.event === "channel").map((m) => m.detail.connected);
  up(Socket.last);
  assert.deepEqual(channel(), [true]);
  // A new channel of the same lane (as after a re-key) comes up: nothing new to tell.
  router.startChannel();
  up(Socket.last);
  assert.deepEqual(channel(), [true]);
  Socket.last.onclose({});
  assert.deepEqual(channel(), [true, false]);
  router.stopChannel();
});

test("a response body over 1 MiB or one that pauses reaches the page as a transferred stream; a short one whole", async () => {
  const { srv, router, sendT: send } = await streamSetup();
  const inner = srv.fetch;
  let cancelled = null;
  const enc = new TextEncoder();
  srv.fetch = async (url, init) => {
    const path = new URL(url).pathname;
    await inner(url, init); // verifies the signature
    const strip = { "Sv-Action": "none", Signature: "x" };
    if (path === "/api/short") return new Response("short body", { headers: { "Content-Length": "10", ...strip } });
    if (path === "/api/chunked") return new Response(new ReadableStream({ start(c) { c.enqueue(enc.encode("one,")); c.enqueue(enc.encode("two")); c.close(); } }));
    if (path === "/api/chunked-long") return new Response(new ReadableStream({ start(c) { for (let i = 0; i < 20; i++) c.enqueue(new Uint8Array(64 << 10).fill(i)); c.close(); } }));
    if (path === "/api/long") return new Response(new Uint8Array((1 << 20) + 1), { headers: { "Content-Length": String((1 << 20) + 1) } });
    // A stream of unknown length: two chunks now, then it waits for the page to read or cancel.
    let n = 0;
    return new Response(
      new ReadableStream({
        pull(c) {
          if (n < 2) c.enqueue(enc.encode("chunk" + n++ + "\n"));
          else return new Promise(() => {}); // a server that keeps the stream open
        },
        cancel(reason) {
          cancelled = reason ?? "cancelled";
        },
      }),
      { headers: { "Content-Type": "application/x-ndjson", ...strip } },
    );
  };
  const short = await send({ id: 3, op: "fetch", url: "/api/short" });
  assert.ok(short.m.result.body instanceof ArrayBuffer, "a short body comes whole");
  assert.equal(Buffer.from(short.m.result.body).toString(), "short body");
  assert.deepEqual(short.transfer, [short.m.result.body]);
  assert.ok(!short.m.result.headers.some(([k]) => k === "sv-action" || k === "signature"), "protocol headers stripped");

  const chunked = await send({ id: 30, op: "fetch", url: "/api/chunked" });
  assert.ok(chunked.m.result.body instanceof ArrayBuffer, "a body of unknown length that ends at once comes whole");
  assert.equal(Buffer.from(chunked.m.result.body).toString(), "one,two");
  const chunkedLong = await send({ id: 31, op: "fetch", url: "/api/chunked-long" });
  assert.ok(chunkedLong.m.result.body instanceof ReadableStream, "one that grows past 1 MiB is streamed");
  const all = new Uint8Array(await new Response(chunkedLong.m.result.body).arrayBuffer());
  assert.equal(all.length, 20 * (64 << 10));
  assert.ok(all.every((b, i) => b === Math.floor(i / (64 << 10))), "in order, nothing lost or repeated");

  const long = await send({ id: 4, op: "fetch", url: "/api/long" });
  assert.ok(long.m.result.body instanceof ReadableStream, "a body over 1 MiB is streamed");
  assert.deepEqual(long.transfer, [long.m.result.body]);
  assert.equal((await new Response(long.m.result.body).arrayBuffer()).byteLength, (1 << 20) + 1);

  const streamed = await send({ id: 5, op: "fetch", url: "/api/stream" });
  const body = streamed.m.result.body;
  assert.ok(body instanceof ReadableStream, "a body of unknown length is streamed");
  assert.deepEqual(streamed.transfer, [body]);
  assert.ok(!streamed.m.result.headers.some(([k]) => k === "sv-action" || k === "signature"), "protocol headers stripped");
  const reader = body.getReader();
  const dec = new TextDecoder();
  let got = "";
  while (!got.includes("chunk1")) got += dec.decode((await reader.read()).value);
  assert.equal(got, "chunk0\nchunk1\n", "read as it arrives, before the stream ends");
  await reader.cancel("page is done");
  assert.equal(cancelled, "page is done", "the page's cancel reaches the download");

  // A worker that cannot transfer a stream (not every browser can) sends every body whole.
  router.streams = false;
  const whole = await send({ id: 6, op: "fetch", url: "/api/long" });
  assert.ok(whole.m.result.body instanceof ArrayBuffer);
  assert.equal(whole.m.result.body.byteLength, (1 << 20) + 1);
});

/** A logged-in router whose /api/sse answers an endless event stream (one event per 5 ms). */
async function streamSetup() {
  const srv = fakeServer();
  const posted = [];
  const router = new Router({ instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: (m, transfer) => posted.push({ m, transfer }), origin: ORIGIN, now: () => 0, WebSocket: null, reserved: "/sv/" });
  const sendT = async (msg) => {
    const before = posted.length;
    await router.onMessage(msg);
    return posted.slice(before).find((p) => !("event" in p.m) && p.m.id === msg.id);
  };
  const send = async (msg) => (await sendT(msg)).m;
  await send({ id: 1, op: "init", policy: { prefixes: ["/api/", "/sv/"] } });
  await send({ id: 2, op: "login", credentials: { user: "a", password: "pw" } });
  const inner = srv.fetch;
  const state = { pulls: 0, cancelled: false };
  srv.fetch = async (url, init) => {
    const res = await inner(url, init);
    if (new URL(url).pathname !== "/api/sse") return res;
    return new Response(
      new ReadableStream({
        async pull(c) {
          await new Promise((r) => setTimeout(r, 5));
          c.enqueue(new TextEncoder().encode("data: " + state.pulls++ + "\n\n"));
        },
        cancel() {
          state.cancelled = true;
        },
      }),
      { headers: { "Content-Type": "text/event-stream" } },
    );
  };
  return { srv, router, posted, send, sendT, state };
}

// Found by review: a stream of an ended session kept flowing to the page after logout.
test("a wipe (logout) ends the session's streams: the page's read fails and the download is cancelled", async () => {
  const { send, state } = await streamSetup();
  const r = await send({ id: 3, op: "fetch", url: "/api/sse" });
  assert.ok(r.result.body instanceof ReadableStream);
  const rd = r.result.body.getReader();
  await rd.read();
  assert.equal((await send({ id: 4, op: "logout" })).result.state, "wiped");
  await assert.rejects(async () => {
    for (let i = 0; i < 20; i++) await rd.read();
  }, /the session ended: logout/);
  assert.ok(state.cancelled, "the download was cancelled");
});

// Found by review: an abort that crossed the worker's streamed reply left the download running.
test("a streamed reply to a fetch the page aborted meanwhile is cancelled by the page client", async () => {
  const { router, state } = await streamSetup();
  const { Vault } = await import("../client.js");
  // page <-> router, each hop a task, as postMessage is
  class Bridge extends EventTarget {
    postMessage(m) {
      setTimeout(() => router.onMessage(m), 0);
    }
    terminate() {}
  }
  const w = new Bridge();
  let hold = null; // replies to the page, held as a busy page thread would
  router.post = (m) => {
    if (hold) hold.push(m);
    else setTimeout(() => w.dispatchEvent(new MessageEvent("message", { data: m })), 0);
  };
  const v = new Vault(w);
  const c = new AbortController();
  hold = [];
  const p = v.fetch("/api/sse", { signal: c.signal });
  while (!hold.length) await new Promise((r) => setTimeout(r, 1));
  c.abort(); // before the page has taken the reply
  await assert.rejects(p, (e) => e.name === "AbortError");
  const replies = hold;
  hold = null;
  await new Promise((r) => setTimeout(r, 20));
  for (const m of replies) w.dispatchEvent(new MessageEvent("message", { data: m }));
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(state.cancelled, `the download was never cancelled (${state.pulls} events for an aborted fetch)`);
});

// Found by review: Content-Length is the encoded size; a gzip body under 1 MiB on the wire
// decoded to 64 MiB arrived whole.
test("a compressed body that decodes past 1 MiB is streamed, whatever its Content-Length", async () => {
  const { srv, send } = await streamSetup();
  const http = await import("node:http");
  const zlib = await import("node:zlib");
  const big = Buffer.alloc(8 << 20, 0x61);
  const gz = zlib.gzipSync(big);
  const hs = http.createServer((q, s) => {
    s.writeHead(200, { "Content-Encoding": "gzip", "Content-Length": gz.length });
    s.end(gz);
  });
  await new Promise((r) => hs.listen(0, "127.0.0.1", r));
  const inner = srv.fetch;
  srv.fetch = async (url, init) => {
    await inner(url, init);
    return fetch("http://127.0.0.1:" + hs.address().port + "/");
  };
  try {
    const r = await send({ id: 9, op: "fetch", url: "/api/bomb" });
    assert.ok(gz.length < 1 << 20);
    assert.ok(r.result.body instanceof ReadableStream, "streamed");
    assert.equal((await new Response(r.result.body).arrayBuffer()).byteLength, big.length, "every decoded byte, once");
  } finally {
    hs.close();
  }
});

// Found by review: an answer whose headers came after a wipe streamed on, since no wipe ended
// it (it was not flowing yet).
test("a streamed answer that arrives after a wipe (logout) is refused no_session and its download cancelled", async () => {
  const { srv, send, state, posted } = await streamSetup();
  const inner = srv.fetch;
  let release;
  const gate = new Promise((r) => (release = r));
  srv.fetch = async (url, init) => {
    const res = await inner(url, init);
    if (new URL(url).pathname === "/api/sse") await gate; // the server answers slowly
    return res;
  };
  const p = send({ id: 3, op: "fetch", url: "/api/sse" });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal((await send({ id: 4, op: "logout" })).result.state, "wiped");
  release();
  await p;
  const r = posted.find((x) => x.m.id === 3).m;
  assert.equal(r.ok, false);
  assert.equal(r.error.code, "no_session");
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(state.cancelled, "the download was cancelled");
  // A new session's streams are not touched by the old one's end.
  assert.ok((await send({ id: 5, op: "login", credentials: { user: "a", password: "pw" } })).ok);
  const b = await send({ id: 6, op: "fetch", url: "/api/sse" });
  const rb = b.result.body.getReader();
  for (let i = 0; i < 5; i++) assert.equal((await rb.read()).done, false);
  await rb.cancel();
});
