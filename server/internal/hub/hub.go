package hub

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server/internal/throttle"
)

// Defaults of the Config fields.
const (
	DefaultReadLimit    = 4 << 10
	DefaultPingInterval = 25 * time.Second
	DefaultWriteWait    = 10 * time.Second
	DefaultSendQueue    = 16
	DefaultAuthTimeout  = 10 * time.Second
	DefaultMaxConns     = 20000
	DefaultMaxUnsettled = 64
)

// Socket buffers. Nothing larger than a sealed event (at most 143 bytes) or a control message
// crosses the socket, so small buffers cost nothing. The read buffer is the connection's own
// (gorilla reads frame headers through it; a larger message is read in several calls); the
// write buffer is taken from writePool only while a message is written. With gorilla's defaults
// (4 KiB each, or the HTTP server's hijacked buffers) an idle connection holds 8 KiB of buffers;
// with these, 256 bytes (cmd/wsload measures the total per connection).
const (
	readBufferSize  = 256
	writeBufferSize = 512
)

// Config configures a [Hub]. The zero value is usable and safe: it refuses every connection
// (there is no Authenticate), accepts same-origin browsers only and applies the defaults below.
type Config struct {
	// Authenticate checks a connection's answer to its challenge and names the lane the
	// connection belongs to. keyid is the "<lane>.<epoch>" the client sent (bounded in length
	// and character set, otherwise unparsed), challenge the 32 bytes the hub sent, tag the
	// 32-byte tag the client sent, which must equal protocol.SocketAuth under the sign key of
	// that lane and epoch. ctx carries the values of the upgrade request's context and expires
	// with AuthTimeout. An error refuses the connection: a [*RefusedError] names the reason sent
	// to the client (revoked, expired, unknown_session, bad_signature, ...), any other error is
	// sent as "refused". If nil, every connection is refused with reason "unavailable".
	Authenticate func(ctx context.Context, keyid string, challenge, tag []byte) (protocol.LaneID, error)

	// Resync returns the sealed events a lane missed after the event sequence number since,
	// which the client sends with its answer (0 on a first connection). They are sent after
	// "ready" and before any event passed to [Hub.Send] after the connection was registered,
	// so the client sees sequence numbers in order. It runs in the connecting request's
	// goroutine before the connection's pumps start; it must not block for long. Together with
	// the events sent meanwhile they must fit in SendQueue, or the connection is closed as a
	// slow one: return only the latest that matter. If nil, nothing is resent.
	Resync func(ctx context.Context, lane protocol.LaneID, since uint64) [][]byte

	// Ended, if set, is called (outside the hub's locks, once) for every connection whose
	// Authenticate succeeded, when that connection is over: closed by either side, by
	// [Hub.End], [Hub.Close] or [Hub.Shutdown], or refused after Authenticate (its lane was
	// closed meanwhile). The owner can count a lane's connections with it and forget what it
	// keeps for a lane when the count falls to zero.
	Ended func(lane protocol.LaneID)

	// CheckOrigin reports whether the upgrade request's Origin is allowed; refused requests get
	// 403. If nil, the Origin's host must equal r.Host (case-insensitively); a request without
	// an Origin header is allowed, because every browser sends one.
	CheckOrigin func(r *http.Request) bool

	// ClientAddr names the client of an upgrade request in log records (behind a proxy, the
	// address the proxy forwarded). If nil, the host part of r.RemoteAddr.
	ClientAddr func(r *http.Request) string

	// Authority names the host the Origin was compared with, in the record of a cross_site
	// refusal (behind a proxy, the original host). If nil, r.Host.
	Authority func(r *http.Request) string

	// ReadLimit is the largest message accepted from a client, in bytes; a larger one closes the
	// connection with status 1009. If zero, 4 KiB.
	ReadLimit int64

	// PingInterval is the time between pings to each client. If zero, 25 s.
	PingInterval time.Duration

	// PongWait is how long a connection may stay silent (no pong, no frame) before it is
	// closed. It must exceed PingInterval. If zero, PingInterval plus WriteWait.
	PongWait time.Duration

	// WriteWait bounds every write to a client; a client that does not take a frame within it
	// is closed. If zero, 10 s.
	WriteWait time.Duration

	// SendQueue is the number of frames queued per connection; a connection whose queue is full
	// when an event arrives is closed at once, so a slow client never delays the others. If
	// zero, 16.
	SendQueue int

	// AuthTimeout bounds the time from the upgrade to the client's answer to the challenge,
	// Authenticate included. If zero, 10 s.
	AuthTimeout time.Duration

	// MaxConns bounds the open connections, authenticated or not; past it the upgrade is
	// answered 503. If zero, 20000.
	MaxConns int

	// MaxUnsettled bounds, per client (ClientAddr, an IPv6 address by its /64), the connections
	// that hold a slot of MaxConns without being a lane's: upgrading or authenticating, and
	// closing after they left their lane (replaced, or their lane closed) until the client
	// answers the close. Past it the client's upgrades are answered 429 (rate_limited). Without
	// it one address could hold every slot of the node, with no account (answering no
	// challenge, AuthTimeout per slot) or with one (a lane's connections replacing each other,
	// never answering the close), and no other worker would hear its revocation. An honest
	// client holds one for a round trip and its authentication; workers that reconnect together
	// from behind one address (an office NAT after a node restart) past it are refused and
	// retry with backoff. If zero, 64.
	MaxUnsettled int

	// Failed, if set, is called (in the upgrade's goroutine) when a client breaks the challenge
	// exchange in a way no honest client does: a binary or malformed answer, a frame over
	// ReadLimit, a framing error. Not for no answer within AuthTimeout (a frozen page or a lost
	// network does that; MaxUnsettled bounds it). Refusals by Authenticate are its own to count.
	// ctx is the upgrade request's context.
	Failed func(ctx context.Context, client string)

	// Logger receives the hub's records (message "sessionvault", attribute event). No record
	// holds message content, a tag or a challenge. If nil, [slog.Default].
	Logger *slog.Logger
}

