package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/redistest"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/redisstore"
)

// Two server nodes behind one real redis-server (started by the test on a loopback port): what
// a deployment of several nodes relies on. Each node is a Manager on its own redisstore.Store (its
// own connections), sharing the Redis and the key prefix.

// redisStore opens a Store on url, closed at the test's end (after the Manager using it).
func redisStore(t testing.TB, url, prefix string) *redisstore.Store {
	t.Helper()
	st, err := redisstore.Open(url, &redisstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// onStore makes a node's Manager use st, on the clock of another node (so that the nodes agree
// on the time, as NTP-synced servers do).
func onStore(st server.Store, clk *clock) envOpt {
	return func(c *server.Config) {
		c.Store = st
		if clk != nil {
			c.Now = clk.Now
		}
	}
}

// redisNodes returns nodes A and B on the Redis at url.
func redisNodes(t *testing.T, url string, opts ...envOpt) (a, b *env) {
	t.Helper()
	prefix := fmt.Sprintf("n%d:", time.Now().UnixNano())
	a = newEnv(t, append([]envOpt{onStore(redisStore(t, url, prefix), nil)}, opts...)...)
	b = newEnv(t, append([]envOpt{onStore(redisStore(t, url, prefix), a.clock)}, opts...)...)
	b.clock = a.clock
	return a, b
}

// waitFor polls cond until it holds or within passes (a wait for an asynchronous effect, not a
// timing assertion: within is generous).
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// copyRequest returns a new request with r's method, target, headers and body: the same bytes
// on the wire, as a replaying attacker would send them.
func (c *client) copyRequest(r *http.Request, body []byte) *http.Request {
	r2 := c.newRequest(r.Method, r.URL.RequestURI(), body)
	for k, v := range r.Header {
		r2.Header[k] = append([]string(nil), v...)
	}
	return r2
}

// TestRedisTwoNodesReplay: a request accepted by node A and replayed to node B is refused, and
// the other way round; of one request sent to both nodes at once, exactly one copy passes.
func TestRedisTwoNodesReplay(t *testing.T) {
	srv := redistest.Own(t, false)
	a, b := redisNodes(t, srv.URL())
	c := a.newClient()
	c.login("alice")

	r := c.sign("GET", "/api/one", nil)
	replay := c.copyRequest(r, nil)
	wantOK(t, a.serve(r))
	wantRefused(t, b.serve(replay), 401, "replay")

	r = c.sign("POST", "/api/two", []byte(`{"n":2}`))
	replay = c.copyRequest(r, []byte(`{"n":2}`))
	wantOK(t, b.serve(r)) // B verifies a lane A issued
	wantRefused(t, a.serve(replay), 401, "replay")

	// One signed request, eight copies racing on both nodes: one is accepted.
	body := []byte(`{"n":3}`)
	r = c.sign("POST", "/api/three", body)
	var ok, replays atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		node := a
		if i%2 == 1 {
			node = b
		}
		req := c.copyRequest(r, body)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := node.serve(req)
			switch {
			case w.Code == 200:
				ok.Add(1)
			case w.Header().Get("Sv-Error") == "replay":
				replays.Add(1)
			default:
				t.Errorf("copy: %d %s", w.Code, w.Header().Get("Sv-Error"))
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || replays.Load() != 7 {
		t.Fatalf("8 copies on two nodes: %d accepted, %d refused as replays; want 1 and 7", ok.Load(), replays.Load())
	}
	if n := a.calls.Load() + b.calls.Load(); n != 3 {
		t.Fatalf("the handlers ran %d times, want 3", n)
	}
}

// TestRedisTwoNodesRevoke: a revocation on node A is refused by node B at once (the store says
// so), and B's cached verifiers of the lane are dropped by A's notice.
func TestRedisTwoNodesRevoke(t *testing.T) {
	srv := redistest.Own(t, false)
	a, b := redisNodes(t, srv.URL())
	c := a.newClient()
	c.login("alice") // on A
	other := a.newClient()
	other.login("alice") // a second session of the same user, which goes on
	c.do, other.do = b.serve, b.serve
	wantOK(t, c.get("/api/before"))
	handle := b.lastInfo().Handle
	wantOK(t, other.get("/api/before"))
	lane := laneOf(t, c)
	if !server.HasVerifier(b.mgr, lane) {
		t.Fatal("B holds no verifier of the lane it verified")
	}
	if err := a.mgr.Revoke(t.Context(), "alice", handle); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, c.get("/api/after"), 401, "revoked")
	waitFor(t, 5*time.Second, "B drops the revoked lane's verifiers", func() bool { return !server.HasVerifier(b.mgr, lane) })
	wantOK(t, other.get("/api/after"))
}

// laneOf returns the lane of a client's login.
func laneOf(t *testing.T, c *client) protocol.LaneID {
	t.Helper()
	var id protocol.LaneID
	copy(id[:], mustB64u(t, c.reply.Lane))
	return id
}

// TestRedisNoticesLost: node B's subscription is cut (CLIENT KILL TYPE pubsub) and cannot come
// back (an ACL denies B's SUBSCRIBE for a while); node A revokes a session meanwhile, and its
// notice is lost for B. Until B is subscribed again and has resynced, it refuses every signed
// request with 503 store_unavailable, never serving one from what it cached before; then it
// refuses the revoked session with the store's reason and serves the other again.
func TestRedisNoticesLost(t *testing.T) {
	srv := redistest.Own(t, false)
	ctx := t.Context()
	bURL, deafen, hear := deafNode(t, srv)
	prefix := "lost:"
	a := newEnv(t, onStore(redisStore(t, srv.URL(), prefix), nil))
	b := newEnv(t, onStore(redisStore(t, bURL, prefix), a.clock))
	if !server.FanoutReady(b.mgr) {
		t.Fatal("B is not subscribed after New")
	}

	revoked, kept := a.newClient(), a.newClient()
	revoked.login("alice")
	kept.login("bob")
	revoked.do, kept.do = b.serve, b.serve
	wantOK(t, revoked.get("/api/before"))
	handle := b.lastInfo().Handle
	wantOK(t, kept.get("/api/before"))

	deafen()
	waitFor(t, 10*time.Second, "B notices the loss of its subscription", func() bool { return !server.FanoutReady(b.mgr) })
	if err := a.mgr.Revoke(ctx, "alice", handle); err != nil {
		t.Fatal(err)
	}
	// A's own subscription came back (the default user may subscribe): A is unaffected.
	waitFor(t, 10*time.Second, "A subscribes again", func() bool { return server.FanoutReady(a.mgr) })
	revoked.do, kept.do = a.serve, a.serve
	wantRefused(t, revoked.get("/api/a"), 401, "revoked")
	wantOK(t, kept.get("/api/a"))

	revoked.do, kept.do = b.serve, b.serve
	wantRefused(t, revoked.get("/api/during"), 503, "store_unavailable")
	wantRefused(t, kept.get("/api/during"), 503, "store_unavailable")
	if !server.HasVerifier(b.mgr, laneOf(t, revoked)) {
		t.Fatal("B dropped the revoked lane's verifiers without a notice: the test does not test the loss")
	}

	hear()
	waitFor(t, 10*time.Second, "B subscribes again and resyncs", func() bool { return server.FanoutReady(b.mgr) })
	if server.HasVerifier(b.mgr, laneOf(t, revoked)) {
		t.Fatal("B kept the revoked lane's verifiers through the resync")
	}
	wantRefused(t, revoked.get("/api/after"), 401, "revoked")
	wantOK(t, kept.get("/api/after"))
}

// TestRedisRestartUnderLoad: Redis is killed (SIGKILL) while goroutines send signed requests to
// both nodes, and started again on the same port from its append-only file (appendfsync always:
// what Redis acknowledged survives, as the replay windows must). Throughout: no nonce is
// accepted twice, no replay of an accepted request is accepted, no request of a session revoked
// before the kill is accepted; while Redis is down, logins and signed requests get 503
// store_unavailable; once it is back, service returns on both nodes by itself.
func TestRedisRestartUnderLoad(t *testing.T) {
	srv := redistest.Own(t, true)
	// No throttling: the replays below are counted refusals, and 429s would hide the outcomes.
	a, b := redisNodes(t, srv.URL(), func(c *server.Config) { c.ThrottleThreshold = -1 })
	nodes := []*env{a, b}
	ctx := t.Context()

	// Sessions revoked before the kill: never accepted again.
	var dead []*rawLane
	dc := a.newClient()
	for range 2 {
		l := dc.rawLogin("mallory")
		wantOK(t, a.serve(dc.signRaw(l, "GET", "/api/x", nil)))
		dead = append(dead, l)
	}
	if _, err := a.mgr.RevokeUser(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}

	type captured struct {
		target, in, sig string
	}
	var (
		mu       sync.Mutex
		accepted = map[string]bool{} // lane/seq
		replays  []captured
		counts   = map[string]int{}
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	count := func(what string) {
		mu.Lock()
		counts[what]++
		mu.Unlock()
	}
	outcome := func(w *httptest.ResponseRecorder) string {
		if w.Code == 200 {
			return "200"
		}
		return fmt.Sprintf("%d %s", w.Code, w.Header().Get("Sv-Error"))
	}
	const workers = 4
	for i := range workers {
		c := a.newClient()
		c.remote = fmt.Sprintf("192.0.2.%d:4000", 20+i) // its own throttling counter
		l := c.rawLogin(fmt.Sprintf("user%d", i))
		mine := []*rawLane{dead[0].copy(), dead[1].copy()} // a thief's copies, one per goroutine
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				node := nodes[n%2]
				target := fmt.Sprintf("/api/load/%d", n)
				r := c.signRaw(l, "GET", target, nil)
				cap := captured{target, r.Header.Get("Signature-Input"), r.Header.Get("Signature")}
				w := node.serve(r)
				o := outcome(w)
				count("fresh: " + o)
				if w.Code == 200 {
					key := fmt.Sprintf("%s/%d", l.lane, l.seq)
					mu.Lock()
					if accepted[key] {
						t.Errorf("nonce %s accepted twice", key)
					}
					accepted[key] = true
					replays = append(replays, cap)
					mu.Unlock()
				}
				// A replay of an earlier accepted request, to the other node.
				mu.Lock()
				var old captured
				if len(replays) > 0 {
					old = replays[(n*7919)%len(replays)]
				}
				mu.Unlock()
				if old.target != "" {
					r := c.newRequest("GET", old.target, nil)
					r.Header.Set("Signature-Input", old.in)
					r.Header.Set("Signature", old.sig)
					w := nodes[(n+1)%2].serve(r)
					count("replay: " + outcome(w))
					if w.Code == 200 {
						t.Errorf("a replay of %s was accepted", old.target)
					}
				}
				// A request of a revoked session.
				dl := mine[n%len(mine)]
				w = node.serve(dc.signRaw(dl, "GET", "/api/dead", nil))
				count("revoked: " + outcome(w))
				if w.Code == 200 {
					t.Error("a request of a revoked session was accepted")
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })
	seen := func(what string) int {
		mu.Lock()
		defer mu.Unlock()
		return counts[what]
	}

	waitFor(t, 10*time.Second, "load accepted before the kill", func() bool { return seen("fresh: 200") >= 50 })
	srv.Kill()
	waitFor(t, 10*time.Second, "503s while Redis is down", func() bool { return seen("fresh: 503 store_unavailable") >= 20 })
	lc := a.newClient()
	pub, _ := lc.v.Begin(protocol.HandshakeLogin)
	wantRefused(t, lc.loginRaw(pub, "carol", testPassword), 503, "store_unavailable")
	before := seen("fresh: 200")

	srv = srv.RestartT(t)
	waitFor(t, 20*time.Second, "service returns after the restart", func() bool { return seen("fresh: 200") >= before+100 })
	for _, e := range nodes {
		waitFor(t, 10*time.Second, "both nodes subscribed again", func() bool { return server.FanoutReady(e.mgr) })
	}
	nc := b.newClient()
	nc.login("carol")
	wantOK(t, nc.get("/api/after"))

	stop.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("outcomes: %v", counts)
	for what := range counts {
		switch what {
		case "fresh: 200", "fresh: 503 store_unavailable",
			"replay: 401 replay", "replay: 503 store_unavailable",
			"revoked: 401 revoked", "revoked: 503 store_unavailable":
		default:
			// A fresh request whose Seen ran in Redis before the kill but whose answer was lost
			// fails closed (503): the store retries no command, so it is never refused as a
			// replay of itself. Anything else is unexpected.
			t.Errorf("unexpected outcome %q", what)
		}
	}
}

func init() {
	// The tests that kill Redis make go-redis log every failed dial.
	redis.SetLogger(quietRedis{})
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// TestRedisTwoNodesJoin: a ticket that node A's boot script embeds is traded on node B (the
// nodes share tickets, sessions and the store key that seals the cookie); the new lane works on
// both nodes, and the same ticket is refused as reused on either node afterwards.
func TestRedisTwoNodesJoin(t *testing.T) {
	srv := redistest.Own(t, false)
	a, b := redisNodes(t, srv.URL())
	ca := a.newClient()
	ck := ca.loginCookie("alice")
	ticket := ca.workerTicket(ck)

	cb := b.newClient()
	v2, w := cb.join(ck, ticket)
	if v2 == nil {
		t.Fatalf("join on node B with node A's ticket: %d %s", w.Code, w.Body)
	}
	wantOK(t, b.serve(cb.signWith(v2, "GET", "/api/me", nil)))
	wantOK(t, a.serve(cb.signWith(v2, "GET", "/api/me", nil)))
	for _, n := range []*env{a, b} {
		c := n.newClient()
		if v, w := c.join(ck, ticket); v != nil || w.Code != 401 || w.Header().Get("Sv-Error") != "ticket_reuse" {
			t.Errorf("reused ticket: %d %q, want 401 ticket_reuse", w.Code, w.Header().Get("Sv-Error"))
		}
	}
	infos, err := a.mgr.Sessions(t.Context(), "alice")
	if err != nil || len(infos) != 1 || infos[0].Lanes != 2 {
		t.Fatalf("sessions after the join: %+v %v, want one session with 2 lanes", infos, err)
	}
}

// TestRedisIdleTimeoutMustCoverTheManagers: redisstore reports its Options.IdleTimeout, and New
// refuses a Manager whose idle timeout is longer (its sessions would vanish from Redis first).
func TestRedisIdleTimeoutMustCoverTheManagers(t *testing.T) {
	srv := redistest.Own(t, false)
	st, err := redisstore.Open(srv.URL(), &redisstore.Options{Prefix: "idle:", IdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := server.New(server.Config{Store: st, IdleTimeout: 10 * time.Minute}); !errors.Is(err, server.ErrConfig) {
		t.Fatalf("a 10 min idle timeout over a redisstore that drops sessions after 10 s: %v, want ErrConfig", err)
	}
	m, err := server.New(server.Config{Store: st, IdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}
