// The worker's message router: the only code that turns page messages into vault operations and
// network requests. Every message is hostile until validated; an invalid one gets a typed error
// and changes nothing. No reply or event ever carries key material, a ticket or a session ID:
// the module cannot return them, and this file never asks.

import { OP, STATES, VaultError, num, str } from "./abi.js";
import { EventChannel } from "./events.js";

export const LIMITS = Object.freeze({
  maxBody: 4 << 20, // bytes of a request body from the page
  maxURL: 8192,
  maxHeaders: 64,
  maxHeaderLen: 8192,
  maxCredentials: 16384, // bytes of JSON
  rate: 50, // operations per second, sustained
  burst: 100,
  logoutWaitMs: 5000, // how long a logout waits for a login, join, re-key or rotation in flight
});

// After a re-key that failed without ending the lane, the next one waits this long: the hint
// comes with every response while the application's re-key is pending.
const REKEY_RETRY_MS = 30_000;
// How long a logout gives the requests it aborted to settle.
const ABORT_SETTLE_MS = 1000;
// Resends of a request refused 503 restarted (resendAfter): at most this many, for waits this short.
const RESTART_RETRIES = 2;
const RESTART_MAX_WAIT_S = 10;
// Resends of a rotation left half done (rotate()): 1 s doubling to 30 s, about 2 minutes in all.
const ROTATE_RETRIES = 8;

// A session endpoint prefix: one or more non-empty segments, none "." or "..": "/../" would leave
// the prefix and "//host/" would send login (credentials included) to another origin.
const PREFIX = /^(?=.{1,66}$)(?!.*\/\.{1,2}\/)\/([A-Za-z0-9._~-]+\/)+$/;

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
// Headers the page may not set: ours, ones that would change who is speaking, and the method,
// path and host overrides that frameworks and gateways honour, which would turn a signed GET of
// an allowed path into a DELETE of another one past the policy (the signature covers @method,
// @path and @authority, not these).
const FORBIDDEN = new Set([
  "signature", "signature-input", "content-digest", "cookie", "sv-action", "sv-error", "sv-rekey-grant",
  "x-http-method-override", "x-http-method", "x-method-override", "x-original-method", "x-forwarded-method",
  "x-original-url", "x-rewrite-url", "x-forwarded-uri", "x-forwarded-prefix", "x-forwarded-path",
  "x-forwarded-host", "x-forwarded-proto", "x-forwarded-scheme", "forwarded",
]);
// Response bodies of at most this many bytes reach the page whole, in one transfer (the fastest
// way for API answers); longer ones as a stream, read as they arrive.
const BUFFER_MAX = 1 << 20;
// A body of unknown length whose next part takes longer than this to come is a stream: the page
// gets it as it arrives.
const STREAM_PAUSE_MS = 1;
// Whether a ReadableStream can be transferred to the page (not in every browser's workers):
// without, every body comes whole, as before streaming.
const STREAMS = (() => {
  try {
    const rs = new ReadableStream();
    structuredClone(rs, { transfer: [rs] });
    return true;
  } catch {
    return false;
  }
})();
const PAUSED = Symbol("paused");
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms, PAUSED));

/**
 * A stream of chunks already read, then of next (a pending read of reader, or null), then of the
 * rest of reader. flowing holds it while it flows: a wipe ends it (stop) with an error.
 */
function resumed(reader, chunks, next, flowing) {
  let pending = next;
  let ctrl;
  const entry = {
    stop(reason) {
      flowing.delete(entry);
      try {
        ctrl.error(new Error(reason));
      } catch {}
      reader.cancel(reason).catch(() => {});
    },
  };
  flowing.add(entry);
  return new ReadableStream({
    start(c) {
      ctrl = c;
    },
    async pull(c) {
      if (chunks.length) return c.enqueue(chunks.shift());
      let r;
      try {
        r = await (pending ?? reader.read());
      } catch (e) {
        flowing.delete(entry);
        throw e;
      }
      pending = null;
      if (!flowing.has(entry)) return; // stopped while the read was pending
      if (r.done) {
        flowing.delete(entry);
        c.close();
      } else c.enqueue(r.value);
    },
    cancel(reason) {
      flowing.delete(entry);
      return reader.cancel(reason);
    },
  });
}

// Headers stripped from responses before the page sees them.
const STRIP = new Set(["sv-action", "sv-error", "sv-rekey-grant", "signature", "signature-input"]);
// A rekey grant: the claims of a re-key the application asked for, sealed by the server (opaque
// here), sent back with the re-key so that any node can apply them (PROTOCOL.md 3.4).
const GRANT = /^[A-Za-z0-9_-]{1,4096}$/;
const END_REASONS = new Set(["revoked", "logout", "reuse_detected", "rekeyed", "limit_evicted", "lane_evicted", "unknown_session", "expired", "user_agent_mismatch"]);

const b64url = {
  encode(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
  decode(s, n) {
    if (typeof s !== "string" || !/^[A-Za-z0-9_-]*$/.test(s)) throw new VaultError("bad_reply", "server reply is malformed");
    const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
    const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    if (n !== undefined && out.length !== n) throw new VaultError("bad_reply", "server reply is malformed");
    return out;
  },
};

// A path-absolute URL ("/api/x?y=1") made only of characters the URL parser leaves as they are
// (in a path and in a special scheme's query), with no dot segment, plain or percent-encoded:
// the URL new URL(s, origin) would give, without running the parser (about 0.06 ms of a worker
// woken from idle, a fifth of the vault's own cost of a request). Anything else, null: the
// caller parses it. The node tests check it against new URL on random inputs.
const SIMPLE_URL = /^\/(?!\/)[A-Za-z0-9\-._~!$&()*+,;=:@\/%]*(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@\/?%]+)?$/;
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e)(?:\.|%2e)?(?:\/|$)/i;

