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

const EVENTS = new Set(["ready", "active", "rotated", "rekeyed", "rekey_failed", "expiring", "expired", "revoked", "fatal", "channel"]);
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
  #joining = null; // the fresh worker of a rejoin, until it is swapped in or let go
  #sessionCalls = 0; // logins and logouts made: a rejoin that saw one start gives way

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

  /**
   * Whether this vault's worker joined a live session: at create() (a reload or a new tab of
   * it), or later, following a login in another tab.
   */
  get joined() {
    return this.#joined;
  }

  /**
   * Why create() did not join a live session it could have (a server refusal code such as
   * "rate_limited", "store_unavailable", "unavailable" or "bad_ticket"), or null: for the first
   * three the page may wait and retry rather than show a login form.
   */
  get joinError() {
    return this.#joinError;
  }

  /**
   * Starts the worker and binds its policy (first write wins, for the worker's whole life). On a
   * reload or in a new tab of a live session, the worker joins that session before this resolves
   * (PROTOCOL.md 3.2): check `await vault.status()` and skip the login form when it is "active".
   * Rejects with a VaultError (code "fatal") if the worker cannot start (a workerURL of another
   * origin included), fails to load, or does not answer within timeoutMs (default 30,000; 0 for
   * no limit). followLogins (default true) lets a login in another tab of this origin reach this
   * vault while it holds no session.
   * @param {{workerURL?: string|URL, prefix?: string, policy?: {origins?: string[], prefixes?: string[], methods?: string[]}, followLogins?: boolean, timeoutMs?: number}} [opts]
   * @returns {Promise<Vault>}
   */
  static async create(opts = {}) {
    // Resolved once, as new Worker resolves it: a rejoin after a pushState starts the same script.
    const base = globalThis.document?.baseURI ?? globalThis.location?.href;
    let url, worker;
    try {
      url = new URL(String(opts.workerURL || "/sv/worker.js"), base).href;
      worker = new Worker(url, { type: "module", name: "sessionvault" });
    } catch (e) {
      // A URL that does not parse, or one of another origin (SecurityError): the worker must be
      // the page's own script.
      throw new VaultError("fatal", "cannot start the vault worker at " + String(opts.workerURL || "/sv/worker.js").slice(0, 200) + ": " + String(e && e.message).slice(0, 200));
    }
    const v = new Vault(worker, url, opts);
    // Listening from the start: a login in another tab while this one starts is not missed.
    if (opts.followLogins !== false && typeof BroadcastChannel === "function") {
      v.#channel = new BroadcastChannel("sessionvault " + url);
      v.#channel.onmessage = (e) => {
        if (e.data && e.data.type === "login") v.#requestRejoin();
      };
    }
    let r;
    let timer;
    const ms = opts.timeoutMs ?? 30_000;
    try {
      const started = v.#call(Vault.#initMessage(opts));
      // A module fetch that never answers would leave create() pending forever.
      const timeout = new Promise((_, reject) => {
        if (ms > 0) timer = setTimeout(() => reject(new VaultError("fatal", "the vault did not start within " + ms + " ms")), ms);
      });
      r = await Promise.race([started, timeout]);
    } catch (e) {
      v.terminate(); // the page has no handle on a vault that failed: nothing may outlive it
      throw e;
    } finally {
      clearTimeout(timer);
    }
    v.#joined = r.joined === true;
    v.#joinError = typeof r.joinError === "string" ? r.joinError : null;
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
    // Busy (a call in flight, or one failed): try again soon, until this vault has a session.
    const later = () => {
      this.#rejoinAt = Math.max(this.#rejoinAt, Date.now() + 250);
      this.#rejoinAgain = true;
    };
    if (this.#pending.size) return later();
    const calls = this.#sessionCalls;
    let st;
    try {
      st = await this.status();
    } catch {
      return later();
    }
    if (st.state !== "empty" && st.state !== "wiped") return;
    this.#rejoinAt = Date.now() + 2000; // a worker start (and a lane) at most every 2 s
    const w = new Worker(this.#workerURL, { type: "module", name: "sessionvault" });
    this.#joining = w;
    let active = null;
    let timer;
    const r = await new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), 10_000);
      w.onerror = () => resolve(null);
      w.onmessage = (e) => {
        const m = e.data;
        if (m === null || typeof m !== "object") return;
        if (m.event === "active") active = m.detail || {};
        else if (m.event === "fatal") resolve(null);
        else if (m.id === 0) resolve(m.ok ? m.result : null);
      };
      w.postMessage({ ...Vault.#initMessage(this.#opts), id: 0 });
    });
    clearTimeout(timer);
    w.onmessage = w.onerror = null;
    const mine = this.#joining === w; // not let go by terminate() meanwhile
    this.#joining = null;
    if (!mine || this.#dead || !r || r.joined !== true) {
      w.terminate();
      return;
    }
    // The page logged in or out meanwhile, or has a call in flight on the old worker: that
    // worker stays (a login's session must not be swapped away); the joined one goes.
    if (this.#sessionCalls !== calls || this.#pending.size) {
      w.terminate();
      return later();
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
    this.#sessionCalls++;
    const st = await this.#call({ op: "login", credentials });
    this.#channel?.postMessage({ type: "login" });
    return st;
  }

  /** Logs out; the worker wipes its key whatever the server answers. */
  logout() {
    this.#sessionCalls++;
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
   * would give them; init.signal aborts the request, in the worker too. A response body of at
   * most 1 MiB arrives whole; a longer one, or one that pauses (a stream: server-sent events,
   * NDJSON), as a stream read as it comes (the signal aborts that reading too, a cancel stops the
   * download, and the session's end fails it). Signed API calls go
   * without cookies (credentials: "omit"); credentials, mode, cache, redirect (not followed:
   * code "redirected") and referrer are the worker's, whatever init says.
   * @param {RequestInfo|URL} input
   * @param {RequestInit} [init]
   * @returns {Promise<Response>}
   */
  async fetch(input, init) {
    init ??= {};
    let msg, signal;
    const body = init.body;
    if (!(input instanceof Request) && (body === undefined || body === null || typeof body === "string" || body instanceof ArrayBuffer)) {
      // The common case, without building a Request.
      msg = { op: "fetch", url: this.#url(String(input)), method: (init.method || "GET").toUpperCase() };
      if (init.headers) {
        try {
          msg.headers = [...new Headers(init.headers)];
        } catch (e) {
          throw new VaultError("bad_input", String(e && e.message));
        }
      }
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
    // Abortable (which costs the worker time) only when the page may abort: a signal of its own,
    // or a Request's, which may carry one.
    if (signal && (init.signal != null || input instanceof Request)) msg.abortable = true;
    const r = await this.#call(msg, signal);
    let out = NULL_BODY.has(r.status) ? null : r.body;
    // A streamed body (one that pauses, or over 1 MiB): the signal aborts its reading too, as
    // fetch's does, and the cancel reaches the worker's download.
    if (signal && out instanceof ReadableStream) out = out.pipeThrough(new TransformStream(), { signal });
    return new Response(out, { status: r.status, statusText: r.statusText, headers: r.headers });
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
    this.#stopFollowing();
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
    if (!p) {
      // The answer to a call the page gave up on (aborted while the answer was on its way):
      // a streamed body nobody will read, whose cancel stops the worker's download.
      if (m.result?.body instanceof ReadableStream) m.result.body.cancel().catch(() => {});
      return;
    }
    this.#pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(new VaultError(String(m.error?.code || "internal"), String(m.error?.message || "vault error")));
  }

  /** Stops following other tabs' logins, and lets a rejoin's worker go. */
  #stopFollowing() {
    this.#channel?.close();
    this.#channel = null;
    clearTimeout(this.#rejoinTimer);
    this.#rejoinTimer = null;
    this.#joining?.terminate();
    this.#joining = null;
  }

  #die(reason) {
    if (this.#dead) return;
    this.#stopFollowing();
    this.#dead = reason;
    for (const p of this.#pending.values()) p.reject(new VaultError("fatal", reason));
    this.#pending.clear();
  }
}
