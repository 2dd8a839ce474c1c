package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/js"
	"github.com/sessionvault/sessionvault/server/internal/throttle"
)

// JoinConfig configures reload and new tabs (PROTOCOL.md section 3.2): the browser-session
// cookie set at login, the single-use join ticket that the boot script ({prefix}worker.js)
// carries when a fresh worker of the session's browser loads it, and {prefix}join, where the
// worker trades the ticket for a lane of its own. The zero value turns join on with the safe
// defaults.
type JoinConfig struct {
	// Disabled turns join off: login sets no cookie, the boot script never carries a ticket and
	// {prefix}join answers 404, so a reload or a new tab needs a new login.
	Disabled bool
	// CookieName is the cookie's name. It must start with "__Host-" (the browser then insists on
	// Secure, Path=/ and no Domain, so no subdomain can set or shadow it). If zero,
	// "__Host-session".
	CookieName string
	// CookieLifetime, if positive, makes the cookie persistent (Max-Age) for this long, never
	// past the session's absolute deadline, so that a session survives a browser restart. If
	// zero, it is a session cookie that ends with the browser session.
	CookieLifetime time.Duration
	// TicketLifetime is how long a boot script's ticket can be traded. It covers the worker's
	// start (the wasm module compiled, the page's init message) and one request. If zero, 10
	// seconds; at most a minute.
	TicketLifetime time.Duration
	// ClearSiteData, if true, makes logout responses also carry Clear-Site-Data: "cookies",
	// which clears every cookie of the site (all its subdomains included), not only the join
	// cookie. Leave it off unless the site holds no other cookie worth keeping; the join cookie
	// is cleared by an expired Set-Cookie either way.
	ClearSiteData bool
}

// Defaults of [JoinConfig].
const (
	DefaultCookieName     = "__Host-session"
	DefaultTicketLifetime = 10 * time.Second
	maxTicketLifetime     = time.Minute
)

// Join refusal reasons (PROTOCOL.md section 8): the worker stays without a session and the page
// logs in.
const (
	reasonBadTicket   = "bad_ticket"   // 401: no ticket of this session, or it expired
	reasonTicketReuse = "ticket_reuse" // 401: the ticket was used before
)

// Audit events of join.
const (
	evTicketIssued  = "ticket_issued"
	evTicketRefused = "ticket_refused"
	evTicketReuse   = "ticket_reuse"
	evJoined        = "joined"
	evJoinRefused   = "join_refused"
)

// Reasons a boot script goes out without a ticket ([Manager.TicketRefusals]).
const (
	RefusedNoCookie      = "no_cookie"         // no join cookie: not logged in (or a browser without it)
	RefusedNoMetadata    = "no_fetch_metadata" // no Sec-Fetch-* headers: an old browser or not a browser
	RefusedDest          = "dest"              // Sec-Fetch-Dest is not worker (fetch, script, import, iframe, ...)
	RefusedMode          = "mode"              // Sec-Fetch-Mode is not same-origin (a static import in a module worker, ...)
	RefusedSite          = "site"              // Sec-Fetch-Site is not same-origin
	RefusedBadCookie     = "bad_cookie"        // a cookie that does not open: forged, mangled or of another StoreKey
	RefusedSessionGone   = "session_gone"      // the cookie's session ended (logout, revocation, expiry, idle)
	RefusedUserAgent     = "user_agent_mismatch"
	RefusedRateLimited   = "rate_limited"
	RefusedStoreDown     = "store_unavailable"
	RefusedPath          = "path" // the script was asked for by another spelling than {prefix}worker.js (percent-encoded)
	refusedReasonsNumber = 11
)

var refusedReasons = [refusedReasonsNumber]string{RefusedNoCookie, RefusedNoMetadata, RefusedDest, RefusedMode, RefusedSite,
	RefusedBadCookie, RefusedSessionGone, RefusedUserAgent, RefusedRateLimited, RefusedStoreDown, RefusedPath}

func init() {
	reasonStatus[reasonBadTicket] = 401
	reasonStatus[reasonTicketReuse] = 401
}

// ticketSize is the length of a join ticket; it travels as 43 characters of b64url.
const ticketSize = 32

