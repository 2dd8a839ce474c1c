package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"slices"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// handshakeReply is the reply of login and rekey (PROTOCOL.md section 3.1).
type handshakeReply struct {
	Lane        string `json:"lane"`
	Pub         string `json:"pub"`
	Confirm     string `json:"confirm"`
	Epoch       uint32 `json:"epoch"`
	ServerTime  int64  `json:"serverTime"`
	Expires     int64  `json:"expires"`
	IdleTimeout int64  `json:"idleTimeout"`
	RotateEvery int64  `json:"rotateEvery"`
}

// rotateReply is the reply of rotate (PROTOCOL.md section 3.3).
type rotateReply struct {
	Pub     string `json:"pub"`
	Epoch   uint32 `json:"epoch"`
	Confirm string `json:"confirm"`
}

type loginRequest struct {
	Pub         string          `json:"pub"`
	Credentials json.RawMessage `json:"credentials"`
}

type pubRequest struct {
	Pub string `json:"pub"`
}

// rekeyRequest is the body of {prefix}rekey: the worker's public key and, if the hint carried
// one, the rekey grant (rekey.go).
type rekeyRequest struct {
	Pub   string `json:"pub"`
	Grant string `json:"grant,omitempty"`
}

var b64 = base64.RawURLEncoding

func decodePub(s string) ([protocol.PublicKeySize]byte, bool) {
	var p [protocol.PublicKeySize]byte
	if len(s) != b64.EncodedLen(protocol.PublicKeySize) {
		return p, false
	}
	n, err := b64.Strict().Decode(p[:], []byte(s))
	return p, err == nil && n == protocol.PublicKeySize
}

// readJSON reads an unsigned endpoint's body: application/json, at most limit bytes, decoded into
// v. It answers the refusal itself (415, 413, 400) and reports false. The caller clears the
// returned body (credentials, tickets) when done with v.
func (m *Manager) readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) (body []byte, ok bool) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		m.refuse(w, reasonUnsupported)
		return nil, false
	}
	body, ok = m.readBodyOrRefuse(w, r, limit)
	if !ok {
		return nil, false
	}
	if err := json.Unmarshal(body, v); err != nil {
		m.refuse(w, reasonBadRequest)
		return body, false
	}
	return body, true
}

func writeJSON(w http.ResponseWriter, v any) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Cache-Control"] = []string{"no-store"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	b, _ := json.Marshal(v)
	w.WriteHeader(http.StatusOK)
	w.Write(append(b, '\n'))
}

// finishTimeout bounds the store work of a login or re-key that goes on after its client left
// (its own context is cancelled then, and so are the deadlines of the handler's middleware).
const finishTimeout = 10 * time.Second

