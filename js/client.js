// Sessionvault's page API: an ES module with no dependencies. The page talks to the vault worker
// through this class and never holds a key.
//
//   import { Vault } from "/sv/client.js";
//   const vault = await Vault.create({ workerURL: "/sv/worker.js" });
//   vault.addEventListener("revoked", (e) => showLogin(e.detail.reason));
//   await vault.login({ user: "alice", password: "..." });
//   const res = await vault.fetch("/api/profile");   // a standard Response

/** An Error with a machine-readable code ("no_session", "policy_denied", "rate_limited", ...). */
export class VaultError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "VaultError";
    this.code = code;
  }
}

const EVENTS = new Set(["ready", "active", "rotated", "rekeyed", "rekey_failed", "expiring", "expired", "revoked", "fatal"]);
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

export class Vault extends EventTarget {
  #worker;
  #next = 1;
  #pending = new Map();
  #dead = null;
  #joined = false;
  #joinError = null;
  #workerURL;
  #opts;
  #channel = null; // BroadcastChannel: logins in other tabs of this origin
  #rejoinAt = 0; // no rejoin starts before this (Date.now() ms)
  #rejoinTimer = null;
  #rejoining = false;
  #rejoinAgain = false;

  /** Use Vault.create. */
  constructor(worker, url = "", opts = {}) {
    super();
    this.#workerURL = url;
    this.#opts = opts;
    this.#attach(worker);
    // Methods that work detached too (fetch: vault.fetch, as fetch-taking libraries want it).
    for (const m of ["fetch", "login", "logout", "status", "terminate"]) this[m] = this[m].bind(this);
  }

  #attach(worker) {
    this.#worker = worker;
    worker.addEventListener("message", (e) => {
      if (this.#worker === worker) this.#onMessage(e.data);
    });
    worker.addEventListener("error", (e) => {
      e.preventDefault?.();
      if (this.#worker === worker) this.#die("the vault worker failed to start (" + this.#workerURL + ": missing, not JavaScript, or refused by the CSP)");
    });
  }

  /** Whether create() joined a live session (a reload or a new tab of it). */
  get joined() {
    return this.#joined;
  }

  /**
   * Why create() did not join a live session it could have (a server refusal code such as
   * "unavailable" or "session_gone"), or null: the page may retry rather than show a login form.
   */
  get joinError() {
    return this.#joinError;
  }

  /**
   * Starts the worker and binds its policy (first write wins, for the worker's whole life). On a
   * reload or in a new tab of a live session, the worker joins that session before this resolves
   * (PROTOCOL.md 3.2): check `await vault.status()` and skip the login form when it is "active".
   * @param {{workerURL?: string|URL, prefix?: string, policy?: {origins?: string[], prefixes?: string[], methods?: string[]}}} [opts]
   * @returns {Promise<Vault>}
   */
  static async create(opts = {}) {
    const url = String(opts.workerURL || "/sv/worker.js");
    const v = new Vault(new Worker(url, { type: "module", name: "sessionvault" }), url, opts);
    const r = await v.#call(Vault.#initMessage(opts));
    v.#joined = r.joined === true;
    v.#joinError = typeof r.joinError === "string" ? r.joinError : null;
    if (opts.followLogins !== false && typeof BroadcastChannel === "function") {
      v.#channel = new BroadcastChannel("sessionvault " + new URL(url, globalThis.location?.href).href);
      v.#channel.onmessage = (e) => {
        if (e.data && e.data.type === "login") v.#requestRejoin();
      };
    }
    return v;
  }