export function simpleURL(s, origin) {
  if (!SIMPLE_URL.test(s)) return null;
  const q = s.indexOf("?");
  const pathname = q < 0 ? s : s.slice(0, q);
  if (DOT_SEGMENT.test(pathname)) return null;
  return { origin, pathname, search: q < 0 ? "" : s.slice(q), href: origin + s, username: "", password: "" };
}

// Whether to sign a refused request again and resend it, and after how many seconds (-1: no).
// 503 restarted (a node back from a crash, for a few seconds): after its Retry-After, if short
// enough, for a method that may run twice (the node cannot tell whether its crashed predecessor
// ran that very request: a proxy may have sent it again), for a request the page sent with an
// Idempotency-Key header (the application deduplicates by it), or for the worker's own rotate
// and logout (own: the server answers a repeated one as the first). 401 replay of a GET or HEAD,
// at once and once: our nonces are never reused, so a replay refusal means a copy of this very
// request got there first (a proxy that retried it on another node when the first died
// mid-request), whose answer is lost. A success costs two comparisons.
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);

function resendAfter(res, method, headers, attempt, own) {
  if (res.status === 503) {
    if (res.headers.get("Sv-Error") !== "restarted" || !(own || IDEMPOTENT.has(method) || headers.has("Idempotency-Key"))) return -1;
    const v = res.headers.get("Retry-After");
    const n = v && /^[0-9]{1,2}$/.test(v) ? Number(v) : 0;
    return n >= 1 && n <= RESTART_MAX_WAIT_S ? n : -1;
  }
  if (res.status === 401 && attempt === 0 && (method === "GET" || method === "HEAD") && res.headers.get("Sv-Error") === "replay") return 0;
  return -1;
}

// Resolves after ms, or rejects "aborted" when signal aborts first.
function delay(ms, signal) {
  return new Promise((resolve, reject) => {
    const aborted = () => reject(new VaultError("aborted", "the page aborted the request"));
    if (signal && signal.aborted) return aborted();
    const done = () => {
      if (signal) signal.removeEventListener("abort", stop);
      resolve();
    };
    const t = setTimeout(done, ms);
    const stop = () => {
      clearTimeout(t);
      aborted();
    };
    if (signal) signal.addEventListener("abort", stop, { once: true });
  });
}

// What a login or join refusal means, for the page's VaultError message.
const REFUSALS = {
  bad_credentials: "the server refused the credentials",
  rate_limited: "too many attempts from this address; wait a minute",
  cross_site: "refused: the request came from another site",
  unavailable: "the server could not check the credentials now; try again",
  store_unavailable: "the server's session store is unavailable; try again",
};

// A refusal REFUSALS has no words for: where it came from, and a hint if it is not ours.
function refusalText(res, reason) {
  let path = "the session endpoint";
  try {
    path = new URL(res.url).pathname.slice(0, 100);
  } catch {}
  return path + " answered " + res.status + (reason.startsWith("http_") ? " without a sessionvault reason (is mgr.Handler() mounted there?)" : "");
}

const isPlain = (o) => o !== null && typeof o === "object" && Object.getPrototypeOf(o) === Object.prototype;
const fail = (code, message) => {
  throw new VaultError(code, message);
};

function strings(v, what, max = 32) {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > max || !v.every((s) => typeof s === "string" && s.length <= 256)) {
    fail("bad_input", what + " must be an array of at most " + max + " short strings");
  }
  return v.slice();
}