// login: POST {prefix}login {"pub", "credentials"}.
func (m *Manager) login(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := m.now()
	client := m.clientAddr(r)
	if !m.admit(w, client, now) {
		return
	}
	// Login CSRF: a cross-site page must not be able to post a login (it would plant a session,
	// and evict the user's oldest ones). Fetch metadata says so where browsers send it; the JSON
	// content type forces a CORS preflight where they do not.
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		m.audit(ctx, slog.LevelWarn, auditRec{event: evLoginFailed, client: client, reason: reasonCrossSite})
		m.refuse(w, reasonCrossSite)
		return
	}
	var req loginRequest
	body, ok := m.readJSON(w, r, m.maxBody, &req)
	defer clear(body) // the credentials
	if !ok {
		return
	}
	defer clear(req.Credentials)
	clientPub, ok := decodePub(req.Pub)
	if !ok {
		m.refuse(w, reasonBadRequest)
		return
	}

	userID, claims, err := m.authenticate(ctx, r, req.Credentials)
	switch {
	case errors.Is(err, ErrBadCredentials):
		// The Authenticator's message is not logged: it may quote what was typed.
		m.refused(ctx, w, auditRec{event: evLoginFailed, client: client, reason: reasonBadCredentials})
		return
	case err != nil:
		m.audit(ctx, slog.LevelError, auditRec{event: evInternal, client: client, reason: "authenticator", cause: err})
		m.refuse(w, reasonUnavailable)
		return
	case userID == "":
		m.audit(ctx, slog.LevelError, auditRec{event: evInternal, client: client, reason: "authenticator returned an empty user ID"})
		m.refuse(w, reasonUnavailable)
		return
	}

	// The browser has given up on this login (a logout that stopped waiting for it aborts it):
	// make no session, which nobody could use, and set no cookie, which a reload would join.
	if ctx.Err() != nil {
		m.audit(ctx, slog.LevelInfo, auditRec{event: evLoginFailed, user: userID, client: client, reason: reasonClientGone})
		m.refuse(w, reasonUnavailable)
		return
	}
	// From here on the login completes even if the client leaves: a store call cut short half
	// way would leave a session without its audit record or its limit enforced.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	var ua []byte
	if m.bindUA {
		h := sha256.Sum256([]byte(r.UserAgent()))
		ua = h[:]
	}
	// The session's creation is now, after the Authenticator (which may take seconds: a password
	// hash, a directory): creation order is then the order in which logins finish, which the
	// session limit relies on (a login ends only older sessions; a slow one that began first
	// must not count as older than one that finished before it).
	now = m.now()
	sess, lane, reply, reason, err := m.issue(ctx, protocol.HandshakeLogin, clientPub, nil, userID, maps.Clone(claims), now, now.Add(m.absolute), ua, now)
	if err != nil {
		m.audit(ctx, slog.LevelError, auditRec{event: evStoreError, user: userID, client: client, reason: "login", cause: err})
		m.refuse(w, reason)
		return
	}
	rec := auditRec{event: evCreated, handle: protocol.SessionHandle(sess.ID), user: userID, lane: lane.ID.String(), client: client}
	m.audit(ctx, slog.LevelInfo, rec)
	m.enforceLimit(ctx, userID, sess, client)
	m.setCookie(w, r, sess)
	writeJSON(w, reply)
}

// authenticate calls the Authenticator, turning a panic into an error.
func (m *Manager) authenticate(ctx context.Context, r *http.Request, cred json.RawMessage) (user string, claims map[string]string, err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			user, claims, err = "", nil, errors.New("server: authenticator panicked")
		}
	}()
	if len(cred) == 0 {
		cred = json.RawMessage("null")
	}
	return m.auth.Authenticate(ctx, r, cred)
}

// issue runs the server side of a login or re-key key agreement (kind) and stores a new session
// with its first lane. A re-key's key is chained from prev, the key the request was signed with
// (PROTOCOL.md section 3.4).
// On failure it returns the refusal reason and the cause.
func (m *Manager) issue(ctx context.Context, kind int, clientPub [protocol.PublicKeySize]byte, prev *protocol.Key, userID string, claims map[string]string,
	created, expires time.Time, ua []byte, now time.Time) (*Session, *Lane, *handshakeReply, string, error) {
	id := make([]byte, 32)
	var laneID LaneID
	if _, err := io.ReadFull(m.rand, id); err != nil {
		return nil, nil, nil, reasonUnavailable, err
	}
	if _, err := io.ReadFull(m.rand, laneID[:]); err != nil {
		return nil, nil, nil, reasonUnavailable, err
	}
	eph, err := protocol.NewEphemeral(m.rand)
	if err != nil {
		return nil, nil, nil, reasonUnavailable, err
	}
	serverPub := eph.Public()
	tr := protocol.HandshakeTranscript(kind, clientPub, serverPub, laneID, nil)
	var k protocol.Key
	if kind == protocol.HandshakeRekey {
		k, err = protocol.Rekey(prev, eph, clientPub, tr, laneID)
	} else {
		k, err = protocol.Handshake(eph, clientPub, tr, laneID)
	}
	if err != nil {
		return nil, nil, nil, reasonBadRequest, err // a low-order or invalid public key
	}
	defer k.Wipe()
	confirm := protocol.Confirm(&k, tr)
	sealed, err := m.seal.seal(&k, laneID, 0)
	if err != nil {
		return nil, nil, nil, reasonUnavailable, err
	}
	sess := &Session{ID: id, UserID: userID, Claims: claims, Created: created, Expires: expires, LastSeen: now, UserAgent: ua}
	lane := &Lane{ID: laneID, SessionID: id, Epoch: 0, Key: sealed, RotatedAt: now}
	if err := m.store.Create(ctx, sess, lane); err != nil {
		if errors.Is(err, ErrExists) {
			return nil, nil, nil, reasonUnavailable, errors.New("server: session or lane ID collision: is the random source broken?")
		}
		return nil, nil, nil, reasonStoreDown, err
	}
	return sess, lane, &handshakeReply{
		Lane:        laneID.String(),
		Pub:         b64.EncodeToString(serverPub[:]),
		Confirm:     b64.EncodeToString(confirm[:]),
		Epoch:       0,
		ServerTime:  now.UnixMilli(),
		Expires:     expires.UnixMilli(),
		IdleTimeout: int64(m.idle / time.Second),
		RotateEvery: int64(m.rotateEvery / time.Second),
	}, "", nil
}