// joinState is the Manager's join configuration and counters.
type joinState struct {
	disabled       bool
	cookieName     string
	cookieLifetime time.Duration
	ticketLifetime time.Duration
	clearSiteData  bool
	cookies        *cookieSealer
	refused        [refusedReasonsNumber]atomic.Uint64
	issued         *throttle.Limiter // tickets issued per session on this node (ticketsPerLifetime)
	// bootHead and bootTail are this Manager's boot script around the ticket: the bundle with
	// the module's versioned URL filled in when the Manager serves the module.
	bootHead, bootTail []byte
}

// bootScript is the worker's bundled boot script ([js.WorkerBundle]) split around its ticket
// placeholder.
var bootScript = sync.OnceValues(func() (head, tail []byte) {
	src, err := js.WorkerBundle()
	if err != nil {
		panic("server: " + err.Error())
	}
	head, tail, ok := bytes.Cut(src, []byte(ticketPlaceholder))
	if !ok {
		panic("server: worker.js has no ticket placeholder " + ticketPlaceholder)
	}
	return append(head, ticketPlaceholder[:len(ticketPlaceholder)-2]...), append([]byte(`";`), tail...)
})

// ticketPlaceholder is the line of js/worker.js that the boot-script endpoint fills in.
const ticketPlaceholder = `let ticket = "";`

// moduleLine is the line of js/worker.js that names the wasm module; a Manager that serves the
// module puts its version into it (vault.wasm?v=...), after the ticket line.
const moduleLine = `const wasmURL = new URL("` + moduleFile + `", import.meta.url);`

func withModuleVersion(tail []byte, version string) []byte {
	if bytes.Count(tail, []byte(moduleLine)) != 1 {
		panic("server: worker.js must have the line " + moduleLine + " once, after the ticket line")
	}
	return bytes.Replace(tail, []byte(moduleLine), []byte(`const wasmURL = new URL("`+moduleFile+`?v=`+version+`", import.meta.url);`), 1)
}

