package hub

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// testKey is lane's sign key in these tests.
func testKey(lane protocol.LaneID) protocol.Key {
	var k protocol.Key
	copy(k[:], "sign key of ")
	copy(k[16:], lane[:])
	return k
}

func testLane(i int) protocol.LaneID {
	var l protocol.LaneID
	copy(l[:], fmt.Sprintf("lane-%011d", i))
	return l
}

// testAuthenticate is what the Manager does: parse keyid, check the tag under the lane's key.
func testAuthenticate(ctx context.Context, keyid string, challenge, tag []byte) (protocol.LaneID, error) {
	id, err := protocol.ParseKeyID(keyid)
	if err != nil {
		return protocol.LaneID{}, &RefusedError{Reason: "bad_request", Err: err}
	}
	k := testKey(id.Lane)
	want := protocol.SocketAuth(&k, id.Lane, id.Epoch, challenge)
	if !hmac.Equal(want[:], tag) {
		return protocol.LaneID{}, &RefusedError{Reason: "bad_signature"}
	}
	return id.Lane, nil
}

// recorder is a slog.Handler that keeps every record as one line.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	return nil
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// waitLog waits until a record contains every one of parts.
func (r *recorder) waitLog(t *testing.T, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, l := range r.lines {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				r.mu.Unlock()
				return l
			}
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no log record with %q; records:\n%s", parts, r.all())
	return ""
}

type fixture struct {
	h   *Hub
	srv *httptest.Server
	log *recorder
	url string
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	rec := &recorder{}
	if cfg.Authenticate == nil {
		cfg.Authenticate = testAuthenticate
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(rec)
	}
	h := New(cfg)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		srv.Close()
		if t.Failed() {
			t.Logf("hub log:\n%s", rec.all())
		}
	})
	return &fixture{h: h, srv: srv, log: rec, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
}

func (f *fixture) dial(t *testing.T, hdr http.Header) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(f.url, hdr)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	if ws.Subprotocol() != Subprotocol {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// challenge reads the server's challenge.
func challenge(t *testing.T, ws *websocket.Conn) []byte {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, b, err := ws.ReadMessage()
	if err != nil || mt != websocket.TextMessage {
		t.Fatalf("challenge: %v %d %q", err, mt, b)
	}
	var m struct{ Type, Challenge string }
	if err := json.Unmarshal(b, &m); err != nil || m.Type != "challenge" {
		t.Fatalf("challenge: %q", b)
	}
	c, err := base64.RawURLEncoding.DecodeString(m.Challenge)
	if err != nil || len(c) != ChallengeSize {
		t.Fatalf("challenge: %q", b)
	}
	return c
}

func authMsg(lane protocol.LaneID, epoch uint32, tag []byte, since uint64) []byte {
	keyid := protocol.KeyID{Lane: lane, Epoch: epoch}.String()
	return fmt.Appendf(nil, `{"type":"auth","keyid":%q,"tag":%q,"since":%d}`, keyid, base64.RawURLEncoding.EncodeToString(tag), since)
}

// answer answers the challenge for lane (with a wrong key if bad) and returns the reply.
func answer(t *testing.T, ws *websocket.Conn, lane protocol.LaneID, bad bool) map[string]string {
	t.Helper()
	c := challenge(t, ws)
	k := testKey(lane)
	if bad {
		k[0] ^= 1
	}
	tag := protocol.SocketAuth(&k, lane, 3, c)
	if err := ws.WriteMessage(websocket.TextMessage, authMsg(lane, 3, tag[:], 0)); err != nil {
		t.Fatal(err)
	}
	return readControl(t, ws)
}

// answerLater answers the challenge for lane in a goroutine (for a test whose hook holds the
// answer back) and sends the reply it reads on the channel it returns (nil if it reads none).
func answerLater(t *testing.T, ws *websocket.Conn, lane protocol.LaneID) <-chan map[string]string {
	got := make(chan map[string]string, 1)
	go func() {
		c := challenge(t, ws)
		k := testKey(lane)
		tag := protocol.SocketAuth(&k, lane, 3, c)
		ws.WriteMessage(websocket.TextMessage, authMsg(lane, 3, tag[:], 0))
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, _ := ws.ReadMessage()
		var m map[string]string
		json.Unmarshal(b, &m)
		got <- m
	}()
	return got
}

func readControl(t *testing.T, ws *websocket.Conn) map[string]string {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, b, err := ws.ReadMessage()
	if err != nil || mt != websocket.TextMessage {
		t.Fatalf("reply: %v %d %q", err, mt, b)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("reply: %q", b)
	}
	return m
}

// connect dials and authenticates a connection of lane.
func (f *fixture) connect(t *testing.T, lane protocol.LaneID) *websocket.Conn {
	t.Helper()
	ws := f.dial(t, nil)
	if m := answer(t, ws, lane, false); m["type"] != "ready" {
		t.Fatalf("reply %v", m)
	}
	return ws
}

// expectClose reads until the connection ends and checks the close code (0: closed without a
// close frame, which gorilla reports as 1006).
func expectClose(t *testing.T, ws *websocket.Conn, code int, text string) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		mt, b, err := ws.ReadMessage()
		if err == nil {
			t.Fatalf("want close %d, got message %d %q", code, mt, b)
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if code == 0 && ce.Code == websocket.CloseAbnormalClosure {
				return
			}
			if ce.Code != code || (text != "" && ce.Text != text) {
				t.Fatalf("close %d %q, want %d %q", ce.Code, ce.Text, code, text)
			}
			return
		}
		if code != 0 {
			t.Fatalf("want close %d, got %v", code, err)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection not closed: %v", err)
		}
		return
	}
}

