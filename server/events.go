package server

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server/internal/hub"
)

// The event socket (PROTOCOL.md section 6). The Manager owns one hub.Hub, serves it at
// GET {prefix}events, authenticates each connection by the lane's answer to a challenge, and
// keeps for every lane with a connection on this node a liveLane: the event key of its current
// epoch and a timer that sends rotate, expiring and expired events when they fall due. Lanes
// that end (logout, revocation, eviction, reuse, re-key, expiry) get a sealed revoked or expired
// event and their connections are closed, whichever node ended them (lanesGone, called by this
// node's own deletions and by a shared store's notices).

// recheckEvery bounds how long a connection's view of its lane may be stale: a rotation done on
// another node, or a deletion whose notice was lost, is noticed within it.
const recheckEvery = time.Minute

// liveLanes is the set of lanes with an event connection on this node.
type liveLanes struct {
	mu sync.Mutex
	m  map[LaneID]*liveLane
	// ending makes the paths that end one lane on this node take turns (lanesGone): one lock
	// per shard of lanes, as the hub's. Taken before mu and any liveLane's mu.
	ending [64]sync.Mutex
}

// endLock is the lock that serializes the end of lane id.
func (s *liveLanes) endLock(id LaneID) *sync.Mutex {
	return &s.ending[binary.LittleEndian.Uint64(id[:8])%uint64(len(s.ending))]
}

// liveLane is what this node keeps for one lane's connections. Its fields are guarded by mu;
// conns is guarded by liveLanes.mu.
type liveLane struct {
	conns     int // connections past socketAuth that have not ended (hub.Config.Ended)
	mu        sync.Mutex
	id        LaneID
	epoch     uint32
	eventKey  protocol.Key // EventKey(K(epoch)); wiped when the lane leaves the set
	rotatedAt time.Time
	asked     bool      // a rotate event was sent for epoch
	warned    time.Time // the deadline an expiring event announced
	timer     *time.Timer
	due       time.Time // when timer fires
	dead      bool
}

func (ll *liveLane) kill() {
	ll.dead = true
	ll.eventKey.Wipe()
	if ll.timer != nil {
		ll.timer.Stop()
	}
}

func (s *liveLanes) get(id LaneID) *liveLane {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

// take removes and returns the lane's entry, or nil.
func (s *liveLanes) take(id LaneID) *liveLane {
	s.mu.Lock()
	defer s.mu.Unlock()
	ll := s.m[id]
	delete(s.m, id)
	return ll
}

func (s *liveLanes) all() []*liveLane {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*liveLane, 0, len(s.m))
	for _, ll := range s.m {
		out = append(out, ll)
	}
	return out
}

// eventSeqs makes event sequence numbers: Unix microseconds, bumped to stay strictly increasing
// in this process. They increase per lane across connections and restarts (clocks permitting)
// without a store write per event; the worker drops an event whose seq is not above the last.
type eventSeqs struct{ last atomic.Uint64 }

func (s *eventSeqs) next(now time.Time) uint64 {
	t := uint64(now.UnixMicro())
	for {
		last := s.last.Load()
		n := max(t, last+1)
		if s.last.CompareAndSwap(last, n) {
			return n
		}
	}
}

func (m *Manager) newHub(cfg *Config) {
	m.live.m = make(map[LaneID]*liveLane)
	m.hub = hub.New(hub.Config{
		Authenticate: m.socketAuth,
		Resync:       m.socketResync,
		Ended:        m.socketEnded,
		CheckOrigin:  m.eventOrigin(cfg.EventOrigin),
		ClientAddr:   m.clientAddr,
		Authority:    m.authorityOf,
		MaxConns:     cfg.MaxEventConns,
		MaxUnsettled: cfg.MaxPendingEventConns,
		// A malformed answer: counted like a refused signature (429 at the upgrade past the
		// threshold). Sockets that never answer are not counted (an honest page may freeze);
		// MaxPendingEventConns bounds them per address.
		Failed: func(ctx context.Context, client string) { m.count(ctx, client, evSocketRefused) },
		Logger: m.log,
	})
}

// eventOrigin is Config.EventOrigin; if nil with Config.Authority set, the Origin's host must be
// the request's authority (the hub's own default compares with r.Host).
func (m *Manager) eventOrigin(check func(*http.Request) bool) func(*http.Request) bool {
	if check != nil || m.authority == nil {
		return check
	}
	return func(r *http.Request) bool {
		o := r.Header["Origin"]
		if len(o) == 0 {
			return true // not a browser: it must still answer the lane's challenge
		}
		u, err := url.Parse(o[0])
		return err == nil && u.Host != "" && proxiedAuthority(u.Host) == m.authorityOf(r)
	}
}