func (m *Manager) initJoin(cfg *JoinConfig, storeKey []byte) error {
	j := &m.join
	j.disabled = cfg.Disabled
	j.cookieName, j.cookieLifetime, j.ticketLifetime, j.clearSiteData = cfg.CookieName, cfg.CookieLifetime, cfg.TicketLifetime, cfg.ClearSiteData
	setDefault(&j.cookieName, DefaultCookieName)
	setDefault(&j.ticketLifetime, DefaultTicketLifetime)
	if !strings.HasPrefix(j.cookieName, "__Host-") || len(j.cookieName) > 64 || strings.ContainsFunc(j.cookieName, func(r rune) bool {
		return !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return configError(`Join.CookieName must be "__Host-" followed by letters, digits, '-' or '_'`)
	}
	if j.cookieLifetime < 0 || j.ticketLifetime < 0 || j.ticketLifetime > maxTicketLifetime {
		return configError("Join.CookieLifetime must not be negative and Join.TicketLifetime must be at most a minute")
	}
	j.issued = throttle.New(ticketsPerLifetime(m.maxLanes), j.ticketLifetime, maxTicketRateEntries)
	// Panics now, not at the first request, if the embedded script lacks a placeholder.
	j.bootHead, j.bootTail = bootScript()
	if m.assets != nil {
		j.bootTail = withModuleVersion(j.bootTail, m.assets.version)
	}
	var err error
	j.cookies, err = newCookieSealer(storeKey, m.rand)
	return err
}

// TicketRefusals returns how many boot scripts this Manager served without a ticket, by reason
// (the Refused* constants). Every reason is present, with 0 if it never happened.
func (m *Manager) TicketRefusals() map[string]uint64 {
	out := make(map[string]uint64, refusedReasonsNumber)
	for i, r := range refusedReasons {
		out[r] = m.join.refused[i].Load()
	}
	return out
}

func (m *Manager) countRefusal(reason string) {
	for i, r := range refusedReasons {
		if r == reason {
			m.join.refused[i].Add(1)
			return
		}
	}
}

// ticketHash is the store's name of a ticket and what the join transcript binds
// (PROTOCOL.md section 3.2): SHA-256("sessionvault/v1 ticket" || ticket).
func ticketHash(t []byte) []byte {
	h := sha256.New()
	h.Write([]byte("sessionvault/v1 ticket"))
	h.Write(t)
	return h.Sum(nil)
}

// serveBoot serves GET {prefix}worker.js, the worker's boot script (js/worker.js). It is never
// cached. Only a request of a fresh dedicated worker (Sec-Fetch-Dest: worker, Sec-Fetch-Mode:
// same-origin, Sec-Fetch-Site: same-origin) with the cookie of a live session gets a script
// with a ticket in it; every other request gets the same script without one, and the refusal is
// counted ([Manager.TicketRefusals]).
func (m *Manager) serveBoot(w http.ResponseWriter, r *http.Request) {
	ticket := ""
	if r.Method != http.MethodHead { // a HEAD would waste a ticket: its body never arrives
		ticket = m.bootTicket(w, r)
	}

	head, tail := m.join.bootHead, m.join.bootTail
	h := w.Header()
	h["Content-Type"] = []string{"text/javascript; charset=utf-8"}
	h["Cache-Control"] = []string{"no-store"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Vary"] = []string{"Cookie, Sec-Fetch-Dest, Sec-Fetch-Mode, Sec-Fetch-Site"}
	h["Cross-Origin-Resource-Policy"] = []string{"same-origin"}
	// Added, not set: an application's own policy on the response still applies as well.
	h.Add("Content-Security-Policy", m.workerCSP)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	buf := make([]byte, 0, len(head)+len(ticket)+len(tail))
	buf = append(append(append(buf, head...), ticket...), tail...)
	w.Write(buf)
}

// bootTicket returns a new ticket (b64url) for the boot script, or "" with the refusal counted
// and logged; for a refusal worth a retry (rate_limited, store_unavailable), "!" and the reason
// instead of "" (PROTOCOL.md 3.2): the worker reports it as its joinError, so that the page of a
// logged-in user can wait and reload rather than show a login form.
func (m *Manager) bootTicket(w http.ResponseWriter, r *http.Request) string {
	if m.join.disabled {
		return ""
	}
	ctx := r.Context()
	client := m.clientAddr(r)
	refuse := func(level slog.Level, reason string, rec auditRec) string {
		m.countRefusal(reason)
		rec.event, rec.reason, rec.client = evTicketRefused, reason, client
		m.audit(ctx, level, rec)
		if reason == RefusedRateLimited || reason == RefusedStoreDown {
			return "!" + reason
		}
		return ""
	}
	sid, present, err := m.cookieSession(r)
	if !present {
		return refuse(slog.LevelDebug, RefusedNoCookie, auditRec{})
	}
	now := m.now()
	if m.limiter.Blocked(client, now) {
		return refuse(slog.LevelWarn, RefusedRateLimited, auditRec{})
	}
	// Only the literal URL: a worker's script directory is where its join and its own endpoints
	// are, and one started from /%73v/worker.js (which the router unescapes to the same handler)
	// would take /%73v/ for that directory.
	if r.URL.EscapedPath() != (&url.URL{Path: m.prefix + "worker.js"}).EscapedPath() {
		return refuse(slog.LevelWarn, RefusedPath, auditRec{})
	}
	// Fetch metadata first: a page's fetch(), import(), <script>, iframe or a static import in
	// a blob worker carries the cookie too, and must not cost a store lookup.
	dest, mode, site := r.Header.Get("Sec-Fetch-Dest"), r.Header.Get("Sec-Fetch-Mode"), r.Header.Get("Sec-Fetch-Site")
	switch {
	case dest == "" && mode == "" && site == "":
		return refuse(slog.LevelInfo, RefusedNoMetadata, auditRec{})
	case dest != "worker":
		return refuse(slog.LevelWarn, RefusedDest, auditRec{extra: []slog.Attr{slog.String("dest", clip(dest))}})
	case mode != "same-origin":
		return refuse(slog.LevelWarn, RefusedMode, auditRec{extra: []slog.Attr{slog.String("mode", clip(mode))}})
	case site != "same-origin":
		return refuse(slog.LevelWarn, RefusedSite, auditRec{extra: []slog.Attr{slog.String("site", clip(site))}})
	}
	if err != nil {
		m.count(ctx, client, evTicketRefused)
		m.clearCookie(w)
		return refuse(slog.LevelWarn, RefusedBadCookie, auditRec{})
	}
	rec := auditRec{handle: protocol.SessionHandle(sid)}
	// An ended session's cookie is not cleared here (nor at join): the browser applies a
	// response's Set-Cookie when it arrives, by name, so a clear answering this request would
	// delete the cookie of a login made in another tab meanwhile (a user who sees "log in again"
	// in one tab while another reloads). The dead cookie costs a store read per fresh worker.
	sess, _, err := m.store.Session(ctx, sid)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return refuse(slog.LevelInfo, RefusedSessionGone, rec)
		}
		rec.cause = err
		return refuse(slog.LevelError, RefusedStoreDown, rec)
	}
	rec.user = sess.UserID
	if !m.liveAt(sess, now) {
		return refuse(slog.LevelInfo, RefusedSessionGone, rec)
	}
	if !m.sameUA(sess, r) {
		return refuse(slog.LevelWarn, RefusedUserAgent, rec)
	}
	// A session's browser opens a tab or two at a time; more joins than its lanes allow only
	// evict lanes. A program holding the cookie (which can forge Sec-Fetch-*) must not fill the
	// ticket table that every other user's reloads need.
	if _, n := m.join.issued.Add(string(sid), now); n > ticketsPerLifetime(m.maxLanes) {
		return refuse(slog.LevelWarn, RefusedRateLimited, rec)
	}
	t := make([]byte, ticketSize)
	if _, err := io.ReadFull(m.rand, t); err != nil {
		rec.cause = err
		return refuse(slog.LevelError, RefusedStoreDown, rec)
	}
	defer clear(t)
	exp := now.Add(m.join.ticketLifetime)
	if exp.After(sess.Expires) {
		exp = sess.Expires
	}
	if err := m.store.PutTicket(ctx, sid, ticketHash(t), exp); err != nil {
		rec.cause = err
		return refuse(slog.LevelError, RefusedStoreDown, rec)
	}
	rec.event, rec.client = evTicketIssued, client
	m.audit(ctx, slog.LevelInfo, rec)
	return b64.EncodeToString(t)
}