// RefusedError is an error from Config.Authenticate that names the reason the client is told.
// The reason goes on the wire; the wrapped error is only logged.
type RefusedError struct {
	Reason string // 1 to 64 characters of [a-z0-9_], else "refused" is sent
	Err    error  // the cause, or nil
}

func (e *RefusedError) Error() string {
	if e.Err == nil {
		return "hub: refused: " + e.Reason
	}
	return "hub: refused: " + e.Reason + ": " + e.Err.Error()
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Hub holds the event connections of the lanes, authenticates new ones and delivers sealed
// events to them. It is an [http.Handler] for the event endpoint. Its methods are safe for
// concurrent use.
type Hub struct {
	authenticate func(ctx context.Context, keyid string, challenge, tag []byte) (protocol.LaneID, error)
	resync       func(ctx context.Context, lane protocol.LaneID, since uint64) [][]byte
	ended        func(lane protocol.LaneID)
	checkOrigin  func(r *http.Request) bool
	clientAddr   func(r *http.Request) string
	authority    func(r *http.Request) string
	failed       func(ctx context.Context, client string)
	// warnedUpgrade lets a request that was no WebSocket upgrade be logged at Warn once a minute.
	warnedUpgrade throttle.Every
	readLimit     int64
	pingInterval  time.Duration
	pongWait      time.Duration
	writeWait     time.Duration
	sendQueue     int
	authTimeout   time.Duration
	maxConns      int
	maxUnsettled  int
	log           *slog.Logger
	up            websocket.Upgrader

	shards     [shardCount]shard
	registered atomic.Int64

	// mu guards the set of all open connections, authenticated or not. It is taken once when a
	// connection opens and once when it ends, and by Shutdown; never on the Send path.
	mu        sync.Mutex
	all       map[*conn]struct{}
	reserved  int            // admitted, upgrade in progress
	unsettled map[string]int // per client key: connections counted by MaxUnsettled
	closed    bool
	drained   chan struct{} // closed when closed is set and all is empty
}

// shardCount spreads the lanes over independently locked maps. The chat example's alternative,
// one goroutine owning the set, makes every Send a round trip to that goroutine because Send
// returns a count: BenchmarkTableSend measures ~800 ns and an allocation per Send that way
// against ~85 ns and none here (10,000 lanes, 2 cores), register+unregister ~700 ns against
// ~80 ns, and a broadcast to 10,000 lanes 8 ms against 0.9 ms. A shard's lock is held only to
// look up a lane and put a slice in its connections' queues, never across a write to a socket.
const shardCount = 64

type shard struct {
	mu    sync.Mutex
	lanes map[protocol.LaneID][]*conn
	// tombs remembers lanes ended by End or Close for AuthTimeout, so that a connection whose
	// Authenticate call began before the end cannot register afterwards.
	tombs map[protocol.LaneID]tomb
	_     [40]byte // keep neighbouring shards' locks on separate cache lines
}

type tomb struct {
	at     time.Time
	reason string
}

// New returns a Hub configured by cfg. It panics if PongWait is set and not above PingInterval.
func New(cfg Config) *Hub {
	h := &Hub{
		authenticate: cfg.Authenticate,
		resync:       cfg.Resync,
		ended:        cfg.Ended,
		checkOrigin:  cfg.CheckOrigin,
		clientAddr:   cfg.ClientAddr,
		authority:    cfg.Authority,
		failed:       cfg.Failed,
		readLimit:    orDefault(cfg.ReadLimit, DefaultReadLimit),
		pingInterval: orDefault(cfg.PingInterval, DefaultPingInterval),
		writeWait:    orDefault(cfg.WriteWait, DefaultWriteWait),
		sendQueue:    orDefault(cfg.SendQueue, DefaultSendQueue),
		authTimeout:  orDefault(cfg.AuthTimeout, DefaultAuthTimeout),
		maxConns:     orDefault(cfg.MaxConns, DefaultMaxConns),
		maxUnsettled: orDefault(cfg.MaxUnsettled, DefaultMaxUnsettled),
		log:          cfg.Logger,
		all:          make(map[*conn]struct{}),
		unsettled:    make(map[string]int),
		drained:      make(chan struct{}),
	}
	h.pongWait = orDefault(cfg.PongWait, h.pingInterval+h.writeWait)
	if h.pongWait <= h.pingInterval {
		panic("hub: PongWait must exceed PingInterval")
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.checkOrigin == nil {
		h.checkOrigin = sameOrigin
	}
	if h.clientAddr == nil {
		h.clientAddr = remoteHost
	}
	if h.authority == nil {
		h.authority = func(r *http.Request) string { return r.Host }
	}
	for i := range h.shards {
		h.shards[i].lanes = make(map[protocol.LaneID][]*conn)
		h.shards[i].tombs = make(map[protocol.LaneID]tomb)
	}
	h.up = websocket.Upgrader{
		HandshakeTimeout: h.writeWait,
		ReadBufferSize:   readBufferSize,
		WriteBufferSize:  writeBufferSize,
		WriteBufferPool:  &writePool,
		Subprotocols:     []string{Subprotocol},
		CheckOrigin:      func(*http.Request) bool { return true }, // checked before Upgrade
		Error: func(w http.ResponseWriter, r *http.Request, status int, err error) {
			httpRefuse(w, status)
		},
	}
	return h
}

// writePool holds the write buffers of all hubs: a buffer is held only while a message is
// written, so 10,000 idle connections hold none.
var writePool sync.Pool

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// sameOrigin allows a request without Origin (not a browser) or whose Origin's host is r.Host.
func sameOrigin(r *http.Request) bool {
	o := r.Header["Origin"]
	if len(o) == 0 {
		return true
	}
	u, err := url.Parse(o[0])
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// httpRefuse answers a request that is not upgraded, in the server's refusal format, and
// returns the reason it sent.
func httpRefuse(w http.ResponseWriter, status int) (reason string) {
	reason = reasonBadRequest
	switch status {
	case http.StatusForbidden:
		reason = "cross_site"
	case http.StatusMethodNotAllowed:
		reason = "method_not_allowed"
		w.Header().Set("Allow", "GET")
	case http.StatusServiceUnavailable:
		reason = reasonUnavail
		w.Header().Set("Retry-After", "5")
	case http.StatusTooManyRequests:
		reason = reasonRateLimited
		w.Header().Set("Retry-After", "5")
	}
	hd := w.Header()
	hd["Sv-Error"] = []string{reason}
	hd["Content-Type"] = []string{"application/json"}
	hd["Cache-Control"] = []string{"no-store"}
	hd["X-Content-Type-Options"] = []string{"nosniff"}
	hd["Sec-Websocket-Version"] = []string{"13"}
	w.WriteHeader(status)
	w.Write([]byte(`{"error":"` + reason + `"}` + "\n"))
	return reason
}

func (h *Hub) shard(lane protocol.LaneID) *shard {
	return &h.shards[binary.LittleEndian.Uint64(lane[:8])%shardCount]
}

// Send queues sealed (a [protocol.SealEvent] output) as one binary frame to every connection
// of lane and returns how many connections it was queued for. It never blocks on a client: a
// connection whose queue is full is closed instead (the client reconnects and resyncs). Send
// keeps sealed; the caller must not modify it afterwards.
func (h *Hub) Send(lane protocol.LaneID, sealed []byte) int {
	if len(sealed) == 0 {
		return 0
	}
	s := h.shard(lane)
	n := 0
	s.mu.Lock()
	for _, c := range s.lanes[lane] {
		if c.queue(sealed) {
			n++
		}
	}
	s.mu.Unlock()
	return n
}

// Close ends every connection of lane: each gets {"type":"refused","reason":reason} after the
// events already queued for it, then a close frame (1000). A connection of lane that is
// authenticating while Close runs is refused with the same reason. reason must be 1 to 64
// characters of [a-z0-9_]; anything else is sent as "refused". It returns the number of
// connections closed. To end a lane with the event that says so, use [Hub.End].
func (h *Hub) Close(lane protocol.LaneID, reason string) int {
	return h.End(lane, nil, reason)
}

// End is [Hub.Close] with a last event: each connection of lane gets sealed (a
// [protocol.SealEvent] output; none if empty) after the events already queued for it, then the
// refusal with reason and a close frame. Call it when the lane ends (revoked, logged out,
// expired, ...), with the sealed event that says so. The event and the close are one step for
// the lane's registrations: a connection registers either before End, and gets both, or after,
// and is then refused in place of "ready" if its Authenticate call began before End (Send then
// Close would let a connection that registers between them get the refusal without the event).
// End keeps sealed; the caller must not modify it afterwards.
func (h *Hub) End(lane protocol.LaneID, sealed []byte, reason string) int {
	if !validReason(reason) {
		reason = reasonRefused
	}
	now := time.Now()
	s := h.shard(lane)
	s.mu.Lock()
	cs := s.lanes[lane]
	delete(s.lanes, lane)
	h.registered.Add(-int64(len(cs)))
	for l, t := range s.tombs {
		if now.Sub(t.at) > h.authTimeout {
			delete(s.tombs, l)
		}
	}
	s.tombs[lane] = tomb{at: now, reason: reason}
	h.mu.Lock()
	for _, c := range cs {
		c.registered = false
		h.unsettleLocked(c)
		if len(sealed) > 0 {
			c.queue(sealed) // a full queue kills c: its worker reconnects and is refused
		}
		c.closeWith(websocket.CloseNormalClosure, reason, true)
	}
	h.mu.Unlock()
	s.mu.Unlock()
	return len(cs)
}

// Count returns the number of authenticated connections.
func (h *Hub) Count() int { return int(h.registered.Load()) }

// Shutdown stops accepting connections (new upgrades get 503), sends every authenticated
// connection a close frame (1001) after its queued events, closes connections still
// authenticating, and waits until all have ended or ctx is done; then it closes what is left
// and returns ctx.Err(). Send after Shutdown delivers nothing.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	var pending []*conn
	for c := range h.all {
		if !c.authed.Load() {
			pending = append(pending, c)
		}
	}
	h.drainedLocked()
	h.mu.Unlock()
	for _, c := range pending {
		c.kill(reasonShutdown)
	}
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for lane, cs := range s.lanes {
			for _, c := range cs {
				c.registered = false
				c.closeWith(websocket.CloseGoingAway, reasonShutdown, false)
			}
			h.registered.Add(-int64(len(cs)))
			delete(s.lanes, lane)
		}
		s.mu.Unlock()
	}
	select {
	case <-h.drained:
		return nil
	case <-ctx.Done():
	}
	h.mu.Lock()
	rest := make([]*conn, 0, len(h.all))
	for c := range h.all {
		rest = append(rest, c)
	}
	h.mu.Unlock()
	for _, c := range rest {
		c.kill(reasonShutdown)
	}
	return ctx.Err()
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// admit reserves room for a connection of client key before its upgrade, counted as unsettled
// until it joins its lane; or it names the status to refuse it with: 503 when the hub is
// full or shut down, 429 when the client holds MaxUnsettled already.
func (h *Hub) admit(key string) (status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.all)+h.reserved >= h.maxConns {
		return http.StatusServiceUnavailable
	}
	if h.unsettled[key] >= h.maxUnsettled {
		return http.StatusTooManyRequests
	}
	h.reserved++
	h.unsettled[key]++
	return 0
}

// track turns a reservation into an open connection; false if the hub shut down meanwhile (the
// reservation is released either way).
func (h *Hub) track(c *conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reserved--
	if h.closed {
		h.settleLocked(c)
		h.drainedLocked()
		return false
	}
	h.all[c] = struct{}{}
	return true
}

// unreserve releases the reservation of c, whose upgrade failed.
func (h *Hub) unreserve(c *conn) {
	h.mu.Lock()
	h.reserved--
	h.settleLocked(c)
	h.drainedLocked()
	h.mu.Unlock()
}

// settleLocked stops counting c against its client's MaxUnsettled; unsettleLocked counts it
// again (it left its lane and is closing). Both run under h.mu.
func (h *Hub) settleLocked(c *conn) {
	if !c.unsettled {
		return
	}
	c.unsettled = false
	if n := h.unsettled[c.key] - 1; n > 0 {
		h.unsettled[c.key] = n
	} else {
		delete(h.unsettled, c.key)
	}
}

func (h *Hub) unsettleLocked(c *conn) {
	if c.unsettled {
		return
	}
	c.unsettled = true
	h.unsettled[c.key]++
}

// release forgets a connection that has ended.
func (h *Hub) release(c *conn) {
	h.mu.Lock()
	delete(h.all, c)
	h.settleLocked(c)
	h.drainedLocked()
	h.mu.Unlock()
	if c.authOK && h.ended != nil {
		h.ended(c.lane)
	}
}

func (h *Hub) drainedLocked() {
	if h.closed && len(h.all) == 0 && h.reserved == 0 {
		closeOnce(h.drained)
	}
}

// register adds an authenticated connection to its lane. authStart is when Authenticate was
// called: a Close of the lane after it refuses the connection with Close's reason. With hold,
// frames sent to the connection are held back until unhold (Resync's events go first).
func (h *Hub) register(c *conn, authStart time.Time, hold bool) (refusal string) {
	s := h.shard(c.lane)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tombs[c.lane]; ok && !t.at.Before(authStart) {
		return t.reason
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return reasonShutdown
	}
	h.settleLocked(c)
	c.holding = hold
	c.registered = true
	c.authed.Store(true)
	cs := s.lanes[c.lane]
	if len(cs) >= MaxConnsPerLane {
		old := cs[0]
		cs = slices.Delete(cs, 0, 1)
		old.registered = false
		h.unsettleLocked(old)
		old.closeWith(websocket.CloseNormalClosure, reasonReplaced, false)
		h.registered.Add(-1)
	}
	s.lanes[c.lane] = append(cs, c)
	h.registered.Add(1)
	return ""
}

// unhold queues first (Resync's frames), then the frames Send held back, and lets later frames
// through.
func (h *Hub) unhold(c *conn, first [][]byte) {
	s := h.shard(c.lane)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.holding = false
	held := c.held
	c.held = nil
	for _, b := range first {
		if len(b) > 0 && !c.queue(b) {
			return
		}
	}
	for _, b := range held {
		if !c.queue(b) {
			return
		}
	}
}

// unregister removes c from its lane if it is still there.
func (h *Hub) unregister(c *conn) {
	s := h.shard(c.lane)
	s.mu.Lock()
	if c.registered {
		c.registered = false
		cs := s.lanes[c.lane]
		if i := slices.Index(cs, c); i >= 0 {
			cs = slices.Delete(cs, i, i+1)
			h.registered.Add(-1)
		}
		if len(cs) == 0 {
			delete(s.lanes, c.lane)
		} else {
			s.lanes[c.lane] = cs
		}
	}
	s.mu.Unlock()
}

// remoteHost is the connection's peer address without the port, for logs.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
