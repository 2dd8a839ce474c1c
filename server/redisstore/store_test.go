package redisstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/storetest"
)

func TestConformance(t *testing.T) {
	needRedis(t)
	storetest.Run(t, func(t *testing.T) server.Store { return newStore(t) })
}

// TestConformanceIdle runs the suite with an idle timeout, which only shortens TTLs.
func TestConformanceIdle(t *testing.T) {
	needRedis(t)
	storetest.Run(t, func(t *testing.T) server.Store {
		return New(newClient(t, sharedAddr(t)), &Options{Prefix: testPrefix(), IdleTimeout: time.Hour})
	})
}

// isSentinel reports whether err is an answer the Manager takes as a fact about the session
// rather than "store unavailable".
func isSentinel(err error) bool {
	for _, s := range []error{server.ErrNotFound, server.ErrExists, server.ErrConflict, server.ErrReplay} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func create(tb testing.TB, st *Store, user string) (*server.Session, *server.Lane) {
	tb.Helper()
	s := storetest.NewSession(user, time.Now())
	s.Expires = time.Now().Add(12 * time.Hour)
	l := storetest.NewLane(s)
	if err := st.Create(context.Background(), s, l); err != nil {
		tb.Fatalf("Create: %v", err)
	}
	return s, l
}

// twoNodes returns two Stores with their own clients (and caches) on one Redis and prefix: two
// server nodes.
func twoNodes(tb testing.TB, addr string) (*Store, *Store) {
	tb.Helper()
	needRedis(tb)
	prefix := testPrefix()
	return New(newClient(tb, addr), &Options{Prefix: prefix}), New(newClient(tb, addr), &Options{Prefix: prefix})
}

// TestTwoNodesSeen: a nonce accepted through node A is refused through node B, and nodes racing
// for the same nonces accept each exactly once.
func TestTwoNodesSeen(t *testing.T) {
	ctx := t.Context()
	a, b := twoNodes(t, sharedAddr(t))
	s, l := create(t, a, "alice")
	if err := a.Seen(ctx, l.ID, 1); err != nil {
		t.Fatalf("A: Seen(1) = %v", err)
	}
	if err := b.Seen(ctx, l.ID, 1); !errors.Is(err, server.ErrReplay) {
		t.Fatalf("B: Seen(1) after A accepted it = %v, want ErrReplay", err)
	}
	if err := b.Seen(ctx, l.ID, 2); err != nil {
		t.Fatalf("B: Seen(2) = %v", err)
	}
	if err := a.Seen(ctx, l.ID, 2); !errors.Is(err, server.ErrReplay) {
		t.Fatalf("A: Seen(2) after B accepted it = %v, want ErrReplay", err)
	}
	gl, gs, err := b.Lane(ctx, l.ID)
	if err != nil || gl.Epoch != l.Epoch || string(gs.ID) != string(s.ID) {
		t.Fatalf("B: Lane = %v, %v, %v", gl, gs, err)
	}

	// Race: each nonce offered to both nodes by several goroutines at once.
	const seqs, per = 500, 4
	var accepted [seqs + 1]atomic.Int32
	var wg sync.WaitGroup
	for i := range 2 * per {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			for seq := uint64(3); seq <= seqs; seq++ {
				switch err := st.Seen(ctx, l.ID, seq); {
				case err == nil:
					accepted[seq].Add(1)
				case !errors.Is(err, server.ErrReplay):
					t.Errorf("Seen(%d): %v", seq, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for seq := 3; seq <= seqs; seq++ {
		if n := accepted[seq].Load(); n != 1 {
			t.Fatalf("seq %d accepted %d times across two nodes, want once", seq, n)
		}
	}

	// A deletion on A is seen on B at once, although B has the lane cached.
	if _, err := a.Delete(ctx, s.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	var g *server.GoneError
	if _, _, err := b.Lane(ctx, l.ID); !errors.As(err, &g) || g.Reason != "revoked" {
		t.Errorf("B: Lane after A deleted = %v, want gone (revoked)", err)
	}
	if err := b.Seen(ctx, l.ID, seqs+1); !errors.As(err, &g) {
		t.Errorf("B: Seen after A deleted = %v, want gone", err)
	}
}

// scanKeys returns every key under the store's prefix.
func scanKeys(t *testing.T, st *Store) []string {
	t.Helper()
	var keys []string
	iter := st.c.Scan(t.Context(), 0, st.prefix+"*", 100).Iterator()
	for iter.Next(t.Context()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestTTLs: after a lifecycle of every operation, every key the store wrote has a TTL, and none
// outlives its session's deadline; the layout is one key per session, lane and user.
func TestTTLs(t *testing.T) {
	ctx := t.Context()
	st := New(newClient(t, sharedAddr(t)), &Options{Prefix: testPrefix(), IdleTimeout: 30 * time.Minute})
	now := time.Now()
	var live, gone []*server.Session
	nLanes := 0
	for i, user := range []string{"alice", "alice", "bob", ""} {
		s := storetest.NewSession(user, now)
		s.Expires = now.Add(time.Duration(i+1) * time.Hour)
		l := storetest.NewLane(s)
		if err := st.Create(ctx, s, l); err != nil {
			t.Fatal(err)
		}
		l2 := storetest.NewLane(s)
		if err := st.AddLane(ctx, l2); err != nil {
			t.Fatal(err)
		}
		nLanes += 2
		for seq := uint64(1); seq < 5; seq++ {
			if err := st.Seen(ctx, l2.ID, seq); err != nil {
				t.Fatal(err)
			}
		}
		next := *l
		next.Epoch, next.Key = 1, []byte("k1")
		if err := st.UpdateLane(ctx, &next, 0); err != nil {
			t.Fatal(err)
		}
		if err := st.Touch(ctx, s.ID, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if _, err := st.Delete(ctx, s.ID, "logout"); err != nil {
				t.Fatal(err)
			}
			gone = append(gone, s)
		} else {
			live = append(live, s)
		}
	}
	// A session deleted past its Expires leaves no tombstone.
	old := storetest.NewSession("carol", now.Add(-13*time.Hour))
	old.Expires = now.Add(-time.Hour)
	if err := st.Create(ctx, old, storetest.NewLane(old)); err != nil {
		t.Fatal(err)
	}
	nLanes++
	if _, err := st.Delete(ctx, old.ID, "expired"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UserSessions(ctx, "alice"); err != nil {
		t.Fatal(err)
	}

	keys := scanKeys(t, st)
	counts := map[string]int{}
	for _, k := range keys {
		kind := strings.TrimPrefix(k, st.prefix)[:1]
		counts[kind]++
		ttl, err := st.c.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 {
			t.Errorf("key %q has no TTL (%v)", k, ttl)
		}
		// Nothing outlives the last session's Expires plus the linger.
		if max := 4*time.Hour + linger + time.Second; ttl > max {
			t.Errorf("key %q: TTL %v, more than %v", k, ttl, max)
		}
		if kind == "s" {
			// Live sessions end for idleness: 30 minutes past the Touch, plus the linger.
			if typ := st.c.HExists(ctx, k, "s").Val(); typ && ttl > 32*time.Minute+linger {
				t.Errorf("live session %q: TTL %v, want its idle deadline", k, ttl)
			}
		}
	}
	// One hash per session, live or tombstone (not the one deleted past Expires); one index
	// entry per lane; one sorted set per user with a live session.
	if want := len(live) + len(gone); counts["s"] != want {
		t.Errorf("%d session keys, want %d (%v)", counts["s"], want, keys)
	}
	if counts["l"] != nLanes {
		t.Errorf("%d lane index keys, want %d", counts["l"], nLanes)
	}
	if counts["u"] != 2 { // alice (one live), "" (one live); bob's only session was deleted
		t.Errorf("%d user index keys, want 2 (%v)", counts["u"], keys)
	}
	for _, s := range gone {
		ttl := st.c.PTTL(ctx, st.sessionKey(s.ID)).Val()
		if want := time.Until(s.Expires); ttl > want+time.Second || ttl < want-time.Minute {
			t.Errorf("tombstone TTL %v, want about %v (until Expires)", ttl, want)
		}
	}
	if len(keys) != counts["s"]+counts["l"]+counts["u"] {
		t.Errorf("unexpected keys: %q", keys)
	}
}

// TestIdleTimeout: with Options.IdleTimeout, a session's key ends IdleTimeout plus the linger
// after its last Touch, and Touch moves that on, never past the absolute deadline.
func TestIdleTimeout(t *testing.T) {
	ctx := t.Context()
	st := New(newClient(t, sharedAddr(t)), &Options{Prefix: testPrefix(), IdleTimeout: 10 * time.Minute})
	now := time.Now()
	s := storetest.NewSession("alice", now)
	s.Expires = now.Add(20 * time.Minute)
	if err := st.Create(ctx, s, storetest.NewLane(s)); err != nil {
		t.Fatal(err)
	}
	key := st.sessionKey(s.ID)
	check := func(want time.Duration) {
		t.Helper()
		if ttl := st.c.PTTL(ctx, key).Val(); ttl > want || ttl < want-5*time.Second {
			t.Errorf("TTL %v, want about %v", ttl, want)
		}
	}
	check(11 * time.Minute)
	if err := st.Touch(ctx, s.ID, now.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	check(16 * time.Minute)
	if err := st.Touch(ctx, s.ID, now.Add(15*time.Minute)); err != nil {
		t.Fatal(err)
	}
	check(21 * time.Minute) // capped by Expires plus the linger
	if err := st.Touch(ctx, s.ID, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	check(21 * time.Minute) // an older Touch changes nothing
}

// rtCounter counts round trips: one per command, one per pipeline.
type rtCounter struct{ n atomic.Int64 }

func (c *rtCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *rtCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *rtCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// countingStore returns a Store whose round trips are counted.
func countingStore(tb testing.TB, addr, prefix string) (*Store, *rtCounter) {
	c := newClient(tb, addr)
	rt := &rtCounter{}
	c.AddHook(rt)
	return New(c, &Options{Prefix: prefix}), rt
}

// TestRoundTrips pins the number of round trips of each operation, the verify path's above all.
func TestRoundTrips(t *testing.T) {
	needRedis(t)
	ctx := t.Context()
	prefix := testPrefix()
	a, rtA := countingStore(t, sharedAddr(t), prefix)
	b, rtB := countingStore(t, sharedAddr(t), prefix)
	// Open a connection for each node (its handshake would count) and load the scripts, so
	// that no EVALSHA misses below.
	if err := b.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	warm, wl := create(t, a, "warm")
	for _, err := range []error{a.Seen(ctx, wl.ID, 1), a.Touch(ctx, warm.ID, time.Now()), a.UpdateLane(ctx, wl, 0), a.AddLane(ctx, storetest.NewLane(warm))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := a.DeleteLane(ctx, wl.ID, "lane_evicted"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Delete(ctx, warm.ID, "logout"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UserSessions(ctx, "warm"); err != nil {
		t.Fatal(err)
	}

	count := func(rt *rtCounter, what string, want int64, fn func() error) {
		t.Helper()
		before := rt.n.Load()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := rt.n.Load() - before; got != want {
			t.Errorf("%s: %d round trips, want %d", what, got, want)
		}
	}
	s := storetest.NewSession("alice", time.Now())
	l := storetest.NewLane(s)
	count(rtA, "Create", 2, func() error { return a.Create(ctx, s, l) })
	count(rtA, "Lane (node A, created here)", 1, func() error { _, _, err := a.Lane(ctx, l.ID); return err })
	count(rtA, "Seen (node A)", 1, func() error { return a.Seen(ctx, l.ID, 1) })
	count(rtB, "Lane (node B, first sight)", 2, func() error { _, _, err := b.Lane(ctx, l.ID); return err })
	count(rtB, "Seen (node B, after Lane)", 1, func() error { return b.Seen(ctx, l.ID, 2) })
	count(rtB, "Lane (node B, again)", 1, func() error { _, _, err := b.Lane(ctx, l.ID); return err })
	count(rtA, "Touch", 1, func() error { return a.Touch(ctx, s.ID, time.Now()) })
	next := *l
	next.Epoch = 1
	count(rtA, "UpdateLane", 1, func() error { return a.UpdateLane(ctx, &next, 0) })
	count(rtA, "AddLane", 2, func() error { return a.AddLane(ctx, storetest.NewLane(s)) })
	count(rtA, "Session", 1, func() error { _, _, err := a.Session(ctx, s.ID); return err })
	extra := storetest.NewLane(s)
	if err := a.AddLane(ctx, extra); err != nil {
		t.Fatal(err)
	}
	count(rtA, "DeleteLane (cached)", 1, func() error { return a.DeleteLane(ctx, extra.ID, "lane_evicted") })
	count(rtA, "UserSessions", 2, func() error { _, err := a.UserSessions(ctx, "alice"); return err })
	count(rtA, "Delete", 2, func() error { _, err := a.Delete(ctx, s.ID, "logout"); return err })
	var unknown protocol.LaneID
	unknown[0] = 1
	count(rtB, "Lane (unknown lane)", 1, func() error {
		if _, _, err := b.Lane(ctx, unknown); !errors.Is(err, server.ErrNotFound) {
			return err
		}
		return nil
	})
	count(rtB, "Lane (deleted, cached)", 1, func() error {
		if _, _, err := b.Lane(ctx, l.ID); !errors.Is(err, server.ErrNotFound) {
			return err
		}
		return nil
	})
}

// TestReplayWindowScript runs the Lua window against server.ReplayWindow.Check on long random
// sequences, around 0, the 32-bit boundary (where the script's two halves carry) and the top of
// the uint64 range.
func TestReplayWindowScript(t *testing.T) {
	ctx := t.Context()
	st := newStore(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, start := range []uint64{0, 1<<32 - 700, 1<<53 - 300, 1 << 63, ^uint64(0) - 5000, rng.Uint64() >> 1} {
		_, l := create(t, st, "alice")
		var w server.ReplayWindow
		w.Top = start // as if start had been seen, with an empty window below it
		top := start
		// off returns top+d, or top+1 (top at the very end) where that leaves the uint64 range.
		off := func(d int64) uint64 {
			switch {
			case d < 0 && uint64(-d) > top, d > 0 && uint64(d) > ^uint64(0)-top:
				if top == ^uint64(0) {
					return top
				}
				return top + 1
			}
			return top + uint64(d)
		}
		if start > 0 {
			if err := st.Seen(ctx, l.ID, start); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3000 {
			var seq uint64
			switch r := rng.IntN(100); {
			case r < 40: // near the top, mostly below it
				seq = off(20 - int64(rng.IntN(1100)))
			case r < 75: // the next ones
				seq = off(1 + int64(rng.IntN(3)))
			case r < 85: // around the window's lower edge
				seq = off(-1026 + int64(rng.IntN(5)))
			case r < 95: // a jump of up to two windows
				seq = off(int64(rng.IntN(2100)))
			case r < 98: // a repeat
				seq = off(-int64(rng.IntN(10)))
			default:
				seq = 0
			}
			want := w.Check(seq)
			err := st.Seen(ctx, l.ID, seq)
			if got := err == nil; got != want || err != nil && !errors.Is(err, server.ErrReplay) {
				t.Fatalf("start %d, step %d: Seen(%d) = %v, want fresh=%v (top %d)", start, i, seq, err, want, w.Top)
			}
			top = w.Top
		}
	}
}

// TestCorrupt: a damaged record or window is an error, never a sentinel, and never a panic.
func TestCorrupt(t *testing.T) {
	ctx := t.Context()
	st := newStore(t)
	s, l := create(t, st, "alice")
	key := st.sessionKey(s.ID)
	for _, c := range []struct{ field, value string }{
		{laneField(l.ID), "\x01\x00"},
		{"s", "\x02"},
		{"t", "short"},
		{"w" + string(l.ID[:]), "not 136 bytes"},
	} {
		old := st.c.HGet(ctx, key, c.field).Val()
		st.c.HSet(ctx, key, c.field, c.value)
		_, _, errLane := st.Lane(ctx, l.ID)
		errSeen := st.Seen(ctx, l.ID, 7)
		_, _, errSess := st.Session(ctx, s.ID)
		switch c.field {
		case laneField(l.ID):
			if errLane == nil || isSentinel(errLane) {
				t.Errorf("Lane with a corrupt lane record = %v", errLane)
			}
		case "s", "t":
			if errLane == nil || isSentinel(errLane) || errSess == nil || isSentinel(errSess) {
				t.Errorf("corrupt %s: Lane = %v, Session = %v", c.field, errLane, errSess)
			}
		default:
			if errSeen == nil || isSentinel(errSeen) {
				t.Errorf("Seen with a corrupt window = %v", errSeen)
			}
		}
		if old == "" {
			st.c.HDel(ctx, key, c.field)
		} else {
			st.c.HSet(ctx, key, c.field, old)
		}
	}
	// A key of the wrong type.
	st.c.Del(ctx, key)
	st.c.Set(ctx, key, "x", time.Minute)
	if _, _, err := st.Lane(ctx, l.ID); err == nil || isSentinel(err) {
		t.Errorf("Lane on a string key = %v", err)
	}
	if err := st.Seen(ctx, l.ID, 8); err == nil || isSentinel(err) {
		t.Errorf("Seen on a string key = %v", err)
	}
}

func TestOpen(t *testing.T) {
	needRedis(t)
	ctx := t.Context()
	st, err := Open("redis://"+sharedAddr(t)+"/3", &Options{Prefix: testPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	_, l := create(t, st, "alice")
	if err := st.Seen(ctx, l.ID, 1); err != nil {
		t.Fatal(err)
	}
	if n := st.c.(*redis.Client).Options().DB; n != 3 {
		t.Errorf("DB %d, want 3", n)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Ping(ctx); err == nil {
		t.Error("Ping after Close succeeded")
	}
	if _, err := Open("http://nope", nil); err == nil {
		t.Error("Open(http://) succeeded")
	}
}

// TestScriptFlush: a Redis that lost its scripts (a restart, SCRIPT FLUSH) gets them again,
// on every path, the pipelined ones included.
func TestScriptFlush(t *testing.T) {
	ctx := t.Context()
	st := newStore(t)
	flush := func() {
		t.Helper()
		if err := st.c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	s, l := create(t, st, "alice")
	flush()
	if err := st.Seen(ctx, l.ID, 1); err != nil {
		t.Fatal(err)
	}
	flush()
	l2 := storetest.NewLane(s)
	if err := st.AddLane(ctx, l2); err != nil {
		t.Fatal(err)
	}
	flush()
	next := *l
	next.Epoch = 1
	if err := st.UpdateLane(ctx, &next, 0); err != nil {
		t.Fatal(err)
	}
	flush()
	if err := st.Touch(ctx, s.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	flush()
	if lanes, err := st.Delete(ctx, s.ID, "logout"); err != nil || len(lanes) != 2 {
		t.Fatalf("Delete = %v, %v", lanes, err)
	}
}

// TestUserIndexPrune: a session that Redis dropped (its TTL) leaves the user index on the next
// read; the index itself is gone with its last session.
func TestUserIndexPrune(t *testing.T) {
	ctx := t.Context()
	st := newStore(t)
	s1, _ := create(t, st, "alice")
	s2, _ := create(t, st, "alice")
	st.c.Del(ctx, st.sessionKey(s1.ID)) // as its TTL would
	got, err := st.UserSessions(ctx, "alice")
	if err != nil || len(got) != 1 || string(got[0].ID) != string(s2.ID) {
		t.Fatalf("UserSessions = %d sessions, %v; want only the live one", len(got), err)
	}
	if n := st.c.ZCard(ctx, st.userKey("alice")).Val(); n != 1 {
		t.Errorf("user index holds %d members, want 1", n)
	}
	if _, err := st.Delete(ctx, s2.ID, "logout"); err != nil {
		t.Fatal(err)
	}
	if n := st.c.Exists(ctx, st.userKey("alice")).Val(); n != 0 {
		t.Errorf("user index of a user without sessions still exists")
	}
}

func TestLaneCacheBound(t *testing.T) {
	var c laneCache
	r := &laneRef{sid: "s", key: "k"}
	for i := range maxCachedLanes + 1000 {
		var id protocol.LaneID
		id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
		c.put(id, r)
		c.put(id, r) // again: counted once
	}
	if n := c.n.Load(); n > maxCachedLanes {
		t.Errorf("cache holds %d lanes, bound %d", n, maxCachedLanes)
	}
	size := 0
	c.m.Range(func(any, any) bool { size++; return true })
	if int64(size) != c.n.Load() {
		t.Errorf("cache counts %d, holds %d", c.n.Load(), size)
	}
}
