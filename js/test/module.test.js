// The real vault.wasm through the real WASI shim and ABI wrapper, against a server side written
// independently with node:crypto.
import test from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { OP, VaultError, encode, encodeInto, num, str, Instance, ABI_EXPORT } from "../abi.js";
import { newInstance, serverLogin, serverRotate, sealEvent, signKey, eventKey, verifyProfile } from "./helpers.js";

const ORIGIN = "https://app.example";

async function activeInstance() {
  const inst = await newInstance();
  inst.call(OP.policy, [[1, ORIGIN]]);
  const cpub = inst.call(OP.begin, [[1, 1]]).get(1);
  assert.equal(cpub.length, 32);
  const srv = serverLogin(cpub);
  const r = inst.call(OP.finish, [[1, srv.lane], [2, srv.pub], [3, srv.confirm], [4, Date.now()]]);
  assert.equal(num(r.get(1)), 2, "state active");
  return { inst, srv };
}

function sign(inst, fields) {
  const f = inst.call(OP.sign, fields);
  return { signatureInput: str(f.get(1)), signature: str(f.get(2)), contentDigest: f.has(3) ? str(f.get(3)) : undefined };
}

test("login key agreement matches node:crypto and signatures verify independently", async () => {
  const { inst, srv } = await activeInstance();
  const s = sign(inst, [[1, "POST"], [2, ORIGIN], [3, "/api/items"], [4, "a=1&b=two"], [5, new TextEncoder().encode('{"x":1}')]]);
  assert.match(s.signatureInput, /^sv=\("@method" "@authority" "@path" "@query" "content-digest"\);created=\d+;keyid="[A-Za-z0-9_-]{22}\.0";nonce="1";alg="hmac-sha256";tag="sessionvault"$/);
  const ok = verifyProfile(signKey(srv.key), { method: "POST", authority: "app.example", path: "/api/items", query: "a=1&b=two", ...s });
  assert.ok(ok, "signature must verify under the independently derived key");
  const bad = verifyProfile(signKey(srv.key), { method: "POST", authority: "app.example", path: "/api/itemz", query: "a=1&b=two", ...s });
  assert.ok(!bad, "a tampered path must not verify");
  const s2 = sign(inst, [[1, "GET"], [2, ORIGIN], [3, "/api/items"]]);
  assert.match(s2.signatureInput, /nonce="2"/);
  assert.equal(s2.contentDigest, undefined);
  assert.ok(verifyProfile(signKey(srv.key), { method: "GET", authority: "app.example", path: "/api/items", ...s2 }));
});

