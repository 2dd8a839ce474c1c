package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server/internal/fastsig"
)

// Info is the verified session of a request, as [FromContext] returns it.
type Info struct {
	UserID string
	// Handle names the session in logs and admin calls ([Manager.Revoke]); it is a hash, not
	// the session ID, which never leaves the server.
	Handle string
	// Lane is the public ID (base64url) of the worker's lane that signed the request.
	Lane string
	// Epoch is the key epoch the request was signed under.
	Epoch uint32
	// Claims are the claims of the session, from the Authenticator or the last re-key. Each
	// FromContext call returns a copy: changing it changes nothing else (to change a session's
	// claims, use [Manager.RequireRekey]).
	Claims map[string]string
}

type ctxKey struct{}

// reqState is a verified request: what Require puts in the context, and what the signed
// endpoints work with.
type reqState struct {
	// The request's context, extended with this state under ctxKey: one allocation instead of
	// the state plus a context.WithValue.
	context.Context

	info    Info
	sess    *Session
	lane    *Lane
	keyID   protocol.KeyID
	late    bool // signed under the previous epoch after its grace window
	body    []byte
	client  string
	hasBody bool
	now     time.Time // when verification began
}

// Value returns st for ctxKey, else the parent context's value.
func (st *reqState) Value(key any) any {
	if _, ok := key.(ctxKey); ok {
		return st
	}
	return st.Context.Value(key)
}

// FromContext returns the session of a request verified by [Manager.Require].
func FromContext(ctx context.Context) (Info, bool) {
	st, ok := ctx.Value(ctxKey{}).(*reqState)
	if !ok {
		return Info{}, false
	}
	info := st.info
	// The session's map is shared by its requests (and cached): a handler that wrote to it
	// would change what every later request of the session sees.
	info.Claims = maps.Clone(info.Claims)
	return info, true
}

// Header size bounds. Our own Signature-Input is about 200 bytes and Signature 50; the bounds
// leave room for other labels (which are ignored) without letting a request make us parse
// kilobytes of structured fields.
const (
	maxSigInputLen = 4096
	maxSigLen      = 1024
	maxDigestLen   = 1024
)

// Require returns middleware that lets through only requests signed by a live lane, per
// PROTOCOL.md section 4.3, and puts the session in the request context ([FromContext]). next
// receives the body as verified (read in full, up to Config.MaxBody, and checked against its
// Content-Digest); a refused request never reaches next. Successful responses may carry
// Sv-Action: rotate (the lane's key is older than Config.RotateEvery) or Sv-Action: rekey
// (after [Manager.RequireRekey]).
func (m *Manager) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, ok := m.verify(w, r, false, true)
		if !ok {
			return
		}
		m.hints(w, st)
		r2 := r.WithContext(st)
		if st.hasBody {
			r2.Body = &verifiedBody{Reader: bytes.NewReader(st.body)}
			r2.ContentLength = int64(len(st.body))
		} else {
			r2.Body = http.NoBody
			r2.ContentLength = 0
		}
		r2.GetBody = nil
		next.ServeHTTP(w, r2)
	})
}

type verifiedBody struct{ *bytes.Reader }

func (verifiedBody) Close() error { return nil }

// hints sets Sv-Action on a successful response. A due rotation comes first: a re-key that
// cannot complete (a browser without the cookie) must not keep the lane from rotating.
func (m *Manager) hints(w http.ResponseWriter, st *reqState) {
	if st.keyID.Epoch == st.lane.Epoch && st.now.Sub(st.lane.RotatedAt) >= m.rotateEvery {
		w.Header()["Sv-Action"] = []string{"rotate"}
		return
	}
	if grant, ok := m.pending.hint(st.sess.ID); ok {
		m.rekeyHint(w, grant)
	}
}

// verifyRequest runs the whole verification and, on failure, writes the refusal and returns
// false. allowLate lets a request signed under the previous epoch after its grace window through
// with st.late set (the rotate endpoint decides); otherwise such a request revokes the session.
// It reads the lane from the store: st.lane and st.sess are the store's current records.
func (m *Manager) verifyRequest(w http.ResponseWriter, r *http.Request, allowLate bool) (st *reqState, ok bool) {
	return m.verify(w, r, allowLate, false)
}

