// After a re-key that fails without the lane ending, the module gives the re-key up (abort-rekey):
// the lane rotates again and heeds a later revoked(rekeyed). Found in review, reproduced here first.
import test from "node:test";
import assert from "node:assert/strict";
import { Router } from "../router.js";
import { OP, num } from "../abi.js";
import { newInstance, serverLogin, serverRotate, signKey, eventKey, sealEvent, b64url } from "./helpers.js";

const ORIGIN = "https://app.example";
function mk(rekeyStatus = 503, rekeyErr = "store_unavailable") {
  const srv = { lane: null, key: null, epoch: 0, log: [], failRotations: 0 };
  srv.fetch = async (url, init) => {
    const u = new URL(url);
    const body = init.body ? Buffer.from(init.body) : null;
    const reply = (status, obj, headers = {}) => new Response(obj === null ? null : JSON.stringify(obj), { status, headers: { "Content-Type": "application/json", ...headers } });
    srv.log.push(u.pathname);
    if (u.pathname === "/sv/login") {
      const req = JSON.parse(body.toString());
      const s = serverLogin(Buffer.from(req.pub, "base64url"));
      Object.assign(srv, { lane: s.lane, key: s.key, epoch: 0 });
      return reply(200, { lane: b64url(s.lane), pub: b64url(s.pub), confirm: b64url(s.confirm), epoch: 0, serverTime: Date.now(), expires: Date.now() + 3600e3 });
    }
    if (u.pathname === "/sv/rekey") return reply(rekeyStatus, { error: rekeyErr }, { "Sv-Error": rekeyErr });
    if (u.pathname === "/sv/rotate" && srv.failRotations > 0) {
      srv.failRotations--;
      return reply(503, { error: "store_unavailable" }, { "Sv-Error": "store_unavailable" });
    }
    if (u.pathname === "/sv/rotate") {
      const req = JSON.parse(body.toString());
      const r = serverRotate(srv.key, srv.lane, srv.epoch + 1, Buffer.from(req.pub, "base64url"));
      Object.assign(srv, { key: r.key, epoch: srv.epoch + 1 });
      return reply(200, { pub: b64url(r.pub), epoch: srv.epoch, confirm: b64url(r.confirm) });
    }
    return reply(200, {});
  };
  return srv;
}

async function setup(...a) {
  const srv = mk(...a);
  const posted = [];
  const router = new Router({ instance: await newInstance(), fetch: (u, i) => srv.fetch(u, i), post: (m) => posted.push(m), origin: ORIGIN, WebSocket: null, reserved: "/sv/" });
  await router.onMessage({ id: 1, op: "init" });
  await router.onMessage({ id: 2, op: "login", credentials: { password: "pw" } });
  return { srv, router, posted };
}

test("after a failed re-key (503), rotation still works", async () => {
  const { srv, router } = await setup();
  await assert.rejects(router.rekey());
  await router.rotate();
  assert.equal(srv.epoch, 1, "rotation blocked after a failed re-key");
});

test("after a failed re-key (cookie_required), another tab's re-key event wipes", async () => {
  const { srv, router, posted } = await setup(403, "cookie_required");
  await assert.rejects(router.rekey());
  // Another tab re-keyed the session: the server seals revoked(rekeyed) to this lane.
  const ev = sealEvent(eventKey(srv.key), { type: 1, lane: srv.lane, epoch: 0, seq: 1000, reason: "rekeyed" });
  const r = router.vault.call(OP.event, [[1, ev]]);
  assert.equal(router.status().state, "wiped", "vault kept its key after revoked(rekeyed)");
});

test("a failed re-key tells the page (rekey_failed, with the code), and a new lane lifts the retry pause", async () => {
  const { router, posted } = await setup(403, "cookie_required");
  await assert.rejects(router.rekey());
  const ev = posted.filter((m) => m.event === "rekey_failed");
  assert.equal(ev.length, 1);
  assert.equal(ev[0].detail.code, "cookie_required");
  assert.ok(router.rekeyRetryAt > router.now(), "the next hint waits");
  await router.onMessage({ id: 3, op: "logout" });
  await router.onMessage({ id: 4, op: "login", credentials: { password: "pw" } });
  assert.equal(router.status().state, "active");
  assert.equal(router.rekeyRetryAt, 0, "a new lane's re-key need not wait for the old lane's pause");
});

test("a re-key after a rotation left half done completes the rotation first", async () => {
  const { srv, router } = await setup();
  srv.failRotations = 1;
  await assert.rejects(router.rotate());
  assert.equal(router.status().state, "rotating");
  await assert.rejects(router.rekey()); // the re-key itself fails (503) after the rotation
  assert.equal(srv.epoch, 1, "the rotation was completed before the re-key");
  assert.equal(router.status().state, "active");
});
