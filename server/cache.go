package server

import (
	"sync"
	"sync/atomic"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// verifierCache keeps, per lane, ready verifiers of its current and previous epoch, so that a
// request costs an HMAC and not an AES-GCM open, an HKDF and an HMAC key setup. The key of a
// (lane, epoch) never changes (rotations are compare-and-swap, lane IDs are never reused), so
// entries need no invalidation for correctness; they are dropped when this node deletes a lane
// (to wipe the key soon) and evicted, wiped, past maxCachedLanes.
type verifierCache struct {
	m sync.Map // protocol.LaneID -> *laneVerifiers; reads take no lock
	n atomic.Int64
}

const maxCachedLanes = 50_000

// laneVerifiers is one lane's entry. Its mutex serializes the use of its slots, whose MAC states
// and buffers are not safe for concurrent use.
type laneVerifiers struct {
	// handle and lane name the lane's session and the lane in logs and Info; computed once,
	// because a lane's session never changes.
	handle, lane string

	mu    sync.Mutex
	dead  bool // dropped from the cache and wiped
	slots [2]*verifySlot
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

func (c *verifierCache) entry(lane protocol.LaneID, sessionID []byte) *laneVerifiers {
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
func (c *verifierCache) drop(lanes ...protocol.LaneID) {
	for _, l := range lanes {
		if e, ok := c.m.LoadAndDelete(l); ok {
			c.n.Add(-1)
			e.(*laneVerifiers).kill()
		}
	}
}

func (e *laneVerifiers) kill() {
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