// verify is verifyRequest; with useFacts, the lane's cached records ([laneFacts]) stand in for
// the store's Lane read while they are usable, so st.lane and st.sess may be up to factsTTL old
// (Require, whose handlers see only Info).
func (m *Manager) verify(w http.ResponseWriter, r *http.Request, allowLate, useFacts bool) (st *reqState, ok bool) {
	defer m.recoverTo(w, r)
	ctx := r.Context()
	now := m.now()
	client := m.clientAddr(r)
	// A throttled address still gets through for a lane this node has verified a request of (its
	// verifiers are still cached: no store read), so that users who share an address with whoever
	// caused the refusals (a NAT, a proxy without ClientAddr) keep working; anything else from it
	// is answered 429 before any store read.
	if m.limiter.Blocked(client, now) && !m.cachedLane(r) {
		m.refuse(w, reasonRateLimited)
		return nil, false
	}
	m.maybeSweep(now)

	// 1. Exactly one line of each field, bounded.
	sigIn, n1 := r.Header["Signature-Input"]
	sig, n2 := r.Header["Signature"]
	if !n1 && !n2 {
		m.refuse(w, reasonMissing)
		return nil, false
	}
	if len(sigIn) != 1 || len(sig) != 1 {
		m.refused(ctx, w, auditRec{event: evBadSignature, client: client, reason: reasonMalformed})
		return nil, false
	}
	if len(sigIn[0]) > maxSigInputLen || len(sig[0]) > maxSigLen {
		m.refused(ctx, w, auditRec{event: evBadSignature, client: client, reason: reasonMalformed})
		return nil, false
	}
	var digest string
	if d := r.Header["Content-Digest"]; len(d) > 1 || len(d) == 1 && (len(d[0]) > maxDigestLen || d[0] == "") {
		m.refused(ctx, w, auditRec{event: evBadSignature, client: client, reason: reasonDigestMismatch})
		return nil, false
	} else if len(d) == 1 {
		digest = d[0]
	}

	// 2. Parse and check the profile: the fast path takes the exact form the worker writes;
	// anything else goes through the reference parser, which also says what is wrong.
	var fs fastsig.Signed
	var ref *protocol.Signed
	p := &fs.Params
	fast := fastsig.Parse(sigIn[0], sig[0], &fs)
	if !fast {
		var err error
		if ref, err = protocol.ParseSigned(sigIn[0], sig[0]); err != nil {
			reason := reasonMalformed
			if errors.Is(err, protocol.ErrProfile) {
				reason = reasonProfile
			}
			m.refused(ctx, w, auditRec{event: evBadSignature, client: client, reason: reason, cause: err})
			return nil, false
		}
		p = &ref.Params
	}

	// 3. Look up the lane, unless this node may have missed revocations (fanout.go).
	if !m.fanoutReady(w) {
		return nil, false
	}
	// The records cached with the lane's verifiers serve while usable (laneFacts: liveness stays
	// the store's, in step 7, and a timeout is decided on a fresh read); otherwise, and always
	// for the session endpoints, the store's are read.
	var (
		lane  *Lane
		sess  *Session
		ent   *laneVerifiers
		facts *laneFacts
		err   error
	)
	if useFacts {
		if ent = m.verifiers.lookup(p.KeyID.Lane); ent != nil {
			if f := ent.facts.Load(); f != nil && f.usable(p.KeyID.Epoch, now, m.rotateEvery) && !m.expired(f.sess, now) {
				facts, lane, sess = f, f.lane, f.sess
			}
		}
	}
	if facts == nil {
		lane, sess, err = m.store.Lane(ctx, p.KeyID.Lane)
		if err != nil || lane == nil || sess == nil {
			return nil, m.laneError(ctx, w, err, p.KeyID.Lane, client)
		}
		ent = m.verifiers.entry(lane.ID, sess.ID)
		facts = ent.remember(lane, sess, now, factsTTL(m.grace))
	}
	st = &reqState{Context: ctx, sess: sess, lane: lane, keyID: p.KeyID, client: client, hasBody: p.HasBody, now: now}
	rec := auditRec{handle: ent.handle, user: sess.UserID, lane: ent.lane, client: client}

	// 4. The HMAC, under the current epoch's key or the previous one's.
	sealed := sealedKey(lane, p.KeyID.Epoch)
	if sealed == nil {
		// No key to check it with: an epoch this server never issued, or one too old to keep.
		rec.event, rec.reason = evBadSignature, "unknown_epoch"
		m.refusedAs(ctx, w, rec, reasonBadSignature)
		return nil, false
	}
	if p.KeyID.Epoch != lane.Epoch {
		st.late = !now.Before(lane.PrevUntil)
	}
	req := protocol.Request{
		Method:        r.Method,
		Authority:     m.authorityOf(r),
		ContentDigest: digest,
	}
	req.Path, req.Query = target(r)
	openSlot := func() (*verifySlot, error) {
		var k protocol.Key
		if err := m.seal.open(&k, sealed, lane.ID, p.KeyID.Epoch); err != nil {
			return nil, err
		}
		sk := protocol.SignKey(&k)
		k.Wipe()
		defer sk.Wipe()
		return newVerifySlot(p.KeyID.Epoch, &sk), nil
	}
	checkSlot := func(sl *verifySlot) error {
		if fast && fs.HasBody == (digest != "") {
			var err error
			if sl.buf, err = fastsig.AppendBase(sl.buf[:0], &req, &fs); err == nil {
				sl.mac.Reset()
				sl.mac.Write(sl.buf)
				sl.mac.Sum()
				if !sl.mac.Equal(fs.Tag[:]) {
					return protocol.ErrBadSignature
				}
				return nil
			}
		}
		// The reference path, for everything the fast path does not take.
		if ref == nil {
			var err error
			if ref, err = protocol.ParseSigned(sigIn[0], sig[0]); err != nil {
				return err
			}
		}
		return sl.v.Verify(ref, &req)
	}
	verifyReq := func() error { return ent.verify(p.KeyID.Epoch, openSlot, checkSlot) }
	err = verifyReq()
	if err != nil {
		switch {
		case errors.Is(err, errUnseal):
			// A StoreKey that does not open the store's keys (a restart with a random key, a
			// wrong key): the session cannot be used, but keep it for a corrected config.
			rec.event, rec.reason, rec.cause = evInternal, "unseal_failed", err
			m.audit(ctx, slog.LevelError, rec)
			m.refuse(w, reasonUnknownSession)
		case errors.Is(err, protocol.ErrBadSignature):
			rec.event, rec.reason, rec.cause = evBadSignature, reasonBadSignature, proxyHint(r, &req, verifyReq)
			m.refusedAs(ctx, w, rec, reasonBadSignature)
		case errors.Is(err, protocol.ErrDigest):
			rec.event, rec.reason = evBadSignature, reasonDigestMismatch
			m.refusedAs(ctx, w, rec, reasonDigestMismatch)
		default: // a component with control characters or too long
			rec.event, rec.reason, rec.cause = evBadSignature, reasonBadRequest, err
			m.refusedAs(ctx, w, rec, reasonBadRequest)
		}
		return nil, false
	}

	if !ent.verified.Load() { // the lane may let its address past the throttle (cachedLane)
		ent.verified.Store(true)
	}

	// 5. created: in the window, and not before the store's replay memory starts.
	if err := m.window.CheckCreated(p.Created, now); err != nil {
		if errors.Is(err, protocol.ErrFuture) {
			m.refuse(w, reasonFutureSignature)
		} else {
			m.refuse(w, reasonExpiredSignature)
		}
		return nil, false
	}
	// A session that began after the floor has no request from before it, so only older
	// sessions pay the few seconds of refusals after a restart.
	// Not the request's fault, and over in seconds: 503 restarted with the wait after which the
	// worker signs it again (not 401, which applications take for "logged out").
	if m.floor != nil && !sess.Created.After(m.floor.ReplayFloor()) {
		if wait := floorWait(p.Created, m.floor.ReplayFloor(), m.window.Skew); wait > 0 {
			w.Header()["Retry-After"] = []string{strconv.FormatInt(wait, 10)}
			m.refuse(w, reasonRestarted)
			return nil, false
		}
	}

	// 6. The body, read in full and checked against the signed digest before anyone sees it.
	if p.HasBody {
		body, ok := m.readBodyOrRefuse(w, r, m.maxBody)
		if !ok {
			return nil, false
		}
		sum := sha256.Sum256(body)
		if err := protocol.CheckContentDigest(digest, &sum); err != nil {
			rec.event, rec.reason = evBadSignature, reasonDigestMismatch
			m.refusedAs(ctx, w, rec, reasonDigestMismatch)
			return nil, false
		}
		st.body = body
	} else if hasBody(r) {
		// A body the signature does not cover could be anything.
		rec.event, rec.reason = evBadSignature, "uncovered_body"
		m.refusedAs(ctx, w, rec, reasonDigestMismatch)
		return nil, false
	}

	// 7. Replay.
	if err := m.store.Seen(ctx, lane.ID, p.Nonce); err != nil {
		switch {
		case errors.Is(err, ErrReplay):
			rec.event, rec.reason = evReplay, reasonReplay
			m.refusedAs(ctx, w, rec, reasonReplay)
		case errors.Is(err, ErrNotFound):
			m.refuse(w, goneReason(err))
		default:
			m.storeError(ctx, w, rec, err)
		}
		return nil, false
	}

	// 8. Timeouts: absolute from login, idle from the last verified request.
	if m.expired(sess, now) {
		rec.reason = expiryKind(sess, now)
		m.end(ctx, sess, goneExpired, evExpired, rec)
		m.refuse(w, reasonExpired)
		return nil, false
	}

	// 9. A key kept past its grace window: a copy of it exists, if the signature was made after
	// the rotation. One made before it (a request that never reached the server, or was refused
	// before its nonce was recorded, replayed by whoever saw it) proves nothing: refused as late,
	// the session left alone.
	if st.late && !allowLate && p.Created <= lane.RotatedAt.Unix() { // <=: created is whole seconds
		m.refuse(w, reasonExpiredSignature)
		return nil, false
	}
	if st.late && !allowLate {
		m.reuseDetected(ctx, w, sess, rec, "previous epoch used after the grace window")
		return nil, false
	}

	// 10. Optional User-Agent binding. A valid signature from another User-Agent means the key
	// is used outside the browser it was issued to: the session ends.
	if m.bindUA && sess.UserAgent != nil {
		ua := sha256.Sum256([]byte(r.UserAgent()))
		if subtle.ConstantTimeCompare(ua[:], sess.UserAgent) != 1 {
			m.end(ctx, sess, goneUserAgent, evUserAgent, rec)
			m.count(ctx, client, evUserAgent)
			m.refuse(w, reasonUserAgent)
			return nil, false
		}
	}

	// 11. Coarse last-seen (by the newest LastSeen this node knows, its own Touch included).
	if now.UnixNano()-facts.lastSeen.Load() >= int64(m.touch) {
		if err := m.store.Touch(ctx, sess.ID, now); err != nil {
			rec.event, rec.reason, rec.cause = evStoreError, "touch", err
			m.audit(ctx, slog.LevelWarn, rec)
		} else {
			facts.touched(now)
		}
	}

	st.info = Info{
		UserID: sess.UserID,
		Handle: rec.handle,
		Lane:   rec.lane,
		Epoch:  p.KeyID.Epoch,
		Claims: sess.Claims,
	}
	return st, true
}