func seal(t testing.TB, lane protocol.LaneID, seq uint64) []byte {
	t.Helper()
	var k protocol.Key
	k[0] = 7
	b, err := protocol.SealEvent(&k, &protocol.Event{Type: protocol.EventExpiring, Lane: lane, Seq: seq, Time: 1, Deadline: 2, Reason: "idle"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readEvent(t *testing.T, ws *websocket.Conn) []byte {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, b, err := ws.ReadMessage()
	if err != nil || mt != websocket.BinaryMessage {
		t.Fatalf("event: %v %d %q", err, mt, b)
	}
	return b
}

func waitCount(t *testing.T, h *Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Count() != n {
		if time.Now().After(deadline) {
			t.Fatalf("Count() = %d, want %d", h.Count(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitOpen waits until the hub holds n open connections, authenticated or not.
func waitOpen(t *testing.T, h *Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		open := len(h.all)
		h.mu.Unlock()
		if open == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d open connections, want %d", open, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestAuthSuccess(t *testing.T) {
	f := newFixture(t, Config{})
	lane := testLane(1)
	ws := f.connect(t, lane)
	waitCount(t, f.h, 1)
	ev := seal(t, lane, 1)
	if n := f.h.Send(lane, ev); n != 1 {
		t.Fatalf("Send = %d", n)
	}
	if got := readEvent(t, ws); string(got) != string(ev) {
		t.Fatalf("event %x, want %x", got, ev)
	}
	if n := f.h.Send(testLane(2), seal(t, testLane(2), 1)); n != 0 {
		t.Fatalf("Send to another lane = %d", n)
	}
	f.log.waitLog(t, "socket_opened", "lane="+lane.String())
}

func TestWrongSignature(t *testing.T) {
	f := newFixture(t, Config{})
	ws := f.dial(t, nil)
	m := answer(t, ws, testLane(1), true)
	if m["type"] != "refused" || m["reason"] != "bad_signature" {
		t.Fatalf("reply %v", m)
	}
	expectClose(t, ws, websocket.ClosePolicyViolation, "bad_signature")
	waitOpen(t, f.h, 0)
	if f.h.Count() != 0 {
		t.Fatal(f.h.Count())
	}
}

func TestAuthenticateErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		reason string
	}{
		{errors.New("store down: secret detail"), "refused"},
		{&RefusedError{Reason: "revoked"}, "revoked"},
		{fmt.Errorf("wrapped: %w", &RefusedError{Reason: "unknown_session", Err: errors.New("x")}), "unknown_session"},
		{&RefusedError{Reason: `bad"reason`}, "refused"},
	} {
		f := newFixture(t, Config{Authenticate: func(context.Context, string, []byte, []byte) (protocol.LaneID, error) {
			return protocol.LaneID{}, tc.err
		}})
		ws := f.dial(t, nil)
		if m := answer(t, ws, testLane(1), false); m["type"] != "refused" || m["reason"] != tc.reason {
			t.Fatalf("%v: reply %v", tc.err, m)
		}
		expectClose(t, ws, websocket.ClosePolicyViolation, tc.reason)
	}
	// Without Authenticate, everything is refused.
	f := newFixture(t, Config{})
	f.h.authenticate = nil
	ws := f.dial(t, nil)
	if m := answer(t, ws, testLane(1), false); m["reason"] != "unavailable" {
		t.Fatalf("reply %v", m)
	}
}

func TestAuthTimeout(t *testing.T) {
	f := newFixture(t, Config{AuthTimeout: 200 * time.Millisecond})
	ws := f.dial(t, nil)
	challenge(t, ws)
	start := time.Now()
	expectClose(t, ws, websocket.ClosePolicyViolation, "auth timeout")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
	waitOpen(t, f.h, 0)
	f.log.waitLog(t, "socket_refused", "reason=timeout")
}

// Authenticate sees the deadline of AuthTimeout and the request's context values.
func TestAuthenticateContext(t *testing.T) {
	type key struct{}
	var got atomic.Value
	f := newFixture(t, Config{AuthTimeout: time.Second, Authenticate: func(ctx context.Context, keyid string, c, tag []byte) (protocol.LaneID, error) {
		d, ok := ctx.Deadline()
		got.Store(fmt.Sprintf("%v %v", ok && time.Until(d) <= time.Second, ctx.Value(key{})))
		return testAuthenticate(ctx, keyid, c, tag)
	}})
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, "client 192.0.2.1")))
	})
	f.connect(t, testLane(1))
	if g := got.Load(); g != "true client 192.0.2.1" {
		t.Fatalf("context: %v", g)
	}
}

func TestUpgradeRefusals(t *testing.T) {
	f := newFixture(t, Config{MaxConns: 1})
	host := strings.TrimPrefix(f.srv.URL, "http://")
	for _, tc := range []struct {
		origin string
		protos []string
		status int
	}{
		{"http://evil.example", []string{Subprotocol}, http.StatusForbidden},
		{"http://" + host + ".evil.example", []string{Subprotocol}, http.StatusForbidden},
		{"null", []string{Subprotocol}, http.StatusForbidden},
		{"http://" + host, []string{"other"}, http.StatusBadRequest},
		{"http://" + host, nil, http.StatusBadRequest},
	} {
		d := websocket.Dialer{Subprotocols: tc.protos}
		_, resp, err := d.Dial(f.url, http.Header{"Origin": {tc.origin}})
		if err == nil || resp == nil || resp.StatusCode != tc.status {
			t.Fatalf("%s %v: %v %v", tc.origin, tc.protos, err, resp)
		}
		if tc.status == http.StatusForbidden && resp.Header.Get("Sv-Error") != "cross_site" {
			t.Fatalf("Sv-Error %q", resp.Header.Get("Sv-Error"))
		}
	}
	f.log.waitLog(t, "socket_refused", "reason=cross_site")
	// A plain GET (a proxy that drops the upgrade) is refused and said once at Warn.
	for range 3 {
		resp, err := http.Get(f.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("a plain GET: %d", resp.StatusCode)
		}
	}
	f.log.waitLog(t, "WARN", "reason=not_websocket", "proxy_set_header Upgrade")
	f.log.mu.Lock()
	n := 0
	for _, l := range f.log.lines {
		if strings.Contains(l, "WARN") && strings.Contains(l, "not_websocket") {
			n++
		}
	}
	f.log.mu.Unlock()
	if n != 1 {
		t.Errorf("%d Warn records of not_websocket, want 1", n)
	}
	// The record says what was compared (the usual cause is a proxy that rewrites Host).
	f.log.waitLog(t, "socket_refused", `Origin "http://evil.example" is not of the request's host "`+host+`"`)
	// Same origin (any case) is allowed; MaxConns is 1, so a second connection gets 503.
	f.dial(t, http.Header{"Origin": {"HTTP://" + strings.ToUpper(host)}})
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}}
	_, resp, err := d.Dial(f.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Sv-Error") != "unavailable" {
		t.Fatalf("over MaxConns: %v %v", err, resp)
	}
	// Plain GET.
	resp, err = http.Get(f.srv.URL)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %v %v", err, resp)
	}
	resp.Body.Close()
}

