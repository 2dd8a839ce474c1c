package redisstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/storetest"
)

// waitUp waits until st reaches Redis again.
func waitUp(t *testing.T, st *Store) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for st.Ping(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the store did not reconnect within 15 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allDown calls every method of st and wants an error that is not a sentinel from each: with
// Redis unreachable, the Manager must answer 503, never act on a fact.
func allDown(t *testing.T, st *Store, s *server.Session, l *server.Lane) (slowest time.Duration) {
	t.Helper()
	var unknown protocol.LaneID
	unknown[0] = 7
	down := func(what string, fn func(context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		start := time.Now()
		err := fn(ctx)
		if err == nil || isSentinel(err) {
			t.Errorf("%s with Redis down = %v, want a store error", what, err)
		}
		var g *server.GoneError
		if errors.As(err, &g) {
			t.Errorf("%s with Redis down = %v, a GoneError", what, err)
		}
		d := time.Since(start)
		if d > 5*time.Second {
			t.Errorf("%s with Redis down took %v", what, d)
		}
		slowest = max(slowest, d)
	}
	s2 := storetest.NewSession("alice", time.Now())
	next := *l
	next.Epoch = 1
	down("Create", func(ctx context.Context) error { return st.Create(ctx, s2, storetest.NewLane(s2)) })
	down("AddLane", func(ctx context.Context) error { return st.AddLane(ctx, storetest.NewLane(s)) })
	down("Lane", func(ctx context.Context) error { _, _, err := st.Lane(ctx, l.ID); return err })
	down("Lane(unknown)", func(ctx context.Context) error { _, _, err := st.Lane(ctx, unknown); return err })
	down("Seen", func(ctx context.Context) error { return st.Seen(ctx, l.ID, 2) })
	down("Seen(replayed)", func(ctx context.Context) error { return st.Seen(ctx, l.ID, 1) })
	down("Seen(unknown)", func(ctx context.Context) error { return st.Seen(ctx, unknown, 1) })
	down("UpdateLane", func(ctx context.Context) error { return st.UpdateLane(ctx, &next, 0) })
	down("Touch", func(ctx context.Context) error { return st.Touch(ctx, s.ID, time.Now()) })
	down("Delete", func(ctx context.Context) error { _, err := st.Delete(ctx, s.ID, "logout"); return err })
	down("Session", func(ctx context.Context) error { _, _, err := st.Session(ctx, s.ID); return err })
	down("UserSessions", func(ctx context.Context) error { _, err := st.UserSessions(ctx, "alice"); return err })
	down("Publish", func(ctx context.Context) error { return st.Publish(ctx, Notice{Reason: "x"}) })
	down("Subscribe", func(ctx context.Context) error {
		stop, err := st.Subscribe(ctx, func(Notice) {})
		if err == nil {
			stop()
		}
		return err
	})
	down("Ping", st.Ping)
	return slowest
}

// TestRedisDown: with Redis killed, every method fails with a store error (never a false
// success, never a sentinel); when Redis is back on the same port, the same Stores work again
// without being told. This Redis keeps nothing, so the sessions are gone: refused, not accepted.
func TestRedisDown(t *testing.T) {
	p := ownRedis(t, false)
	ctx := t.Context()
	st := New(newClient(t, p.addr()), nil)
	fast := redis.NewClient(&redis.Options{Addr: p.addr(), DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	defer fast.Close()
	other := New(fast, nil) // a second node, which never saw the lane
	opened, err := Open("redis://"+p.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	s, l := create(t, st, "alice")
	if err := st.Seen(ctx, l.ID, 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := opened.Lane(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	p.kill()
	t.Logf("slowest call with Redis down: %v (go-redis defaults, lane cached), %v (one dial per try, lane not cached), %v (Open)",
		allDown(t, st, s, l), allDown(t, other, s, l), allDown(t, opened, s, l))

	p.restart(t)
	for _, x := range []*Store{st, other, opened} {
		waitUp(t, x)
	}
	for _, x := range []*Store{st, other, opened} {
		if _, _, err := x.Lane(ctx, l.ID); !errors.Is(err, server.ErrNotFound) {
			t.Errorf("Lane of a session Redis lost = %v, want ErrNotFound", err)
		}
		if err := x.Seen(ctx, l.ID, 2); !errors.Is(err, server.ErrNotFound) {
			t.Errorf("Seen of a session Redis lost = %v, want ErrNotFound", err)
		}
		s2, l2 := create(t, x, "bob")
		if err := x.Seen(ctx, l2.ID, 1); err != nil {
			t.Errorf("Seen after the restart = %v", err)
		}
		if _, _, err := x.Lane(ctx, l2.ID); err != nil {
			t.Errorf("Lane after the restart = %v", err)
		}
		if _, err := x.Delete(ctx, s2.ID, "logout"); err != nil {
			t.Errorf("Delete after the restart = %v", err)
		}
	}
}

// TestRestartUnderLoad: two nodes hammer Seen on several lanes, alternating nodes and throwing
// in replays of accepted nonces, while Redis (persisting each write before it answers) is
// killed and restarted. No nonce is ever accepted twice, nothing is accepted while Redis is
// down, and the service comes back by itself.
func TestRestartUnderLoad(t *testing.T) {
	p := ownRedis(t, true)
	ctx := t.Context()
	a, b := twoNodes(t, p.addr())
	const nLanes = 6
	type laneLog struct {
		mu       sync.Mutex
		accepted map[uint64]bool
	}
	lanes := make([]*server.Lane, nLanes)
	logs := make([]*laneLog, nLanes)
	for i := range lanes {
		_, lanes[i] = create(t, a, "alice")
		logs[i] = &laneLog{accepted: map[uint64]bool{}}
	}

	var down atomic.Bool // Redis is dead: set once the process exited, cleared before the restart
	var stop atomic.Bool
	var okBefore, okAfter, failed, falseAccepts atomic.Int64
	var restarted atomic.Bool
	var wg sync.WaitGroup
	for i := range nLanes {
		wg.Go(func() {
			l, lg := lanes[i], logs[i]
			seq := uint64(0)
			for n := 0; !stop.Load(); n++ {
				st := a
				if n%2 == 1 {
					st = b
				}
				try := seq + 1
				replay := n%5 == 4 && seq > 0
				if replay {
					try = seq - uint64(n%7) // an accepted nonce, or one that failed
				}
				wasDown := down.Load()
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				err := st.Seen(cctx, l.ID, try)
				cancel()
				switch {
				case err == nil:
					lg.mu.Lock()
					dup := lg.accepted[try]
					lg.accepted[try] = true
					lg.mu.Unlock()
					if dup || wasDown && down.Load() {
						falseAccepts.Add(1)
						t.Errorf("lane %d: nonce %d accepted (twice: %v, while down: %v)", i, try, dup, wasDown)
					}
					if restarted.Load() {
						okAfter.Add(1)
					} else {
						okBefore.Add(1)
					}
				case errors.Is(err, server.ErrReplay):
				case isSentinel(err):
					t.Errorf("lane %d: Seen(%d) = %v", i, try, err)
				default:
					failed.Add(1)
				}
				if !replay {
					seq = try
				}
			}
		})
	}
	// Load running before the kill: some calls accepted (not a fixed wait, which a loaded
	// machine may spend before the first call returns).
	for deadline := time.Now().Add(10 * time.Second); okBefore.Load() < 50 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	p.kill()
	down.Store(true)
	time.Sleep(2 * time.Second)
	down.Store(false)
	restarted.Store(true)
	p.restart(t)
	deadline := time.Now().Add(10 * time.Second)
	for okAfter.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("accepted %d before the kill, %d after the restart; %d calls failed while Redis was away", okBefore.Load(), okAfter.Load(), failed.Load())
	if okBefore.Load() == 0 || failed.Load() == 0 {
		t.Errorf("the load did not span the outage: %d accepted before, %d failed", okBefore.Load(), failed.Load())
	}
	if okAfter.Load() < 100 {
		t.Errorf("only %d nonces accepted after the restart: the service did not come back", okAfter.Load())
	}

	// Every nonce accepted before or after the restart stays refused, through either node.
	for i, lg := range logs {
		for seq := range lg.accepted {
			for _, st := range []*Store{a, b} {
				if err := st.Seen(ctx, lanes[i].ID, seq); !errors.Is(err, server.ErrReplay) {
					t.Fatalf("lane %d: Seen(%d) after the restart = %v, want ErrReplay", i, seq, err)
				}
			}
		}
	}
}