test("rotation mixes a fresh exchange and matches node:crypto", async () => {
  const { inst, srv } = await activeInstance();
  const c1 = inst.call(OP.rotateBegin).get(1);
  const again = inst.call(OP.rotateBegin).get(1);
  assert.deepEqual(again, c1, "a pending rotation reuses its key");
  const rot = serverRotate(srv.key, srv.lane, 1, c1);
  const r = inst.call(OP.rotateFinish, [[1, rot.pub], [2, 1], [3, rot.confirm]]);
  assert.equal(num(r.get(2)), 1);
  const s = sign(inst, [[1, "GET"], [2, ORIGIN], [3, "/x"]]);
  assert.match(s.signatureInput, /\.1";nonce=/);
  assert.ok(verifyProfile(signKey(rot.key), { method: "GET", authority: "app.example", path: "/x", ...s }));
  assert.ok(!verifyProfile(signKey(srv.key), { method: "GET", authority: "app.example", path: "/x", ...s }), "the old key no longer signs");
});

test("a wrong confirmation leaves no key", async () => {
  const inst = await newInstance();
  inst.call(OP.policy, [[1, ORIGIN]]);
  const cpub = inst.call(OP.begin, [[1, 1]]).get(1);
  const srv = serverLogin(cpub);
  srv.confirm[0] ^= 1;
  assert.throws(() => inst.call(OP.finish, [[1, srv.lane], [2, srv.pub], [3, srv.confirm], [4, Date.now()]]), (e) => e.code === "bad_confirm");
  assert.throws(() => inst.call(OP.sign, [[1, "GET"], [2, ORIGIN], [3, "/"]]), (e) => e.code === "no_session");
});

test("events: a forged event is refused, a sealed revocation wipes", async () => {
  const { inst, srv } = await activeInstance();
  const ev = { type: 1, lane: srv.lane, epoch: 0, seq: 1, reason: "admin" };
  const forged = sealEvent(Buffer.alloc(32, 7), ev);
  assert.throws(() => inst.call(OP.event, [[1, forged]]), (e) => e.code === "bad_event");
  assert.equal(num(inst.call(OP.status).get(1)), 2, "still active after a forged event");
  const real = sealEvent(eventKey(srv.key), ev);
  const r = inst.call(OP.event, [[1, real]]);
  assert.equal(num(r.get(1)), 1);
  assert.equal(str(r.get(2)), "admin");
  assert.equal(num(r.get(4)), 4, "wiped");
  assert.throws(() => inst.call(OP.sign, [[1, "GET"], [2, ORIGIN], [3, "/"]]), (e) => e.code === "no_session");
});

test("hostile ABI input gets typed errors and the instance keeps working", async () => {
  const { inst } = await activeInstance();
  const inputs = [
    Uint8Array.of(0xff),
    Uint8Array.of(1),
    Uint8Array.of(2, 4),
    Uint8Array.of(1, 4, 1, 200),
    Uint8Array.of(1, 4, 2, 1, 0x41, 1, 1, 0x41),
    Uint8Array.of(1, 0x7f),
    Uint8Array.of(1, 4, 1, 0x80, 0x00),
    crypto.getRandomValues(new Uint8Array(4096)),
  ];
  for (const b of inputs) {
    const reply = inst.raw(b);
    assert.equal(reply[0], 1);
    assert.notEqual(reply[1], 0, "hostile input must not succeed: " + Buffer.from(b.subarray(0, 8)).toString("hex"));
  }
  assert.throws(() => inst.raw(new Uint8Array((8 << 20) + 1)), (e) => e instanceof VaultError && e.code === "too_large");
  assert.throws(() => inst.call(OP.policy, [[1, "https://evil.example"]]), (e) => e.code === "policy_bound");
  assert.throws(() => inst.call(OP.sign, [[1, "GET"], [2, "https://evil.example"], [3, "/"]]), (e) => e.code === "policy_denied");
  assert.throws(() => inst.call(OP.sign, [[1, "GET"], [2, ORIGIN], [3, "/a/../b"]]), (e) => e.code === "policy_denied");
  const ok = sign(inst, [[1, "GET"], [2, ORIGIN], [3, "/still/works"]]);
  assert.match(ok.signature, /^sv=:[A-Za-z0-9+/]{43}=:$/);
});

test("randomness comes from crypto.getRandomValues, never Math.random", async () => {
  const orig = Math.random;
  Math.random = () => {
    throw new Error("Math.random must not be used");
  };
  try {
    const inst = await newInstance();
    inst.call(OP.policy, [[1, ORIGIN]]);
    const a = inst.call(OP.begin, [[1, 1]]).get(1);
    const b = inst.call(OP.begin, [[1, 1]]).get(1);
    assert.notDeepEqual(a, b, "two handshakes get different keys");
  } finally {
    Math.random = orig;
  }
});

test("many calls keep linear memory flat", async () => {
  const { inst } = await activeInstance();
  const mem = () => inst.exports.memory.buffer.byteLength;
  // Go's heap settles at its working size within the first 20,000 signatures (7.99 MB here, from
  // 7.73 MB after 10,000); after that, a leak of 100 bytes a call (3 MB over the loop) would show.
  for (let i = 0; i < 30000; i++) sign(inst, [[1, "POST"], [2, ORIGIN], [3, "/p"], [5, new Uint8Array(1024)]]);
  const warm = mem();
  for (let i = 0; i < 30000; i++) sign(inst, [[1, "POST"], [2, ORIGIN], [3, "/p"], [5, new Uint8Array(1024)]]);
  assert.equal(mem(), warm);
});

test("encode matches the codec's canonical form", () => {
  assert.deepEqual([...encode(OP.sign, [[1, "GET"], [4, 300]])], [1, 4, 1, 3, 71, 69, 84, 4, 2, 0xac, 0x02]);
});

// An encoder written the plain way, independently of abi.js, for the one below to match.
function referenceEncode(code, fields) {
  const out = [1, code];
  const uv = (n) => {
    while (n >= 0x80) {
      out.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    out.push(n);
  };
  for (const [tag, v] of fields) {
    let bytes;
    if (typeof v === "string") bytes = [...new TextEncoder().encode(v)];
    else if (v instanceof Uint8Array) bytes = [...v];
    else if (typeof v === "number") {
      const save = out.length;
      uv(v);
      bytes = out.splice(save);
    } else {
      const save = out.length;
      for (const s of v) {
        const e = new TextEncoder().encode(s);
        uv(e.length);
        out.push(...e);
      }
      bytes = out.splice(save);
    }
    out.push(tag);
    uv(bytes.length);
    out.push(...bytes);
  }
  return out;
}

test("encodeInto writes what a plain encoder writes, and refuses what does not fit", () => {
  let seed = 7;
  const rnd = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
  const strings = ["", "GET", "https://app.example", "/p/ä/€/😀", "x".repeat(200), "\u0000\u007f", "é"];
  for (let i = 0; i < 2000; i++) {
    const fields = [];
    for (let tag = 1; tag <= 6; tag++) {
      if (rnd(2)) continue;
      const kind = rnd(4);
      if (kind === 0) fields.push([tag, strings[rnd(strings.length)]]);
      else if (kind === 1) fields.push([tag, Uint8Array.from({ length: rnd(300) }, () => rnd(256))]);
      else if (kind === 2) fields.push([tag, [0, 1, 127, 128, 300, 16383, 16384, 2 ** 31, 2 ** 53 - 1][rnd(9)]]);
      else fields.push([tag, [strings[rnd(strings.length)], strings[rnd(strings.length)]].slice(rnd(3))]);
    }
    const want = referenceEncode(OP.sign, fields);
    assert.deepEqual([...encode(OP.sign, fields)], want);
    const dst = new Uint8Array(want.length + 8);
    assert.equal(encodeInto(dst, OP.sign, fields), want.length);
    assert.deepEqual([...dst.subarray(0, want.length)], want);
    assert.equal(encodeInto(new Uint8Array(Math.max(0, want.length - 7)), OP.sign, fields) <= want.length - 7, true);
  }
  assert.equal(encodeInto(new Uint8Array(8), OP.sign, [[1, "x".repeat(20)]]), -1);
  assert.equal(encodeInto(new Uint8Array(1), OP.status), -1);
});

test("str reads ASCII and UTF-8 as TextDecoder does", () => {
  for (const s of ["", "sv=:abc=:", "ä€😀", "a".repeat(5000), "x\u0080y"]) {
    assert.equal(str(new TextEncoder().encode(s)), s);
  }
  assert.equal(str(Uint8Array.of(0xff, 0x41)), new TextDecoder().decode(Uint8Array.of(0xff, 0x41)));
});

test("a request larger than the exec buffer takes the alloc path; neither leaves the request behind", async () => {
  const { inst, srv } = await activeInstance();
  for (const size of [10, 60 << 10, 70 << 10, 1 << 20]) {
    const body = new Uint8Array(size).fill(0x5a);
    const s = sign(inst, [[1, "POST"], [2, ORIGIN], [3, "/big"], [5, body]]);
    assert.ok(verifyProfile(signKey(srv.key), { method: "POST", authority: "app.example", path: "/big", ...s }), "size " + size);
    assert.equal(s.contentDigest, "sha-256=:" + createHash("sha256").update(body).digest("base64") + ":");
    const scratch = new Uint8Array(inst.exports.memory.buffer, inst.scratch, 64 << 10);
    assert.ok(scratch.every((b) => b === 0), "the exec buffer is zeroed after a request of " + size + " bytes");
  }
  assert.notEqual(inst.scratch, 0, "the module has exec");
});

test("the shim's clock gives the module the wall time (created is now, server clock offset applied)", async () => {
  const inst = await newInstance();
  inst.call(OP.policy, [[1, ORIGIN]]);
  const cpub = inst.call(OP.begin, [[1, 1]]).get(1);
  const srv = serverLogin(cpub);
  // The server's clock is 100 s ahead: created follows the server's clock.
  inst.call(OP.finish, [[1, srv.lane], [2, srv.pub], [3, srv.confirm], [4, Date.now() + 100000]]);
  for (let i = 0; i < 3; i++) {
    const s = sign(inst, [[1, "GET"], [2, ORIGIN], [3, "/t"]]);
    const created = Number(/;created=(\d+);/.exec(s.signatureInput)[1]);
    const want = Math.floor(Date.now() / 1000) + 100;
    assert.ok(Math.abs(created - want) <= 1, "created " + created + ", want about " + want);
  }
  const st = inst.call(OP.status);
  assert.ok(Math.abs(num(st.get(4)) / 2 - 100000) < 1000, "clock offset about +100 s (zigzag)");
});

test("a field the encoder refuses is the caller's error: nothing stays in the exec buffer, the instance lives", async () => {
  const { inst } = await activeInstance();
  assert.throws(() => inst.call(OP.sign, [[1, "GET"], [2, ORIGIN], [3, "/written-first"], [5, { not: "bytes" }]]), TypeError);
  const scratch = new Uint8Array(inst.exports.memory.buffer, inst.scratch, 64 << 10);
  assert.ok(scratch.every((b) => b === 0), "the fields written before the bad one are zeroed");
  assert.equal(inst.dead, false);
  sign(inst, [[1, "GET"], [2, ORIGIN], [3, "/after"]]);
});

// A minimal module with one empty function exported under each of names.
function moduleExporting(...names) {
  const te = new TextEncoder();
  const section = (id, body) => [id, body.length, ...body]; // bodies here are under 128 bytes
  const exports = [names.length];
  for (const n of names) exports.push(n.length, ...te.encode(n), 0, 0);
  const bytes = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, ...section(1, [1, 0x60, 0, 0]), ...section(3, [1, 0]), ...section(7, exports), ...section(10, [1, 2, 0, 0x0b])];
  return new WebAssembly.Module(new Uint8Array(bytes));
}

test("a module of another ABI version is refused before use, saying so", async () => {
  await assert.rejects(Instance.create(moduleExporting("exec", "reply")), /from a version of sessionvault before ABI versions; this worker needs sessionvault_abi_\d+: rebuild/);
  await assert.rejects(Instance.create(moduleExporting("sessionvault_abi_1")), /from another version of sessionvault \(sessionvault_abi_1\)/);
  // The real module carries the version this host needs (positive control).
  const real = await newInstance();
  assert.equal(typeof real.exports[ABI_EXPORT], "function");
});