func TestCheckOriginOption(t *testing.T) {
	f := newFixture(t, Config{CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "https://app.example" }})
	f.dial(t, http.Header{"Origin": {"https://app.example"}})
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}}
	if _, resp, err := d.Dial(f.url, nil); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("%v %v", err, resp)
	}
}

func TestOversizeFrame(t *testing.T) {
	f := newFixture(t, Config{ReadLimit: 1024})
	// Before authentication.
	ws := f.dial(t, nil)
	challenge(t, ws)
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth","keyid":"`+strings.Repeat("a", 2000)+`"}`))
	expectClose(t, ws, websocket.CloseMessageTooBig, "")
	// After.
	ws = f.connect(t, testLane(1))
	ws.WriteMessage(websocket.BinaryMessage, make([]byte, 1<<20))
	expectClose(t, ws, websocket.CloseMessageTooBig, "")
	waitCount(t, f.h, 0)
	waitOpen(t, f.h, 0)
	f.log.waitLog(t, "socket_bad_frame", "reason=too_large", "lane="+testLane(1).String())
}

func TestBadFrames(t *testing.T) {
	const secret = "GARBAGE-CONTENT-4711"
	for _, tc := range []struct {
		name   string
		authed bool
		mt     int
		msg    string
		reason string
	}{
		{"text garbage", false, websocket.TextMessage, secret + "{{", "malformed_auth"},
		{"wrong type", false, websocket.TextMessage, `{"type":"hello","keyid":"` + secret + `"}`, "malformed_auth"},
		{"short tag", false, websocket.TextMessage, `{"type":"auth","keyid":"a.1","tag":"` + secret + `"}`, "malformed_auth"},
		{"binary before auth", false, websocket.BinaryMessage, secret, "binary_before_auth"},
		{"binary after auth", true, websocket.BinaryMessage, secret, "binary_frame"},
		{"text after auth", true, websocket.TextMessage, `{"type":"auth","secret":"` + secret + `"}`, "text_frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			var ws *websocket.Conn
			if tc.authed {
				ws = f.connect(t, testLane(1))
			} else {
				ws = f.dial(t, nil)
				challenge(t, ws)
			}
			if err := ws.WriteMessage(tc.mt, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			expectClose(t, ws, websocket.ClosePolicyViolation, "unexpected message")
			f.log.waitLog(t, "socket_bad_frame", "reason="+tc.reason)
			waitOpen(t, f.h, 0)
			if strings.Contains(f.log.all(), secret) {
				t.Fatalf("log holds message content:\n%s", f.log.all())
			}
		})
	}
	// A framing error (an unmasked client frame) closes with 1002.
	f := newFixture(t, Config{})
	ws := f.connect(t, testLane(1))
	ws.NetConn().Write([]byte{0x82, 0x01, 0x00}) // binary, unmasked, 1 byte
	expectClose(t, ws, websocket.CloseProtocolError, "")
	f.log.waitLog(t, "socket_bad_frame", "reason=protocol_error")
}

