package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// verifierCache keeps, per lane, ready verifiers of its current and previous epoch, so that a
// request costs an HMAC and not an AES-GCM open, an HKDF and an HMAC key setup. The key of a
// (lane, epoch) never changes (rotations are compare-and-swap, lane IDs are never reused), so
// entries need no invalidation for correctness; they are dropped when this node deletes a lane
// (to wipe the key soon) and evicted, wiped, past maxCachedLanes. Each entry also keeps the
// lane's last-read records ([laneFacts]), which are bounded in age instead.
type verifierCache struct {
	m sync.Map // LaneID -> *laneVerifiers; reads take no lock
	n atomic.Int64
}

const maxCachedLanes = 50_000

// laneVerifiers is one lane's entry. Its mutex serializes the use of its slots, whose MAC states
// and buffers are not safe for concurrent use.
type laneVerifiers struct {
	// handle and lane name the lane's session and the lane in logs and Info; computed once,
	// because a lane's session never changes.
	handle, lane string

	// facts are the lane's and session's records as this node last read them (nil before the
	// first read): what Require needs from the store, so that a request of a busy lane does not
	// read them every time.
	facts atomic.Pointer[laneFacts]

	// verified is set once a request's signature has verified under one of the entry's slots:
	// only such a lane lets a throttled address through (Manager.cachedLane). An entry exists
	// as soon as a request names a live lane, before its HMAC is checked.
	verified atomic.Bool

	mu    sync.Mutex
	dead  bool // dropped from the cache and wiped
	slots [2]*verifySlot
}

// laneFacts are a lane's and its session's records as the store returned them to this node,
// kept so that [Manager.Require] can skip the store's Lane read. They are a cache and never the
// authority for ending or refusing anything:
//
//   - Liveness: every request still calls Store.Seen, which reports a lane deleted on any node
//     (logout, revocation, re-key, eviction, reuse, expiry) as gone.
//   - Epoch: facts serve only requests signed under the epoch they hold, and only for factsTTL
//     (at most half the rotation grace) after the read. A rotation made elsewhere meanwhile
//     lets through only uses of the previous key that the grace window accepts anyway; the next
//     use after the grace reads the store and is detected as reuse.
//   - Idle timeout and rotation hint: when the facts say the session is idle or the key due for
//     rotation, the store is read again before anything is decided (LastSeen moves on other
//     nodes).
//
// What facts are used for beyond that never changes for a session: its ID, user, claims
// (a re-key makes a new session), Created, Expires and User-Agent hash.
type laneFacts struct {
	lane  *Lane    // read only
	sess  *Session // read only
	until time.Time
	// lastSeen is the newest LastSeen known here (Unix ns): the read's, or this node's Touch
	// since. It decides when to Touch; timeouts are judged on sess.LastSeen, the read's.
	lastSeen atomic.Int64
}

// factsTTLMax caps how long facts are used after the read.
const factsTTLMax = 5 * time.Second

// factsTTL is how long facts read now are used: half the rotation grace, at most factsTTLMax.
func factsTTL(grace time.Duration) time.Duration { return min(grace/2, factsTTLMax) }

// remember stores the records just read (at or after now) as the entry's facts, used until
// now+ttl, and returns them.
func (e *laneVerifiers) remember(lane *Lane, sess *Session, now time.Time, ttl time.Duration) *laneFacts {
	f := &laneFacts{lane: lane, sess: sess, until: now.Add(ttl)}
	f.lastSeen.Store(sess.LastSeen.UnixNano())
	e.facts.Store(f)
	return f
}

// usable reports whether f may stand in for a store read for a request signed under epoch at
// now: fresh, of that epoch, and with the key not due a rotation hint. The caller also requires
// that the session has not timed out by f.sess: a timeout is decided on a fresh read.
func (f *laneFacts) usable(epoch uint32, now time.Time, rotateEvery time.Duration) bool {
	return f.lane.Epoch == epoch && now.Before(f.until) && now.Sub(f.lane.RotatedAt) < rotateEvery
}

