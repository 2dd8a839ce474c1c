package server_test

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

// The event socket through the Manager: a Go client speaks the protocol of PROTOCOL.md section 6
// over a real WebSocket to an httptest server.

// realClock makes the env use the wall clock, so that the Manager's event timers (which run on
// real time) and its idea of now agree.
func realClock(c *server.Config) { c.Now = time.Now }

// eventSock is an authenticated event connection of a raw lane.
type eventSock struct {
	t    *testing.T
	ws   *websocket.Conn
	lane *rawLane
}

// dialEvents opens the event socket of srv and answers its challenge with the lane's key. It
// returns the connection after "ready", or fails the test with what the server said.
func dialEvents(t *testing.T, srv *httptest.Server, l *rawLane) *eventSock {
	t.Helper()
	s, refusal := tryEvents(t, srv, l, nil)
	if s == nil {
		t.Fatalf("event socket refused: %s", refusal)
	}
	return s
}

// tryEvents is dialEvents that returns the refusal reason instead of failing; tamper, if set,
// changes the tag before it is sent.
func tryEvents(t *testing.T, srv *httptest.Server, l *rawLane, tamper func(tag []byte) []byte) (*eventSock, string) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"sessionvault.v1"}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/sv/events", nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ch struct{ Type, Challenge string }
	if err := ws.ReadJSON(&ch); err != nil || ch.Type != "challenge" {
		t.Fatalf("challenge: %v %+v", err, ch)
	}
	chal := mustB64u(t, ch.Challenge)
	sk := protocol.SignKey(&l.key)
	tag := protocol.SocketAuth(&sk, l.lane, l.epoch, chal)
	send := tag[:]
	if tamper != nil {
		send = tamper(send)
	}
	keyid := protocol.KeyID{Lane: l.lane, Epoch: l.epoch}.String()
	if err := ws.WriteJSON(map[string]any{"type": "auth", "keyid": keyid, "tag": b64u(send), "since": 0}); err != nil {
		t.Fatal(err)
	}
	var m struct{ Type, Reason string }
	if err := ws.ReadJSON(&m); err != nil {
		t.Fatalf("after auth: %v", err)
	}
	switch m.Type {
	case "ready":
		return &eventSock{t: t, ws: ws, lane: l}, ""
	case "refused":
		return nil, m.Reason
	}
	t.Fatalf("after auth: %+v", m)
	return nil, ""
}

// next reads the next message: a sealed event opened under the lane's event key of the epoch it
// names (key is the lane's key of that epoch), or a refusal.
func (s *eventSock) next(keys map[uint32]protocol.Key) (ev *protocol.Event, refused string) {
	s.t.Helper()
	s.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	typ, b, err := s.ws.ReadMessage()
	if err != nil {
		s.t.Fatalf("read: %v", err)
	}
	if typ == websocket.TextMessage {
		var m struct{ Type, Reason string }
		json.Unmarshal(b, &m)
		if m.Type != "refused" {
			s.t.Fatalf("unexpected text message %s", b)
		}
		return nil, m.Reason
	}
	e, err := protocol.ParseEvent(b)
	if err != nil {
		s.t.Fatalf("event: %v", err)
	}
	k, ok := keys[e.Epoch]
	if !ok {
		s.t.Fatalf("event of epoch %d, no key for it", e.Epoch)
	}
	ek := protocol.EventKey(&k)
	got, err := protocol.OpenEvent(&ek, b)
	if err != nil {
		s.t.Fatalf("event does not open under the lane's event key: %v", err)
	}
	if got.Lane != s.lane.lane {
		s.t.Fatalf("event for lane %s, want %s", got.Lane, s.lane.lane)
	}
	return &got, ""
}

// wantEnd reads an event of type t with reason, then the refusal with the same reason and the
// close of the connection.
func (s *eventSock) wantEnd(t protocol.EventType, reason string) {
	s.t.Helper()
	ev, refused := s.next(map[uint32]protocol.Key{s.lane.epoch: s.lane.key})
	if ev == nil || ev.Type != t || ev.Reason != reason {
		s.t.Fatalf("got event %+v refusal %q, want %s/%s", ev, refused, t, reason)
	}
	if _, refused := s.next(nil); refused != reason {
		s.t.Fatalf("refusal %q, want %q", refused, reason)
	}
	if _, _, err := s.ws.ReadMessage(); err == nil {
		s.t.Fatal("connection still open after the refusal")
	}
}