// serveEvents serves GET {prefix}events, the event socket.
func (m *Manager) serveEvents(w http.ResponseWriter, r *http.Request) {
	client := m.clientAddr(r)
	if m.limiter.Blocked(client, m.now()) {
		m.refuse(w, reasonRateLimited)
		return
	}
	m.hub.ServeHTTP(w, r.WithContext(withClient(r.Context(), client)))
}

type clientKey struct{}

func withClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

func clientOf(ctx context.Context) string {
	s, _ := ctx.Value(clientKey{}).(string)
	return s
}

// socketAuth checks a connection's answer to its challenge: the lane must be live, the epoch its
// current one (or the previous one within the rotation grace) and the tag
// protocol.SocketAuth under that epoch's sign key. On success the lane joins the live set.
func (m *Manager) socketAuth(ctx context.Context, keyid string, challenge, tag []byte) (LaneID, error) {
	client := clientOf(ctx)
	id, err := protocol.ParseKeyID(keyid)
	if err != nil {
		m.count(ctx, client, evBadSignature)
		return LaneID{}, &hub.RefusedError{Reason: reasonBadRequest, Err: err}
	}
	now := m.now()
	lane, sess, err := m.store.Lane(ctx, id.Lane)
	if err != nil {
		var gone *GoneError
		switch {
		case errors.As(err, &gone):
			return id.Lane, &hub.RefusedError{Reason: refusalOf(gone.Reason), Err: err}
		case errors.Is(err, ErrNotFound):
			m.count(ctx, client, evUnknown)
			return id.Lane, &hub.RefusedError{Reason: reasonUnknownSession, Err: err}
		}
		m.audit(ctx, slog.LevelError, auditRec{event: evStoreError, lane: id.Lane.String(), reason: "event socket", cause: err})
		return id.Lane, &hub.RefusedError{Reason: reasonStoreDown, Err: err}
	}
	rec := auditRec{handle: protocol.SessionHandle(sess.ID), user: sess.UserID, lane: lane.ID.String(), client: client}
	if m.expired(sess, now) {
		rec.reason = expiryKind(sess, now)
		m.end(ctx, sess, goneExpired, evExpired, rec)
		return id.Lane, &hub.RefusedError{Reason: reasonExpired}
	}
	var sealed []byte
	switch {
	case id.Epoch == lane.Epoch:
		sealed = lane.Key
	case lane.Epoch > 0 && id.Epoch == lane.Epoch-1 && now.Before(lane.PrevUntil) && lane.PrevKey != nil:
		sealed = lane.PrevKey
	default:
		m.count(ctx, client, evBadSignature)
		rec.event, rec.reason = evBadSignature, "event socket: stale epoch"
		m.audit(ctx, slog.LevelWarn, rec)
		return id.Lane, &hub.RefusedError{Reason: reasonBadSignature}
	}
	var k protocol.Key
	if err := m.seal.open(&k, sealed, lane.ID, id.Epoch); err != nil {
		rec.event, rec.reason, rec.cause = evInternal, "unseal_failed", err
		m.audit(ctx, slog.LevelError, rec)
		return id.Lane, &hub.RefusedError{Reason: reasonUnknownSession}
	}
	sk := protocol.SignKey(&k)
	want := protocol.SocketAuth(&sk, lane.ID, id.Epoch, challenge)
	sk.Wipe()
	ok := subtle.ConstantTimeCompare(want[:], tag) == 1
	clear(want[:])
	if !ok {
		k.Wipe()
		m.count(ctx, client, evBadSignature)
		rec.event, rec.reason = evBadSignature, "event socket"
		m.audit(ctx, slog.LevelWarn, rec)
		return id.Lane, &hub.RefusedError{Reason: reasonBadSignature}
	}
	if id.Epoch != lane.Epoch { // authenticated with the previous epoch: events use the current
		k.Wipe()
		if err := m.seal.open(&k, lane.Key, lane.ID, lane.Epoch); err != nil {
			return id.Lane, &hub.RefusedError{Reason: reasonUnknownSession}
		}
	}
	m.live.mu.Lock()
	ll := m.live.m[lane.ID]
	if ll == nil {
		ll = &liveLane{id: lane.ID}
		m.live.m[lane.ID] = ll
	}
	ll.conns++
	ll.mu.Lock()
	m.live.mu.Unlock()
	if ll.epoch != lane.Epoch || ll.eventKey == (protocol.Key{}) {
		ll.eventKey.Wipe()
		ll.eventKey = protocol.EventKey(&k)
		ll.epoch, ll.rotatedAt, ll.asked = lane.Epoch, lane.RotatedAt, false
	}
	ll.mu.Unlock()
	k.Wipe()
	return lane.ID, nil
}

