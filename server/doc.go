// Package server is Sessionvault's server library: it issues lane keys at login (X25519 key
// agreement, so the key never travels), verifies every signed request (RFC 9421 hmac-sha256,
// replay-proof), rotates and re-keys, and revokes. PROTOCOL.md is the wire format.
//
// A [Manager] is made from a [Config] whose zero values are the safe defaults; only a [Store] is
// required, an [Authenticator] to serve login, and the built vault.wasm (Config.Module) for the
// handler to serve the module and the page's client.js beside the worker's boot script:
//
//	//go:embed vault.wasm
//	var vaultWasm []byte // GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared ... (README.md)
//
//	m, err := server.New(server.Config{Store: st, StoreKey: key, Authenticator: auth, Module: vaultWasm})
//	mux.Handle("/sv/", m.Handler())           // login, logout, rotate, rekey, join, events, worker.js, vault.wasm, client.js
//	mux.Handle("/api/", m.Require(apiHandler)) // signed requests only
//
// Without Module, vault.wasm and client.js answer 404 (logged once as module_missing): serve
// both yourself beside worker.js.
//
// In a handler behind [Manager.Require], [FromContext] returns the session: user ID, claims, the
// session's handle and the lane. After a privilege change the handler calls
// [Manager.RequireRekey]; the worker then re-keys (new session ID, new keys). Admin code lists a
// user's sessions with [Manager.Sessions] and ends them with [Manager.Revoke] and
// [Manager.RevokeUser].
//
// # Sessions, lanes and keys
//
// A login creates a session (a 32-byte ID from crypto/rand, chosen by the server only) with one
// lane: a 16-byte public lane ID and the epoch-0 key, agreed with the worker by X25519 and
// confirmed. The session ID never leaves the server; logs, [Info] and admin calls name a session
// by its handle, a truncated hash of the ID. Responses ask the worker to rotate (Sv-Action:
// rotate) once a lane's key is older than Config.RotateEvery; a rotation mixes a fresh X25519
// exchange into the key. Nothing extends a session past Config.AbsoluteTimeout from login; a
// session without a verified request for Config.IdleTimeout ends.
//
// # Security
//
// Verification follows PROTOCOL.md section 4.3: one Signature-Input and one Signature line
// (bounded in size), the exact profile, a lane this server issued (strict mode: unknown lanes are
// refused and counted), the HMAC, created within Config.Window and not before the store's replay
// floor, the Content-Digest against the body as read (the handler receives the verified body;
// a request whose body the signature does not cover is refused), the nonce once per lane, the
// timeouts, and optionally the User-Agent (a valid signature from another User-Agent ends the
// session). @path and @query are taken from the request-target as
// sent (r.RequestURI), so a router that rewrites r.URL.Path (http.StripPrefix) does not change
// what is verified. @authority is r.Host (or Config.Authority's answer, behind a proxy that rewrites
// Host), lowercased, without the default port of the connection (443 with TLS, 80 without; either,
// for Config.Authority's answer);
// behind a proxy, forward the original Host or set Config.Authority. Config.ClientAddr, with
// [ForwardedFor], names clients behind proxies for the per-address throttle.
//
// Keys at rest are sealed with AES-256-GCM under a key derived from Config.StoreKey and bound to
// their lane and epoch, so a copy of the store yields no usable key and a sealed key cannot be
// moved to another lane or epoch. Give durable stores a StoreKey kept outside them.
//
// The previous epoch's key stays valid for Config.RotateGrace after a rotation. A request that
// verifies under it later, or a second, different rotation of one epoch, proves that a copy of
// the key exists: the session is revoked (reason reuse_detected) and an ERROR audit event is
// logged. Detection only acts on requests that verify, so knowing a (public) lane ID is not
// enough to get a session revoked; a retried rotation (same worker key) gets the stored answer.
//
// Refused requests from one client address (malformed or bad signatures, unknown sessions,
// replays, failed logins) are counted in a bounded table; past Config.ThrottleThreshold within
// Config.ThrottleWindow every request from that address is answered 429 for the rest of the
// window (except signed requests for lanes this node has verified a request of and still caches
// the verifiers of, so that users sharing the address keep working), and brute_force_suspected
// is logged once. IPv6 addresses count per /64. Login refuses
// bodies that are not application/json and requests with Sec-Fetch-Site: cross-site (login CSRF).
//
// Audit events are log/slog records with message "sessionvault" and the attribute event set to
// created, rotated, rekeyed, rekey_refused (reason cookie_required or client_gone), revoked,
// expired, logout, reuse_detected, replay_refused,
// bad_signature, unknown_session, limit_evicted, brute_force_suspected, login_failed,
// user_agent_mismatch, store_error, internal_error, and for reloads and new tabs ticket_issued,
// ticket_refused (reason: see [Manager.TicketRefusals]), ticket_reuse, joined, join_refused and
// lane_evicted (one lane of the session ended by a join past Config.MaxLanesPerSession),
// socket_opened, socket_refused, socket_timeout, socket_dropped and socket_closed for event
// sockets (socket_refused reason not_websocket, a proxy that drops the upgrade, at Warn at most
// once a minute; reason rate_limited, an address over Config.MaxPendingEventConns), and
// configuration warnings: mounted_elsewhere (once: the Handler serves outside Config.Prefix),
// module_missing (once: vault.wasm or client.js asked for without Config.Module) and
// insecure_transport (at most once a minute: a login over plain HTTP
// to a host other than localhost, whose join cookie browsers drop);
// with handle, user, lane (public), client and reason where known. No record holds a key, a join
// ticket, a session ID, a cookie value or credentials; an
// Authenticator's error text is logged only for errors other than [ErrBadCredentials], and store
// error texts are logged, so neither should quote secrets.
//
// Cross-origin deployments: a worker signing for another origin's API needs that API's CORS
// configuration to allow the Signature-Input, Signature and Content-Digest request headers and
// to expose Sv-Action, Sv-Error and Sv-Rekey-Grant (the sealed claims of a re-key that
// [Manager.RequireRekey] asks for).
//
// # Concurrency
//
// A Manager is safe for concurrent use by any number of requests. Replay checks are atomic in the
// Store, so requests of one lane may be in flight at once and arrive in any order (within the
// 1,024-nonce window). Rotations are compare-and-swap in the Store: of two concurrent rotations
// of one lane, one wins and the other is answered as a retry or detected as reuse. Per lane, the
// HMAC states are cached and their use is serialized by a mutex. Expired sessions are swept (when
// the Store is a [Sweeper]) from request handling at most once a minute, and [Manager.Close]
// waits for a sweep in progress.
//
// # Several nodes
//
// Nodes sharing a store (server/redisstore) share sessions and replay windows, so a request
// accepted by one node is a replay on every other. When the Store is a [Notifier], New starts one
// goroutine that subscribes to the deletions made on every node ([Notice]) and applies them here,
// each lane once a store read confirms it gone: cached verifiers dropped, event connections sent a
// sealed revoked (or expired) event and closed. Pub/sub
// delivers at most once, so a node whose subscription is down (from the loss until it is back and
// has re-checked its cache and connections) answers signed requests 503 store_unavailable rather
// than risk serving a session revoked meanwhile; [Manager.Close] ends the subscription. Every
// node needs the same Config.StoreKey.
//
// # Errors
//
// Refusals are JSON {"error": reason} with the header Sv-Error: reason, and never a 500:
//
//	400 malformed_signature, profile, digest_mismatch, bad_request
//	401 missing_signature, bad_signature, expired_signature, future_signature, replay,
//	    bad_credentials                                    (the session, if any, goes on)
//	401 unknown_session, revoked, logout, rekeyed, limit_evicted, reuse_detected, expired,
//	    user_agent_mismatch                                (the session is over: wipe the key)
//	401 lane_evicted                      (this lane is over, the session goes on: wipe the key)
//	401 bad_ticket, ticket_reuse          (join: the worker stays without a session)
//	403 cross_site, cookie_required (a re-key without the join cookie)   404 not_found
//	405 method_not_allowed (with Allow)   413 body_too_large
//	415 unsupported_media   429 rate_limited
//	503 store_unavailable (the store failed: fail closed), unavailable (the Authenticator or the
//	    server failed; a panic in this package or the Authenticator is recovered and logged)
//	503 restarted, with Retry-After (a store opened without a clean Close cannot tell, for a
//	    few seconds, a replay from a first use; the worker signs idempotent requests again and
//	    resends them: PROTOCOL.md section 8)
//
// The reason sent is separate from the cause, which goes to the audit log. [New] returns errors
// wrapping [ErrConfig]; [Manager.RequireRekey] returns [ErrNoSession] outside a verified request;
// [Manager.Revoke] returns [ErrNotFound] for an unknown handle; other admin errors are the
// Store's.
package server
