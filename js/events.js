// The worker's event channel: a WebSocket to the server's event endpoint that carries sealed
// events (revoked, rotate, expiring, expired) to this lane. The socket authenticates by answering
// a server challenge with a MAC computed inside wasm; events are verified inside wasm before
// anything happens. No key or ticket crosses the socket. It reconnects with jittered exponential
// backoff, and after a reconnect the server tells it what it missed (a revoked lane is refused).

import { OP, VaultError, num, str } from "./abi.js";

const SUBPROTOCOL = "sessionvault.v1";
const END_REASONS = new Set(["revoked", "logout", "reuse_detected", "rekeyed", "limit_evicted", "lane_evicted", "unknown_session", "expired", "user_agent_mismatch"]);

const b64url = (bytes) => {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
};
const unb64url = (s) => {
  if (typeof s !== "string" || !/^[A-Za-z0-9_-]{1,128}$/.test(s)) throw new VaultError("bad_reply", "bad challenge");
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
};

export class EventChannel {
  /**
   * @param {object} o
   * @param {string} o.url  ws(s):// URL of the event endpoint
   * @param {import("./abi.js").Instance} o.vault
   * @param {(name: string, detail: object) => void} o.emit  page events
   * @param {() => void} o.rotate  starts a rotation (the router's)
   * @param {typeof WebSocket} [o.WebSocket]
   * @param {() => number} [o.random]
   * @param {(fn: () => void, ms: number) => any} [o.setTimeout]
   * @param {(msg: string) => void} [o.log]
   */
  constructor(o) {
    this.url = o.url;
    this.vault = o.vault;
    this.emit = o.emit;
    this.rotate = o.rotate;
    // Called when the server refuses the lane on (re)connect; null: wipe and emit here.
    this.gone = o.gone || null;
    this.WS = o.WebSocket || globalThis.WebSocket;
    this.random = o.random || Math.random; // jitter only: never for anything secret
    this.setTimeout = o.setTimeout || ((fn, ms) => setTimeout(fn, ms));
    this.clearTimeout = o.clearTimeout || ((t) => clearTimeout(t));
    this.log = o.log || (() => {});
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.since = 0; // last event sequence number accepted (public)
    this.ready = false;
    this.connected = null; // what the page was last told (tell)
    this.stats = { connects: 0, refusedEvents: 0 };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.ready = false;
    if (this.timer !== null) this.clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try {
        ws.close(1000, "bye");
      } catch {}
    }
  }

  connect() {
    if (this.stopped) return;
    let ws;
    try {
      ws = new this.WS(this.url, SUBPROTOCOL);
    } catch {
      this.tell(false);
      this.retry();
      return;
    }
    this.ws = ws;
    this.ready = false;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      try {
        if (typeof e.data === "string") this.onControl(ws, e.data);
        else this.onEvent(new Uint8Array(e.data));
      } catch (err) {
        this.log("event channel: " + (err && err.message));
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      this.tell(false);
      this.retry();
    };
    ws.onerror = () => {};
  }

  /** Tells the page when the socket comes up or goes down (changes only; not at stop()). */
  tell(connected) {
    if (this.connected === connected) return;
    this.connected = connected;
    this.emit("channel", { connected });
  }

  retry() {
    if (this.stopped || this.timer !== null) return;
    const base = Math.min(30000, 500 * 2 ** Math.min(this.attempt, 6));
    const delay = Math.round(base * (0.5 + this.random() / 2));
    this.attempt++;
    this.timer = this.setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  onControl(ws, text) {
    if (text.length > 4096) throw new Error("oversize control message");
    const m = JSON.parse(text);
    if (m === null || typeof m !== "object") throw new Error("bad control message");
    switch (m.type) {
      case "challenge": {
        const f = this.vault.call(OP.socketAuth, [[1, unb64url(m.challenge)]]);
        ws.send(JSON.stringify({ type: "auth", keyid: str(f.get(1)), tag: b64url(f.get(2)), since: this.since }));
        return;
      }
      case "ready":
        this.ready = true;
        this.attempt = 0;
        this.stats.connects++;
        this.tell(true);
        return;
      case "refused": {
        const reason = typeof m.reason === "string" ? m.reason.slice(0, 64) : "refused";
        if (END_REASONS.has(reason)) {
          // The lane is gone on the server (revoked, expired, ...) while we were away: the same
          // verdict the next HTTP request would get. Wipe now rather than at the next request
          // (through the router's gone(), which knows whether a re-key in flight replaces it).
          // Let go of the socket too: the server's close that follows is the lane's end, not the
          // socket going down, and must not reach the page as a channel event.
          this.stop();
          if (this.gone) {
            this.gone(reason);
          } else {
            this.vault.call(OP.wipe);
            this.emit(reason === "expired" ? "expired" : "revoked", { reason });
          }
        }
        return;
      }
    }
  }

  onEvent(bytes) {
    let r;
    try {
      r = this.vault.call(OP.event, [[1, bytes]]);
    } catch (e) {
      // Forged, foreign, stale or replayed: ignored (and counted), the session is untouched.
      this.stats.refusedEvents++;
      this.log("event refused: " + (e && e.code));
      return;
    }
    const type = num(r.get(1));
    const reason = str(r.get(2));
    const deadline = r.has(3) ? num(r.get(3)) : 0;
    // The event's sequence number is bytes 22..30 of the sealed event (public); remember it for
    // the resync after a reconnect.
    let seq = 0;
    for (let i = 22; i < 30; i++) seq = seq * 256 + bytes[i];
    this.since = Math.max(this.since, seq);
    switch (type) {
      case 1:
        this.stop();
        this.emit("revoked", { reason: reason || "revoked" });
        break;
      case 2:
        this.rotate();
        break;
      case 3:
        this.emit("expiring", { deadline });
        break;
      case 4:
        this.stop();
        this.emit("expired", { reason: reason || "expired" });
        break;
    }
  }
}
