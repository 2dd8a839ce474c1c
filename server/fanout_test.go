package server_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
)

// The Manager's side of the fan-out (fanout.go) with a scripted Notifier, no Redis: when it
// serves and when it refuses. redis_test.go runs the same against a real redis-server.

// scriptedNotifier is a memstore whose notices the test sends, and whose Subscribe fails while
// down is set.
type scriptedNotifier struct {
	server.Store
	down atomic.Bool
	mu   sync.Mutex
	fn   func(server.Notice)
}

func (s *scriptedNotifier) Subscribe(ctx context.Context, fn func(server.Notice)) (func(), error) {
	if s.down.Load() {
		return nil, errDown
	}
	s.mu.Lock()
	s.fn = fn
	s.mu.Unlock()
	return func() {}, nil
}

func (s *scriptedNotifier) send(n server.Notice) {
	s.mu.Lock()
	fn := s.fn
	s.mu.Unlock()
	fn(n)
}

var _ server.Notifier = (*scriptedNotifier)(nil)

func TestFanoutSubscribeAtStart(t *testing.T) {
	sn := &scriptedNotifier{Store: memstore.New()}
	sn.down.Store(true)
	e := newEnv(t, func(c *server.Config) { c.Store = sn })
	if err := e.mgr.Ready(); !errors.Is(err, server.ErrNotReady) {
		t.Fatalf("Ready() = %v without a subscription, want ErrNotReady", err)
	}
	c := e.newClient()
	c.login("alice") // login needs no notices
	wantRefused(t, c.get("/api/x"), 503, "store_unavailable")
	if n := e.calls.Load(); n != 0 {
		t.Fatalf("the handler ran %d times", n)
	}
	if len(e.logs.events("store_error")) == 0 {
		t.Error("the failed subscription was not logged")
	}
	sn.down.Store(false)
	waitFor(t, 10*time.Second, "the retried subscription", func() bool { return server.FanoutReady(e.mgr) })
	wantOK(t, c.get("/api/x"))
}

