// Test helpers: load the real module, and an independent server side of the protocol written
// with node:crypto (X25519, HKDF, HMAC), so the tests cross-check the Go key schedule.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import crypto from "node:crypto";
import { Instance } from "../abi.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const wasmPath = process.env.SV_WASM || path.join(here, "..", "..", "build", "vault.wasm");
export const testdata = path.join(here, "..", "..", "internal", "protocol", "testdata");

let compiled;
export async function newInstance() {
  if (!compiled) {
    let bytes;
    try {
      bytes = readFileSync(wasmPath);
    } catch {
      throw new Error("cannot read " + wasmPath + ": run `make wasm` first");
    }
    compiled = await WebAssembly.compile(bytes);
  }
  return Instance.create(compiled);
}

const SPKI_X25519 = Buffer.from("302a300506032b656e032100", "hex");
const enc = (s) => Buffer.from(s, "utf8");
const u32be = (n) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

export function x25519Pair() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("x25519");
  return { privateKey, pub: publicKey.export({ format: "der", type: "spki" }).subarray(12) };
}

export function x25519(privateKey, peerRaw) {
  const publicKey = crypto.createPublicKey({ key: Buffer.concat([SPKI_X25519, Buffer.from(peerRaw)]), format: "der", type: "spki" });
  return crypto.diffieHellman({ privateKey, publicKey });
}

const sha256 = (...parts) => crypto.createHash("sha256").update(Buffer.concat(parts.map((p) => Buffer.from(p)))).digest();
export const hmac = (key, ...parts) => crypto.createHmac("sha256", key).update(Buffer.concat(parts.map((p) => Buffer.from(p)))).digest();
// HKDF-Expand for one block (L = 32): T(1) = HMAC(PRK, info || 0x01).
const expand = (prk, label) => hmac(prk, enc(label), Buffer.from([1]));

export function epochKey(ikm, salt, lane, epoch) {
  return Buffer.from(crypto.hkdfSync("sha256", ikm, salt, Buffer.concat([enc("sessionvault/v1 epoch-key"), lane, u32be(epoch)]), 32));
}

export const signKey = (k) => expand(k, "sessionvault/v1 sign");
export const eventKey = (k) => expand(k, "sessionvault/v1 event");
const chainKey = (k) => expand(k, "sessionvault/v1 chain");
export const confirm = (k, transcript) => hmac(expand(k, "sessionvault/v1 confirm"), transcript);

/** The server side of a login: returns the reply fields and the epoch key. */
export function serverLogin(clientPub, label = "sessionvault/v1 login") {
  const { privateKey, pub } = x25519Pair();
  const lane = crypto.randomBytes(16);
  const transcript = sha256(enc(label), Buffer.from([0]), clientPub, pub, lane);
  const key = epochKey(x25519(privateKey, clientPub), transcript, lane, 0);
  return { lane, pub, confirm: confirm(key, transcript), key };
}

/** The server side of a rotation from epoch key k to epoch e. */
export function serverRotate(k, lane, e, clientPub) {
  const { privateKey, pub } = x25519Pair();
  const transcript = sha256(enc("sessionvault/v1 rotate"), Buffer.from([0]), lane, u32be(e), clientPub, pub);
  const key = epochKey(Buffer.concat([x25519(privateKey, clientPub), transcript]), chainKey(k), lane, e);
  return { pub, confirm: confirm(key, transcript), key };
}

/** The server side of a re-key from the current epoch key k (PROTOCOL.md 3.4). */
export function serverRekey(k, clientPub) {
  const { privateKey, pub } = x25519Pair();
  const lane = crypto.randomBytes(16);
  const transcript = sha256(enc("sessionvault/v1 rekey"), Buffer.from([0]), clientPub, pub, lane);
  const key = epochKey(Buffer.concat([x25519(privateKey, clientPub), transcript]), expand(k, "sessionvault/v1 rekey-chain"), lane, 0);
  return { lane, pub, confirm: confirm(key, transcript), key };
}

/** Seals an event as PROTOCOL.md section 6 says. */
export function sealEvent(evKey, { type, lane, epoch, seq, time = Date.now(), deadline = 0, reason = "" }) {
  const body = Buffer.alloc(47 + reason.length);
  body[0] = 1;
  body[1] = type;
  Buffer.from(lane).copy(body, 2);
  body.writeUInt32BE(epoch, 18);
  body.writeBigUInt64BE(BigInt(seq), 22);
  body.writeBigInt64BE(BigInt(time), 30);
  body.writeBigInt64BE(BigInt(deadline), 38);
  body[46] = reason.length;
  body.write(reason, 47, "ascii");
  return Buffer.concat([body, hmac(evKey, enc("sessionvault/v1 event-mac"), Buffer.from([0]), body)]);
}