// liveAt reports whether sess is within its absolute and idle timeouts at now.
func (m *Manager) liveAt(sess *Session, now time.Time) bool {
	return now.Before(sess.Expires) && now.Sub(sess.LastSeen) < m.idle
}

// sameUA reports whether r comes from the User-Agent the session is bound to (always true
// without Config.BindUserAgent).
func (m *Manager) sameUA(sess *Session, r *http.Request) bool {
	if sess.UserAgent == nil {
		return true
	}
	h := sha256.Sum256([]byte(r.UserAgent()))
	return bytes.Equal(h[:], sess.UserAgent)
}

// clip bounds a header value quoted in a log line.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32]
	}
	return s
}

type joinRequest struct {
	Pub    string `json:"pub"`
	Ticket string `json:"ticket"`
}

// maxJoinBody bounds a join request: two b64url values and their names.
const maxJoinBody = 1024

// join: POST {prefix}join {"pub", "ticket"} with the join cookie (PROTOCOL.md section 3.2): a new
// lane of the cookie's session, for the worker that holds the session's ticket.
func (m *Manager) serveJoin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := m.now()
	client := m.clientAddr(r)
	if !m.admit(w, client, now) {
		return
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		m.audit(ctx, slog.LevelWarn, auditRec{event: evJoinRefused, client: client, reason: reasonCrossSite})
		m.refuse(w, reasonCrossSite)
		return
	}
	var req joinRequest
	body, ok := m.readJSON(w, r, maxJoinBody, &req)
	defer clear(body)
	if !ok {
		return
	}
	clientPub, ok := decodePub(req.Pub)
	ticket := make([]byte, ticketSize)
	defer clear(ticket)
	// The length first: Decode writes past a destination shorter than the input decodes to.
	if !ok || len(req.Ticket) != b64.EncodedLen(ticketSize) {
		m.refuse(w, reasonBadRequest)
		return
	}
	if n, err := b64.Strict().Decode(ticket, []byte(req.Ticket)); err != nil || n != ticketSize {
		m.refuse(w, reasonBadRequest)
		return
	}
	rec := auditRec{event: evJoinRefused, client: client}
	sid, present, err := m.cookieSession(r)
	if !present || err != nil {
		// The worker's join request carries the cookie (credentials: same-origin); without it
		// the ticket is not the requester's.
		rec.reason = "no_cookie"
		if present {
			rec.reason = "bad_cookie"
			m.clearCookie(w)
		}
		m.refusedAs(ctx, w, rec, reasonBadTicket)
		return
	}
	rec.handle = protocol.SessionHandle(sid)
	switch err := m.store.TakeTicket(ctx, sid, ticketHash(ticket)); {
	case errors.Is(err, ErrTicketUsed):
		rec.event, rec.reason = evTicketReuse, "ticket used before"
		m.refusedAs(ctx, w, rec, reasonTicketReuse)
		return
	case errors.Is(err, ErrNotFound):
		rec.reason = "unknown or expired ticket"
		m.refusedAs(ctx, w, rec, reasonBadTicket)
		return
	case err != nil:
		m.storeError(ctx, w, rec, err)
		return
	}
	sess, lanes, err := m.store.Session(ctx, sid)
	if err != nil {
		if errors.Is(err, ErrNotFound) { // the cookie is left as it is: see bootTicket
			rec.reason = goneReason(err)
			m.audit(ctx, slog.LevelInfo, rec)
			m.refuse(w, rec.reason)
			return
		}
		m.storeError(ctx, w, rec, err)
		return
	}
	rec.user = sess.UserID
	if !m.liveAt(sess, now) {
		rec.reason = reasonExpired
		m.audit(ctx, slog.LevelInfo, rec)
		m.refuse(w, reasonExpired)
		return
	}
	if !m.sameUA(sess, r) {
		rec.reason = reasonUserAgent
		m.refusedAs(ctx, w, rec, reasonBadTicket)
		return
	}
	if err := m.makeRoom(ctx, lanes, rec); err != nil {
		rec.reason = "lane eviction"
		m.storeError(ctx, w, rec, err)
		return
	}
	lane, reply, reason, err := m.addLane(ctx, sess, clientPub, ticket, now)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			rec.reason = reason
			m.audit(ctx, slog.LevelInfo, rec)
			m.refuse(w, reason)
			return
		}
		if errors.Is(err, protocol.ErrKeyAgreement) {
			// A low-order public key: never our module's; the ticket is spent. Audited and
			// counted like any other hostile join.
			rec.reason = "bad public key"
			m.refusedAs(ctx, w, rec, reasonBadRequest)
			return
		}
		rec.event, rec.reason, rec.cause = evStoreError, "join", err
		m.audit(ctx, slog.LevelError, rec)
		m.refuse(w, reason)
		return
	}
	rec.event, rec.reason, rec.lane = evJoined, "", lane.ID.String()
	m.audit(ctx, slog.LevelInfo, rec)
	writeJSON(w, reply)
}