// socketResync runs once a connection is registered: it returns the events due now (rotate,
// expiring) and arms the lane's timer. A revocation the worker missed needs no event: its lane
// is refused at authentication, with the reason.
func (m *Manager) socketResync(ctx context.Context, id LaneID, since uint64) [][]byte {
	ll := m.live.get(id)
	if ll == nil {
		return nil
	}
	return m.checkLive(ctx, ll)
}

// socketEnded counts down the lane's connections and forgets the lane when none is left.
func (m *Manager) socketEnded(id LaneID) {
	m.live.mu.Lock()
	ll := m.live.m[id]
	if ll != nil {
		ll.conns--
		if ll.conns > 0 {
			ll = nil
		} else {
			delete(m.live.m, id)
		}
	}
	m.live.mu.Unlock()
	if ll != nil {
		ll.mu.Lock()
		ll.kill()
		ll.mu.Unlock()
	}
}

// checkLive re-reads the lane and its session, returns the events due now, ends the session if
// it expired and re-arms the lane's timer. A lane found gone is closed with its reason.
func (m *Manager) checkLive(ctx context.Context, ll *liveLane) [][]byte {
	now := m.now()
	lane, sess, err := m.store.Lane(ctx, ll.id)
	if err != nil {
		var gone *GoneError
		switch {
		case errors.As(err, &gone):
			m.lanesGone([]LaneID{ll.id}, gone.Reason)
		case errors.Is(err, ErrNotFound):
			m.lanesGone([]LaneID{ll.id}, reasonUnknownSession)
		default: // the store is down: look again soon
			m.armLive(ll, now.Add(5*time.Second))
		}
		return nil
	}
	if m.expired(sess, now) {
		m.end(ctx, sess, goneExpired, evExpired, auditRec{lane: ll.id.String(), reason: expiryKind(sess, now)})
		return nil
	}
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.dead {
		return nil
	}
	if lane.Epoch != ll.epoch { // rotated (on this node or another)
		var k protocol.Key
		if err := m.seal.open(&k, lane.Key, lane.ID, lane.Epoch); err == nil {
			ll.eventKey.Wipe()
			ll.eventKey = protocol.EventKey(&k)
			k.Wipe()
			ll.epoch, ll.rotatedAt, ll.asked = lane.Epoch, lane.RotatedAt, false
		}
	}
	var out [][]byte
	deadline := m.deadline(sess)
	next := now.Add(recheckEvery)
	if warnAt := deadline.Add(-m.expiringBefore); !ll.warned.Equal(deadline) {
		if !now.Before(warnAt) {
			out = m.appendEvent(out, ll, protocol.EventExpiring, "", deadline, now)
			ll.warned = deadline
		} else if warnAt.Before(next) {
			next = warnAt
		}
	}
	if deadline.Before(next) {
		next = deadline
	}
	if rotateAt := ll.rotatedAt.Add(m.rotateEvery); !ll.asked {
		if !now.Before(rotateAt) {
			out = m.appendEvent(out, ll, protocol.EventRotate, "", time.Time{}, now)
			ll.asked = true
		} else if rotateAt.Before(next) {
			next = rotateAt
		}
	}
	m.armLiveLocked(ll, next)
	return out
}

// appendEvent seals an event for ll (locked) and appends it to out.
func (m *Manager) appendEvent(out [][]byte, ll *liveLane, t protocol.EventType, reason string, deadline, now time.Time) [][]byte {
	e := protocol.Event{Type: t, Lane: ll.id, Epoch: ll.epoch, Seq: m.seqs.next(now), Time: now.UnixMilli(), Reason: reason}
	if !deadline.IsZero() {
		e.Deadline = deadline.UnixMilli()
	}
	b, err := protocol.SealEvent(&ll.eventKey, &e)
	if err != nil { // an invalid reason: ours are all valid
		return out
	}
	return append(out, b)
}

func (m *Manager) armLive(ll *liveLane, at time.Time) {
	ll.mu.Lock()
	m.armLiveLocked(ll, at)
	ll.mu.Unlock()
}

func (m *Manager) armLiveLocked(ll *liveLane, at time.Time) {
	if ll.dead || m.closed.Load() {
		return
	}
	now := m.now()
	d := max(at.Sub(now), 10*time.Millisecond)
	if ll.timer != nil {
		ll.timer.Stop()
	}
	ll.due = now.Add(d)
	ll.timer = time.AfterFunc(d, func() { m.tickLive(ll) })
}

