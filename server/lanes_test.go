package server_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/redistest"
	"github.com/sessionvault/sessionvault/server"
)

// The bound on lanes per session (Config.MaxLanesPerSession, PROTOCOL.md section 3.2): a join
// past it evicts the session's stalest lanes (oldest RotatedAt) with reason lane_evicted.

// rawLoginCookie is rawLogin that also returns the join cookie the login set.
func (c *client) rawLoginCookie(user string) (*rawLane, *http.Cookie) {
	c.e.t.Helper()
	eph, err := protocol.NewEphemeral(rand.Reader)
	if err != nil {
		c.e.t.Fatal(err)
	}
	w := c.loginRaw(eph.Public(), user, testPassword)
	if w.Code != 200 {
		c.e.t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	return c.rawFinish(eph, protocol.HandshakeLogin, w.Body.Bytes(), nil), joinCookie(c.e.t, w)
}

// rawJoin joins the cookie's session at the protocol level with a fresh ticket and returns the
// new lane with its key.
func (c *client) rawJoin(cookie *http.Cookie) (*rawLane, string) {
	c.e.t.Helper()
	ticket := c.workerTicket(cookie)
	eph, err := protocol.NewEphemeral(rand.Reader)
	if err != nil {
		c.e.t.Fatal(err)
	}
	w := c.do(c.joinRequest(cookie, joinBody(eph.Public(), ticket)))
	if w.Code != 200 {
		c.e.t.Fatalf("join: %d %s", w.Code, w.Body)
	}
	return c.rawFinish(eph, protocol.HandshakeJoin, w.Body.Bytes(), mustB64u(c.e.t, ticket)), ticket
}

// rawFinish completes a login or join key agreement from the server's reply.
func (c *client) rawFinish(eph *protocol.Ephemeral, kind int, body, ticket []byte) *rawLane {
	c.e.t.Helper()
	var rep loginReply
	if err := json.Unmarshal(body, &rep); err != nil {
		c.e.t.Fatal(err)
	}
	l := &rawLane{}
	copy(l.lane[:], mustB64u(c.e.t, rep.Lane))
	var spub [32]byte
	copy(spub[:], mustB64u(c.e.t, rep.Pub))
	tr := protocol.HandshakeTranscript(kind, eph.Public(), spub, l.lane, ticket)
	var err error
	if l.key, err = protocol.Handshake(eph, spub, tr, l.lane); err != nil {
		c.e.t.Fatal(err)
	}
	if err := protocol.CheckConfirm(&l.key, tr, mustB64u(c.e.t, rep.Confirm)); err != nil {
		c.e.t.Fatal(err)
	}
	return l
}

// TestJoinLaneBound joins MaxLanesPerSession+3 times: the session never holds more lanes than
// the bound; each join past it evicts the lane with the oldest key (the login's lane, rotated
// meanwhile, outlives older joined lanes); an evicted lane is refused 401 lane_evicted on HTTP
// and on its event socket, whose open connection gets a sealed revoked event; the other lanes
// go on; the audit log has one lane_evicted per eviction, with the handle and no secret.
func TestJoinLaneBound(t *testing.T) {
	const bound = 3
	var spy *spyStore
	e := newEnv(t, withSpy(&spy), func(c *server.Config) { c.MaxLanesPerSession = bound })
	srv := serveEnv(t, e)
	c := e.newClient()
	tick := func() { e.clock.Add(time.Second) }

	login, ck := c.rawLoginCookie("alice")
	names := map[protocol.LaneID]string{login.lane: "login"}
	lanes := map[string]*rawLane{"login": login}
	var tickets []string
	join := func(name string) {
		t.Helper()
		tick()
		l, ticket := c.rawJoin(ck)
		tickets = append(tickets, ticket)
		names[l.lane], lanes[name] = name, l
	}
	// live returns the names of the session's lanes in the store, sorted.
	live := func() []string {
		t.Helper()
		list, err := e.mgr.Sessions(t.Context(), "alice")
		if err != nil || len(list) != 1 {
			t.Fatalf("Sessions = %v, %v; want one session", list, err)
		}
		_, ids, err := e.store.Session(t.Context(), spy.ids()[0])
		if err != nil {
			t.Fatal(err)
		}
		if list[0].Lanes != len(ids) {
			t.Fatalf("Sessions says %d lanes, the store %d", list[0].Lanes, len(ids))
		}
		if len(ids) > bound {
			t.Fatalf("%d lanes, more than the bound %d", len(ids), bound)
		}
		var out []string
		for _, id := range ids {
			out = append(out, names[id])
		}
		slices.Sort(out)
		return out
	}
	want := func(names ...string) {
		t.Helper()
		slices.Sort(names)
		if got := live(); !slices.Equal(got, names) {
			t.Fatalf("live lanes %v, want %v", got, names)
		}
	}

	join("j1")
	join("j2")
	want("login", "j1", "j2")
	// The login's tab is open: it rotates, so its key is now the newest of the three.
	tick()
	eph, err := protocol.NewEphemeral(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, c.rotateRaw(login, eph))
	if login.epoch != 1 {
		t.Fatalf("login lane at epoch %d after rotate, want 1", login.epoch)
	}
	sockJ1 := dialEvents(t, srv, lanes["j1"])
	sockLogin := dialEvents(t, srv, login) // authenticated under epoch 1

	join("j3") // evicts j1: RotatedAt t1, the oldest (login's is t3 now)
	want("login", "j2", "j3")
	sockJ1.wantEnd(protocol.EventRevoked, "lane_evicted")
	join("j4") // evicts j2 (t2)
	want("login", "j3", "j4")
	join("j5") // evicts login (t3)
	want("j3", "j4", "j5")
	sockLogin.wantEnd(protocol.EventRevoked, "lane_evicted")
	join("j6") // evicts j3 (t4); bound+3 joins in all
	want("j4", "j5", "j6")

	for _, name := range []string{"j1", "j2", "login", "j3"} {
		l := lanes[name]
		wantRefused(t, c.do(c.signRaw(l, "GET", "/api/me", nil)), 401, "lane_evicted")
		if _, refused := tryEvents(t, srv, l, nil); refused != "lane_evicted" {
			t.Errorf("%s: event socket refusal %q, want lane_evicted", name, refused)
		}
		var g *server.GoneError
		if _, _, err := e.store.Lane(t.Context(), l.lane); !errors.As(err, &g) || g.Reason != "lane_evicted" {
			t.Errorf("%s: store Lane = %v, want GoneError(lane_evicted)", name, err)
		}
	}
	for _, name := range []string{"j4", "j5", "j6"} {
		wantOK(t, c.do(c.signRaw(lanes[name], "GET", "/api/me", nil)))
		dialEvents(t, srv, lanes[name])
	}
	// The cookie still gets tickets: the session itself goes on.
	c.workerTicket(ck)

	evs := e.logs.events("lane_evicted")
	if len(evs) != 4 {
		t.Fatalf("%d lane_evicted audit events, want 4", len(evs))
	}
	info := e.lastInfo()
	for i, name := range []string{"j1", "j2", "login", "j3"} {
		ev := evs[i]
		if ev["handle"] != info.Handle || ev["lane"] != lanes[name].lane.String() || ev["reason"] != "lane_evicted" || ev["user"] != "alice" {
			t.Errorf("audit event %d: %v, want handle %s, lane %s (%s)", i, ev, info.Handle, lanes[name].lane, name)
		}
	}
	secrets := map[string][]byte{"cookie": []byte(ck.Value), "session ID": spy.ids()[0]}
	for i, tk := range tickets {
		secrets["ticket "+string(rune('0'+i))] = mustB64u(t, tk)
	}
	if l := leaks(e.logs.String(), secrets); len(l) > 0 {
		t.Fatalf("the audit log carries %v", l)
	}
}

// TestJoinLaneBoundOff: a negative MaxLanesPerSession sets no bound.
func TestJoinLaneBoundOff(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.MaxLanesPerSession = -1 })
	c := e.newClient()
	login, ck := c.rawLoginCookie("alice")
	var joined []*rawLane
	for range 4 {
		l, _ := c.rawJoin(ck)
		joined = append(joined, l)
	}
	list, err := e.mgr.Sessions(t.Context(), "alice")
	if err != nil || len(list) != 1 || list[0].Lanes != 5 {
		t.Fatalf("Sessions = %+v, %v; want one session with 5 lanes", list, err)
	}
	for _, l := range append(joined, login) {
		wantOK(t, c.do(c.signRaw(l, "GET", "/api/me", nil)))
	}
	if n := len(e.logs.events("lane_evicted")); n != 0 {
		t.Errorf("%d lane_evicted events without a bound", n)
	}
}