func serveEnv(t *testing.T, e *env) *httptest.Server {
	srv := httptest.NewServer(e.mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestEventsAdminRevokeReachesTheSocket(t *testing.T) {
	e := newEnv(t, realClock)
	srv := serveEnv(t, e)
	c := e.newClient()
	l := c.rawLogin("alice")
	s := dialEvents(t, srv, l)
	list, err := e.mgr.Sessions(t.Context(), "alice")
	if err != nil || len(list) != 1 {
		t.Fatalf("sessions: %v %v", list, err)
	}
	if got := e.mgr.EventConnections(); got != 1 {
		t.Fatalf("EventConnections = %d, want 1", got)
	}
	if err := e.mgr.Revoke(t.Context(), "alice", list[0].Handle); err != nil {
		t.Fatal(err)
	}
	s.wantEnd(protocol.EventRevoked, "revoked")
	// And a reconnect is refused with the reason, which the worker acts on.
	if _, refused := tryEvents(t, srv, l, nil); refused != "revoked" {
		t.Fatalf("reconnect after revoke: refusal %q, want revoked", refused)
	}
}

func TestEventsLogoutEndsEveryConnectionOfTheLane(t *testing.T) {
	e := newEnv(t, realClock)
	srv := serveEnv(t, e)
	c := e.newClient()
	l := c.rawLogin("alice")
	s1, s2 := dialEvents(t, srv, l), dialEvents(t, srv, l)
	w := c.do(c.signRaw(l, "POST", "/sv/logout", nil))
	wantOK(t, w)
	s1.wantEnd(protocol.EventRevoked, "logout")
	s2.wantEnd(protocol.EventRevoked, "logout")
}

func TestEventsRevokeUserReachesEverySession(t *testing.T) {
	e := newEnv(t, realClock)
	srv := serveEnv(t, e)
	var socks []*eventSock
	for range 3 {
		c := e.newClient()
		socks = append(socks, dialEvents(t, srv, c.rawLogin("bob")))
	}
	other := e.newClient()
	keep := dialEvents(t, srv, other.rawLogin("carol"))
	if n, err := e.mgr.RevokeUser(t.Context(), "bob"); err != nil || n != 3 {
		t.Fatalf("RevokeUser = %d, %v", n, err)
	}
	for _, s := range socks {
		s.wantEnd(protocol.EventRevoked, "revoked")
	}
	if got := e.mgr.EventConnections(); got != 1 {
		t.Fatalf("EventConnections = %d after RevokeUser, want carol's 1", got)
	}
	_ = keep
}

func TestEventsLimitEvictionReachesTheSocket(t *testing.T) {
	e := newEnv(t, realClock, func(c *server.Config) { c.MaxSessionsPerUser = 1 })
	srv := serveEnv(t, e)
	first := dialEvents(t, srv, e.newClient().rawLogin("dave"))
	e.newClient().rawLogin("dave")
	first.wantEnd(protocol.EventRevoked, "limit_evicted")
}

func TestEventsAfterRotationUseTheNewEpoch(t *testing.T) {
	e := newEnv(t, realClock)
	srv := serveEnv(t, e)
	c := e.newClient()
	l := c.rawLogin("alice")
	s := dialEvents(t, srv, l)
	eph, _ := protocol.NewEphemeral(rand.Reader)
	wantOK(t, c.rotateRaw(l, eph))
	if l.epoch != 1 {
		t.Fatalf("epoch %d after rotation", l.epoch)
	}
	// The rotation's bookkeeping for the socket runs after the reply: wait until a fresh
	// connection authenticated with epoch 1 exists, so the revoke below races nothing.
	dialEvents(t, srv, l).ws.Close()
	w := c.do(c.signRaw(l, "POST", "/sv/logout", nil))
	wantOK(t, w)
	ev, _ := s.next(map[uint32]protocol.Key{1: l.key})
	if ev == nil || ev.Type != protocol.EventRevoked || ev.Epoch != 1 {
		t.Fatalf("got %+v, want revoked under epoch 1", ev)
	}
}

func TestEventsRotateExpiringExpired(t *testing.T) {
	e := newEnv(t, realClock, func(c *server.Config) {
		c.RotateEvery = 300 * time.Millisecond
		c.IdleTimeout = 2 * time.Second
		c.ExpiringBefore = time.Second
	})
	srv := serveEnv(t, e)
	l := e.newClient().rawLogin("erin")
	s := dialEvents(t, srv, l)
	keys := map[uint32]protocol.Key{0: l.key}
	seen := map[protocol.EventType]*protocol.Event{}
	var lastSeq uint64
	for seen[protocol.EventExpired] == nil {
		ev, refused := s.next(keys)
		if ev == nil {
			t.Fatalf("refused %q before the expired event (seen %v)", refused, seen)
		}
		if ev.Seq <= lastSeq {
			t.Fatalf("event seq %d not above %d", ev.Seq, lastSeq)
		}
		lastSeq = ev.Seq
		seen[ev.Type] = ev
	}
	if seen[protocol.EventRotate] == nil {
		t.Error("no rotate event")
	}
	exp := seen[protocol.EventExpiring]
	if exp == nil {
		t.Fatal("no expiring event before expiry")
	}
	if exp.Deadline == 0 || exp.Deadline > seen[protocol.EventExpired].Time+100 {
		t.Errorf("expiring deadline %d, expired at %d", exp.Deadline, seen[protocol.EventExpired].Time)
	}
	if r := seen[protocol.EventExpired].Reason; r != "expired" {
		t.Errorf("expired reason %q", r)
	}
	if _, refused := s.next(nil); refused != "expired" {
		t.Fatalf("refusal %q, want expired", refused)
	}
	// The audit record is written after the lanes are told; give it a moment.
	for i := 0; !strings.Contains(e.logs.String(), `"event":"expired"`); i++ {
		if i == 200 {
			t.Fatal("no expired audit event")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEventsResyncOnConnect(t *testing.T) {
	// A lane whose key is older than RotateEvery when it connects is asked to rotate at once.
	e := newEnv(t)
	srv := serveEnv(t, e)
	l := e.newClient().rawLogin("frank")
	e.clock.Add(11 * time.Minute)
	s := dialEvents(t, srv, l)
	ev, _ := s.next(map[uint32]protocol.Key{0: l.key})
	if ev == nil || ev.Type != protocol.EventRotate {
		t.Fatalf("got %+v, want rotate", ev)
	}
}

func TestEventsRefusals(t *testing.T) {
	e := newEnv(t, realClock)
	srv := serveEnv(t, e)
	c := e.newClient()
	l := c.rawLogin("alice")

	if _, refused := tryEvents(t, srv, l, func(tag []byte) []byte { tag[0] ^= 1; return tag }); refused != "bad_signature" {
		t.Errorf("wrong tag: refusal %q", refused)
	}
	stale := l.copy()
	stale.epoch = 5
	if _, refused := tryEvents(t, srv, stale, nil); refused != "bad_signature" {
		t.Errorf("wrong epoch: refusal %q", refused)
	}
	unknown := l.copy()
	rand.Read(unknown.lane[:])
	if _, refused := tryEvents(t, srv, unknown, nil); refused != "unknown_session" {
		t.Errorf("unknown lane: refusal %q", refused)
	}
	// A forged key (right lane, wrong key) is refused and the lane keeps working.
	forged := l.copy()
	rand.Read(forged.key[:])
	if _, refused := tryEvents(t, srv, forged, nil); refused != "bad_signature" {
		t.Errorf("forged key: refusal %q", refused)
	}
	dialEvents(t, srv, l)
	wantOK(t, c.do(c.signRaw(l, "GET", "/api/x", nil)))

	// Cross-origin upgrade: 403 before any challenge.
	d := websocket.Dialer{Subprotocols: []string{"sessionvault.v1"}}
	h := http.Header{"Origin": {"https://evil.example"}}
	_, resp, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/sv/events", h)
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("cross-origin upgrade: %v %v", err, resp)
	}
	// Not a WebSocket: 400; wrong method: 405.
	r, _ := http.Get(srv.URL + "/sv/events")
	if r.StatusCode != 400 {
		t.Errorf("plain GET: %d", r.StatusCode)
	}
	r.Body.Close()
	r, _ = http.Post(srv.URL+"/sv/events", "text/plain", nil)
	if r.StatusCode != 405 {
		t.Errorf("POST: %d", r.StatusCode)
	}
	r.Body.Close()

	// No log line carries the key, the tag or the challenge material.
	logs := e.logs.String()
	for _, enc := range encodings(l.key[:]) {
		if strings.Contains(logs, enc) {
			t.Fatal("lane key in the logs")
		}
	}
	if !strings.Contains(logs, `"event":"bad_signature"`) {
		t.Error("bad socket answers were not audited")
	}
}

func TestEventsCloseShutsConnections(t *testing.T) {
	e := newEnv(t, realClock)
	srv := serveEnv(t, e)
	s := dialEvents(t, srv, e.newClient().rawLogin("gina"))
	// The browser answers the close frame; so does this reader.
	done := make(chan error, 1)
	go func() {
		s.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := s.ws.ReadMessage()
		done <- err
	}()
	if err := e.mgr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after Close: %v, want close 1001", err)
	}
	// The endpoint refuses new connections once closed.
	r, _ := http.Get(srv.URL + "/sv/events")
	if r.StatusCode != 503 && r.StatusCode != 400 {
		t.Errorf("events after Close: %d", r.StatusCode)
	}
	r.Body.Close()
}

// TestOneAddressCannotTakeTheEventSlots: an address with no account opens event sockets and
// answers no challenge; past Config.MaxPendingEventConns its upgrades get 429, so another
// user's worker still gets its socket and hears its revocation; its malformed answers count
// toward throttling (brute_force_suspected, then 429 at the upgrade).
func TestOneAddressCannotTakeTheEventSlots(t *testing.T) {
	const slots, pending = 40, 8
	e := newEnv(t, realClock, func(c *server.Config) {
		c.MaxEventConns, c.MaxPendingEventConns, c.ThrottleThreshold = slots, pending, 5
		c.ClientAddr = func(r *http.Request) string {
			if v := r.Header.Get("X-Test-Client"); v != "" {
				return v
			}
			return "192.0.2.1"
		}
	})
	srv := serveEnv(t, e)
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/sv/events"
	d := websocket.Dialer{Subprotocols: []string{"sessionvault.v1"}, HandshakeTimeout: 5 * time.Second}
	attacker := http.Header{"X-Test-Client": {"198.51.100.7"}}
	var held []*websocket.Conn
	for i := range slots {
		ws, resp, err := d.Dial(url, attacker)
		if err != nil {
			if i < pending || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Sv-Error") != "rate_limited" {
				t.Fatalf("unanswered upgrade %d: %v %v", i, err, resp)
			}
			continue
		}
		t.Cleanup(func() { ws.Close() })
		held = append(held, ws)
	}
	if len(held) != pending {
		t.Fatalf("one address holds %d unanswered sockets, want %d", len(held), pending)
	}
	// Another user's worker connects and hears that it was revoked.
	l := e.newClient().rawLogin("alice")
	s := dialEvents(t, srv, l)
	list, err := e.mgr.Sessions(t.Context(), "alice")
	if err != nil || len(list) != 1 {
		t.Fatalf("Sessions: %v %v", list, err)
	}
	if err := e.mgr.Revoke(t.Context(), "alice", list[0].Handle); err != nil {
		t.Fatal(err)
	}
	s.wantEnd(protocol.EventRevoked, "revoked")
	// Malformed answers are the client's doing: counted; past the threshold the address is
	// throttled before the hub.
	for _, ws := range held {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		ws.ReadMessage() // the challenge
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth","keyid":"x"`))
	}
	waitFor(t, 5*time.Second, "brute_force_suspected", func() bool { return len(e.logs.events("brute_force_suspected")) == 1 })
	if bf := e.logs.events("brute_force_suspected")[0]; bf["client"] != "198.51.100.7" || bf["reason"] != "socket_refused" {
		t.Fatalf("brute_force_suspected: %v", bf)
	}
	_, resp, err := d.Dial(url, attacker)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("throttled address: %v %v", err, resp)
	}
	// The honest address is untouched.
	dialEvents(t, srv, e.newClient().rawLogin("bob"))
}