// floorWait reports whether created (whole seconds) may be before floor, and if so how many
// seconds the signer's clock must move on for its next signature to be safely after it (at least
// 1; counted from created, so a client clock that runs behind or ahead of ours still lands after
// it): a signature made in the second the store started, or before, could have been seen by the
// previous process.
//
// A request accepted just before the store's memory began may carry a created time up to the
// accepted future skew after it, so the floor is moved up by the skew: a restart without a clean
// Close costs a few seconds of refused requests (which the worker signs again and resends), never
// an accepted replay.
func floorWait(created int64, floor time.Time, skew time.Duration) int64 {
	if skew == 0 {
		skew = protocol.DefaultSkew
	}
	f := floor.Add(skew).Unix()
	if floor.Add(skew).Nanosecond() != 0 {
		f++
	}
	if created > f {
		return 0
	}
	return max(f+1-created, 1)
}

// laneError answers a failed lane lookup.
func (m *Manager) laneError(ctx context.Context, w http.ResponseWriter, err error, lane LaneID, client string) bool {
	switch {
	case err == nil || errors.Is(err, ErrNotFound) && !isGone(err):
		// Strict mode: a lane this server did not issue (or long gone) is refused and counted.
		m.refused(ctx, w, auditRec{event: evUnknown, client: client, lane: lane.String(), reason: reasonUnknownSession})
	case isGone(err):
		m.refuse(w, goneReason(err))
	default:
		m.storeError(ctx, w, auditRec{client: client, lane: lane.String()}, err)
	}
	return false
}