// slowDial dials with a tiny receive buffer, so that a client that never reads fills up fast.
func (f *fixture) slowDial(t *testing.T) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{
		Subprotocols: []string{Subprotocol},
		NetDial: func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(1024)
			}
			return c, err
		},
	}
	ws, _, err := d.Dial(f.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func TestSlowClientDropped(t *testing.T) {
	f := newFixture(t, Config{SendQueue: 4, WriteWait: 2 * time.Second})
	slow, normal := testLane(1), testLane(2)
	ws := f.slowDial(t)
	if m := answer(t, ws, slow, false); m["type"] != "ready" {
		t.Fatal(m)
	}
	wn := f.connect(t, normal)

	// Lockstep: each round sends one event to each lane and waits until the normal client has
	// read its own, so both queues see the same pace; only the slow client's full socket
	// buffers make the difference.
	ev := seal(t, slow, 1)
	start := time.Now()
	var slowest time.Duration
	for i := 1; ; i++ {
		if i > 200_000 || time.Since(start) > 30*time.Second {
			t.Fatalf("slow client never dropped (%d events)", i)
		}
		t0 := time.Now()
		n := f.h.Send(slow, ev)
		slowest = max(slowest, time.Since(t0))
		if n == 0 {
			t.Logf("slow client dropped after %d events in %v; slowest Send %v", i, time.Since(start), slowest)
			break
		}
		want := seal(t, normal, uint64(i))
		if f.h.Send(normal, want) != 1 {
			t.Fatalf("normal client dropped at event %d", i)
		}
		if got := readEvent(t, wn); string(got) != string(want) {
			t.Fatalf("normal client: wrong event at %d", i)
		}
	}
	if slowest > 50*time.Millisecond {
		t.Errorf("a Send took %v", slowest)
	}
	waitCount(t, f.h, 1)
	// The normal client still gets events.
	for i := range 3 {
		want := seal(t, normal, uint64(1_000_000+i))
		if f.h.Send(normal, want) != 1 {
			t.Fatal("normal client dropped")
		}
		if got := readEvent(t, wn); string(got) != string(want) {
			t.Fatal("normal client: wrong event")
		}
	}
	f.log.waitLog(t, "socket_dropped", "reason=slow_client", "lane="+slow.String())
	// The server has forgotten the slow connection. (Its client still has thousands of events
	// in its socket buffers behind a 1 KiB window; reading them is not the point here.)
	waitOpen(t, f.h, 1)
	if f.h.Send(slow, ev) != 0 {
		t.Fatal("slow lane still reachable")
	}
}

func TestAbruptClose(t *testing.T) {
	f := newFixture(t, Config{})
	var conns []*websocket.Conn
	for i := range 5 {
		conns = append(conns, f.connect(t, testLane(i%3)))
	}
	pending := f.dial(t, nil) // authenticating
	challenge(t, pending)
	waitCount(t, f.h, 5)
	waitOpen(t, f.h, 6)
	for _, ws := range conns {
		ws.NetConn().Close() // no close frame
	}
	pending.NetConn().Close()
	waitCount(t, f.h, 0)
	waitOpen(t, f.h, 0)
	for i := range 3 {
		if n := f.h.Send(testLane(i), seal(t, testLane(i), 1)); n != 0 {
			t.Fatalf("Send after close = %d", n)
		}
	}
	// A clean close from the client is cleaned up too.
	ws := f.connect(t, testLane(9))
	ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	waitCount(t, f.h, 0)
	waitOpen(t, f.h, 0)
}

func TestSendTwoConnections(t *testing.T) {
	f := newFixture(t, Config{})
	lane := testLane(1)
	a, b := f.connect(t, lane), f.connect(t, lane)
	other := f.connect(t, testLane(2))
	waitCount(t, f.h, 3)
	for seq := uint64(1); seq <= 3; seq++ {
		ev := seal(t, lane, seq)
		if n := f.h.Send(lane, ev); n != 2 {
			t.Fatalf("Send = %d", n)
		}
		for _, ws := range []*websocket.Conn{a, b} {
			if got := readEvent(t, ws); string(got) != string(ev) {
				t.Fatal("wrong event")
			}
		}
	}
	other.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := other.ReadMessage(); err == nil {
		t.Fatal("another lane got the event")
	}
}

func TestCloseLane(t *testing.T) {
	f := newFixture(t, Config{})
	lane := testLane(1)
	a, b := f.connect(t, lane), f.connect(t, lane)
	other := f.connect(t, testLane(2))
	waitCount(t, f.h, 3)
	ev := seal(t, lane, 1)
	f.h.Send(lane, ev)
	if n := f.h.Close(lane, "revoked"); n != 2 {
		t.Fatalf("Close = %d", n)
	}
	if f.h.Count() != 1 {
		t.Fatalf("Count = %d", f.h.Count())
	}
	for _, ws := range []*websocket.Conn{a, b} {
		if got := readEvent(t, ws); string(got) != string(ev) { // queued events go first
			t.Fatal("wrong event")
		}
		if m := readControl(t, ws); m["type"] != "refused" || m["reason"] != "revoked" {
			t.Fatalf("reply %v", m)
		}
		expectClose(t, ws, websocket.CloseNormalClosure, "revoked")
	}
	waitOpen(t, f.h, 1)
	if n := f.h.Send(testLane(2), seal(t, testLane(2), 1)); n != 1 {
		t.Fatalf("other lane: Send = %d", n)
	}
	readEvent(t, other)
	if n := f.h.Close(testLane(3), "not a reason!"); n != 0 {
		t.Fatal(n)
	}
}

// A connection that authenticates while its lane is closed is refused with Close's reason.
func TestCloseDuringAuthenticate(t *testing.T) {
	lane := testLane(1)
	entered, release := make(chan struct{}), make(chan struct{})
	f := newFixture(t, Config{Authenticate: func(ctx context.Context, keyid string, c, tag []byte) (protocol.LaneID, error) {
		close(entered)
		<-release
		return testAuthenticate(ctx, keyid, c, tag)
	}})
	ws := f.dial(t, nil)
	done := answerLater(t, ws, lane)
	<-entered
	f.h.Close(lane, "logout")
	close(release)
	if m := <-done; m["type"] != "refused" || m["reason"] != "logout" {
		t.Fatalf("reply %v", m)
	}
	waitOpen(t, f.h, 0)
	// A later connection of another lane is unaffected.
	f.h.authenticate = testAuthenticate
	f.connect(t, testLane(2))
}

func TestResync(t *testing.T) {
	lane := testLane(1)
	var f *fixture
	var sinceSeen atomic.Uint64
	f = newFixture(t, Config{Resync: func(ctx context.Context, l protocol.LaneID, since uint64) [][]byte {
		sinceSeen.Store(since)
		// An event sent while Resync runs comes after Resync's.
		f.h.Send(l, seal(t, l, 9))
		return [][]byte{seal(t, l, since+1), nil, seal(t, l, since+2)}
	}})
	ws := f.dial(t, nil)
	c := challenge(t, ws)
	k := testKey(lane)
	tag := protocol.SocketAuth(&k, lane, 3, c)
	ws.WriteMessage(websocket.TextMessage, authMsg(lane, 3, tag[:], 5))
	if m := readControl(t, ws); m["type"] != "ready" {
		t.Fatal(m)
	}
	for _, seq := range []uint64{6, 7, 9} {
		e, err := protocol.ParseEvent(readEvent(t, ws))
		if err != nil || e.Seq != seq {
			t.Fatalf("event %+v %v, want seq %d", e, err, seq)
		}
	}
	if sinceSeen.Load() != 5 {
		t.Fatal(sinceSeen.Load())
	}
}

func TestKeepalive(t *testing.T) {
	// The mute client goes at PongWait; the one that answers pings is then past PongWait too,
	// kept by its pongs. (PongWait in seconds: a reader stalled on a loaded machine is no pong
	// failure.)
	f := newFixture(t, Config{PingInterval: 100 * time.Millisecond, PongWait: 2 * time.Second})
	lane := testLane(1)
	alive := f.connect(t, lane) // reads, so gorilla answers pings
	go func() {
		for {
			if _, _, err := alive.ReadMessage(); err != nil {
				return
			}
		}
	}()
	mute := f.connect(t, testLane(2)) // never reads: no pongs
	_ = mute
	waitCount(t, f.h, 2)
	waitCount(t, f.h, 1)
	if f.h.Send(lane, seal(t, lane, 1)) != 1 {
		t.Fatal("the client answering pings was dropped")
	}
	f.log.waitLog(t, "socket_timeout", "reason=pong_timeout", "lane="+testLane(2).String())
}

func TestShutdown(t *testing.T) {
	f := newFixture(t, Config{})
	var conns []*websocket.Conn
	for i := range 4 {
		conns = append(conns, f.connect(t, testLane(i)))
	}
	pending := f.dial(t, nil)
	challenge(t, pending)
	ev := seal(t, testLane(0), 1)
	f.h.Send(testLane(0), ev)

	// The clients answer the close frames (gorilla does when reading).
	var wg sync.WaitGroup
	codes := make([]int, len(conns))
	for i, ws := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				_, _, err := ws.ReadMessage()
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					codes[i] = ce.Code
				}
				if err != nil {
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := f.h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Shutdown took %v", time.Since(start))
	wg.Wait()
	for i, c := range codes {
		if c != websocket.CloseGoingAway {
			t.Errorf("conn %d: close %d", i, c)
		}
	}
	expectClose(t, pending, 0, "")
	if f.h.Count() != 0 || f.h.Send(testLane(0), ev) != 0 {
		t.Fatal("connections left")
	}
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}}
	if _, resp, err := d.Dial(f.url, nil); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after Shutdown: %v %v", err, resp)
	}
}

