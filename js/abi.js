// The worker ABI (PROTOCOL.md section 7): the TLV codec and a wrapper around one wasm instance.

import { wasiImports, importObject } from "./wasi.js";

export const OP = Object.freeze({
  policy: 0x01,
  begin: 0x02,
  finish: 0x03,
  sign: 0x04,
  rotateBegin: 0x05,
  rotateFinish: 0x06,
  event: 0x07,
  socketAuth: 0x08,
  status: 0x09,
  wipe: 0x0a,
});

export const STATES = Object.freeze(["empty", "pending", "active", "rotating", "wiped"]);

export const CODES = Object.freeze([
  "bad_message", "unknown_op", "bad_state", "policy_bound", "policy_denied", "no_session",
  "bad_input", "bad_confirm", "bad_event", "replayed_event", "too_large", "internal",
]);

export const MAX_MESSAGE = 8 << 20;

const enc = new TextEncoder();
const dec = new TextDecoder();

function uvarint(out, n) {
  // n is a non-negative safe integer (< 2^53).
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
}

/** An error with a code, as the page receives it. */
export class VaultError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "VaultError";
    this.code = code;
  }
}

/**
 * Encodes a request. fields: array of [tag, value] in increasing tag order; value is a string,
 * a Uint8Array, a non-negative integer (number) or an array of strings (a list).
 * @returns {Uint8Array}
 */
export function encode(code, fields = []) {
  const parts = [];
  let size = 2;
  const head = [];
  for (const [tag, value] of fields) {
    let bytes;
    if (typeof value === "string") bytes = enc.encode(value);
    else if (value instanceof Uint8Array) bytes = value;
    else if (typeof value === "number") {
      const b = [];
      uvarint(b, value);
      bytes = Uint8Array.from(b);
    } else if (Array.isArray(value)) {
      const b = [];
      for (const s of value) {
        const e = enc.encode(s);
        uvarint(b, e.length);
        for (const x of e) b.push(x);
      }
      bytes = Uint8Array.from(b);
    } else throw new TypeError("bad field value");
    const h = [tag];
    uvarint(h, bytes.length);
    head.push(Uint8Array.from(h));
    parts.push(bytes);
    size += h.length + bytes.length;
  }
  const out = new Uint8Array(size);
  out[0] = 1;
  out[1] = code;
  let off = 2;
  for (let i = 0; i < parts.length; i++) {
    out.set(head[i], off);
    off += head[i].length;
    out.set(parts[i], off);
    off += parts[i].length;
  }
  return out;
}

/**
 * Decodes a reply into {status, fields: Map<tag, Uint8Array>}. Throws VaultError on garbage.
 * @param {Uint8Array} b
 */
export function decode(b) {
  if (b.length < 2 || b[0] !== 1) throw new VaultError("internal", "malformed reply from module");
  const fields = new Map();
  let i = 2;
  while (i < b.length) {
    const tag = b[i++];
    let n = 0;
    let mul = 1;
    for (;;) {
      if (i >= b.length) throw new VaultError("internal", "malformed reply from module");
      const c = b[i++];
      n += (c & 0x7f) * mul;
      mul *= 0x80;
      if (c < 0x80) break;
    }
    if (i + n > b.length) throw new VaultError("internal", "malformed reply from module");
    fields.set(tag, b.subarray(i, i + n));
    i += n;
  }
  return { status: b[1], fields };
}

/** Reads a uvarint field as a number. */
export function num(v) {
  let n = 0;
  let mul = 1;
  for (const c of v) {
    n += (c & 0x7f) * mul;
    mul *= 0x80;
  }
  return n;
}

export const str = (v) => dec.decode(v);

/**
 * One instance of the wasm module. call() is synchronous and guarded against re-entry; a trap
 * (any exception out of the module) kills the instance for good: every later call throws
 * VaultError("fatal").
 */
export class Instance {
  /** @param {WebAssembly.Instance} instance */
  constructor(instance) {
    this.exports = instance.exports;
    this.busy = false;
    this.dead = false;
  }

  /**
   * @param {WebAssembly.Module} module
   * @param {{log?: (msg: string) => void}} [opts]
   */
  static async create(module, opts = {}) {
    let inst;
    const shim = wasiImports(() => inst.exports.memory, opts);
    inst = await WebAssembly.instantiate(module, importObject(module, shim));
    inst.exports._initialize();
    return new Instance(inst);
  }

  /**
   * Runs one request; returns the reply's fields. Throws VaultError with the module's code.
   * @param {number} op @param {Array<[number, any]>} [fields]
   * @returns {Map<number, Uint8Array>}
   */
  call(op, fields) {
    const reply = this.raw(encode(op, fields));
    const { status, fields: out } = decode(reply);
    if (status !== 0) {
      const code = CODES[status - 1] || "internal";
      const msg = out.has(1) ? str(out.get(1)) : code;
      throw new VaultError(code, msg);
    }
    return out;
  }

  /**
   * Sends raw request bytes and returns a copy of the raw reply.
   * @param {Uint8Array} req
   */
  raw(req) {
    if (this.dead) throw new VaultError("fatal", "the vault module has failed; create a new vault");
    if (this.busy) throw new VaultError("busy", "re-entrant call into the vault module");
    if (req.length === 0 || req.length > MAX_MESSAGE) throw new VaultError("too_large", "message too large");
    this.busy = true;
    const x = this.exports;
    let p = 0;
    try {
      p = x.alloc(req.length);
      if (p === 0) throw new VaultError("too_large", "module refused the allocation");
      new Uint8Array(x.memory.buffer, p, req.length).set(req);
      const res = x.call(p, req.length);
      const rp = Number(BigInt.asUintN(64, res) >> 32n);
      const rn = Number(BigInt.asUintN(32, res));
      // Copy out before anything else runs: memory.buffer is replaced when memory grows.
      const out = new Uint8Array(x.memory.buffer, rp, rn).slice();
      x.free(rp);
      return out;
    } catch (e) {
      if (e instanceof VaultError) throw e;
      this.dead = true;
      throw new VaultError("fatal", "the vault module trapped: " + (e && e.message));
    } finally {
      if (p !== 0 && !this.dead) {
        try {
          x.free(p);
        } catch {
          this.dead = true;
        }
      }
      this.busy = false;
    }
  }
}