// enforceLimit ends the user's oldest sessions past MaxSessionsPerUser, only ones older than keep
// (the session this login made). A store failure is logged: the login stands and the next one
// enforces the limit.
func (m *Manager) enforceLimit(ctx context.Context, userID string, keep *Session, client string) {
	if m.maxSessions < 0 {
		return
	}
	list, err := m.store.UserSessions(ctx, userID)
	if err != nil {
		m.audit(ctx, slog.LevelError, auditRec{event: evStoreError, user: userID, client: client, reason: "session limit", cause: err})
		return
	}
	excess := len(list) - m.maxSessions
	if excess <= 0 {
		return
	}
	// Oldest first, in one total order (creation time, then ID), and only sessions older than
	// the one this login made: of two logins that read the list at once, each would otherwise
	// end the other's session (both answered 200, both dead). This way the newest survives every
	// such race, and the next login restores the bound if a race left it exceeded.
	older := func(a, b *Session) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return bytes.Compare(a.ID, b.ID)
	}
	slices.SortFunc(list, older)
	for _, s := range list {
		if excess == 0 || bytes.Equal(s.ID, keep.ID) || older(s, keep) >= 0 {
			break
		}
		m.end(ctx, s, goneLimit, evLimitEvicted, auditRec{client: client})
		excess--
	}
}

// logout: POST {prefix}logout, signed, or unsigned from a worker that holds no key (PROTOCOL.md
// 3.5). Every answer to a same-origin logout drops the join cookie, a refusal included: a worker
// whose logout gave up on a login or re-key in flight (and aborted it) may hold no key the server
// still accepts, while the aborted reply may have set the cookie of the session it made. Cross-site
// requests get neither: a top-level cross-site POST may carry a SameSite=Strict cookie.
//
// A same-origin logout also ends the session its join cookie names, whether or not it is signed
// and whether or not its signature verifies: this browser's session ends when its user logs out
// from a tab whose lane was evicted or wiped, from a worker whose signatures a misconfigured proxy
// breaks, or after an aborted login whose reply set the cookie of a new session. It gives no one
// anything: page script can log out through the worker anyway, and a thief of the cookie can
// already join the session (SECURITY.md).
func (m *Manager) logout(w http.ResponseWriter, r *http.Request) {
	var cookieSID []byte
	sameOrigin := r.Header.Get("Sec-Fetch-Site") == "same-origin"
	if sameOrigin {
		cookieSID = m.logoutCookie(r)
		m.clearCookie(w)
	}
	_, signedIn := r.Header["Signature-Input"]
	_, signed := r.Header["Signature"]
	if !signedIn && !signed {
		if cookieSID == nil {
			m.refuse(w, reasonMissing)
			return
		}
		if err := m.endByCookie(r, cookieSID, true); err != nil {
			m.refuse(w, cookieRefusal(err))
			return
		}
		m.loggedOut(w)
		return
	}
	st, ok := m.verifyRequest(w, r, false)
	if !ok {
		// The refusal is written; the cookie's session ends all the same.
		if cookieSID != nil {
			m.endByCookie(r, cookieSID, true)
		}
		return
	}
	if err := m.end(r.Context(), st.sess, goneLogout, evLogout, m.recOf(st)); err != nil {
		m.refuse(w, reasonStoreDown)
		return
	}
	// The cookie names another session only on a browser where someone logged in after this
	// lane's login (a shared computer): logging out of it ends that one too.
	// Verified, so even from a throttled address (whose cached lanes verify pass); a store
	// failure, audited, does not undo the success of this one.
	if cookieSID != nil && !bytes.Equal(cookieSID, st.sess.ID) {
		m.endByCookie(r, cookieSID, false)
	}
	if !sameOrigin {
		m.clearCookie(w)
	}
	m.loggedOut(w)
}