// Shutdown gives up on clients that do not answer the close when ctx ends.
func TestShutdownDeadline(t *testing.T) {
	f := newFixture(t, Config{})
	f.connect(t, testLane(1)) // never reads, never answers
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := f.h.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	waitOpen(t, f.h, 0)
}

func TestNewPanicsOnBadPongWait(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	New(Config{PingInterval: time.Second, PongWait: time.Second})
}

// TestConnsPerLaneBounded: a lane holds at most MaxConnsPerLane connections; a newer one closes
// the lane's oldest (a normal close, no refusal), so one key's holder cannot take every slot,
// and other lanes are untouched.
func TestConnsPerLaneBounded(t *testing.T) {
	f := newFixture(t, Config{})
	lane := testLane(1)
	var conns []*websocket.Conn
	for range MaxConnsPerLane {
		conns = append(conns, f.connect(t, lane))
	}
	other := f.connect(t, testLane(2))
	waitCount(t, f.h, MaxConnsPerLane+1)
	newest := f.connect(t, lane)
	expectClose(t, conns[0], websocket.CloseNormalClosure, reasonReplaced)
	waitCount(t, f.h, MaxConnsPerLane+1)
	ev := seal(t, lane, 1)
	if n := f.h.Send(lane, ev); n != MaxConnsPerLane {
		t.Fatalf("Send to the lane reached %d connections, want %d", n, MaxConnsPerLane)
	}
	for _, ws := range append(conns[1:], newest) {
		if got := readEvent(t, ws); string(got) != string(ev) {
			t.Fatal("wrong event")
		}
	}
	if n := f.h.Send(testLane(2), seal(t, testLane(2), 1)); n != 1 {
		t.Fatalf("other lane: Send = %d", n)
	}
	readEvent(t, other)
}