func TestFanoutLostAndResync(t *testing.T) {
	sn := &scriptedNotifier{Store: memstore.New()}
	e := newEnv(t, func(c *server.Config) { c.Store = sn })
	if !server.FanoutReady(e.mgr) {
		t.Fatal("not ready after New with the store up")
	}
	c := e.newClient()
	c.login("alice")
	wantOK(t, c.get("/api/1"))
	lane := laneOf(t, c)
	if !server.HasVerifier(e.mgr, lane) {
		t.Fatal("no cached verifier after a request")
	}

	sn.send(server.Notice{Lost: true})
	wantRefused(t, c.get("/api/2"), 503, "store_unavailable")
	sn.send(server.Notice{Resync: true})
	if server.HasVerifier(e.mgr, lane) {
		t.Error("a resync kept the cached verifiers")
	}
	wantOK(t, c.get("/api/3"))

	// A notice of a lane the store still has (forged, or stale): a hint, not authority. Nothing
	// of the lane is dropped (Manager.noticedGone reads the store first).
	sn.send(server.Notice{Lanes: []protocol.LaneID{lane}, Reason: "revoked"})
	if !server.HasVerifier(e.mgr, lane) {
		t.Error("a notice of a live lane dropped its cached verifiers")
	}
	wantOK(t, c.get("/api/4"))

	// Another node's deletion (in the store, shared in real life), then its notice: this node
	// drops its cache of the lane, and the store refuses it.
	_, sess, err := sn.Store.Lane(t.Context(), lane)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Store.Delete(t.Context(), sess.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	sn.send(server.Notice{Lanes: []protocol.LaneID{lane}, Reason: "revoked"})
	if server.HasVerifier(e.mgr, lane) {
		t.Error("a notice of a deleted lane kept its cached verifiers")
	}
	wantRefused(t, c.get("/api/5"), 401, "revoked")
}

// slowLaneStore is a store whose Lane reads take delay while it is set (a loaded or distant
// store), as seen by every caller.
type slowLaneStore struct {
	server.Store
	delay atomic.Int64 // time.Duration
	reads atomic.Int64
	down  atomic.Bool // Lane fails as a store that is down
}

func (s *slowLaneStore) Lane(ctx context.Context, id protocol.LaneID) (*server.Lane, *server.Session, error) {
	if s.down.Load() {
		return nil, nil, errDown
	}
	if d := time.Duration(s.delay.Load()); d > 0 {
		s.reads.Add(1)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	return s.Store.Lane(ctx, id)
}

// TestNoticeOfManyLanesReadsThemTogether: a notice names many lanes (a session's, up to
// MaxLanesPerSession of them, or several sessions'); the node confirms each in the store before
// it ends it. Was: one read after the other, so the last lane's workers heard their revocation
// after the sum of the reads (here 8 x 150 ms; with a store that answers in just under the 2 s
// bound, 16 lanes took 32 s), and every later notice waited behind.
func TestNoticeOfManyLanesReadsThemTogether(t *testing.T) {
	const lanes, delay = 8, 150 * time.Millisecond
	slow := &slowLaneStore{Store: memstore.New()}
	sn := &scriptedNotifier{Store: slow}
	e := newEnv(t, realClock, func(c *server.Config) { c.Store = sn })
	srv := serveEnv(t, e)
	c := e.newClient()
	var (
		ids   []protocol.LaneID
		socks []*eventSock
	)
	for i := range lanes {
		l := c.rawLogin(fmt.Sprintf("user%d", i))
		socks = append(socks, dialEvents(t, srv, l))
		ids = append(ids, l.lane)
		// Deleted by another node: in the store, not through this Manager.
		_, sess, err := slow.Store.Lane(t.Context(), l.lane)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := slow.Store.Delete(t.Context(), sess.ID, "revoked"); err != nil {
			t.Fatal(err)
		}
	}
	slow.delay.Store(int64(delay))
	start := time.Now()
	sn.send(server.Notice{Lanes: ids, Reason: "revoked"})
	took := time.Since(start)
	slow.delay.Store(0)
	for _, s := range socks {
		s.wantEnd(protocol.EventRevoked, "revoked")
	}
	if took > 4*delay {
		t.Fatalf("the notice of %d lanes took %v to apply, with store reads of %v", lanes, took, delay)
	}
}

// TestNoticeWithTheStoreDownEndsTheLane: a notice arrives while this node's read of the lane
// fails (the store down): the node takes the notice at its word and ends the lane with the
// notice's reason (fail closed), as before notices were confirmed in the store.
func TestNoticeWithTheStoreDownEndsTheLane(t *testing.T) {
	slow := &slowLaneStore{Store: memstore.New()}
	sn := &scriptedNotifier{Store: slow}
	e := newEnv(t, realClock, func(c *server.Config) { c.Store = sn })
	srv := serveEnv(t, e)
	l := e.newClient().rawLogin("alice")
	s := dialEvents(t, srv, l)
	slow.down.Store(true)
	sn.send(server.Notice{Lanes: []protocol.LaneID{l.lane}, Reason: "revoked"})
	slow.down.Store(false)
	s.wantEnd(protocol.EventRevoked, "revoked")
}

// TestForgedNoticesDoNotPostponeTheLaneTimer: a notice naming a live lane makes the node read
// the lane again within a second, never later than its timer was already due: notices resent
// faster than that (a forger who may PUBLISH) must not keep the timer, and with it the lane's
// rotate, expiring and expired events, from ever firing.
func TestForgedNoticesDoNotPostponeTheLaneTimer(t *testing.T) {
	sn := &scriptedNotifier{Store: memstore.New()}
	e := newEnv(t, func(c *server.Config) { c.Store = sn })
	srv := serveEnv(t, e)
	l := e.newClient().rawLogin("alice")
	dialEvents(t, srv, l)
	due0 := server.LiveDue(e.mgr, l.lane)
	if due0.IsZero() {
		t.Fatal("no event timer for the lane")
	}
	notice := server.Notice{Lanes: []protocol.LaneID{l.lane}, Reason: "revoked"}
	sn.send(notice)
	due1 := server.LiveDue(e.mgr, l.lane)
	if want := e.clock.Now().Add(time.Second); due1.After(want) || !due1.Before(due0) {
		t.Fatalf("after a notice the timer is due at %v, want by %v (was %v)", due1, want, due0)
	}
	for range 5 {
		e.clock.Add(400 * time.Millisecond)
		sn.send(notice)
		if due := server.LiveDue(e.mgr, l.lane); due.After(due1) {
			t.Fatalf("a later notice postponed the timer from %v to %v", due1, due)
		}
	}
}