// loggedOut answers a logout that ended its sessions.
func (m *Manager) loggedOut(w http.ResponseWriter) {
	m.clearSiteData(w)
	writeJSON(w, struct {
		OK bool `json:"ok"`
	}{true})
}

// errThrottled: endByCookie did nothing for an address the limiter blocks.
var errThrottled = errors.New("throttled")

// cookieRefusal is the refusal for an endByCookie error.
func cookieRefusal(err error) string {
	if errors.Is(err, errThrottled) {
		return reasonRateLimited
	}
	return reasonStoreDown
}

// logoutCookie returns the session ID of a logout's join cookie, nil if it has none that opens
// (a forged or mangled one counts against the address, as at the boot script).
func (m *Manager) logoutCookie(r *http.Request) []byte {
	if m.join.disabled {
		return nil
	}
	sid, present, err := m.cookieSession(r)
	if err != nil {
		// Not logged again for an address already throttled (endByCookie reads nothing for it).
		if client := m.clientAddr(r); !m.limiter.Blocked(client, m.now()) {
			m.count(r.Context(), client, evLogoutRefused)
			m.audit(r.Context(), slog.LevelWarn, auditRec{event: evLogoutRefused, reason: RefusedBadCookie, client: client})
		}
		return nil
	}
	if !present {
		return nil
	}
	return sid
}

// endByCookie ends the live session sid, named by a same-origin logout's join cookie. A session
// already gone is no error (a logout is idempotent); with throttle, nothing is read for a
// throttled address.
func (m *Manager) endByCookie(r *http.Request, sid []byte, throttle bool) error {
	ctx := r.Context()
	client := m.clientAddr(r)
	now := m.now()
	if throttle && m.limiter.Blocked(client, now) {
		return errThrottled
	}
	rec := auditRec{handle: protocol.SessionHandle(sid), client: client, extra: []slog.Attr{slog.String("by", "cookie")}}
	sess, _, err := m.store.Session(ctx, sid)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		rec.event, rec.reason, rec.cause = evStoreError, "session", err
		m.audit(ctx, slog.LevelError, rec)
		return err
	}
	if !m.liveAt(sess, now) {
		return nil // past its timeouts: the sweeper's
	}
	return m.end(ctx, sess, goneLogout, evLogout, rec)
}

func (m *Manager) recOf(st *reqState) auditRec {
	return auditRec{handle: st.info.Handle, user: st.sess.UserID, lane: st.info.Lane, client: st.client}
}

func parsePub(body []byte) ([protocol.PublicKeySize]byte, bool) {
	var req pubRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return [protocol.PublicKeySize]byte{}, false
	}
	return decodePub(req.Pub)
}

