package server_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/redistest"
	"github.com/sessionvault/sessionvault/server"
)

// Event sockets across two nodes behind one Redis: a revocation made on node A reaches the
// event connections held by node B, through A's notice, or through B's resync when B missed it.

// handleOf returns the handle of the user's only session, as an admin view would list it.
func handleOf(t *testing.T, e *env, user string) string {
	t.Helper()
	list, err := e.mgr.Sessions(t.Context(), user)
	if err != nil || len(list) != 1 {
		t.Fatalf("sessions of %s: %v %v", user, list, err)
	}
	return list[0].Handle
}

// deafNode makes the Redis user of a node B whose revocation notices a test can cut: deafen
// kills every subscription connection (A's comes back at once; B's user may not subscribe
// again) and hear lets B subscribe again. bURL is B's store URL.
func deafNode(t *testing.T, srv *redistest.Server) (bURL string, deafen, hear func()) {
	t.Helper()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { admin.Close() })
	acl := func(rules ...any) {
		t.Helper()
		if err := admin.Do(context.Background(), append([]any{"acl", "setuser", "nodeb"}, rules...)...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	acl("on", ">nodeb-password", "~*", "&*", "+@all")
	deafen = func() {
		t.Helper()
		acl("-subscribe")
		if err := admin.Do(context.Background(), "client", "kill", "type", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
	return "redis://nodeb:nodeb-password@" + srv.Addr() + "/0", deafen, func() { acl("+subscribe") }
}

// TestRedisTwoNodesEvents: a worker's event socket on node B gets a sealed revoked event (under
// its lane's event key) and the close when node A revokes the session, and a reconnect to
// either node is refused with the reason.
func TestRedisTwoNodesEvents(t *testing.T) {
	srv := redistest.Own(t, false)
	a, b := redisNodes(t, srv.URL(), realClock)
	srvA, srvB := serveEnv(t, a), serveEnv(t, b)
	c := a.newClient()
	l := c.rawLogin("alice") // on A
	s := dialEvents(t, srvB, l)
	if err := a.mgr.Revoke(t.Context(), "alice", handleOf(t, a, "alice")); err != nil {
		t.Fatal(err)
	}
	s.wantEnd(protocol.EventRevoked, "revoked")
	if _, refused := tryEvents(t, srvB, l, nil); refused != "revoked" {
		t.Fatalf("reconnect to B: refusal %q, want revoked", refused)
	}
	if _, refused := tryEvents(t, srvA, l, nil); refused != "revoked" {
		t.Fatalf("reconnect to A: refusal %q, want revoked", refused)
	}
}

// TestRedisEventsResync: node B's subscription is down (an ACL keeps it from subscribing again)
// when node A revokes; B's socket gets the revoked event once B is subscribed again, from the
// resync's re-check of its connections against the store.
func TestRedisEventsResync(t *testing.T) {
	srv := redistest.Own(t, false)
	ctx := t.Context()
	bURL, deafen, hear := deafNode(t, srv)
	a := newEnv(t, onStore(redisStore(t, srv.URL(), "ev:"), nil), realClock)
	b := newEnv(t, onStore(redisStore(t, bURL, "ev:"), nil), realClock)
	srvB := serveEnv(t, b)
	c := a.newClient()
	l := c.rawLogin("alice")
	s := dialEvents(t, srvB, l)

	deafen()
	waitFor(t, 10*time.Second, "B notices the loss of its subscription", func() bool { return !server.FanoutReady(b.mgr) })
	if err := a.mgr.Revoke(ctx, "alice", handleOf(t, a, "alice")); err != nil {
		t.Fatal(err)
	}
	// B cannot hear it (its periodic re-check is a minute away): the event comes from the
	// resync once B may subscribe again.
	hear()
	s.wantEnd(protocol.EventRevoked, "revoked")
}

// TestRedisRevocationLatency reports (does not assert) the time from the call of Manager.Revoke
// on node A (the admin's action: user index read, deletion, notice) to the sealed revoked event
// read by a socket client of node B: p50 and p99 over the trials (30; 300 with SV_BENCH=1, the
// figure of the budgets in README.md, "What it costs").
//
//	SV_BENCH=1 go test -run TestRedisRevocationLatency -v ./server/
func TestRedisRevocationLatency(t *testing.T) {
	trials := 30
	if os.Getenv("SV_BENCH") == "1" {
		trials = 300
	}
	srv := redistest.Own(t, false)
	a, b := redisNodes(t, srv.URL(), realClock)
	srvB := serveEnv(t, b)
	c := a.newClient()
	var lat []time.Duration
	for i := range trials {
		user := fmt.Sprintf("user%d", i)
		l := c.rawLogin(user)
		s := dialEvents(t, srvB, l)
		handle := handleOf(t, a, user)
		start := time.Now()
		if err := a.mgr.Revoke(t.Context(), user, handle); err != nil {
			t.Fatal(err)
		}
		// The sealed revoked event, never the refusal alone: the socket was ready before the
		// revocation (TestRedisEventsEndTwoPathsOneLane has the race that once sent it alone).
		ev, refused := s.next(map[uint32]protocol.Key{l.epoch: l.key})
		d := time.Since(start)
		if ev == nil || ev.Type != protocol.EventRevoked {
			t.Fatalf("trial %d: event %+v, refusal %q", i, ev, refused)
		}
		lat = append(lat, d)
		s.ws.Close()
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("revocation across two nodes (Revoke on A -> sealed event read on B), %d trials: p50 %v, p99 %v, max %v",
		trials, q(0.50), q(0.99), lat[len(lat)-1])
}

// TestRedisForgedNoticeEndsNothing: a notice that names a live lane, published by someone who
// may PUBLISH on the store's channel but deleted nothing (here a third Store on the same
// prefix), ends nothing on node B: the lane's socket gets no event and its session still
// verifies. Notices reach B in the order they were published, so once a later real revocation
// (of another user) has reached B's socket for that user, B has handled the forged one; and the
// first thing alice's socket reads after her own real revocation is that revocation.
func TestRedisForgedNoticeEndsNothing(t *testing.T) {
	srv := redistest.Own(t, false)
	ctx := t.Context()
	a := newEnv(t, onStore(redisStore(t, srv.URL(), "fn:"), nil), realClock)
	b := newEnv(t, onStore(redisStore(t, srv.URL(), "fn:"), nil), realClock)
	forger := redisStore(t, srv.URL(), "fn:")
	srvB := serveEnv(t, b)
	c := a.newClient()
	alice := c.rawLogin("alice")
	sa := dialEvents(t, srvB, alice)
	bob := c.rawLogin("bob")
	sb := dialEvents(t, srvB, bob)

	// "expired" so that an event it caused could not pass for the real revocation below.
	if err := forger.Publish(ctx, server.Notice{Lanes: []protocol.LaneID{alice.lane}, Reason: "expired"}); err != nil {
		t.Fatal(err)
	}
	if err := a.mgr.Revoke(ctx, "bob", handleOf(t, a, "bob")); err != nil {
		t.Fatal(err)
	}
	sb.wantEnd(protocol.EventRevoked, "revoked")
	if w := b.serve(c.signRaw(alice, "GET", "/api/me", nil)); w.Code != 200 {
		t.Fatalf("alice on B after the forged notice: %d %s", w.Code, w.Body)
	}
	if err := a.mgr.Revoke(ctx, "alice", handleOf(t, a, "alice")); err != nil {
		t.Fatal(err)
	}
	sa.wantEnd(protocol.EventRevoked, "revoked")
}