func isGone(err error) bool {
	var g *GoneError
	return errors.As(err, &g)
}

// refused logs a counted refusal (audit event at Warn), counts it for the client address, logs
// brute_force_suspected when the count crosses the threshold, and writes the refusal named by
// rec.reason.
func (m *Manager) refused(ctx context.Context, w http.ResponseWriter, rec auditRec) {
	m.refusedAs(ctx, w, rec, rec.reason)
}

func (m *Manager) refusedAs(ctx context.Context, w http.ResponseWriter, rec auditRec, reason string) {
	m.audit(ctx, slog.LevelWarn, rec)
	m.count(ctx, rec.client, rec.event)
	m.refuse(w, reason)
}

// count counts a refusal of client and logs brute_force_suspected when it crosses the threshold.
func (m *Manager) count(ctx context.Context, client, event string) {
	if crossed, n := m.limiter.Add(client, m.now()); crossed {
		m.log.LogAttrs(ctx, slog.LevelWarn, "sessionvault",
			slog.String("event", evBruteForce), slog.String("client", client),
			slog.Int("refusals", n), slog.String("reason", event))
	}
}

// storeError answers 503: the store failed, so we fail closed.
func (m *Manager) storeError(ctx context.Context, w http.ResponseWriter, rec auditRec, err error) {
	rec.event, rec.cause = evStoreError, err
	m.audit(ctx, slog.LevelError, rec)
	m.refuse(w, reasonStoreDown)
}