/** Verifies an RFC 9421 profile signature independently of the Go code. */
export function verifyProfile(key, { method, authority, path, query, signatureInput, signature, contentDigest }) {
  const m = /^sv=(\(.*)$/.exec(signatureInput);
  if (!m) throw new Error("no sv member");
  const comps = ['"@method": ' + method, '"@authority": ' + authority, '"@path": ' + path, '"@query": ?' + (query || "")];
  if (contentDigest !== undefined) comps.push('"content-digest": ' + contentDigest);
  const base = comps.join("\n") + '\n"@signature-params": ' + m[1];
  const want = "sv=:" + hmac(key, enc(base)).toString("base64") + ":";
  return want === signature;
}

export const b64url = (b) => Buffer.from(b).toString("base64url");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const jsonReply = (status, obj, headers = {}) => new Response(obj === null ? null : JSON.stringify(obj), { status, headers: { "Content-Type": "application/json", ...headers } });

/**
 * A fake session server for race tests: login, rotate, re-key (chained, PROTOCOL.md 3.4) and
 * logout, per-endpoint processing gates (gates[name]: a promise), reply delivery delays
 * (delay[name]: ms), the requests sent (sent: {name, at}), a hint for the next plain answer
 * (action, with grant as its Sv-Rekey-Grant; the grants re-keys sent are in rekeyGrants), and the cookie jar as the browser sees it (cookie: the session ID of the last
 * Set-Cookie, applied when the reply is delivered; every logout answer clears it, and a logout
 * that is not verified ends the cookie's session, as the Go server's same-origin logout does). sessions: id -> {id, lane, key, epoch, live, gone}.
 */
export function fakeSessionServer() {
  const srv = { sessions: new Map(), byLane: new Map(), cookie: null, action: null, grant: null, rekeyGrants: [], gates: {}, delay: {}, sent: [], t0: Date.now() };
  const deliver = async (name, res, cookie) => {
    if (srv.delay[name]) await sleep(srv.delay[name]);
    if (cookie !== undefined) srv.cookie = cookie;
    return res;
  };
  srv.fetch = async (url, init) => {
    const u = new URL(url);
    const name = u.pathname.slice(4);
    srv.sent.push({ name, at: Date.now() - srv.t0 });
    if (srv.gates[name]) await srv.gates[name];
    const body = init.body ? Buffer.from(init.body) : null;
    if (name === "login") {
      const req = JSON.parse(body.toString());
      const s = serverLogin(Buffer.from(req.pub, "base64url"));
      const id = crypto.randomUUID();
      const sess = { id, lane: s.lane, key: s.key, epoch: 0, live: true };
      srv.sessions.set(id, sess); srv.byLane.set(b64url(s.lane), sess);
      return deliver(name, jsonReply(200, { lane: b64url(s.lane), pub: b64url(s.pub), confirm: b64url(s.confirm), epoch: 0, serverTime: Date.now(), expires: Date.now() + 3600e3 }), id);
    }
    const h = new Headers(init.headers);
    const m = /keyid="([^.]+)\./.exec(h.get("signature-input") || "");
    const sess = m && srv.byLane.get(m[1]);
    if (!sess && name === "logout" && srv.cookie && srv.sessions.get(srv.cookie)?.live) {
      // An unsigned (or unverifiable) logout ends the session its cookie names (PROTOCOL.md 3.2).
      const c = srv.sessions.get(srv.cookie);
      c.live = false; c.gone = "logout";
      return deliver(name, jsonReply(200, { ok: true }), null);
    }
    if (!sess) return deliver(name, jsonReply(401, { error: "missing_signature" }), name === "logout" ? null : undefined);
    if (!sess.live) return deliver(name, jsonReply(401, { error: sess.gone }, { "Sv-Error": sess.gone }), name === "logout" ? null : undefined);
    if (name === "logout") { sess.live = false; sess.gone = "logout"; return deliver(name, jsonReply(200, { ok: true }), null); }
    if (name === "rotate") {
      const C = Buffer.from(JSON.parse(body.toString()).pub, "base64url");
      const r = serverRotate(sess.key, sess.lane, sess.epoch + 1, C);
      sess.key = r.key; sess.epoch++;
      return deliver(name, jsonReply(200, { pub: b64url(r.pub), epoch: sess.epoch, confirm: b64url(r.confirm) }));
    }
    if (name === "rekey") {
      const req = JSON.parse(body.toString());
      srv.rekeyGrants.push(req.grant ?? null);
      const C = Buffer.from(req.pub, "base64url");
      const { lane, pub, key, confirm: conf } = serverRekey(sess.key, C);
      const id = crypto.randomUUID();
      const n = { id, lane, key, epoch: 0, live: true };
      srv.sessions.set(id, n); srv.byLane.set(b64url(lane), n);
      sess.live = false; sess.gone = "rekeyed";
      return deliver(name, jsonReply(200, { lane: b64url(lane), pub: b64url(pub), confirm: b64url(conf), epoch: 0, serverTime: Date.now(), expires: Date.now() + 3600e3 }), id);
    }
    const extra = srv.action ? { "Sv-Action": srv.action, ...(srv.grant ? { "Sv-Rekey-Grant": srv.grant } : {}) } : {};
    return deliver(name, jsonReply(200, {}, extra));
  };
  return srv;
}
