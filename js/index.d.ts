/** An Error with a machine-readable code. */
export declare class VaultError extends Error {
  readonly code:
    | "bad_message" | "unknown_op" | "bad_state" | "policy_bound" | "policy_denied" | "no_session"
    | "bad_input" | "bad_confirm" | "bad_event" | "replayed_event" | "too_large" | "internal"
    | "rate_limited" | "fatal" | "bad_reply" | "busy" | "network" | "aborted" | "redirected"
    | (string & {}); // server refusal reasons such as "bad_credentials", "revoked", "expired"
  constructor(code: string, message: string);
}

export interface Policy {
  /**
   * Origins the worker signs for. Default: its own origin only. Others must also be in the
   * server's Config.APIOrigins, or the worker's CSP stops the request.
   */
  origins?: string[];
  /**
   * Path prefixes it signs for page requests ("/api/"). Default: every path. The session
   * endpoints ("/sv/") need not be listed: the worker's own requests there are always signed, and
   * page requests there always refused.
   */
  prefixes?: string[];
  /** Methods it signs for. Default: GET, HEAD, POST, PUT, PATCH, DELETE. */
  methods?: string[];
}

export interface CreateOptions {
  /** URL of the worker boot script, same origin. Default "/sv/worker.js". */
  workerURL?: string | URL;
  /**
   * Prefix of the session endpoints. Default: the worker script's directory ("/sv/" for
   * "/sv/worker.js"), which is where the Go handler serves it ("/sv/" if that directory is not a
   * valid prefix, e.g. the root). Set it only when the boot script
   * is served as a plain file elsewhere. A worker that joins (its boot script came from the
   * Manager with a ticket) always uses its script's directory.
   */
  prefix?: string;
  /** Bound once, when the worker starts; it cannot be changed afterwards. */
  policy?: Policy;
  /**
   * Follow logins in the origin's other tabs (default true; tabs whose vaults use the same
   * workerURL): when another tab logs in and this
   * vault holds no session and has no call in flight, a fresh worker joins the new session (as
   * a reload would) and replaces this one; "active" fires with joined: true. A login or logout
   * this page makes meanwhile wins: the joined worker is let go. false also stops this vault's
   * logins from notifying other tabs.
   */
  followLogins?: boolean;
  /**
   * How long create() waits for the worker to load its module and answer (and join, on a
   * reload) before it rejects with code "fatal" and terminates the worker. Default 30000; 0 waits
   * for ever.
   */
  timeoutMs?: number;
}

export interface Status {
  state: "empty" | "pending" | "active" | "rotating" | "wiped" | "unknown";
  epoch: number;
  /**
   * The session's deadline, Unix ms on the server's clock: the absolute expiry at login, then
   * the deadline of the last `expiring` event (which may be the idle one, if that comes first).
   */
  expires?: number;
  /** Why the key was wiped ("logout", "revoked", "expired", ...). */
  reason?: string;
}

export interface VaultEventMap {
  /**
   * The module is loaded. It fires while `Vault.create` runs, before it resolves, so a page
   * holding the Vault never sees it: `create` resolving means the same.
   */
  ready: CustomEvent<{}>;
  /**
   * After a login. A join (reload, new tab) also emits it, with `joined: true`, but during
   * `Vault.create`, before a page can listen: after `create`, check `status()` instead.
   * Following another tab's login (followLogins), it fires later, with `joined: true`.
   */
  active: CustomEvent<{ expires?: number; joined?: boolean }>;
  rotated: CustomEvent<{ epoch: number }>;
  rekeyed: CustomEvent<{}>;
  /**
   * A re-key the server asked for (a privilege change) failed and the session goes on under its
   * old claims; code says why (cookie_required: the browser lost the join cookie; ask for a new
   * login if the step-up matters). The worker retries on the next hint after 30 s.
   */
  rekey_failed: CustomEvent<{ code: string }>;
  expiring: CustomEvent<{ deadline: number }>;
  expired: CustomEvent<{ reason: string }>;
  /**
   * The key is wiped because the session (or this tab's lane) ended: reason "revoked" (an
   * admin), "logout" (any tab's logout, this page's own logout() included: every logout() fires
   * it once, even in a vault that held no session, so a page can show its login form in one
   * place), "rekeyed", "limit_evicted", "lane_evicted", "reuse_detected", "user_agent_mismatch",
   * "unknown_session".
   */
  revoked: CustomEvent<{ reason: string }>;
  /**
   * The worker's event socket, which pushes revocation, rotation and expiry, came up
   * (connected: true) or went down (false: it reconnects with backoff; meanwhile the worker
   * learns of a revocation at its next request). Fires on changes only, while a session is
   * active (not when the session ends: revoked or expired says that); a socket that never comes up (a proxy that does not pass WebSocket upgrades) gives
   * one connected: false.
   */
  channel: CustomEvent<{ connected: boolean }>;
  /** The worker cannot go on (reason "load_failed" with a message, or "trap"); create() rejects with it. */
  fatal: CustomEvent<{ reason?: string; message?: string }>;
}

export declare class Vault extends EventTarget {
  private constructor(worker: Worker, url?: string);
  /**
   * Starts the worker. Rejects with a VaultError if it or its module fails to load ("fatal", with
   * the reason) or init is refused ("bad_input": a malformed policy or prefix); the worker is
   * terminated either way.
   */
  static create(opts?: CreateOptions): Promise<Vault>;
  /** Whether the worker joined a live session: at create() (a reload, a new tab), or following another tab's login. */
  readonly joined: boolean;
  /**
   * Why create() could not join a live session, or null. "rate_limited" (this address or
   * session is throttled for a while), "store_unavailable" and "unavailable" are worth a wait and a new
   * Vault (a reload) rather than a login form; "bad_ticket", "expired", ... are not.
   */
  readonly joinError: string | null;
  /**
   * Logs in with credentials for the server's Authenticator. Refused with "bad_state" while a
   * login or join is in flight, a logout runs, or a session is active (log out first, to switch
   * users).
   */
  login(credentials: unknown): Promise<Status>;
  logout(): Promise<Status>;
  status(): Promise<Status>;
  /**
   * A signed fetch through the worker, with fetch's signature. Every body fetch takes is read in
   * the page and sent whole, with the Content-Type fetch would give it. init.signal (or the
   * Request's) aborts the request, in the worker too; the promise rejects with the signal's
   * reason. credentials ("omit"), mode, cache, redirect (not followed) and referrer are the worker's.
   * The Response has status, statusText, headers (protocol headers removed) and body (whole up
   * to 1 MiB decoded; a longer one, or one that pauses, streamed as it arrives, aborted by the
   * signal like fetch's and failed when the session ends); its url is
   * empty and redirected false, as for any constructed Response. A redirect is not followed:
   * the promise rejects with code "redirected". Like every method here, it is bound: passing
   * `vault.fetch` to a library that takes a fetch works.
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  terminate(): void;
  addEventListener<K extends keyof VaultEventMap>(type: K, listener: (ev: VaultEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof VaultEventMap>(type: K, listener: (ev: VaultEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}