// reuseDetected revokes the session: a key was used that only a copy could still hold.
func (m *Manager) reuseDetected(ctx context.Context, w http.ResponseWriter, sess *Session, rec auditRec, why string) {
	rec.cause = errors.New(why)
	m.end(ctx, sess, goneReuse, evReuse, rec)
	m.refuse(w, reasonReuse)
}

// end deletes a session for reason, drops its cached verifiers and pending re-key, and logs
// event if this call ended it. A store failure is logged and returned.
func (m *Manager) end(ctx context.Context, sess *Session, reason, event string, rec auditRec) error {
	lanes, err := m.store.Delete(ctx, sess.ID, reason)
	m.lanesGone(lanes, reason)
	m.pending.drop(sess.ID)
	level := slog.LevelInfo
	switch event {
	case evReuse:
		level = slog.LevelError
	case evUserAgent:
		level = slog.LevelWarn
	}
	rec.event = event
	if rec.reason == "" {
		rec.reason = reason
	}
	if rec.handle == "" {
		rec.handle = protocol.SessionHandle(sess.ID)
	}
	if rec.user == "" {
		rec.user = sess.UserID
	}
	if err != nil {
		m.audit(ctx, slog.LevelError, auditRec{event: evStoreError, handle: rec.handle, reason: "delete", cause: err})
		return err
	}
	if len(lanes) > 0 { // this call ended it (not a concurrent one)
		m.audit(ctx, level, rec)
	}
	return nil
}

// authorityOf is @authority: Config.Authority's answer or the Host, lowercased, without the
// scheme's default port (either one, for Config.Authority's, whose scheme is the proxy's).
func (m *Manager) authorityOf(r *http.Request) string {
	var h string
	switch {
	case m.authority != nil:
		return proxiedAuthority(m.authority(r))
	case r.TLS != nil:
		h = strings.TrimSuffix(r.Host, ":443")
	default:
		h = strings.TrimSuffix(r.Host, ":80")
	}
	return lower(h)
}

// proxiedAuthority normalizes a host[:port] whose scheme is not known here (Config.Authority's
// answer, an Origin's host): lowercased, either default port removed.
func proxiedAuthority(h string) string {
	return lower(strings.TrimSuffix(strings.TrimSuffix(h, ":443"), ":80"))
}

