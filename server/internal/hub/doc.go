// Package hub is the server side of the event socket (PROTOCOL.md section 6): it holds one
// WebSocket per worker lane, authenticates each by a challenge its lane key answers, and delivers
// sealed events (revoked, rotate, expiring, expired) to every connection of a lane.
//
// A [Hub] is an [http.Handler] for the event endpoint. The owner (the server's Manager) gives it
// an Authenticate function that checks a lane's answer, sends events with [Hub.Send], ends a
// lane's connections with [Hub.End] (the event that says so, then the refusal) and stops it
// with [Hub.Shutdown]:
//
//	h := hub.New(hub.Config{Authenticate: m.socketAuth, Logger: log})
//	mux.Handle("/sv/events", h)
//	...
//	sealed, _ := protocol.SealEvent(&eventKey, &protocol.Event{Type: protocol.EventRevoked, ...})
//	h.End(lane, sealed, "revoked")
//
// # Messages
//
// The client MUST offer the subprotocol "sessionvault.v1" (the hub selects it; a request without
// it is answered 400). Control messages are JSON in text frames; events are binary frames.
//
//	server -> client  text    {"type":"challenge","challenge":"<base64url, 32 bytes>"}
//	client -> server  text    {"type":"auth","keyid":"<lane>.<epoch>","tag":"<base64url, 32 bytes>","since":<n>}
//	server -> client  text    {"type":"ready"}
//	server -> client  binary  one sealed event, byte for byte as protocol.SealEvent wrote it
//	server -> client  text    {"type":"refused","reason":"<reason>"}, then a close frame
//
// The challenge is the first message, 32 bytes from crypto/rand, fresh for every connection.
// tag is protocol.SocketAuth(sign key of K(epoch), lane, epoch, challenge):
// HMAC(sign key, "sessionvault/v1 socket-auth" || 0x00 || lane || u32be(epoch) || challenge).
// since is the highest event seq the client has accepted (0 if none, optional); Config.Resync
// may resend what it missed. Base64url is unpadded (RFC 4648 section 5). The auth message MUST
// arrive within Config.AuthTimeout and be at most Config.ReadLimit bytes; members other than
// these four are ignored.
//
// After "ready" the client sends no data messages, only pongs and its close. The server pings
// every Config.PingInterval; a connection silent for Config.PongWait is closed.
//
// A refusal is {"type":"refused","reason":R} followed by a close frame. R is 1 to 64 characters
// of [a-z0-9_]: during authentication it is the reason Authenticate named ([RefusedError]:
// revoked, logout, expired, reuse_detected, rekeyed, limit_evicted, lane_evicted, unknown_session,
// bad_signature, ...), "refused" for any other error, "bad_request" for a malformed auth
// message, "unavailable" without an Authenticate. After "ready" it comes from [Hub.End] or
// [Hub.Close], after the events queued before it (End's own last). A worker receiving a refusal
// whose reason ends the session wipes its key, as it would on the same refusal of an HTTP
// request.
//
// Close codes: 1000 after [Hub.End] or [Hub.Close]; 1001 at [Hub.Shutdown] (the client
// reconnects later); 1008 (policy violation) for a refusal, an auth timeout, a binary auth
// message, a malformed auth message or any data message after "ready"; 1009 for a message over
// Config.ReadLimit; 1002 for a framing error. A client too slow to take its events (its queue of
// Config.SendQueue frames is full) is disconnected without a close frame.
//
// Before the upgrade: a cross-origin request gets 403, a request that is not a WebSocket
// upgrade offering the subprotocol 400, and a hub at Config.MaxConns or shut down 503, each
// with Sv-Error and {"error":reason} like the server's other refusals.
//
// # Security
//
// No key, ticket or session ID crosses the socket: the client proves the lane key by a MAC over
// a fresh challenge, and events are MAC'd under the lane's event key, which the worker checks in
// wasm before acting. A nil Config.CheckOrigin admits same-origin browsers only (cross-site
// WebSocket hijacking); requests without Origin are not from a browser and are admitted, since
// they still have to answer the challenge. Unauthenticated connections count against
// Config.MaxConns and live at most Config.AuthTimeout. A connection of a lane that
// authenticates while [Hub.End] or [Hub.Close] ends the lane is refused too (the hub remembers
// closed lanes for AuthTimeout). Log records hold the event name, the public lane ID, the peer
// address and a reason word; never message content, a challenge, a tag or a keyid.
//
// # Concurrency
//
// A Hub is safe for concurrent use. Each connection has a read pump (its only reader) and a
// write pump (its only writer); [Hub.Send] only puts the sealed bytes in each connection's
// bounded queue, under the lock of one of 64 lane shards, so it never waits for a client and
// never for a connection opening or closing on another shard. A full queue closes that
// connection. Authentication runs in the upgrade request's goroutine, which returns once the
// pumps start.
//
// # Errors
//
// Config.Authenticate reports a refusal with a [*RefusedError] to choose the reason the client
// sees; the wrapped error is only logged (Debug, event socket_refused). The hub's other records:
// socket_bad_frame (Warn), socket_dropped (Info, a slow client), socket_timeout (Info, no pong),
// socket_opened and socket_closed (Debug).
package hub
