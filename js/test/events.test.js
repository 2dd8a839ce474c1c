// The event channel with the real module and a fake socket whose server side is node:crypto.
import test from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { OP, num } from "../abi.js";
import { EventChannel } from "../events.js";
import { newInstance, serverLogin, sealEvent, eventKey, signKey, hmac } from "./helpers.js";

const ORIGIN = "https://app.example";

class FakeSocket {
  static last = null;
  constructor(url, proto) {
    this.url = url;
    this.proto = proto;
    this.sent = [];
    this.closed = false;
    FakeSocket.last = this;
    FakeSocket.all.push(this);
  }
  send(m) {
    this.sent.push(m);
  }
  close() {
    this.closed = true;
  }
  deliver(data) {
    this.onmessage({ data });
  }
  drop() {
    this.onclose({});
  }
}
FakeSocket.all = [];

async function setup() {
  const inst = await newInstance();
  inst.call(OP.policy, [[1, ORIGIN]]);
  const cpub = inst.call(OP.begin, [[1, 1]]).get(1);
  const srv = serverLogin(cpub);
  inst.call(OP.finish, [[1, srv.lane], [2, srv.pub], [3, srv.confirm], [4, Date.now()]]);
  const events = [];
  let rotations = 0;
  const timers = [];
  const ch = new EventChannel({
    url: "wss://app.example/sv/events",
    vault: inst,
    WebSocket: FakeSocket,
    emit: (n, d) => events.push([n, d]),
    rotate: () => rotations++,
    random: () => 0.5,
    setTimeout: (fn, ms) => (timers.push({ fn, ms }), timers.length),
    clearTimeout: () => {},
  });
  return { inst, srv, ch, events, timers, rotations: () => rotations };
}

function authenticate(srv) {
  const ws = FakeSocket.last;
  const challenge = crypto.randomBytes(32);
  ws.deliver(JSON.stringify({ type: "challenge", challenge: challenge.toString("base64url") }));
  const auth = JSON.parse(ws.sent.at(-1));
  const u32 = Buffer.alloc(4);
  const want = hmac(signKey(srv.key), Buffer.from("sessionvault/v1 socket-auth"), Buffer.from([0]), srv.lane, u32, challenge);
  assert.equal(auth.tag, want.toString("base64url"), "the socket tag is the protocol's MAC under the sign key");
  assert.equal(auth.keyid, srv.lane.toString("base64url") + ".0");
  ws.deliver(JSON.stringify({ type: "ready" }));
  return auth;
}

test("challenge auth, rotate and expiring events, forged events ignored, revocation wipes", async () => {
  const { inst, srv, ch, events, rotations } = await setup();
  ch.start();
  assert.equal(FakeSocket.last.proto, "sessionvault.v1");
  authenticate(srv);
  const ek = eventKey(srv.key);
  FakeSocket.last.deliver(Uint8Array.from(sealEvent(ek, { type: 2, lane: srv.lane, epoch: 0, seq: 1 })).buffer);
  assert.equal(rotations(), 1);
  FakeSocket.last.deliver(sealEvent(ek, { type: 3, lane: srv.lane, epoch: 0, seq: 2, deadline: 1234567 }));
  assert.deepEqual(events.at(-1), ["expiring", { deadline: 1234567 }]);
  FakeSocket.last.deliver(sealEvent(ek, { type: 3, lane: srv.lane, epoch: 0, seq: 2, deadline: 1 }));
  FakeSocket.last.deliver(sealEvent(Buffer.alloc(32), { type: 1, lane: srv.lane, epoch: 0, seq: 9 }));
  assert.equal(ch.stats.refusedEvents, 2, "replayed and forged events are refused");
  assert.equal(num(inst.call(OP.status).get(1)), 2, "still active");
  FakeSocket.last.deliver(sealEvent(ek, { type: 1, lane: srv.lane, epoch: 0, seq: 3, reason: "admin" }));
  assert.deepEqual(events.at(-1), ["revoked", { reason: "admin" }]);
  assert.equal(num(inst.call(OP.status).get(1)), 4, "wiped");
  assert.ok(FakeSocket.last.closed);
});

