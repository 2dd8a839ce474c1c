// The worker's join (PROTOCOL.md section 3.2) with the real module, against a fake server whose
// join side is written independently with node:crypto: the boot script's ticket goes to the join
// endpoint beside the script and nowhere else, is bound into the transcript, is used once, and
// never reaches the page.
import test from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { Router } from "../router.js";
import { newInstance, x25519Pair, x25519, epochKey, confirm, signKey, verifyProfile, b64url } from "./helpers.js";

const ORIGIN = "https://app.example";
const JOIN_URL = ORIGIN + "/sv/join";
const sha256 = (...parts) => crypto.createHash("sha256").update(Buffer.concat(parts.map((p) => Buffer.from(p)))).digest();

function joinServer({ refuse = null } = {}) {
  const srv = { joins: [], requests: [], key: null };
  srv.fetch = async (url, init) => {
    const u = new URL(url);
    srv.requests.push({ url: u.href, init });
    const reply = (status, obj, headers = {}) => new Response(JSON.stringify(obj), { status, headers: { "Content-Type": "application/json", ...headers } });
    if (u.href === JOIN_URL) {
      assert.equal(init.method, "POST");
      assert.equal(init.credentials, "same-origin", "the join carries the cookie");
      const req = JSON.parse(init.body);
      srv.joins.push(req.ticket);
      if (refuse) return reply(401, { error: refuse }, { "Sv-Error": refuse });
      const clientPub = Buffer.from(req.pub, "base64url");
      const ticket = Buffer.from(req.ticket, "base64url");
      const { privateKey, pub } = x25519Pair();
      const lane = crypto.randomBytes(16);
      const th = sha256("sessionvault/v1 ticket", ticket);
      const transcript = sha256("sessionvault/v1 join", Buffer.from([0]), clientPub, pub, lane, th);
      srv.key = epochKey(x25519(privateKey, clientPub), transcript, lane, 0);
      return reply(200, { lane: b64url(lane), pub: b64url(pub), confirm: b64url(confirm(srv.key, transcript)), epoch: 0, serverTime: Date.now(), expires: Date.now() + 3600e3 });
    }
    if (u.pathname.startsWith("/api/")) {
      const h = new Headers(init.headers);
      const ok = verifyProfile(signKey(srv.key), {
        method: init.method,
        authority: u.host,
        path: u.pathname,
        query: u.search.slice(1),
        signatureInput: h.get("signature-input"),
        signature: h.get("signature"),
        contentDigest: h.get("content-digest") ?? undefined,
      });
      return reply(ok ? 200 : 401, { ok });
    }
    return reply(404, { error: "not_found" });
  };
  return srv;
}

async function setup(srv, ticket, joinRefusal) {
  const posted = [];
  let t = ticket;
  const router = new Router({
    joinRefusal,
    instance: await newInstance(),
    fetch: srv.fetch,
    post: (m) => posted.push(m),
    origin: ORIGIN,
    WebSocket: null,
    joinURL: JOIN_URL,
    hasTicket: () => t !== "",
    takeTicket: () => {
      const x = t;
      t = "";
      return x;
    },
  });
  const send = async (msg) => {
    const before = posted.length;
    await router.onMessage(msg);
    return posted.slice(before).filter((m) => !("event" in m))[0];
  };
  return { router, posted, send };
}

const TICKET = b64url(crypto.randomBytes(32));

test("init joins with the boot script's ticket; the page never sees it", async () => {
  const srv = joinServer();
  const { send, posted } = await setup(srv, TICKET);
  const r = await send({ id: 1, op: "init", policy: { prefixes: ["/api/"] } });
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.result.joined, true);
  assert.equal(r.result.state, "active");
  assert.deepEqual(srv.joins, [TICKET]);
  assert.ok(posted.some((m) => m.event === "active" && m.detail.joined === true));
  const f = await send({ id: 2, op: "fetch", url: "/api/x" });
  assert.equal(f.result.status, 200, "the joined lane signs");
  const dump = JSON.stringify(posted, (k, v) => (v instanceof ArrayBuffer ? Buffer.from(v).toString("latin1") : v));
  const raw = Buffer.from(TICKET, "base64url");
  for (const form of [TICKET, raw.toString("hex"), raw.toString("base64"), raw.toString("latin1")]) {
    assert.ok(!dump.includes(form.slice(0, 16)), "the ticket reached the page");
  }
  // A second init (policy already bound) does not join again: the ticket was handed over once.
  const again = await send({ id: 3, op: "init" });
  assert.equal(again.error.code, "policy_bound");
  assert.equal(srv.joins.length, 1);
});

test("the ticket goes to the join endpoint beside the boot script, whatever prefix the page gives", async () => {
  const srv = joinServer();
  const { send } = await setup(srv, TICKET);
  const r = await send({ id: 1, op: "init", prefix: "/paste/" });
  assert.equal(r.result.joined, true);
  assert.deepEqual(
    srv.requests.map((x) => x.url),
    [JOIN_URL],
  );
});

test("a refused join leaves the worker empty, the page logs in", async () => {
  const srv = joinServer({ refuse: "ticket_reuse" });
  const { send } = await setup(srv, TICKET);
  const r = await send({ id: 1, op: "init" });
  assert.ok(r.ok);
  assert.equal(r.result.joined, false);
  assert.equal(r.result.joinError, "ticket_reuse");
  assert.equal(r.result.state, "wiped", "the half-done handshake is dropped");
  assert.equal(srv.joins.length, 1, "a refused ticket is not retried");
  const st = await send({ id: 2, op: "status" });
  assert.equal(st.result.reason, "ticket_reuse");
});

test("no ticket, no join; a malformed ticket is not sent", async () => {
  for (const t of ["", "short", "x".repeat(43) + '","pub":"']) {
    const srv = joinServer();
    const { send } = await setup(srv, t);
    const r = await send({ id: 1, op: "init" });
    assert.ok(r.ok);
    assert.equal(r.result.state, "empty");
    assert.equal(srv.requests.length, 0, "nothing was sent for ticket " + JSON.stringify(t));
  }
});

test("no ticket but a refusal worth a retry (the boot script said !rate_limited): the page gets it as joinError", async () => {
  const srv = joinServer();
  const { send } = await setup(srv, "", "rate_limited");
  const r = await send({ id: 1, op: "init" });
  assert.ok(r.ok);
  assert.deepEqual([r.result.joined, r.result.joinError, r.result.state], [false, "rate_limited", "empty"]);
  assert.equal(srv.requests.length, 0);
  // Anything but a short lower-case reason is ignored.
  const { send: send2 } = await setup(joinServer(), "", 'x"); alert(1); ("');
  const r2 = await send2({ id: 1, op: "init" });
  assert.equal(r2.result.joinError, undefined);
});
