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
  abortRekey: 0x0b,
});

// The module's ABI version export (internal/vault.ABIExport; a Go test in js/ checks they agree).
// A module without it was built from another version of sessionvault and is refused before use.
export const ABI_EXPORT = "sessionvault_abi_2";
const ABI_PREFIX = "sessionvault_abi_";

/** Throws if module is not of this host's ABI version, saying which it is and what to do. */
export function checkABI(module) {
  const names = WebAssembly.Module.exports(module).map((e) => e.name);
  if (names.includes(ABI_EXPORT)) return;
  const other = names.find((n) => n.startsWith(ABI_PREFIX));
  throw new Error(
    "vault.wasm is from " + (other ? "another version of sessionvault (" + other + ")" : "a version of sessionvault before ABI versions") +
      "; this worker needs " + ABI_EXPORT + ": rebuild vault.wasm at the version of the Go module that serves this worker",
  );
}

export const STATES = Object.freeze(["empty", "pending", "active", "rotating", "wiped"]);

export const CODES = Object.freeze([
  "bad_message", "unknown_op", "bad_state", "policy_bound", "policy_denied", "no_session",
  "bad_input", "bad_confirm", "bad_event", "replayed_event", "too_large", "internal",
]);

export const MAX_MESSAGE = 8 << 20;

// Requests up to this size go through one long-lived buffer and the module's exec export: one
// call into wasm per operation. Larger ones (bodies) take alloc, call, free, free.
const SCRATCH = 64 << 10;

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

// The length of n as a uvarint.
const uvarintLen = (n) => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5);

/** The bytes of one field value other than an ASCII string. */
function valueBytes(value) {
  if (typeof value === "string") return enc.encode(value);
  if (value instanceof Uint8Array) return value;
  if (typeof value === "number") {
    const b = [];
    uvarint(b, value);
    return Uint8Array.from(b);
  }
  if (Array.isArray(value)) {
    const b = [];
    for (const s of value) {
      const e = enc.encode(s);
      uvarint(b, e.length);
      for (const x of e) b.push(x);
    }
    return Uint8Array.from(b);
  }
  throw new TypeError("bad field value");
}

/**
 * Encodes a request into dst. fields: array of [tag, value] in increasing tag order; value is a
 * string, a Uint8Array, a non-negative integer (number) or an array of strings (a list).
 * @param {Uint8Array} dst
 * @returns {number} the request's length, or -1 if it does not fit in dst
 */
export function encodeInto(dst, code, fields = []) {
  if (dst.length < 2) return -1;
  dst[0] = 1;
  dst[1] = code;
  let o = 2;
  for (const [tag, value] of fields) {
    let bytes = null;
    let n;
    if (typeof value === "string") {
      // Strings are nearly all ASCII (methods, origins, paths): copy them straight in, and at the
      // first other character start the field over as UTF-8.
      n = value.length;
      if (o + 6 + n > dst.length) return -1; // tag + at most 5 bytes of length (n < 2^35)
      const at = o + 1 + uvarintLen(n);
      let i = 0;
      for (; i < n; i++) {
        const c = value.charCodeAt(i);
        if (c >= 0x80) break;
        dst[at + i] = c;
      }
      if (i < n) {
        bytes = enc.encode(value);
        n = bytes.length;
      }
    } else {
      bytes = valueBytes(value);
      n = bytes.length;
    }
    if (o + 6 + n > dst.length) return -1;
    dst[o++] = tag;
    while (n >= 0x80) {
      dst[o++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    dst[o++] = n;
    if (bytes === null) {
      o += value.length; // written above
    } else {
      dst.set(bytes, o);
      o += bytes.length;
    }
  }
  return o;
}

/**
 * Encodes a request (see encodeInto).
 * @returns {Uint8Array}
 */
export function encode(code, fields = []) {
  let size = 2;
  for (const [, value] of fields) size += 6 + (typeof value === "string" ? 3 * value.length : valueBytes(value).length);
  const out = new Uint8Array(size);
  const n = encodeInto(out, code, fields);
  if (n < 0) throw new RangeError("encode: size estimate too small"); // cannot happen: 6 + 3 per UTF-16 unit
  return out.subarray(0, n); // a view: a large body is not copied once more
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

/** Decodes UTF-8; ASCII (signatures, digests) is read byte by byte, without TextDecoder. */
export function str(v) {
  if (v.length > 1024) return dec.decode(v);
  for (let i = 0; i < v.length; i++) if (v[i] >= 0x80) return dec.decode(v);
  return String.fromCharCode.apply(null, v);
}

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
    this.scratch = 0;
    this.replyAt = 0;
    const x = this.exports;
    if (typeof x.exec === "function" && typeof x.reply === "function") {
      this.scratch = x.alloc(SCRATCH);
      this.replyAt = x.reply();
    }
  }

  /**
   * @param {WebAssembly.Module} module
   * @param {{log?: (msg: string) => void}} [opts]
   */
  static async create(module, opts = {}) {
    checkABI(module);
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
    const reply = this.exec(op, fields) || this.raw(encode(op, fields));
    const { status, fields: out } = decode(reply);
    if (status !== 0) {
      const code = CODES[status - 1] || "internal";
      const msg = out.has(1) ? str(out.get(1)) : code;
      throw new VaultError(code, msg);
    }
    return out;
  }

  /**
   * Encodes the request straight into the long-lived buffer and runs it with one exec call.
   * Returns a copy of the reply, or null when the request needs the alloc path (too large, or
   * a module without exec).
   */
  exec(op, fields) {
    if (this.scratch === 0 || this.dead || this.busy) return null;
    return this.#runScratch((dst) => encodeInto(dst, op, fields));
  }

  /**
   * Sends raw request bytes and returns a copy of the raw reply.
   * @param {Uint8Array} req
   */
  raw(req) {
    if (this.dead) throw new VaultError("fatal", "the vault module has failed; create a new vault");
    if (this.busy) throw new VaultError("busy", "re-entrant call into the vault module");
    if (req.length === 0 || req.length > MAX_MESSAGE) throw new VaultError("too_large", "message too large");
    if (this.scratch !== 0 && req.length <= SCRATCH) {
      return this.#runScratch((dst) => {
        dst.set(req);
        return req.length;
      });
    }
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

  /**
   * Lets write(dst) put a request into the long-lived buffer (returning its length, or -1 if it
   * does not fit), runs it with exec and returns a copy of the reply (null if it did not fit).
   */
  #runScratch(write) {
    const x = this.exports;
    this.busy = true;
    try {
      const dst = new Uint8Array(x.memory.buffer, this.scratch, SCRATCH);
      let n;
      try {
        n = write(dst);
      } catch (e) {
        dst.fill(0); // a caller's bad field: leave nothing of the request behind, the instance is fine
        throw e;
      }
      if (n < 0) {
        dst.fill(0); // what was written of a request too large for the buffer
        return null;
      }
      try {
        const rn = x.exec(this.scratch, n);
        // Copy out before anything else runs: memory.buffer is replaced when memory grows.
        return new Uint8Array(x.memory.buffer, this.replyAt, rn).slice();
      } catch (e) {
        this.dead = true;
        throw new VaultError("fatal", "the vault module trapped: " + (e && e.message));
      }
    } finally {
      this.busy = false;
    }
  }
}