// rotate: signed POST {prefix}rotate {"pub"} (PROTOCOL.md section 3.3).
func (m *Manager) rotate(w http.ResponseWriter, r *http.Request) {
	st, ok := m.verifyRequest(w, r, true)
	if !ok {
		return
	}
	ctx := r.Context()
	rec := m.recOf(st)
	clientPub, ok := parsePub(st.body)
	if !ok {
		if st.late {
			m.reuseDetected(ctx, w, st.sess, rec, "previous epoch used after the grace window")
			return
		}
		m.refuse(w, reasonBadRequest)
		return
	}
	lane := st.lane
	for range 4 {
		switch {
		case st.keyID.Epoch+1 == lane.Epoch:
			// Signed under the previous epoch: this lane already rotated. The same request
			// again (the worker retries with the same public key until it gets a reply) gets
			// the same answer, even after the grace window: it tells a key holder nothing new.
			// A different one is a second rotation of one epoch: two holders of the key.
			if len(lane.RotateReply) == 2*protocol.PublicKeySize && subtle.ConstantTimeCompare(lane.RotateClientPub, clientPub[:]) == 1 {
				writeJSON(w, rotateReply{
					Pub:     b64.EncodeToString(lane.RotateReply[:protocol.PublicKeySize]),
					Epoch:   lane.Epoch,
					Confirm: b64.EncodeToString(lane.RotateReply[protocol.PublicKeySize:]),
				})
				return
			}
			m.reuseDetected(ctx, w, st.sess, rec, "second rotation of one epoch")
			return
		case st.keyID.Epoch == lane.Epoch:
			reply, next, err := m.ratchet(lane, clientPub)
			if err != nil {
				if errors.Is(err, protocol.ErrKeyAgreement) {
					m.refuse(w, reasonBadRequest)
					return
				}
				rec.event, rec.reason, rec.cause = evInternal, "rotate", err
				m.audit(ctx, slog.LevelError, rec)
				m.refuse(w, reasonUnavailable)
				return
			}
			err = m.store.UpdateLane(ctx, next, lane.Epoch)
			switch {
			case err == nil:
				rec.event, rec.extra = evRotated, []slog.Attr{slog.Uint64("epoch", uint64(next.Epoch))}
				m.audit(ctx, slog.LevelInfo, rec)
				writeJSON(w, reply)
				m.liveRotated(lane.ID)
				return
			case errors.Is(err, ErrConflict):
				// Another rotation of this lane won: look again.
				l, _, err := m.store.Lane(ctx, lane.ID)
				if err != nil || l == nil {
					if err != nil && !errors.Is(err, ErrNotFound) {
						m.storeError(ctx, w, rec, err)
						return
					}
					m.refuse(w, goneReason(err))
					return
				}
				lane = l
				continue
			case errors.Is(err, ErrNotFound):
				m.refuse(w, goneReason(err))
				return
			default:
				m.storeError(ctx, w, rec, err)
				return
			}
		default:
			// The lane moved on more than one epoch past this (verified) key.
			m.reuseDetected(ctx, w, st.sess, rec, "key of an old epoch used during rotation")
			return
		}
	}
	m.storeError(ctx, w, rec, errors.New("server: rotation kept conflicting"))
}

// ratchet computes the lane's next epoch from its current key and the worker's public key.
func (m *Manager) ratchet(lane *Lane, clientPub [protocol.PublicKeySize]byte) (*rotateReply, *Lane, error) {
	if lane.Epoch == ^uint32(0) {
		return nil, nil, errors.New("server: epoch space exhausted")
	}
	var k protocol.Key
	if err := m.seal.open(&k, lane.Key, lane.ID, lane.Epoch); err != nil {
		return nil, nil, err
	}
	defer k.Wipe()
	eph, err := protocol.NewEphemeral(m.rand)
	if err != nil {
		return nil, nil, err
	}
	serverPub := eph.Public()
	epoch := lane.Epoch + 1
	tr := protocol.RotateTranscript(lane.ID, epoch, clientPub, serverPub)
	k1, err := protocol.Ratchet(&k, eph, clientPub, tr, lane.ID, epoch)
	if err != nil {
		return nil, nil, err
	}
	defer k1.Wipe()
	confirm := protocol.Confirm(&k1, tr)
	sealed, err := m.seal.seal(&k1, lane.ID, epoch)
	if err != nil {
		return nil, nil, err
	}
	now := m.now()
	next := *lane
	next.Epoch = epoch
	next.Key = sealed
	next.PrevKey = lane.Key // sealed for (lane, epoch-1): it stays bound to its epoch
	next.PrevUntil = now.Add(m.grace)
	next.RotatedAt = now
	next.RotateClientPub = append([]byte(nil), clientPub[:]...)
	next.RotateReply = append(append(make([]byte, 0, 2*protocol.PublicKeySize), serverPub[:]...), confirm[:]...)
	return &rotateReply{Pub: b64.EncodeToString(serverPub[:]), Epoch: epoch, Confirm: b64.EncodeToString(confirm[:])}, &next, nil
}