  static #initMessage(opts) {
    const init = { op: "init", policy: opts.policy || {} };
    if (opts.prefix) init.prefix = opts.prefix;
    return init;
  }

  /**
   * Another tab logged in: if this vault holds no session and is idle, a fresh worker joins the
   * new session (only a fresh worker's boot script can carry a join ticket) and replaces this one.
   * Anything that can post to the channel can ask for what a reload does; requests coalesce, at
   * most one attempt every 2 s, and none is lost (a later login is always followed).
   */
  #requestRejoin() {
    if (this.#rejoining) {
      this.#rejoinAgain = true;
      return;
    }
    if (this.#rejoinTimer || this.#dead) return;
    this.#rejoinTimer = setTimeout(() => {
      this.#rejoinTimer = null;
      this.#rejoinAt = Date.now() + 2000;
      this.#rejoining = true;
      this.#rejoin().finally(() => {
        this.#rejoining = false;
        if (this.#rejoinAgain) {
          this.#rejoinAgain = false;
          this.#requestRejoin();
        }
      });
    }, Math.max(0, this.#rejoinAt - Date.now()));
  }

  async #rejoin() {
    if (this.#dead) return;
    if (this.#pending.size) {
      this.#rejoinAgain = true; // busy: try again in 2 s
      return;
    }
    let st;
    try {
      st = await this.status();
    } catch {
      return;
    }
    if (st.state !== "empty" && st.state !== "wiped") return;
    const w = new Worker(this.#workerURL, { type: "module", name: "sessionvault" });
    let active = null;
    const r = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), 10_000);
      w.onerror = () => resolve(null);
      w.onmessage = (e) => {
        const m = e.data;
        if (m === null || typeof m !== "object") return;
        if (m.event === "active") active = m.detail || {};
        else if (m.event === "fatal") resolve(null);
        else if (m.id === 0) resolve(m.ok ? m.result : null);
        else return;
        if (m.id === 0 || m.event === "fatal") clearTimeout(timer);
      };
      w.postMessage({ ...Vault.#initMessage(this.#opts), id: 0 });
    });
    w.onmessage = w.onerror = null;
    // Still idle, and joined: swap. Else the new worker goes, with whatever it holds.
    if (!r || r.joined !== true || this.#dead || this.#pending.size) {
      w.terminate();
      return;
    }
    const old = this.#worker;
    this.#attach(w);
    old.terminate();
    this.#joined = true;
    this.#joinError = null;
    this.dispatchEvent(new CustomEvent("active", { detail: { ...active, joined: true } }));
  }

  /** Logs in; resolves with the status once the key is active. Other tabs' idle vaults join. */
  async login(credentials) {
    const st = await this.#call({ op: "login", credentials });
    this.#channel?.postMessage({ type: "login" });
    return st;
  }

  /** Logs out; the worker wipes its key whatever the server answers. */
  logout() {
    return this.#call({ op: "logout" });
  }

  /** @returns {Promise<{state: string, epoch: number, expires?: number, reason?: string}>} */
  status() {
    return this.#call({ op: "status" });
  }

  /**
   * A signed fetch through the worker, with fetch's signature: input is a URL or a Request, init
   * a RequestInit. Bodies of every kind fetch takes (string, Blob, BufferSource, FormData,
   * URLSearchParams, ReadableStream) are read here and sent whole, with the Content-Type fetch
   * would give them; init.signal aborts the request, in the worker too. Signed API calls go
   * without cookies (credentials: "omit"); credentials, mode, cache, redirect ("error") and
   * referrer are the worker's, whatever init says.
   * @param {RequestInfo|URL} input
   * @param {RequestInit} [init]
   * @returns {Promise<Response>}
   */
  async fetch(input, init = {}) {
    let msg, signal;
    const body = init.body;
    if (!(input instanceof Request) && (body === undefined || body === null || typeof body === "string" || body instanceof ArrayBuffer)) {
      // The common case, without building a Request.
      msg = { op: "fetch", url: this.#url(String(input)), method: (init.method || "GET").toUpperCase() };
      if (init.headers) msg.headers = [...new Headers(init.headers)];
      if (typeof body === "string" && !(msg.headers || []).some(([k]) => k === "content-type")) {
        (msg.headers ||= []).push(["content-type", "text/plain;charset=UTF-8"]); // as fetch does
      }
      if (body !== undefined && body !== null) msg.body = body;
      signal = init.signal;
      if (signal != null && !(signal instanceof AbortSignal)) throw new VaultError("bad_input", "signal must be an AbortSignal");
    } else {
      let req;
      try {
        req = new Request(input, init);
      } catch (e) {
        throw new VaultError("bad_input", String(e && e.message));
      }
      msg = { op: "fetch", url: this.#url(req.url), method: req.method.toUpperCase(), headers: [...req.headers] };
      if (req.body !== null) msg.body = await req.arrayBuffer();
      signal = req.signal;
    }
    const r = await this.#call(msg, signal);
    return new Response(NULL_BODY.has(r.status) ? null : r.body, { status: r.status, statusText: r.statusText, headers: r.headers });
  }

  // The URL resolved as fetch resolves it (against the document's base URL), given to the worker
  // as a path when it is on the page's own origin (which the worker checks faster).
  #url(s) {
    const origin = globalThis.location?.origin;
    const base = globalThis.document?.baseURI ?? globalThis.location?.href;
    if (!origin || !base) return s;
    const sameBase = base.startsWith(origin + "/");
    // Path-absolute, with a base on the page's origin: nothing to resolve.
    if (sameBase && s[0] === "/" && s[1] !== "/" && s[1] !== "\\") return s;
    let u;
    try {
      u = new URL(s, base).href;
    } catch {
      return s; // the worker refuses it with bad_input
    }
    return u.startsWith(origin + "/") ? u.slice(origin.length) : u;
  }

  /** Stops the worker; its memory, key included, goes with it. */
  terminate() {
    this.#channel?.close();
    this.#channel = null;
    clearTimeout(this.#rejoinTimer);
    this.#worker.terminate();
    this.#die("the vault was terminated");
  }

  #call(msg, signal) {
    if (this.#dead) return Promise.reject(new VaultError("fatal", this.#dead));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      if (!signal) {
        this.#pending.set(id, { resolve, reject });
        this.#worker.postMessage({ ...msg, id });
        return;
      }
      const onAbort = () => {
        if (!this.#pending.delete(id)) return;
        reject(signal.reason);
        // The worker aborts its request; its answer to this one is dropped.
        this.#call({ op: "abort", target: id }).catch(() => {});
      };
      const done = (f) => (v) => {
        signal.removeEventListener("abort", onAbort);
        f(v);
      };
      this.#pending.set(id, { resolve: done(resolve), reject: done(reject) });
      signal.addEventListener("abort", onAbort);
      this.#worker.postMessage({ ...msg, id });
    });
  }

  #onMessage(m) {
    if (m === null || typeof m !== "object") return;
    if (typeof m.event === "string") {
      if (!EVENTS.has(m.event)) return;
      if (m.event === "fatal") this.#die("the vault module failed" + (typeof m.detail?.message === "string" ? ": " + m.detail.message : ""));
      this.dispatchEvent(new CustomEvent(m.event, { detail: m.detail || {} }));
      return;
    }
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(new VaultError(String(m.error?.code || "internal"), String(m.error?.message || "vault error")));
  }

  #die(reason) {
    if (this.#dead) return;
    this.#dead = reason;
    for (const p of this.#pending.values()) p.reject(new VaultError("fatal", reason));
    this.#pending.clear();
  }
}