export class Router {
  /**
   * @param {object} o
   * @param {import("./abi.js").Instance} o.instance
   * @param {typeof fetch} o.fetch
   * @param {(msg: any, transfer?: Transferable[]) => void} o.post   posts to the page
   * @param {string} o.origin  the worker's own origin
   * @param {() => number} [o.now]
   * @param {typeof WebSocket | null} [o.WebSocket]  the event channel's socket; null disables it
   * @param {string} [o.joinURL]  where a join ticket goes: {prefix}join beside the boot script
   * @param {() => string} [o.takeTicket]  hands over the boot script's join ticket, once ("" if none)
   * @param {() => boolean} [o.hasTicket]  whether takeTicket has one to hand over
   * @param {string} [o.joinRefusal]  why the boot script carried no ticket, when a wait may cure it
   * @param {string} [o.reserved]  the boot script's directory: the vault's own endpoints, which the
   *   page may not have the worker fetch (besides the prefix that init binds)
   */
  constructor(o) {
    this.vault = o.instance;
    this.fetch = o.fetch;
    this.post = o.post;
    this.origin = o.origin;
    this.now = o.now || (() => performance.now());
    this.prefix = null; // bound by init, with the policy
    this.tokens = LIMITS.burst;
    this.last = this.now();
    // The rotation and re-key in flight, each with the token of its run (a wipe detaches both),
    // and the state of a half-done rotation's resends.
    this.rotating = null;
    this.rotateRun = null;
    this.rotateTries = 0;
    this.rotateTimer = null;
    this.rekeying = null;
    this.rekeyRun = null;
    this.WebSocket = o.WebSocket === undefined ? globalThis.WebSocket : o.WebSocket;
    this.channel = null;
    // Why the router last wiped the key ("expired", "revoked", ...): the module's wipe op takes
    // no reason and records "logout", so status() reports this one instead. Cleared by a login.
    this.wipedFor = null;
    this.joinURL = o.joinURL || null;
    this.takeTicket = o.takeTicket || (() => "");
    this.hasTicket = o.hasTicket || (() => false);
    // Why the boot script carried no ticket, when a retry may help ("rate_limited", ...), or "".
    this.joinRefusal = typeof o.joinRefusal === "string" && /^[a-z_]{1,32}$/.test(o.joinRefusal) ? o.joinRefusal : "";
    this.reserved = o.reserved && o.reserved !== "/" ? o.reserved : null;
    // Counts the lanes this worker has held (login, join, re-key): a refusal of a request signed
    // under an earlier one says nothing about the current one.
    this.gen = 0;
    // Set while a re-key is in flight when the server has ended the old lane for it (rekeyed):
    // the re-key's reply brings the new lane; if it fails, the worker has no usable key.
    this.laneGone = null;
    // Logins and joins in flight: a logout waits for them, since their reply sets the join
    // cookie of a session that the logout must then end.
    this.handshakes = new Set();
    // The AbortControllers of login, join and re-key requests in flight: a logout that stops
    // waiting for them aborts them, so that a late login or re-key reply cannot set the join
    // cookie of a session of its own, and a late join cannot leave a key behind.
    this.aborts = new Set();
    // The AbortControllers of the page's signed fetches in flight, by message id.
    this.fetching = new Map();
    this.logoutWaitMs = o.logoutWaitMs ?? LIMITS.logoutWaitMs;
    this.streams = o.streams ?? STREAMS; // response bodies may go to the page as streams
    this.flowing = new Set(); // the response streams flowing to the page (ended by a wipe)
    this.loggingOut = 0; // logouts running
    this.channelUp = null; // what the page was last told of the event socket (channel events)
    this.rekeyRetryAt = 0; // after a failed re-key, hints are ignored until then
    this.rekeyGrant = null; // the last rekey grant the server sent with a hint
  }

  /** Runs a login or join handshake, tracked for logout. */
  async handshake(flow) {
    const p = flow();
    this.handshakes.add(p);
    try {
      return await p;
    } finally {
      this.handshakes.delete(p);
    }
  }

  /**
   * fetch, with typed errors: "aborted" (a logout gave up on the request) and "network" (no
   * answer: offline, refused, reset, blocked by CSP or CORS).
   */
  async net(url, init) {
    try {
      return await this.fetch(url, init);
    } catch (e) {
      if (init.signal && init.signal.aborted) fail("aborted", "the request was aborted");
      fail("network", "the request got no answer");
    }
  }