// makeRoom makes room for one more lane in a session whose lanes are lanes, under
// Config.MaxLanesPerSession (PROTOCOL.md section 3.2): when the session has the bound's number
// of lanes or more, it ends the stalest ones, those whose key is oldest (RotatedAt: an open
// tab's lane rotates every RotateEvery, a closed tab's never again), alone and with reason
// lane_evicted, until one more fits. Their event connections, on this node and (through the
// store's notices) on the others, get a sealed revoked event and close; each eviction is
// audited (lane_evicted). The session and its other lanes go on.
//
// Concurrent joins may each find room and leave the session over the bound by as many lanes;
// the next join brings it back under. A store failure is returned: the join is refused.
func (m *Manager) makeRoom(ctx context.Context, lanes []LaneID, rec auditRec) error {
	if m.maxLanes < 0 || len(lanes) < m.maxLanes {
		return nil
	}
	type candidate struct {
		id LaneID
		at time.Time
	}
	cands := make([]candidate, 0, len(lanes))
	for _, id := range lanes {
		l, _, err := m.store.Lane(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue // ended meanwhile: that is room made
		case err != nil:
			return err
		}
		cands = append(cands, candidate{id, l.RotatedAt})
	}
	excess := len(cands) - m.maxLanes + 1
	if excess <= 0 {
		return nil
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return bytes.Compare(a.id[:], b.id[:])
	})
	for _, c := range cands[:excess] {
		switch err := m.store.DeleteLane(ctx, c.id, goneLane); {
		case errors.Is(err, ErrNotFound):
			continue // a concurrent join evicted it, or the session ended
		case err != nil:
			return err
		}
		m.lanesGone([]LaneID{c.id}, goneLane)
		r := rec
		r.event, r.reason, r.lane = evLaneEvicted, goneLane, c.id.String()
		m.audit(ctx, slog.LevelInfo, r)
	}
	return nil
}