// rekey: signed POST {prefix}rekey {"pub"}: a new session (new ID, new lane, fresh key
// agreement) replaces the old one, with the pending claims of [Manager.RequireRekey] and the old
// login time and deadline.
func (m *Manager) rekey(w http.ResponseWriter, r *http.Request) {
	st, ok := m.verifyRequest(w, r, false)
	if !ok {
		return
	}
	ctx := r.Context()
	now := m.now()
	rec := m.recOf(st)
	var req rekeyRequest
	if json.Unmarshal(st.body, &req) != nil {
		m.refuse(w, reasonBadRequest)
		return
	}
	clientPub, ok := decodePub(req.Pub)
	if !ok {
		m.refuse(w, reasonBadRequest)
		return
	}
	old := st.sess
	// The worker sends the session's join cookie with its re-key (HttpOnly: never within page
	// script's reach, and not in the tab's memory). Requiring it means a copy of the current key
	// alone (a memory dump of the tab) cannot trade itself for a session of its own.
	if !m.join.disabled {
		if sid, _, err := m.cookieSession(r); err != nil || !bytes.Equal(sid, old.ID) {
			// Not counted against the address: a browser that lost the cookie (a shorter
			// CookieLifetime, a second login, a cross-site frame) gets here from an honest worker,
			// which backs off.
			rec.event, rec.reason = evRekeyRefused, reasonNeedCookie
			m.audit(ctx, slog.LevelInfo, rec)
			m.refuse(w, reasonNeedCookie)
			return
		}
	}
	// The worker has given up on this re-key (its logout aborts it): the old session stays, for
	// that logout to end, and no successor appears that only a reload could reach.
	if ctx.Err() != nil {
		rec.event, rec.reason = evRekeyRefused, reasonClientGone
		m.audit(ctx, slog.LevelInfo, rec)
		m.refuse(w, reasonUnavailable)
		return
	}
	// From here on the re-key completes even if the client leaves: cut short between making the
	// new session and deleting the old, it would leave both (and a false store alarm).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	claims, at, elevated := m.pending.get(old.ID, now)
	badGrant := false
	if req.Grant != "" {
		// RequireRekey ran here or on another node: the grant carries its claims, and of two
		// decisions (this node's and the grant's) the later one wins. One that does not open
		// (forged, expired, another session's) grants nothing.
		gclaims, gat, ok := m.grants.open(old.ID, req.Grant, now)
		switch {
		case ok && (!elevated || gat.After(at)):
			claims, elevated = gclaims, true
		case !ok && !elevated:
			badGrant = true
		}
	}
	if !elevated {
		claims = old.Claims
	}
	// The new key is chained from the one this request was signed with: page script that makes
	// the worker send a rekey request with a public key of its own learns nothing usable.
	var prev protocol.Key
	if err := m.seal.open(&prev, sealedKey(st.lane, st.keyID.Epoch), st.lane.ID, st.keyID.Epoch); err != nil {
		rec.event, rec.reason, rec.cause = evInternal, "unseal_failed", err
		m.audit(ctx, slog.LevelError, rec)
		m.refuse(w, reasonUnknownSession)
		return
	}
	sess, lane, reply, reason, err := m.issue(ctx, protocol.HandshakeRekey, clientPub, &prev, old.UserID, claims, old.Created, old.Expires, old.UserAgent, now)
	prev.Wipe()
	if err != nil {
		rec.event, rec.reason, rec.cause = evStoreError, "rekey", err
		m.audit(ctx, slog.LevelError, rec)
		m.refuse(w, reason)
		return
	}
	// Delete the old session; the request that removes its lanes wins a concurrent re-key.
	lanes, err := m.store.Delete(ctx, old.ID, goneRekeyed)
	if err != nil || len(lanes) == 0 {
		if _, err2 := m.store.Delete(ctx, sess.ID, goneRekeyed); err2 != nil {
			m.audit(ctx, slog.LevelError, auditRec{event: evStoreError, handle: protocol.SessionHandle(sess.ID), reason: "rekey cleanup", cause: err2})
		}
		if err != nil {
			m.storeError(ctx, w, rec, err)
			return
		}
		m.refuse(w, reasonRekeyed)
		return
	}
	m.lanesGone(lanes, goneRekeyed)
	m.pending.drop(old.ID)
	rec.event, rec.reason = evRekeyed, "privilege change"
	if !elevated {
		rec.reason = "renewal"
		if badGrant {
			rec.reason = "renewal (the rekey grant did not open)"
		}
	}
	rec.extra = []slog.Attr{slog.String("new_handle", protocol.SessionHandle(sess.ID)), slog.String("new_lane", lane.ID.String())}
	m.audit(ctx, slog.LevelInfo, rec)
	m.setCookie(w, r, sess)
	writeJSON(w, reply)
}