// lower is strings.ToLower without an allocation for the usual, already lower-case host.
func lower(h string) string {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// target returns @path and @query as sent on the wire: from the request-target (RequestURI),
// not from r.URL, so that neither Go's re-escaping nor a router's prefix stripping changes what
// is verified. Requests made in-process without a RequestURI use r.URL.
func target(r *http.Request) (path, query string) {
	if u := r.RequestURI; strings.HasPrefix(u, "/") {
		path, query, _ = strings.Cut(u, "?")
		return path, query
	}
	return r.URL.EscapedPath(), r.URL.RawQuery
}

var errBodyTooLarge = errors.New("server: body too large")

// cachedLane reports whether r carries one well-formed signature (the worker's exact form) for
// a lane whose verifiers this node caches and under which a request has verified here.
func (m *Manager) cachedLane(r *http.Request) bool {
	sigIn, sig := r.Header["Signature-Input"], r.Header["Signature"]
	if len(sigIn) != 1 || len(sig) != 1 || len(sigIn[0]) > maxSigInputLen || len(sig[0]) > maxSigLen {
		return false
	}
	var fs fastsig.Signed
	if !fastsig.Parse(sigIn[0], sig[0], &fs) {
		return false
	}
	e := m.verifiers.lookup(fs.Params.KeyID.Lane)
	return e != nil && e.verified.Load()
}

// admit answers a throttled client 429 and reports false; otherwise it runs a sweep that is due.
// Every endpoint that may touch the store starts with it.
func (m *Manager) admit(w http.ResponseWriter, client string, now time.Time) bool {
	if m.limiter.Blocked(client, now) {
		m.refuse(w, reasonRateLimited)
		return false
	}
	m.maybeSweep(now)
	return true
}

// readBodyOrRefuse reads a body of at most limit bytes, or answers the refusal (413 too large,
// 400 cut short) and reports false.
func (m *Manager) readBodyOrRefuse(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if r.ContentLength > limit {
		m.refuse(w, reasonTooLarge)
		return nil, false
	}
	body, err := readBody(r, limit)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			m.refuse(w, reasonTooLarge)
		} else {
			m.refuse(w, reasonBadRequest)
		}
		return nil, false
	}
	return body, true
}

func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return []byte{}, nil
	}
	if n := r.ContentLength; n >= 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, errBodyTooLarge
	}
	return b, nil
}

// hasBody reports whether r has a non-empty body (reading at most one byte of an unknown-length
// one).
func hasBody(r *http.Request) bool {
	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		return false
	case r.ContentLength > 0:
		return true
	}
	var one [1]byte
	n, _ := io.ReadFull(r.Body, one[:])
	return n > 0
}

// sealedKey is the lane's sealed key of epoch: the current one's, or the previous one's while
// the store keeps it; nil for any other epoch.
func sealedKey(lane *Lane, epoch uint32) []byte {
	switch {
	case epoch == lane.Epoch:
		return lane.Key
	case lane.Epoch > 0 && epoch == lane.Epoch-1 && lane.PrevKey != nil:
		return lane.PrevKey
	}
	return nil
}

// proxyHint explains a bad signature that a proxy probably caused, for the audit log: the request
// names another original host than the one it was verified for (Host rewritten, Config.Authority
// unset), or a stripped path prefix. nil otherwise. The values are the client's text: bounded and
// quoted.
//
// With an Origin header (the browser sends one with every request but a same-origin GET or
// HEAD) of another host, it checks the signature again for that host, without side effects: if
// it verifies there, the page signed for its own origin and the Host the request arrived with
// is not that (a proxy that rewrote it or dropped its port). Only refused requests pay for it.
func proxyHint(r *http.Request, req *protocol.Request, verify func() error) error {
	q := func(s string) string {
		if len(s) > 100 {
			s = s[:100] + "..."
		}
		return strconv.Quote(s)
	}
	authority := req.Authority
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err == nil && u.Host != "" && len(u.Host) <= 255 {
			if h := proxiedAuthority(u.Host); h != authority {
				req.Authority = h
				ok := verify() == nil
				req.Authority = authority
				if ok {
					return errors.New("signed for " + q(h) + " (the Origin's host) but the request arrived for host " + q(authority) +
						": a proxy rewrote Host or dropped its port (nginx: proxy_set_header Host $http_host; or set Config.Authority), or a request signed for that origin was sent here")
				}
			}
		}
	}
	if fh := r.Header.Get("X-Forwarded-Host"); fh != "" && proxiedAuthority(fh) != authority {
		return errors.New("verified for host " + q(authority) + " but X-Forwarded-Host is " + q(fh) +
			": a proxy rewrote Host; forward the original Host or set Config.Authority")
	}
	if p := r.Header.Get("X-Forwarded-Prefix"); p != "" {
		return errors.New("X-Forwarded-Prefix is " + q(p) + ": a proxy stripped a path prefix, which the signature covers")
	}
	return nil
}
