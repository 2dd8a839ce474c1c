package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
)

// Refusal reasons, sent as the Sv-Error header and the JSON body {"error": reason}. They are part
// of the protocol (PROTOCOL.md section 8): the worker acts on them.
const (
	// 400: the request is malformed; retrying it unchanged will not help.
	reasonMalformed      = "malformed_signature" // Signature-Input/Signature missing parts, not canonical, duplicated or oversize
	reasonProfile        = "profile"             // parses, but not the protocol's signature profile
	reasonDigestMismatch = "digest_mismatch"     // Content-Digest absent, malformed or not the body's
	reasonBadRequest     = "bad_request"         // anything else wrong with the request (JSON, public key, components)
	// 401, the session goes on: the request itself is refused.
	reasonMissing          = "missing_signature"
	reasonBadSignature     = "bad_signature"
	reasonExpiredSignature = "expired_signature" // created too old (or before the store's replay floor)
	reasonFutureSignature  = "future_signature"
	reasonReplay           = "replay"
	reasonBadCredentials   = "bad_credentials" // login only
	// 401, the session is over: the worker wipes its key.
	reasonUserAgent      = "user_agent_mismatch" // the session is revoked
	reasonUnknownSession = "unknown_session"
	reasonRevoked        = "revoked"
	reasonLogout         = "logout"
	reasonRekeyed        = "rekeyed"
	reasonLimitEvicted   = "limit_evicted" // ended by a newer login past MaxSessionsPerUser
	reasonLaneEvicted    = "lane_evicted"  // this lane only: ended by a join past MaxLanesPerSession
	reasonReuse          = "reuse_detected"
	reasonExpired        = "expired"
	// Others.
	reasonCrossSite   = "cross_site"         // 403: login from a cross-site context (Sec-Fetch-Site)
	reasonNeedCookie  = "cookie_required"    // 403: a re-key without the session's join cookie
	reasonNotFound    = "not_found"          // 404: no such endpoint (or login without an Authenticator)
	reasonMethod      = "method_not_allowed" // 405: with Allow (POST; GET, HEAD for the files; GET for events)
	reasonTooLarge    = "body_too_large"     // 413
	reasonUnsupported = "unsupported_media"  // 415: login body is not application/json
	reasonRateLimited = "rate_limited"       // 429
	reasonStoreDown   = "store_unavailable"  // 503: the store failed; fail closed
	reasonUnavailable = "unavailable"        // 503: the authenticator or the server failed
	// 503 with Retry-After: signed before the store's replay floor (the node restarted without
	// a clean Close, so it cannot tell a replay from a first use); the same request signed again
	// after Retry-After seconds is accepted. The worker does that itself.
	reasonRestarted = "restarted"
)

// Deletion reasons recorded in the store (GoneError.Reason) and in audit events.
const (
	goneLogout  = "logout"
	goneRevoked = "revoked"
	goneReuse   = "reuse_detected"
	goneRekeyed = "rekeyed"
	goneLimit   = "limit_evicted"
	// goneLane: one lane ended by a join past MaxLanesPerSession (Store.DeleteLane); the
	// session goes on.
	goneLane    = "lane_evicted"
	goneExpired = "expired"
	// goneUserAgent: a request from another User-Agent (Config.BindUserAgent); later requests
	// are told revoked.
	goneUserAgent = "user_agent_mismatch"
)

var reasonStatus = map[string]int{
	reasonMalformed: 400, reasonProfile: 400, reasonDigestMismatch: 400, reasonBadRequest: 400,
	reasonMissing: 401, reasonBadSignature: 401, reasonExpiredSignature: 401, reasonFutureSignature: 401,
	reasonReplay: 401, reasonUserAgent: 401, reasonBadCredentials: 401,
	reasonUnknownSession: 401, reasonRevoked: 401, reasonLogout: 401, reasonRekeyed: 401, reasonLimitEvicted: 401, reasonLaneEvicted: 401,
	reasonReuse: 401, reasonExpired: 401,
	reasonCrossSite: 403, reasonNeedCookie: 403, reasonNotFound: 404, reasonMethod: 405, reasonTooLarge: 413,
	reasonUnsupported: 415, reasonRateLimited: 429, reasonStoreDown: 503, reasonUnavailable: 503,
	reasonRestarted: 503,
}