// addLane runs the server side of a join key agreement (PROTOCOL.md section 3.2) and stores the
// new lane under sess. The session's deadline is the reply's: a join never extends a session.
func (m *Manager) addLane(ctx context.Context, sess *Session, clientPub [protocol.PublicKeySize]byte, ticket []byte, now time.Time) (*Lane, *handshakeReply, string, error) {
	var laneID LaneID
	if _, err := io.ReadFull(m.rand, laneID[:]); err != nil {
		return nil, nil, reasonUnavailable, err
	}
	eph, err := protocol.NewEphemeral(m.rand)
	if err != nil {
		return nil, nil, reasonUnavailable, err
	}
	serverPub := eph.Public()
	tr := protocol.HandshakeTranscript(protocol.HandshakeJoin, clientPub, serverPub, laneID, ticket)
	k, err := protocol.Handshake(eph, clientPub, tr, laneID)
	if err != nil {
		return nil, nil, reasonBadRequest, err // a low-order or invalid public key
	}
	defer k.Wipe()
	confirm := protocol.Confirm(&k, tr)
	sealed, err := m.seal.seal(&k, laneID, 0)
	if err != nil {
		return nil, nil, reasonUnavailable, err
	}
	lane := &Lane{ID: laneID, SessionID: sess.ID, Epoch: 0, Key: sealed, RotatedAt: now}
	if err := m.store.AddLane(ctx, lane); err != nil {
		switch {
		case errors.Is(err, ErrNotFound):
			return nil, nil, goneReason(err), err
		case errors.Is(err, ErrExists):
			return nil, nil, reasonUnavailable, errors.New("server: lane ID collision: is the random source broken?")
		}
		return nil, nil, reasonStoreDown, err
	}
	return lane, &handshakeReply{
		Lane:        laneID.String(),
		Pub:         b64.EncodeToString(serverPub[:]),
		Confirm:     b64.EncodeToString(confirm[:]),
		Epoch:       0,
		ServerTime:  now.UnixMilli(),
		Expires:     sess.Expires.UnixMilli(),
		IdleTimeout: int64(m.idle / time.Second),
		RotateEvery: int64(m.rotateEvery / time.Second),
	}, "", nil
}

// workerCSP is the boot script's Content-Security-Policy: the worker may connect (fetch, the
// event socket) to its own origin and to origins (Config.APIOrigins) only. A dedicated worker's policy is its
// script's response's, not the page's, so this holds for a worker that page script starts too.
func workerCSP(origins []string) (string, error) {
	var b strings.Builder
	b.WriteString("connect-src 'self'")
	for _, o := range origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
			strings.ContainsAny(u.Host, " ;,'*") {
			return "", configError("APIOrigins: " + strconv.Quote(o) + " is not an origin like https://api.example.com")
		}
		b.WriteString(" " + u.Scheme + "://" + strings.ToLower(u.Host))
	}
	return b.String(), nil
}

// ticketsPerLifetime is how many tickets one session gets per ticket lifetime on a node: twice
// its lane bound, and at least 32, more than a browser restoring its tabs asks for.
func ticketsPerLifetime(maxLanes int) int {
	return max(2*maxLanes, 32)
}

// maxTicketRateEntries bounds the per-session ticket counts of a node.
const maxTicketRateEntries = 100_000