// TestClientAddrNamesTheClient: records name the client by Config.ClientAddr (behind a proxy,
// the forwarded address), not the proxy's RemoteAddr.
func TestClientAddrNamesTheClient(t *testing.T) {
	f := newFixture(t, Config{ClientAddr: func(r *http.Request) string { return "203.0.113.9" }})
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}}
	if _, _, err := d.Dial(f.url, http.Header{"Origin": {"http://evil.example"}}); err == nil {
		t.Fatal("a cross-site upgrade was accepted")
	}
	f.log.waitLog(t, "socket_refused", "client=203.0.113.9")
}

// clientFromHeader names the client by the X-Client header of the upgrade (a test's stand-in
// for a proxy's forwarded address).
func clientFromHeader(r *http.Request) string { return r.Header.Get("X-Client") }

// dialAs dials as client and returns the connection, or nil and the refusal's status and
// Sv-Error.
func (f *fixture) dialAs(t *testing.T, client string) (*websocket.Conn, int, string) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(f.url, http.Header{"X-Client": {client}})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial as %s: %v", client, err)
		}
		return nil, resp.StatusCode, resp.Header.Get("Sv-Error")
	}
	t.Cleanup(func() { ws.Close() })
	return ws, 0, ""
}

// TestUnsettledPerClientBounded: a client that opens sockets and answers no challenge holds at
// most MaxUnsettled slots (then 429 rate_limited), each until AuthTimeout; another client is
// untouched throughout. Config.Failed hears of malformed answers, not of silence (an honest
// page may freeze mid-exchange).
func TestUnsettledPerClientBounded(t *testing.T) {
	var mu sync.Mutex
	failed := map[string]int{}
	f := newFixture(t, Config{
		MaxUnsettled: 4,
		AuthTimeout:  500 * time.Millisecond,
		ClientAddr:   clientFromHeader,
		Failed: func(_ context.Context, client string) {
			mu.Lock()
			failed[client]++
			mu.Unlock()
		},
	})
	for i := range 4 {
		if ws, status, _ := f.dialAs(t, "198.51.100.7"); ws == nil {
			t.Fatalf("upgrade %d of the first four refused with %d", i, status)
		}
	}
	if ws, status, reason := f.dialAs(t, "198.51.100.7"); ws != nil || status != http.StatusTooManyRequests || reason != "rate_limited" {
		t.Fatalf("fifth unanswered upgrade of one client: %d %q, want 429 rate_limited", status, reason)
	}
	f.log.waitLog(t, "socket_refused", "client=198.51.100.7", "reason=rate_limited")
	// An IPv6 client is counted by its /64: another address in it is the same client.
	for i := range 4 {
		if ws, status, _ := f.dialAs(t, fmt.Sprintf("2001:db8::%d", i+1)); ws == nil {
			t.Fatalf("IPv6 upgrade %d refused with %d", i, status)
		}
	}
	if ws, status, _ := f.dialAs(t, "2001:db8::ff"); ws != nil || status != http.StatusTooManyRequests {
		t.Fatalf("fifth upgrade from one /64: status %d, want 429", status)
	}
	// Another client connects and hears its events.
	ws, _, _ := f.dialAs(t, "203.0.113.5")
	if m := answer(t, ws, testLane(1), false); m["type"] != "ready" {
		t.Fatalf("other client: %v", m)
	}
	// Once the unanswered ones time out, the client may try again; silence was not reported.
	waitUnsettled(t, f.h, "198.51.100.7", 0)
	ws, status, _ := f.dialAs(t, "198.51.100.7")
	if ws == nil {
		t.Fatalf("after the timeouts: refused with %d", status)
	}
	if m := answer(t, ws, testLane(2), false); m["type"] != "ready" {
		t.Fatalf("after the timeouts: %v", m)
	}
	mu.Lock()
	if failed["198.51.100.7"] != 0 || failed["203.0.113.5"] != 0 {
		t.Fatalf("Failed called for clients that only timed out or behaved: %v", failed)
	}
	mu.Unlock()
	// A malformed answer is reported.
	bad, _, _ := f.dialAs(t, "198.51.100.7")
	challenge(t, bad)
	bad.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth"`))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := failed["198.51.100.7"]
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Failed called %d times after a malformed answer, want 1", n)
		}
	}
}

