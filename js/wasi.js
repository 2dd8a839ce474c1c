// The WASI preview-1 shim for the Sessionvault module: only what a Go wasip1 reactor calls.
// random_get uses crypto.getRandomValues and nothing else; poll_oneoff reports every subscription
// as fired at once (the Go runtime calls it at each GC and dies on ENOSYS); every other call
// answers EBADF. No file, socket or environment is reachable from the module.

const ESUCCESS = 0;
const EBADF = 8;

/**
 * @param {() => WebAssembly.Memory | undefined} memory returns the instance's memory once known
 * @param {{log?: (msg: string) => void}} [opts]
 * @returns {Record<string, Function>}
 */
export function wasiImports(memory, opts = {}) {
  // One DataView per memory buffer (the buffer is replaced when memory grows).
  let dv = null;
  const view = () => {
    const b = memory().buffer;
    if (dv === null || dv.buffer !== b) dv = new DataView(b);
    return dv;
  };
  const bytes = (p, n) => new Uint8Array(memory().buffer, p, n);
  const decoder = new TextDecoder();
  // Writes a time in nanoseconds (a float, exact to its 53 bits) as a u64, without a BigInt.
  const putNs = (out, ns) => {
    ns = Math.round(ns);
    const hi = Math.floor(ns / 4294967296);
    const v = view();
    v.setUint32(out, ns - hi * 4294967296, true);
    v.setUint32(out + 4, hi, true);
  };
  const zeroSizes = (a, b) => {
    view().setUint32(a, 0, true);
    view().setUint32(b, 0, true);
    return ESUCCESS;
  };
  return {
    args_sizes_get: zeroSizes,
    environ_sizes_get: zeroSizes,
    args_get: () => ESUCCESS,
    environ_get: () => ESUCCESS,
    clock_res_get(_id, out) {
      view().setBigUint64(out, 1000n, true);
      return ESUCCESS;
    },
    clock_time_get(id, _precision, out) {
      putNs(out, id === 0 ? (performance.timeOrigin + performance.now()) * 1e6 : performance.now() * 1e6);
      return ESUCCESS;
    },
    random_get(p, n) {
      // getRandomValues fills at most 65536 bytes per call. It throws rather than fall back.
      for (let off = 0; off < n; off += 65536) {
        crypto.getRandomValues(bytes(p + off, Math.min(65536, n - off)));
      }
      return ESUCCESS;
    },
    poll_oneoff(inPtr, outPtr, nsubs, neventsPtr) {
      const v = view();
      for (let i = 0; i < nsubs; i++) {
        const sub = inPtr + i * 48;
        const ev = outPtr + i * 32;
        v.setBigUint64(ev, v.getBigUint64(sub, true), true); // userdata
        v.setUint16(ev + 8, 0, true); // error
        v.setUint8(ev + 10, v.getUint8(sub + 8)); // type
        for (let j = 11; j < 32; j++) v.setUint8(ev + j, 0);
      }
      v.setUint32(neventsPtr, nsubs, true);
      return ESUCCESS;
    },
    fd_write(fd, iovs, iovsLen, nwrittenPtr) {
      if (fd !== 1 && fd !== 2) return EBADF;
      const v = view();
      let n = 0;
      let text = "";
      for (let i = 0; i < iovsLen; i++) {
        const p = v.getUint32(iovs + i * 8, true);
        const len = v.getUint32(iovs + i * 8 + 4, true);
        text += decoder.decode(bytes(p, len));
        n += len;
      }
      if (opts.log) opts.log(text);
      v.setUint32(nwrittenPtr, n, true);
      return ESUCCESS;
    },
    sched_yield: () => ESUCCESS,
    proc_exit(code) {
      throw new WebAssembly.RuntimeError("wasm module exited with code " + code);
    },
  };
}

/**
 * Builds the import object for a compiled module: our shim for the calls it knows, EBADF for
 * every other wasi_snapshot_preview1 import, so that a new Go release importing one more call
 * still links.
 * @param {WebAssembly.Module} module
 * @param {Record<string, Function>} shim
 */
export function importObject(module, shim) {
  const wasi = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== "wasi_snapshot_preview1" || imp.kind !== "function") {
      throw new Error("sessionvault: unexpected wasm import " + imp.module + "." + imp.name);
    }
    wasi[imp.name] = shim[imp.name] || (() => EBADF);
  }
  return { wasi_snapshot_preview1: wasi };
}