test("reconnect with backoff, resync since the last event, refusal on reconnect wipes", async () => {
  const { inst, srv, ch, events, timers } = await setup();
  FakeSocket.all = [];
  ch.start();
  authenticate(srv);
  FakeSocket.last.deliver(sealEvent(eventKey(srv.key), { type: 3, lane: srv.lane, epoch: 0, seq: 7 }));
  FakeSocket.last.drop();
  assert.equal(timers.length, 1);
  assert.ok(timers[0].ms >= 250 && timers[0].ms <= 500);
  timers[0].fn();
  assert.equal(FakeSocket.all.length, 2, "reconnected");
  const auth = authenticate(srv);
  assert.equal(auth.since, 7, "resync asks for events after the last one seen");
  FakeSocket.last.drop();
  timers.at(-1).fn();
  FakeSocket.last.deliver(JSON.stringify({ type: "refused", reason: "revoked" }));
  assert.deepEqual(events.at(-1), ["revoked", { reason: "revoked" }]);
  assert.equal(num(inst.call(OP.status).get(1)), 4);
});

test("a lane evicted while away (refused lane_evicted on reconnect) wipes and tells the page revoked", async () => {
  const { inst, srv, ch, events, timers } = await setup();
  ch.start();
  authenticate(srv);
  FakeSocket.last.drop();
  timers.at(-1).fn();
  FakeSocket.last.deliver(JSON.stringify({ type: "refused", reason: "lane_evicted" }));
  assert.deepEqual(events.at(-1), ["revoked", { reason: "lane_evicted" }]);
  assert.equal(num(inst.call(OP.status).get(1)), 4, "wiped");
});

test("a refusal on a live socket ends the channel: its close is not reported as the socket going down", async () => {
  // The lane's end can arrive as a refusal alone (its sealed event dropped, or refused under a
  // stale epoch): the page hears expired, and nothing of the server's close that follows.
  const { inst, srv, ch, events, timers } = await setup();
  ch.start();
  authenticate(srv);
  const ws = FakeSocket.last;
  const before = timers.length;
  ws.deliver(JSON.stringify({ type: "refused", reason: "expired" }));
  ws.drop(); // the server's close
  assert.deepEqual(
    events.map(([n]) => n),
    ["channel", "expired"],
  );
  assert.equal(num(inst.call(OP.status).get(1)), 4, "wiped");
  assert.equal(timers.length, before, "no reconnect is scheduled");
  assert.ok(ws.closed, "the channel let go of the socket");
});

test("the page is told when the socket goes down and comes back, on changes only", async () => {
  const { srv, ch, events, timers } = await setup();
  FakeSocket.all = [];
  const channel = () => events.filter(([n]) => n === "channel").map(([, d]) => d.connected);
  ch.start();
  authenticate(srv);
  assert.deepEqual(channel(), [true]);
  FakeSocket.last.drop();
  assert.deepEqual(channel(), [true, false]);
  // Reconnects that fail say nothing more.
  timers.at(-1).fn();
  FakeSocket.last.drop();
  timers.at(-1).fn();
  FakeSocket.last.drop();
  assert.deepEqual(channel(), [true, false]);
  timers.at(-1).fn();
  authenticate(srv);
  assert.deepEqual(channel(), [true, false, true]);
  // Stopping (the lane is over) is not "down": the revoked or expired event says it.
  ch.stop();
  assert.deepEqual(channel(), [true, false, true]);
});

test("a socket that never comes up (no WebSocket through the proxy) is reported down once", async () => {
  const { ch, events, timers } = await setup();
  ch.start();
  for (let i = 0; i < 4; i++) {
    FakeSocket.last.drop();
    timers.at(-1).fn();
  }
  assert.deepEqual(events.filter(([n]) => n === "channel"), [["channel", { connected: false }]]);
});