  /**
   * Posts a login or join (unsigned JSON, with the join cookie: its reply sets or uses it) and
   * returns the reply's JSON; a logout may abort it.
   */
  handshakePost(url, body, extra = {}) {
    return this.abortable(async (signal) =>
      this.json(
        await this.net(url, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body,
          credentials: "same-origin",
          redirect: "error",
          cache: "no-store",
          ...extra,
          signal,
        }),
      ),
    );
  }

  /** Runs run(signal) for a login, join or re-key request, which a logout may abort. */
  async abortable(run) {
    const c = new AbortController();
    this.aborts.add(c);
    try {
      return await run(c.signal);
    } finally {
      this.aborts.delete(c);
    }
  }

  /** Starts (or restarts) the event channel of the active lane. */
  startChannel() {
    this.stopChannel();
    if (!this.WebSocket) return;
    const url = new URL(this.endpoint("events"));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.channel = new EventChannel({
      url: url.href,
      vault: this.vault,
      WebSocket: this.WebSocket,
      emit: (name, detail) => {
        if (name === "revoked" && detail && detail.reason === "rekeyed" && this.rekeying) {
          // Our own re-key ended the old lane (the module kept the handshake): wait for its reply.
          this.laneGone = "rekeyed";
          this.channel = null;
          return;
        }
        if (name === "revoked" || name === "expired") {
          // The module has wiped (a rekeyed event outside a re-key of ours included): make sure,
          // and start a new lane generation so that late answers of this one change nothing.
          this.channel = null;
          this.wipeLane(detail && typeof detail.reason === "string" ? detail.reason : name);
        }
        if (name === "channel") {
          // Changes only, while the worker holds a session (a re-key starts a new channel).
          if (this.channelUp === detail.connected) return;
          this.channelUp = detail.connected;
        }
        this.emit(name, detail);
      },
      rotate: () => this.rotate().catch(() => {}),
      gone: (reason) => {
        this.channel = null;
        if (reason === "rekeyed" && this.rekeying) this.laneGone = reason; // the re-key decides
        else this.endLane(reason);
      },
      // Refused (forged, replayed, other-lane) events and socket failures: to the worker's
      // console, never to the page. The messages carry an error code, never event bytes.
      log: (m) => console.warn("[vault events]", m),
    });
    this.channel.start();
  }

  stopChannel() {
    if (this.channel) this.channel.stop();
    this.channel = null;
  }

  /** Handles one message from the page and posts exactly one reply for it. */
  async onMessage(msg) {
    let id = null;
    try {
      if (!isPlain(msg)) fail("bad_message", "message must be a plain object");
      id = msg.id;
      if (!Number.isSafeInteger(id) || id < 0) {
        id = null;
        fail("bad_message", "message id must be a non-negative integer");
      }
      if (msg.op !== "abort") this.take(); // aborting what is in flight is always allowed
      const result = await this.dispatch(msg);
      try {
        this.post({ id, ok: true, result: result.value }, result.transfer || []);
      } catch (e) {
        // Not sent (a stream this browser cannot transfer after all): nobody will read it.
        if (result.value && result.value.body instanceof ReadableStream) result.value.body.cancel().catch(() => {});
        throw e;
      }
    } catch (e) {
      const code = e instanceof VaultError ? e.code : "internal";
      const message = e instanceof VaultError ? e.message : "unexpected failure";
      if (code === "fatal" && !this.fatal) {
        this.fatal = true;
        this.stopChannel();
        this.emit("fatal", { reason: "trap" });
      }
      this.post({ id, ok: false, error: { code, message } });
    }
  }

  take() {
    const t = this.now();
    this.tokens = Math.min(LIMITS.burst, this.tokens + ((t - this.last) / 1000) * LIMITS.rate);
    this.last = t;
    if (this.tokens < 1) fail("rate_limited", "too many operations; slow down");
    this.tokens -= 1;
  }

  emit(event, detail = {}) {
    this.post({ event, detail });
  }

  async dispatch(msg) {
    switch (msg.op) {
      case "init":
        return { value: await this.init(msg) };
      case "login":
        return { value: await this.login(msg) };
      case "fetch":
        return this.signedFetch(msg);
      case "abort":
        return { value: this.abortFetch(msg) };
      case "logout":
        return { value: await this.logout() };
      case "status":
        return { value: this.status() };
      default:
        fail("unknown_op", "unknown operation");
    }
  }

  async init(msg) {
    const p = msg.policy === undefined ? {} : msg.policy;
    if (!isPlain(p)) fail("bad_input", "policy must be a plain object");
    for (const k of Object.keys(p)) {
      if (!["origins", "prefixes", "methods"].includes(k)) fail("bad_input", "unknown policy field " + JSON.stringify(k.slice(0, 40)) + " (the fields are origins, prefixes, methods)");
    }
    // Default: the boot script's directory, where the Manager serves it ({prefix}worker.js).
    const prefix = msg.prefix !== undefined ? msg.prefix : this.reserved && PREFIX.test(this.reserved) ? this.reserved : "/sv/";
    if (typeof prefix !== "string" || !PREFIX.test(prefix)) {
      fail("bad_input", "prefix must look like /sv/");
    }
    const origins = strings(p.origins, "origins");
    // A worker with a ticket was served by the Manager at {prefix}worker.js: its directory is
    // the prefix, whatever the page says, so that a worker page script starts and joins still
    // rotates and hears its events at the real endpoints.
    const bound = this.hasTicket() && this.reserved ? this.reserved : prefix;
    // The session endpoints (where this worker's own rotate, rekey and logout go) are signed
    // whatever the page's prefixes and methods say; page requests for them are refused
    // (refuseOwnEndpoint: the same two prefixes, bound and reserved).
    const endpoints = [...new Set([bound, this.reserved].filter((e) => e && PREFIX.test(e)))];
    this.vault.call(OP.policy, [
      [1, this.origin],
      ...(origins.length ? [[2, origins]] : []),
      ...(p.prefixes ? [[3, strings(p.prefixes, "prefixes")]] : []),
      ...(p.methods ? [[4, strings(p.methods, "methods")]] : []),
      [5, endpoints],
    ]);
    const ticket = this.takeTicket(); // only after the module accepted the (first) policy
    this.prefix = bound;
    const out = { bound: true };
    if (!ticket && this.joinRefusal) {
      // The server had a live session for this browser but gave no ticket, for a reason that a
      // wait may cure (rate_limited, store_unavailable): say so rather than look logged out.
      out.joined = false;
      out.joinError = this.joinRefusal;
    }
    if (ticket) {
      // A reload or a new tab of a live session: join it. Any failure leaves the worker empty
      // (the page logs in); the reason is the only thing the page learns.
      try {
        await this.handshake(() => this.join(ticket));
        out.joined = true;
      } catch (e) {
        out.joined = false;
        out.joinError = e instanceof VaultError ? e.code : "internal";
        // Drop the half-done handshake (its ephemeral key): the worker holds nothing.
        this.wipeLane(out.joinError);
      }
    }
    out.state = this.status().state;
    return out;
  }

  /** Trades the boot script's single-use ticket and a fresh public key for a lane of the session. */
  async join(ticket) {
    if (typeof ticket !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(ticket) || !this.joinURL) fail("bad_ticket", "no usable join ticket");
    const t = b64url.decode(ticket, 32);
    try {
      const pub = this.vault.call(OP.begin, [[1, 2]]).get(1);
      // The cookie (credentials: "same-origin") names the session the ticket is bound to.
      const reply = await this.handshakePost(this.joinURL, '{"pub":"' + b64url.encode(pub) + '","ticket":"' + ticket + '"}', { referrerPolicy: "no-referrer" });
      this.finish(reply, t);
    } finally {
      t.fill(0);
    }
    this.wipedFor = null;
    this.startChannel();
    this.emit("active", { expires: this.status().expires, joined: true });
  }

  endpoint(name) {
    if (this.prefix === null) fail("bad_state", "send init first");
    return new URL(this.prefix + name, this.origin).href;
  }

  async login(msg) {
    if (!("credentials" in msg)) fail("bad_input", "login needs credentials");
    let creds;
    try {
      creds = JSON.stringify(msg.credentials);
    } catch {
      fail("bad_input", "credentials must be JSON-serializable");
    }
    if (creds === undefined || creds.length > LIMITS.maxCredentials) fail("bad_input", "credentials missing or too large");
    // One login at a time, and none over a live session: a second handshake would replace the
    // first one's key pair (both fail, while the server made sessions and set the cookie), and
    // a login over an active lane would leave its session alive and unreachable.
    if (this.handshakes.size) fail("bad_state", "a login or join is already in flight");
    if (this.loggingOut) fail("bad_state", "a logout is in progress");
    const st = this.status().state;
    if (st === "active" || st === "rotating") fail("bad_state", "a session is active: log out first");
    const url = this.endpoint("login");
    const pub = this.vault.call(OP.begin, [[1, 1]]).get(1);
    const reply = await this.handshake(async () => {
      const reply = await this.handshakePost(url, '{"pub":"' + b64url.encode(pub) + '","credentials":' + creds + "}");
      this.finish(reply);
      return reply;
    });
    this.wipedFor = null;
    this.startChannel();
    this.emit("active", { expires: reply.expires });
    return this.status();
  }

  async json(res) {
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      // Aborted after the headers (a logout that stopped waiting): say so, not "malformed".
      if (e && e.name === "AbortError") fail("aborted", "the request was aborted");
    }
    if (!res.ok) {
      const reason = (body && typeof body.error === "string" && /^[a-z_]{1,64}$/.test(body.error) && body.error) || "http_" + res.status;
      fail(reason, REFUSALS[reason] || refusalText(res, reason));
    }
    if (!isPlain(body)) fail("bad_reply", "server reply is malformed");
    return body;
  }

  finish(reply, ticket) {
    const fields = [
      [1, b64url.decode(reply.lane, 16)],
      [2, b64url.decode(reply.pub, 32)],
      [3, b64url.decode(reply.confirm, 32)],
      [4, this.int(reply.serverTime)],
    ];
    if (reply.expires !== undefined) fields.push([5, this.int(reply.expires)]);
    if (ticket) fields.push([6, ticket]);
    const r = this.vault.call(OP.finish, fields);
    this.gen++; // a new lane
    this.rekeyRetryAt = 0;
    this.rekeyGrant = null; // bound to the session it came with
    return r;
  }

  int(v) {
    if (!Number.isSafeInteger(v) || v < 0) fail("bad_reply", "server reply is malformed");
    return v;
  }

  /** Resolves and checks a page request, signs it and sends it. */
  async signedFetch(msg) {
    // Once the page has asked to log out, nothing more goes out under the key it is ending.
    if (this.loggingOut) fail("no_session", "logging out");
    if (typeof msg.url !== "string" || msg.url.length > LIMITS.maxURL) fail("bad_input", "url must be a string of at most 8 KB");
    let url = simpleURL(msg.url, this.origin);
    try {
      url ||= new URL(msg.url, this.origin + "/");
    } catch {
      fail("bad_input", "url does not parse");
    }
    if (url.username || url.password) fail("policy_denied", "urls with credentials are refused");
    this.refuseOwnEndpoint(url.pathname);
    const method = msg.method === undefined ? "GET" : msg.method;
    if (typeof method !== "string" || !METHODS.has(method)) fail("bad_input", "method must be an upper-case HTTP method");
    const headers = new Headers();
    if (msg.headers !== undefined) {
      if (!Array.isArray(msg.headers) || msg.headers.length > LIMITS.maxHeaders) fail("bad_input", "headers must be an array of [name, value] pairs");
      for (const h of msg.headers) {
        if (!Array.isArray(h) || h.length !== 2 || typeof h[0] !== "string" || typeof h[1] !== "string" || h[0].length + h[1].length > LIMITS.maxHeaderLen) {
          fail("bad_input", "headers must be an array of [name, value] string pairs");
        }
        if (FORBIDDEN.has(h[0].toLowerCase())) fail("bad_input", "header " + h[0].toLowerCase() + " is reserved");
        try {
          headers.append(h[0], h[1]);
        } catch {
          fail("bad_input", "invalid header");
        }
      }
    }
    let body = null;
    if (msg.body !== undefined && msg.body !== null) {
      if (typeof msg.body === "string") body = new TextEncoder().encode(msg.body);
      else if (msg.body instanceof ArrayBuffer) body = new Uint8Array(msg.body);
      else if (msg.body instanceof Uint8Array) body = msg.body;
      else fail("bad_input", "body must be a string, ArrayBuffer or Uint8Array");
      if (body.length > LIMITS.maxBody) fail("too_large", "body over " + LIMITS.maxBody + " bytes");
      if (method === "GET" || method === "HEAD") fail("bad_input", "GET and HEAD requests have no body");
    }
    // Abortable only when the page asked (its fetch has a signal): wiring a signal into fetch
    // costs about 0.05 ms of a request.
    const gen = this.gen;
    if (msg.abortable !== true) return this.current(await this.toPage(await this.send(method, url, headers, body)), gen);
    // One fetch per id in flight: a second would make the first one unabortable.
    if (this.fetching.has(msg.id)) fail("bad_message", "message id is in use");
    const c = new AbortController();
    this.fetching.set(msg.id, c);
    try {
      return this.current(await this.toPage(await this.send(method, url, headers, body, "omit", c.signal)), gen);
    } finally {
      if (this.fetching.get(msg.id) === c) this.fetching.delete(msg.id);
    }
  }

  /** Aborts the page's fetch with message id target, if it is still in flight. */
  abortFetch(msg) {
    if (!Number.isSafeInteger(msg.target) || msg.target < 0) fail("bad_input", "target must be a message id");
    const c = this.fetching.get(msg.target);
    if (c) c.abort();
    return { aborted: Boolean(c) };
  }

  /**
   * Refuses a page request for one of the vault's own endpoints, on any origin: signed by the
   * worker, a rotate request carrying the page's public key would move the server to an epoch the
   * worker does not have (then revoke the session as a copied key), and a logout or rekey is the
   * worker's to send. The path is compared as a server's router sees it, percent-decoded.
   */
  refuseOwnEndpoint(pathname) {
    let path;
    try {
      path = pathname.includes("%") ? decodeURIComponent(pathname) : pathname;
    } catch {
      fail("bad_input", "path has a malformed percent-encoding");
    }
    for (const p of [this.reserved, this.prefix]) {
      if (p && path.startsWith(p)) fail("policy_denied", "the vault's own endpoints are the worker's to call");
    }
  }

  /**
   * Signs and sends; reacts to Sv-Action and Sv-Error. Signed API calls go without cookies; the
   * session endpoints that change the join cookie (rekey, logout) pass "same-origin". signal is
   * an AbortSignal for the whole (the page's abort, which also ends a wait for Retry-After), or
   * a function that makes one for each attempt (a bound on each wait for an answer, not on the
   * server's Retry-After: the logout's).
   */
  async send(method, url, headers, body, credentials = "omit", signal = null, own = false) {
    const fields = [
      [1, method],
      [2, url.origin],
      [3, url.pathname],
    ];
    if (url.search.length > 1) fields.push([4, url.search.slice(1)]);
    if (body !== null) fields.push([5, body]);
    const first = this.gen;
    const perAttempt = typeof signal === "function" ? signal : null;
    for (let attempt = 0; ; attempt++) {
      if (perAttempt) signal = perAttempt();
      const gen = this.gen;
      const sig = this.vault.call(OP.sign, fields);
      headers.set("Signature-Input", str(sig.get(1)));
      headers.set("Signature", str(sig.get(2)));
      if (sig.has(3)) headers.set("Content-Digest", str(sig.get(3)));
      const res = await this.net(url.href, {
        method,
        headers,
        body,
        credentials,
        // Not followed (a signature is for one URL), and told apart from a network failure.
        redirect: "manual",
        cache: "no-store",
        mode: url.origin === this.origin ? "same-origin" : "cors",
        referrerPolicy: "no-referrer",
        signal,
      });
      if (res.type === "opaqueredirect") fail("redirected", "the server answered with a redirect, which signed requests do not follow");
      const wait = attempt < RESTART_RETRIES && gen === this.gen ? resendAfter(res, method, headers, attempt, own) : -1;
      if (wait < 0) {
        this.react(res, gen);
        return res;
      }
      // Signed again below with a new nonce and time; a lane wiped meanwhile refuses to sign
      // (no_session), a page abort ends the wait.
      await res.arrayBuffer().catch(() => {});
      if (wait > 0) await delay(wait * 1000, perAttempt ? null : signal);
      // Not under a lane other than the one the page's request was made under (a logout, or a
      // logout and another user's login, during the wait), nor once a logout has begun.
      if (this.gen !== first || (this.loggingOut && !own)) fail("no_session", "the session ended while the request waited to be sent again");
    }
  }

  /** Acts on the server's verdict on a request signed under lane generation gen. */
  react(res, gen) {
    // An answer to a request signed under a lane this worker has since replaced or wiped says
    // nothing about the current one: neither its refusal nor its hints apply.
    if (gen !== this.gen) return;
    const err = res.headers.get("Sv-Error");
    if (err && END_REASONS.has(err)) {
      if (err === "rekeyed" && this.rekeying) {
        this.laneGone = err; // the re-key in flight decides
        return;
      }
      this.endLane(err);
      return;
    }
    const action = res.headers.get("Sv-Action");
    if (action === "rotate") this.rotate().catch(() => {});
    if (action === "rekey") {
      const grant = res.headers.get("Sv-Rekey-Grant");
      if (grant && GRANT.test(grant)) this.rekeyGrant = grant;
      if (this.now() >= this.rekeyRetryAt) this.rekey().catch(() => {});
    }
  }

  async toPage(res) {
    const headers = [];
    res.headers.forEach((v, k) => {
      if (!STRIP.has(k)) headers.push([k, v]);
    });
    const value = { status: res.status, statusText: res.statusText, headers, body: null };
    if (res.body === null || !this.streams) {
      try {
        value.body = await res.arrayBuffer();
      } catch (e) {
        this.bodyFailed(e);
      }
      return { value, transfer: [value.body] };
    }
    // Content-Length is the encoded size (a compressed body decodes larger) and may be hidden on
    // another origin's answer: a hint only. Long by it: a stream at once. Otherwise read here,
    // up to BUFFER_MAX decoded bytes, while the body keeps coming (an API answer, sent chunked or
    // not, ends within a few reads: whole, one transfer, the fastest way); one that grows past
    // BUFFER_MAX, or of unknown length that pauses (server-sent events, NDJSON, a model's
    // tokens), goes on as a stream, with what was read so far first.
    const len = res.headers.get("Content-Length");
    const known = len !== null && /^[0-9]{1,15}$/.test(len);
    const reader = res.body.getReader();
    const chunks = [];
    if (known && Number(len) > BUFFER_MAX) {
      value.body = resumed(reader, chunks, null, this.flowing);
      return { value, transfer: [value.body] };
    }
    let size = 0;
    try {
      for (;;) {
        const next = reader.read();
        const r = known ? await next : await Promise.race([next, pause(STREAM_PAUSE_MS)]);
        if (r === PAUSED || (!r.done && size + r.value.length > BUFFER_MAX)) {
          next.catch(() => {}); // a failure reaches the page through the stream
          value.body = resumed(reader, chunks, next, this.flowing);
          return { value, transfer: [value.body] };
        }
        if (r.done) break;
        chunks.push(r.value);
        size += r.value.length;
      }
    } catch (e) {
      this.bodyFailed(e);
    }
    const buf = new Uint8Array(size);
    for (let i = 0, at = 0; i < chunks.length; at += chunks[i].length, i++) buf.set(chunks[i], at);
    value.body = buf.buffer;
    return { value, transfer: [buf.buffer] };
  }

  /**
   * Refuses a streamed answer to a request made under lane generation gen if the lane has been
   * wiped since (logout, revocation, expiry): the session whose data it streams has ended, and no
   * wipe will end this stream (it was not flowing yet). A whole answer is delivered, as the
   * answer to a request the page made while the session lived.
   */
  current(out, gen) {
    if (gen !== this.gen && out.value.body instanceof ReadableStream) {
      out.value.body.cancel().catch(() => {});
      fail("no_session", "the session ended while the answer was on its way");
    }
    return out;
  }

  /** Throws the typed error of a response body that failed while the worker read it. */
  bodyFailed(e) {
    if (e && e.name === "AbortError") fail("aborted", "the page aborted the request");
    fail("network", "the response body was cut off");
  }

  /**
   * Runs one rotation at a time; an attempt that left the lane half rotated is sent again with
   * the same key, by the next hint or by itself after a backoff.
   */
  rotate() {
    if (this.loggingOut) return Promise.reject(new VaultError("bad_state", "logging out"));
    if (!this.rotating) {
      const gen = this.gen;
      const run = (this.rotateRun = {});
      const p = (async () => {
        try {
          const pub = this.vault.call(OP.rotateBegin).get(1);
          const url = new URL(this.endpoint("rotate"));
          const body = new TextEncoder().encode('{"pub":"' + b64url.encode(pub) + '"}');
          const h = new Headers({ "Content-Type": "application/json" });
          const reply = await this.json(await this.send("POST", url, h, body, "omit", null, true));
          if (this.gen !== gen) fail("no_session", "the lane changed");
          const r = this.vault.call(OP.rotateFinish, [
            [1, b64url.decode(reply.pub, 32)],
            [2, this.int(reply.epoch)],
            [3, b64url.decode(reply.confirm, 32)],
          ]);
          this.stopRotateResends();
          this.emit("rotated", { epoch: num(r.get(2)) });
        } catch (e) {
          // Left half done (no answer, a 5xx, a 429): the server may have rotated already, and it
          // hints nothing to requests signed under the previous epoch and seals its events under
          // the new one, so no hint would come; past the grace it would take the previous key's
          // next use for a copy (reuse_detected). Send it again soon, with the same key (the
          // server answers that as it did the first time): 1 s doubling to 30 s, 8 times.
          if (this.gen === gen && this.status().state === "rotating" && this.rotateTries < ROTATE_RETRIES) {
            this.rotateTries++;
            clearTimeout(this.rotateTimer);
            this.rotateTimer = setTimeout(() => {
              this.rotateTimer = null;
              // Not if a hint's rotation (or a re-key's) completed it meanwhile.
              if (this.gen === gen && this.status().state === "rotating") this.rotate().catch(() => {});
            }, Math.min(30_000, 500 * 2 ** this.rotateTries));
          }
          throw e;
        } finally {
          if (this.rotateRun === run) this.rotateRun = this.rotating = null;
        }
      })();
      if (this.rotateRun === run) this.rotating = p;
      return p;
    }
    return this.rotating;
  }

  rekey() {
    if (this.loggingOut) return Promise.reject(new VaultError("bad_state", "logging out"));
    if (!this.rekeying) {
      this.laneGone = null;
      const gen = this.gen;
      const run = (this.rekeyRun = {});
      const p = (async () => {
        try {
          if (this.rotating) await this.rotating.catch(() => {});
          if (this.gen !== gen) fail("no_session", "the lane changed");
          // A rotation left half done (its request failed) first: a re-key needs an active lane.
          if (this.status().state === "rotating") await this.rotate();
          // A logout that began meanwhile aborts only requests already sent: start none.
          if (this.loggingOut) fail("bad_state", "logging out");
          const pub = this.vault.call(OP.begin, [[1, 3]]).get(1);
          const url = new URL(this.endpoint("rekey"));
          const grant = this.rekeyGrant ? ',"grant":"' + this.rekeyGrant + '"' : "";
          const body = new TextEncoder().encode('{"pub":"' + b64url.encode(pub) + '"' + grant + "}");
          const h = new Headers({ "Content-Type": "application/json" });
          const reply = await this.abortable(async (signal) => this.json(await this.send("POST", url, h, body, "same-origin", signal)));
          if (this.gen !== gen) fail("no_session", "the lane changed");
          this.finish(reply);
          this.startChannel();
          this.emit("rekeyed", {});
        } catch (e) {
          if (this.gen !== gen) throw e; // wiped or replaced meanwhile: nothing of it applies to the lane now
          if (this.laneGone) {
            // The server ended the old lane (for this re-key or another) and this one did not
            // complete: no key is usable any more.
            this.endLane(this.laneGone);
          } else {
            // Refused or lost (network, 503, cookie_required, a malformed reply): the lane goes
            // on as before, free to rotate; the next hint retries, after a pause.
            try {
              this.vault.call(OP.abortRekey);
            } catch {
              /* a dead module: every later call says so */
            }
            this.rekeyRetryAt = this.now() + REKEY_RETRY_MS;
            // The page learns it: an application waiting for a step-up (RequireRekey) may ask
            // for a new login, e.g. after cookie_required (a browser that lost the join cookie).
            this.emit("rekey_failed", { code: e instanceof VaultError ? e.code : "internal" });
          }
          throw e;
        } finally {
          if (this.rekeyRun === run) {
            this.rekeyRun = this.rekeying = this.laneGone = null;
          }
        }
      })();
      // Not if it settled already (a synchronous refusal): a settled promise here would be kept.
      if (this.rekeyRun === run) this.rekeying = p;
      return p;
    }
    return this.rekeying;
  }

  /** The server ended the current lane: wipe the key, stop the channel, tell the page. */
  endLane(reason) {
    this.wipeLane(reason);
    this.emit(reason === "expired" ? "expired" : "revoked", { reason });
  }

  /**
   * Wipes the key and stops the channel; a new lane generation begins, so that late answers to
   * requests signed under this one change nothing. reason is what status() reports.
   */
  wipeLane(reason) {
    // The session's answers still streaming to the page end with it.
    for (const f of [...this.flowing]) f.stop("the session ended: " + reason);
    this.stopChannel();
    this.channelUp = null;
    this.vault.call(OP.wipe);
    this.gen++;
    this.wipedFor = reason;
    // A re-key or rotation of the lane that ended changes nothing of the next one.
    this.rekeyRun = this.rekeying = this.rotateRun = this.rotating = this.laneGone = null;
    this.stopRotateResends();
  }

  /** Forgets a half-done rotation's resends: it completed, or its lane ended. */
  stopRotateResends() {
    clearTimeout(this.rotateTimer);
    this.rotateTimer = null;
    this.rotateTries = 0;
  }

  async logout() {
    this.loggingOut++; // no re-key or rotation starts while any logout runs
    try {
      return await this.logoutNow();
    } finally {
      this.loggingOut--;
    }
  }

  async logoutNow() {
    // A login, join, re-key or rotation in flight first: its reply may set the cookie of a
    // session this logout must end, signed under the key that results. Bounded, so that a request
    // that hangs cannot hang the logout: past the bound, the login, join and re-key requests still
    // in flight are aborted (the browser then stores no cookie from their replies, and a server
    // that sees the client gone makes no session), and the logout's answer drops the join cookie
    // whatever it says, in case a reply had set it just before.
    const deadline = Date.now() + this.logoutWaitMs;
    const inFlight = () => [...this.handshakes, this.rekeying, this.rotating].filter(Boolean);
    let aborted = false;
    for (;;) {
      const left = deadline - Date.now();
      if (!inFlight().length) break;
      if (left <= 0) {
        if (aborted || !this.aborts.size) break;
        aborted = true;
        for (const c of this.aborts) c.abort();
      }
      let timer;
      const limit = new Promise((resolve) => (timer = setTimeout(resolve, left > 0 ? left : ABORT_SETTLE_MS)));
      await Promise.race([Promise.allSettled(inFlight()), limit]);
      clearTimeout(timer);
    }
    let st = this.status();
    // The server pushes the session's end to every lane, this one included: if that event wipes
    // the lane (and tells the page) before the logout's answer arrives, the page is not told twice.
    const gen = this.gen;
    try {
      let res = null;
      if (st.state === "active" || st.state === "rotating") {
        res = await this.send("POST", new URL(this.endpoint("logout")), new Headers(), new Uint8Array(0), "same-origin", () => AbortSignal.timeout(this.logoutWaitMs), true);
      } else if (this.prefix !== null) {
        // No key to sign with (a login aborted above, a lane evicted or wiped, a tab that never
        // logged in): an unsigned logout with the join cookie, which ends the cookie's session
        // (the browser's other tabs too, as any logout does) and drops the cookie (PROTOCOL.md 3.2).
        res = await this.net(this.endpoint("logout"), { method: "POST", credentials: "same-origin", redirect: "error", cache: "no-store", referrerPolicy: "no-referrer", signal: AbortSignal.timeout(this.logoutWaitMs) });
      }
      // Read the (small) answer to its end: an unread body holds the connection until GC.
      if (res) await res.arrayBuffer();
    } catch {
      // The key is wiped below whatever the network says; the server's idle timeout ends a
      // session whose logout did not arrive.
    }
    const told = this.gen !== gen;
    this.wipeLane("logout");
    st = this.status();
    if (!told) this.emit("revoked", { reason: "logout" });
    return st;
  }

  status() {
    const f = this.vault.call(OP.status);
    const out = { state: STATES[num(f.get(1))] || "unknown", epoch: num(f.get(2)) };
    const exp = num(f.get(3));
    if (exp) out.expires = exp;
    if (f.has(5)) out.reason = str(f.get(5));
    if (out.state === "wiped" && this.wipedFor) out.reason = this.wipedFor;
    return out;
  }
}
