package server_test

import (
	"context"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

// Require keeps each lane's last-read store records with its verifiers (laneFacts in cache.go)
// and skips the store's Lane read while they are usable. These tests check that the cache never
// decides anything the store should: every test warms the cache of node A, changes the session
// through node B (a second Manager on the same store, as with redisstore) or the clock, and
// sends the next request to A.

// countStore counts Lane, Seen and Touch calls.
type countStore struct {
	server.Store
	lanes, seens, touches atomic.Int64
}

func (s *countStore) Touch(ctx context.Context, sessionID []byte, t time.Time) error {
	s.touches.Add(1)
	return s.Store.Touch(ctx, sessionID, t)
}

func (s *countStore) Lane(ctx context.Context, id protocol.LaneID) (*server.Lane, *server.Session, error) {
	s.lanes.Add(1)
	return s.Store.Lane(ctx, id)
}

func (s *countStore) Seen(ctx context.Context, id protocol.LaneID, seq uint64) error {
	s.seens.Add(1)
	return s.Store.Seen(ctx, id, seq)
}

// twoNodes returns node A (with a counting store) and node B on the same store and clock.
func twoNodes(t *testing.T, opts ...envOpt) (a, b *env, cs *countStore) {
	a = newEnv(t, append([]envOpt{func(c *server.Config) { cs = &countStore{Store: c.Store}; c.Store = cs }}, opts...)...)
	b = newEnv(t, append([]envOpt{func(c *server.Config) { c.Store = cs.Store; c.Now = a.clock.Now }}, opts...)...)
	b.clock = a.clock
	return a, b, cs
}

// warm logs in a client on a and sends two requests, so that a's cache holds the lane.
func warm(t *testing.T, a *env) *client {
	t.Helper()
	c := a.newClient()
	c.login("alice")
	wantOK(t, c.get("/api/warm"))
	wantOK(t, c.get("/api/warm"))
	return c
}

func TestCachedFactsSkipTheLaneRead(t *testing.T) {
	a, _, cs := twoNodes(t)
	c := warm(t, a)
	lanes, seens := cs.lanes.Load(), cs.seens.Load()
	for range 10 {
		a.clock.Add(100 * time.Millisecond)
		wantOK(t, c.get("/api/x"))
	}
	if n := cs.lanes.Load() - lanes; n != 0 {
		t.Errorf("%d Lane reads for 10 requests of a warm lane, want 0", n)
	}
	if n := cs.seens.Load() - seens; n != 10 {
		t.Errorf("%d Seen calls for 10 requests, want 10 (liveness is checked on every request)", n)
	}
	if info := a.lastInfo(); info.UserID != "alice" || info.Claims["role"] != "user" || info.Lane != c.reply.Lane || info.Handle == "" {
		t.Errorf("info from cached facts: %+v", info)
	}
	// The facts are read again after at most 5 s.
	a.clock.Add(5 * time.Second)
	wantOK(t, c.get("/api/x"))
	if n := cs.lanes.Load() - lanes; n != 1 {
		t.Errorf("%d Lane reads after the facts aged, want 1", n)
	}
	// The session endpoints always read the store.
	lanes = cs.lanes.Load()
	wantOK(t, c.do(c.sign("POST", "/sv/logout", nil)))
	if cs.lanes.Load() == lanes {
		t.Error("logout did not read the lane from the store")
	}
	wantRefused(t, c.get("/api/x"), 401, "logout")
}

func TestCachedFactsEndedElsewhere(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		end          func(t *testing.T, b *env, c *client)
	}{
		{"revoke", "revoked", func(t *testing.T, b *env, c *client) {
			list, err := b.mgr.Sessions(t.Context(), "alice")
			if err != nil || len(list) != 1 {
				t.Fatalf("sessions %v %v", list, err)
			}
			if err := b.mgr.Revoke(t.Context(), "alice", list[0].Handle); err != nil {
				t.Fatal(err)
			}
		}},
		{"revoke user", "revoked", func(t *testing.T, b *env, c *client) {
			if n, err := b.mgr.RevokeUser(t.Context(), "alice"); n != 1 || err != nil {
				t.Fatalf("RevokeUser: %d %v", n, err)
			}
		}},
		{"logout", "logout", func(t *testing.T, b *env, c *client) {
			wantOK(t, b.serve(c.sign("POST", "/sv/logout", nil)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _ := twoNodes(t)
			c := warm(t, a)
			tc.end(t, b, c)
			wantRefused(t, c.get("/api/x"), 401, tc.reason)
			if a.calls.Load() != 2 {
				t.Errorf("handler ran %d times, want 2 (the warm-up only)", a.calls.Load())
			}
		})
	}
	t.Run("rekey", func(t *testing.T) {
		a, b, _ := twoNodes(t)
		c := warm(t, a)
		oldLane := c.reply.Lane
		probe := c.sign("GET", "/api/x", nil) // under the old lane, sent after the re-key
		c.do = b.serve
		wantOK(t, c.rekey())
		if c.reply.Lane == oldLane {
			t.Fatal("rekey kept the lane")
		}
		c.do = a.serve
		wantRefused(t, a.serve(probe), 401, "rekeyed")
		wantOK(t, c.get("/api/x")) // the new lane works on A
	})
}

func TestCachedFactsAbsoluteExpiry(t *testing.T) {
	a, _, _ := twoNodes(t, func(c *server.Config) { c.AbsoluteTimeout = time.Hour; c.IdleTimeout = 2 * time.Hour })
	c := a.newClient()
	c.login("alice")
	a.clock.Add(time.Hour - 2*time.Second)
	wantOK(t, c.get("/api/x"))
	wantOK(t, c.get("/api/x")) // warm, facts good for 5 s more
	a.clock.Add(2 * time.Second)
	w := c.get("/api/x")
	if w.Code != 401 || w.Header().Get("Sv-Error") != "expired" && w.Header().Get("Sv-Error") != "unknown_session" {
		t.Fatalf("at the absolute deadline: %d %q", w.Code, w.Header().Get("Sv-Error"))
	}
}

func TestCachedFactsIdleTimeout(t *testing.T) {
	// IdleTimeout 3 s (LastSeen written every 150 ms), shorter than the facts' 5 s life, so the
	// idle decision meets warm facts.
	idle := func(c *server.Config) { c.IdleTimeout = 3 * time.Second }

	t.Run("expires with the cache warm", func(t *testing.T) {
		a, _, cs := twoNodes(t, idle)
		c := warm(t, a)
		a.clock.Add(3500 * time.Millisecond)
		lanes := cs.lanes.Load()
		wantRefused(t, c.get("/api/x"), 401, "expired")
		if cs.lanes.Load() == lanes {
			t.Error("refused as idle without reading the session again")
		}
		wantRefused(t, c.get("/api/x"), 401, "expired")
		if n := len(a.logs.events("expired")); n != 1 {
			t.Errorf("%d expired events, want 1", n)
		}
	})

	t.Run("activity on another node keeps it alive", func(t *testing.T) {
		a, b, _ := twoNodes(t, idle)
		c := warm(t, a) // A's facts: LastSeen = login time
		a.clock.Add(2 * time.Second)
		wantOK(t, b.serve(c.sign("GET", "/api/x", nil))) // B touches LastSeen
		a.clock.Add(2 * time.Second)
		// By A's facts the session is 4 s idle; the store says 2 s.
		wantOK(t, c.get("/api/x"))
		a.clock.Add(2 * time.Second)
		wantOK(t, c.get("/api/x"))
	})

	t.Run("activity on this node keeps it alive", func(t *testing.T) {
		a, _, _ := twoNodes(t, idle)
		c := warm(t, a)
		for range 20 {
			a.clock.Add(time.Second)
			wantOK(t, c.get("/api/x"))
		}
		list, err := a.mgr.Sessions(t.Context(), "alice")
		if err != nil || len(list) != 1 {
			t.Fatalf("sessions %v %v", list, err)
		}
		if got := a.clock.Now().Sub(list[0].LastSeen); got > time.Second {
			t.Errorf("stored LastSeen is %v old after a request every second", got)
		}
	})

	t.Run("one touch per interval", func(t *testing.T) {
		a, _, cs := twoNodes(t, func(c *server.Config) { c.IdleTimeout = 20 * time.Second }) // touch every 1 s
		c := warm(t, a)
		a.clock.Add(1500 * time.Millisecond)
		touches := cs.touches.Load()
		for range 10 {
			wantOK(t, c.get("/api/x"))
			a.clock.Add(10 * time.Millisecond)
		}
		if n := cs.touches.Load() - touches; n != 1 {
			t.Errorf("%d Touch calls for 10 requests within 100 ms, want 1", n)
		}
	})
}

func TestCachedFactsRotationElsewhere(t *testing.T) {
	a, b, _ := twoNodes(t)
	c := a.newClient()
	l := c.rawLogin("alice")
	wantOK(t, c.do(c.signRaw(l, "GET", "/api/x", nil)))
	wantOK(t, c.do(c.signRaw(l, "GET", "/api/x", nil))) // A's facts: epoch 0
	old := l.copy()
	old.seq = 500
	eph, _ := protocol.NewEphemeral(rand.Reader)
	c.do = b.serve
	wantOK(t, c.rotateRaw(l, eph)) // on B: epoch 1
	c.do = a.serve
	wantOK(t, c.do(c.signRaw(l, "GET", "/api/x", nil)))   // the new epoch on A
	wantOK(t, c.do(c.signRaw(old, "GET", "/api/x", nil))) // the old one, in grace
	a.clock.Add(31 * time.Second)
	wantRefused(t, c.do(c.signRaw(old, "GET", "/api/x", nil)), 401, "reuse_detected")
	wantRefused(t, c.do(c.signRaw(l, "GET", "/api/x", nil)), 401, "reuse_detected")
}

func TestCachedFactsRotationElsewhereThenOldKey(t *testing.T) {
	// A's facts still say epoch 0 when the old key comes back after the grace window: they have
	// aged out by then, and the fresh read detects the reuse.
	a, b, _ := twoNodes(t)
	c := a.newClient()
	l := c.rawLogin("alice")
	wantOK(t, c.do(c.signRaw(l, "GET", "/api/x", nil)))
	thief := l.copy()
	thief.seq = 500
	eph, _ := protocol.NewEphemeral(rand.Reader)
	c.do = b.serve
	wantOK(t, c.rotateRaw(l, eph))
	c.do = a.serve
	a.clock.Add(31 * time.Second)
	wantRefused(t, c.do(c.signRaw(thief, "GET", "/api/x", nil)), 401, "reuse_detected")
	wantRefused(t, b.serve(c.signRaw(l, "GET", "/api/x", nil)), 401, "reuse_detected")
}

func TestCachedFactsRotationHint(t *testing.T) {
	// The hint is decided on a fresh read: a lane rotated on B gets no hint from A's old facts.
	a, b, _ := twoNodes(t, func(c *server.Config) { c.RotateEvery = 10 * time.Second })
	c := warm(t, a)
	a.clock.Add(11 * time.Second)
	w := c.get("/api/x")
	wantOK(t, w)
	if w.Header().Get("Sv-Action") != "rotate" {
		t.Fatalf("no rotate hint: %v", w.Header())
	}
	c.do = b.serve
	wantOK(t, c.rotate())
	c.do = a.serve
	w = c.get("/api/x")
	wantOK(t, w)
	if got := w.Header().Get("Sv-Action"); got != "" {
		t.Errorf("hint %q after the rotation on another node", got)
	}
}

func TestCachedFactsUserAgentBinding(t *testing.T) {
	a, _, _ := twoNodes(t, func(c *server.Config) { c.BindUserAgent = true })
	c := warm(t, a)
	c.ua = "OtherBrowser/2.0"
	wantRefused(t, c.get("/api/x"), 401, "user_agent_mismatch")
}