// armLiveBy makes the lane's timer fire at at, unless it fires sooner: a re-read asked for by
// something outside the lane (a notice) never postpones its due events.
func (m *Manager) armLiveBy(ll *liveLane, at time.Time) {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.timer != nil && !ll.due.After(at) {
		return
	}
	m.armLiveLocked(ll, at)
}

// tickLive is a lane timer's work: send what fell due to the lane's connections.
func (m *Manager) tickLive(ll *liveLane) {
	defer func() {
		if p := recover(); p != nil {
			m.audit(context.Background(), slog.LevelError, auditRec{event: evInternal, lane: ll.id.String(), reason: "event timer panicked"})
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range m.checkLive(ctx, ll) {
		m.hub.Send(ll.id, b)
	}
}

// expired reports whether sess is past its absolute or idle deadline at now.
func (m *Manager) expired(sess *Session, now time.Time) bool {
	return !now.Before(m.deadline(sess))
}

// expiryKind names, for the audit log, the timeout that ended sess: "absolute" or "idle".
func expiryKind(sess *Session, now time.Time) string {
	if now.Before(sess.Expires) {
		return "idle"
	}
	return "absolute"
}

// deadline is when sess ends unless a verified request comes first.
func (m *Manager) deadline(sess *Session) time.Time {
	d := sess.LastSeen.Add(m.idle)
	if sess.Expires.Before(d) {
		return sess.Expires
	}
	return d
}

// lanesGone applies, on this node, the end of lanes deleted for reason (by this node or, through
// a store's notices, by another): their cached verifiers are dropped and wiped, and every event
// connection this node holds for them gets a sealed revoked (or expired) event and is closed.
//
// Several paths may apply one deletion at once: the deleting call or the store's notice, a
// re-check that finds the lane gone in the store (its timer, a resync, the connect's resync).
// Per lane they take turns (endLock): the first takes the lane's live entry and ends its
// connections with the event sealed under the entry's key; a later one finds none left to end.
// Without the turns, a path that found no entry closed the connections while the
// one that had taken it was still sealing, and the event then found none: the refusal alone.
// The event and the close are one step in the hub (End), so a connection that registers
// meanwhile gets both, or is refused in place of "ready" (its Authenticate began before the end,
// and the hub remembers the lane's end for that).
func (m *Manager) lanesGone(lanes []LaneID, reason string) {
	m.verifiers.drop(lanes...)
	m.watches.end(lanes, &EndedError{Reason: refusalOf(reason)})
	if m.hub == nil {
		return
	}
	reason = refusalOf(reason)
	t := protocol.EventRevoked
	if reason == goneExpired {
		t = protocol.EventExpired
	}
	now := m.now()
	for _, id := range lanes {
		mu := m.live.endLock(id)
		mu.Lock()
		var sealed []byte
		if ll := m.live.take(id); ll != nil {
			ll.mu.Lock()
			if !ll.dead {
				if out := m.appendEvent(nil, ll, t, reason, time.Time{}, now); len(out) > 0 {
					sealed = out[0]
				}
				ll.kill()
			}
			ll.mu.Unlock()
		}
		m.hub.End(id, sealed, reason)
		mu.Unlock()
	}
}

// liveRotated tells the lane's connections on this node about a rotation done here, so that
// events are sealed under the new epoch's key from now on.
func (m *Manager) liveRotated(id LaneID) {
	ll := m.live.get(id)
	if ll == nil {
		return
	}
	go m.tickLive(ll)
}

// resyncLive is called when this node may have missed notices: it drops every cached verifier
// and re-checks every event connection's lane against the store.
func (m *Manager) resyncLive() {
	m.verifiers.dropAll()
	go m.recheckWatches()
	for _, ll := range m.live.all() {
		go m.tickLive(ll)
	}
}

// closeEvents shuts the event hub down (connections get 1001 and reconnect to another node or
// after a restart) and stops the lanes' timers.
func (m *Manager) closeEvents(ctx context.Context) error {
	if m.hub == nil {
		return nil
	}
	err := m.hub.Shutdown(ctx)
	m.live.mu.Lock()
	for id, ll := range m.live.m {
		ll.mu.Lock()
		ll.kill()
		ll.mu.Unlock()
		delete(m.live.m, id)
	}
	m.live.mu.Unlock()
	return err
}

// EventConnections returns the number of authenticated event connections on this node.
func (m *Manager) EventConnections() int {
	if m.hub == nil {
		return 0
	}
	return m.hub.Count()
}