// goneReason maps a store deletion reason to the refusal the worker gets.
func goneReason(err error) string {
	var g *GoneError
	if !errors.As(err, &g) {
		return reasonUnknownSession
	}
	return refusalOf(g.Reason)
}

// refusalOf maps a deletion reason (GoneError.Reason) to the refusal reason the worker is told,
// over HTTP and on the event socket: one of the reasons that end the session in the worker.
func refusalOf(gone string) string {
	switch gone {
	case goneLogout:
		return reasonLogout
	case goneReuse:
		return reasonReuse
	case goneRekeyed:
		return reasonRekeyed
	case goneExpired:
		return reasonExpired
	case goneLimit:
		return reasonLimitEvicted
	case goneLane:
		return reasonLaneEvicted
	}
	return reasonRevoked // revoked, user_agent_mismatch and any reason a later version adds
}

// refuse writes a refusal. The body and header carry the reason only; causes go to the log.
func (m *Manager) refuse(w http.ResponseWriter, reason string) {
	status, ok := reasonStatus[reason]
	if !ok {
		status, reason = 503, reasonUnavailable
	}
	h := w.Header()
	h.Del("Sv-Action")
	h["Sv-Error"] = []string{reason}
	h["Content-Type"] = []string{"application/json"}
	h["Cache-Control"] = []string{"no-store"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	switch status {
	case 401:
		h["Www-Authenticate"] = []string{`Signature realm="sessionvault"`}
	case 405:
		if len(h["Allow"]) == 0 {
			h["Allow"] = []string{http.MethodPost}
		}
	case 429:
		h["Retry-After"] = []string{strconv.Itoa(int(m.throttleWindow.Seconds() + 0.999))}
	}
	w.WriteHeader(status)
	w.Write([]byte(`{"error":"` + reason + `"}` + "\n"))
}

// Audit events (attribute "event").
const (
	evCreated       = "created"
	evRotated       = "rotated"
	evRekeyed       = "rekeyed"
	evRekeyRefused  = "rekey_refused" // a re-key without the session's join cookie
	evRevoked       = "revoked"
	evExpired       = "expired"
	evLogout        = "logout"
	evLogoutRefused = "logout_refused" // a same-origin logout whose join cookie does not open
	evReuse         = "reuse_detected"
	evReplay        = "replay_refused"
	evBadSignature  = "bad_signature"
	evSocketRefused = "socket_refused" // the hub's: here, an event socket that failed its challenge by its own doing
	evUnknown       = "unknown_session"
	evLimitEvicted  = "limit_evicted"
	evLaneEvicted   = "lane_evicted"
	evBruteForce    = "brute_force_suspected"
	evLoginFailed   = "login_failed"
	evUserAgent     = "user_agent_mismatch"
	evStoreError    = "store_error"
	evInternal      = "internal_error"
)

// reasonClientGone (audit only): the client closed the request before the login or re-key
// made its session.
const reasonClientGone = "client_gone"

// auditRec is one audit event. Only public values go in: the session handle (never the ID), the
// public lane ID, the user ID, the client address, a reason and a cause (an error message of this
// package, the protocol package or the store, none of which carries key or session-ID bytes).
type auditRec struct {
	event  string
	handle string
	user   string
	lane   string
	client string
	reason string
	cause  error
	extra  []slog.Attr
}

func (m *Manager) audit(ctx context.Context, level slog.Level, a auditRec) {
	if !m.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 7+len(a.extra))
	attrs = append(attrs, slog.String("event", a.event))
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("handle", a.handle)
	add("user", a.user)
	add("lane", a.lane)
	add("client", a.client)
	add("reason", a.reason)
	if a.cause != nil {
		attrs = append(attrs, slog.String("cause", a.cause.Error()))
	}
	attrs = append(attrs, a.extra...)
	m.log.LogAttrs(ctx, level, "sessionvault", attrs...)
}