// TestRedisTwoNodesLaneEviction: a join on node A past the bound evicts a lane whose event
// socket is on node B; B's connection gets the sealed revoked event (lane_evicted) through A's
// store notice, and the joined lane works on B.
func TestRedisTwoNodesLaneEviction(t *testing.T) {
	srv := redistest.Own(t, false)
	a, b := redisNodes(t, srv.URL(), realClock, func(c *server.Config) { c.MaxLanesPerSession = 1 })
	srvB := serveEnv(t, b)
	c := a.newClient()
	login, ck := c.rawLoginCookie("alice") // on A
	s := dialEvents(t, srvB, login)
	joined, _ := c.rawJoin(ck) // on A: the bound is 1, so the login's lane goes
	s.wantEnd(protocol.EventRevoked, "lane_evicted")
	if _, refused := tryEvents(t, srvB, login, nil); refused != "lane_evicted" {
		t.Fatalf("reconnect to B: refusal %q, want lane_evicted", refused)
	}
	cb := b.newClient()
	wantRefused(t, cb.do(cb.signRaw(login, "GET", "/api/me", nil)), 401, "lane_evicted")
	wantOK(t, cb.do(cb.signRaw(joined, "GET", "/api/me", nil)))
	dialEvents(t, srvB, joined)
}