// touched records a successful Store.Touch at t.
func (f *laneFacts) touched(t time.Time) {
	n := t.UnixNano()
	for {
		old := f.lastSeen.Load()
		if n <= old || f.lastSeen.CompareAndSwap(old, n) {
			return
		}
	}
}

// verifySlot holds one epoch's sign key as precomputed HMAC states: mac for the fast path
// (fastsig), v for the reference path (protocol.Verifier), and the base buffer.
type verifySlot struct {
	epoch uint32
	mac   *protocol.MAC
	v     *protocol.Verifier
	buf   []byte
}

func newVerifySlot(epoch uint32, signKey *protocol.Key) *verifySlot {
	return &verifySlot{epoch: epoch, mac: protocol.NewMAC(signKey[:]), v: protocol.NewVerifier(signKey), buf: make([]byte, 0, 512)}
}

func (s *verifySlot) wipe() {
	s.mac.Wipe()
	s.v.Wipe()
}

// lookup returns the entry of lane, or nil.
func (c *verifierCache) lookup(lane LaneID) *laneVerifiers {
	if e, ok := c.m.Load(lane); ok {
		return e.(*laneVerifiers)
	}
	return nil
}

func (c *verifierCache) entry(lane LaneID, sessionID []byte) *laneVerifiers {
	if e, ok := c.m.Load(lane); ok {
		return e.(*laneVerifiers)
	}
	if c.n.Load() >= maxCachedLanes {
		c.m.Range(func(k, v any) bool { // evict one, in no particular order
			if _, ok := c.m.LoadAndDelete(k); ok {
				c.n.Add(-1)
				v.(*laneVerifiers).kill()
			}
			return false
		})
	}
	e := &laneVerifiers{handle: protocol.SessionHandle(sessionID), lane: lane.String()}
	if old, loaded := c.m.LoadOrStore(lane, e); loaded {
		return old.(*laneVerifiers)
	}
	c.n.Add(1)
	return e
}

// drop removes and wipes the entries of lanes.
func (c *verifierCache) drop(lanes ...LaneID) {
	for _, l := range lanes {
		if e, ok := c.m.LoadAndDelete(l); ok {
			c.n.Add(-1)
			e.(*laneVerifiers).kill()
		}
	}
}

// dropAll removes and wipes every entry.
func (c *verifierCache) dropAll() {
	c.m.Range(func(k, _ any) bool {
		c.drop(k.(LaneID))
		return true
	})
}

func (e *laneVerifiers) kill() {
	e.facts.Store(nil)
	e.mu.Lock()
	e.dead = true
	for i, s := range e.slots {
		if s != nil {
			s.wipe()
			e.slots[i] = nil
		}
	}
	e.mu.Unlock()
}

// verify runs fn with the slot of epoch, made by mk (from the sealed key) when the entry has
// none. Calls for one lane are serialized.
func (e *laneVerifiers) verify(epoch uint32, mk func() (*verifySlot, error), fn func(*verifySlot) error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.slots {
		if s != nil && s.epoch == epoch {
			return fn(s)
		}
	}
	s, err := mk()
	if err != nil {
		return err
	}
	if e.dead { // dropped meanwhile: use the slot once
		defer s.wipe()
		return fn(s)
	}
	// Keep the newest two epochs: fill an empty slot, else replace the older one, unless both
	// are newer than epoch (an old epoch checked for reuse): then use the slot once.
	var i int
	switch {
	case e.slots[0] == nil:
		i = 0
	case e.slots[1] == nil:
		i = 1
	case e.slots[1].epoch < e.slots[0].epoch:
		i = 1
	}
	if old := e.slots[i]; old != nil {
		if old.epoch > epoch {
			defer s.wipe()
			return fn(s)
		}
		old.wipe()
	}
	e.slots[i] = s
	return fn(s)
}