// TestReplacedConnsCountUntilClosed: a lane's connections that replace each other while the
// replaced ones never answer their close hold slots until WriteWait; they count against their
// client's MaxUnsettled, so one lane's holder cannot fill the hub that way. A client that answers
// its closes (any browser) replaces connections as often as it likes.
func TestReplacedConnsCountUntilClosed(t *testing.T) {
	f := newFixture(t, Config{MaxUnsettled: 4, WriteWait: time.Second, ClientAddr: clientFromHeader})
	connect := func(client string, lane protocol.LaneID) (*websocket.Conn, int) {
		t.Helper()
		ws, status, _ := f.dialAs(t, client)
		if ws == nil {
			return nil, status
		}
		if m := answer(t, ws, lane, false); m["type"] != "ready" {
			t.Fatalf("reply %v", m)
		}
		return ws, 0
	}
	// An honest client: reads (and so answers) each close.
	var open []*websocket.Conn
	for i := range 3 * MaxConnsPerLane {
		ws, status := connect("203.0.113.5", testLane(1))
		if ws == nil {
			t.Fatalf("honest connection %d refused with %d", i, status)
		}
		open = append(open, ws)
		if len(open) > MaxConnsPerLane {
			expectClose(t, open[0], websocket.CloseNormalClosure, reasonReplaced)
			open = open[1:]
		}
	}
	waitUnsettled(t, f.h, "203.0.113.5", 0)
	// A lane's key held at another address, never reading: its replaced connections
	// linger, counted, until the fifth upgrade is refused.
	refused := 0
	for range MaxConnsPerLane + 4 + 1 {
		if ws, status := connect("198.51.100.7", testLane(2)); ws == nil {
			if status != http.StatusTooManyRequests {
				t.Fatalf("refused with %d, want 429", status)
			}
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("%d upgrades refused, want 1 (the one past 4 lingering replaced connections)", refused)
	}
	if _, status := connect("203.0.113.5", testLane(3)); status != 0 {
		t.Fatalf("the honest client was refused with %d", status)
	}
	// WriteWait later the lingering ones are gone and the client may connect again.
	waitUnsettled(t, f.h, "198.51.100.7", 0)
	if _, status := connect("198.51.100.7", testLane(2)); status != 0 {
		t.Fatalf("after the closes timed out: refused with %d", status)
	}
}

func waitUnsettled(t *testing.T, h *Hub, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		got := h.unsettled[key]
		h.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d unsettled connections, want %d", key, got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
