package server_test

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

func TestForwardedFor(t *testing.T) {
	addr := server.ForwardedFor(netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"))
	cases := []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.9:4000", nil, "203.0.113.9"},
		{"203.0.113.9:4000", []string{"1.2.3.4"}, "203.0.113.9"}, // not from a proxy: the header is the client's
		{"10.0.0.2:4000", []string{"1.2.3.4"}, "1.2.3.4"},
		{"10.0.0.2:4000", []string{"6.6.6.6, 1.2.3.4, 10.0.0.7"}, "1.2.3.4"}, // the client's own entry (6.6.6.6) is not believed
		{"10.0.0.2:4000", []string{"6.6.6.6", "1.2.3.4, 10.0.0.7"}, "1.2.3.4"},
		{"10.0.0.2:4000", []string{"1.2.3.4:5555"}, "1.2.3.4"},
		{"10.0.0.2:4000", []string{"[2001:db8::1]:5555"}, "2001:db8::1"},
		{"[fd00::2]:4000", []string{"2001:db8::1"}, "2001:db8::1"},
		{"10.0.0.2:4000", []string{"10.0.0.9, 10.0.0.7"}, "10.0.0.9"}, // all ours: the first
		{"10.0.0.2:4000", []string{"1.2.3.4, garbage"}, "10.0.0.2"},   // garbled: the last hop we trust
		{"10.0.0.2:4000", nil, "10.0.0.2"},
		{"[::ffff:10.0.0.2]:4000", []string{"1.2.3.4"}, "1.2.3.4"},
		{"[::ffff:10.0.0.2]:4000", nil, "10.0.0.2"},                                    // the same proxy, one bucket
		{"10.0.0.2:4000", []string{"fe80::1%" + strings.Repeat("x", 100)}, "10.0.0.2"}, // a zone: garbled
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := addr(r); got != c.want {
			t.Errorf("%s %q: %q, want %q", c.remote, c.xff, got, c.want)
		}
	}
}

// Behind a proxy that rewrites Host, Config.Authority gives verification the host the browser
// signed for; without it every request fails, and with it a forged forwarded host still fails.
func TestAuthorityBehindAProxy(t *testing.T) {
	viaProxy := func(r *http.Request, forwarded string) *http.Request {
		r.Host = "backend.internal:8080"
		r.Header.Set("X-Forwarded-Host", forwarded)
		return r
	}
	plain := newEnv(t)
	c := plain.newClient()
	c.login("alice")
	wantRefused(t, plain.serve(viaProxy(c.sign("GET", "/api/x", nil), testHost)), 401, "bad_signature")
	// The audit record says what the proxy did (not every bad signature gets a hint).
	recs := plain.logs.events("bad_signature")
	if len(recs) != 1 || !strings.Contains(fmt.Sprint(recs[0]["cause"]), `verified for host "backend.internal:8080" but X-Forwarded-Host is "`+testHost+`": a proxy rewrote Host`) {
		t.Errorf("bad_signature records %v, want one whose cause names the rewritten Host", recs)
	}
	r := c.sign("GET", "/api/x", nil)
	sig := []byte(r.Header.Get("Signature"))
	i := len(sig) - 5 // a base64 character of the MAC
	sig[i] ^= 'A' ^ 'B'
	if sig[i] != 'A' && sig[i] != 'B' {
		sig[i] = 'A'
	}
	r.Header.Set("Signature", string(sig))
	wantRefused(t, plain.serve(r), 401, "bad_signature")
	if recs = plain.logs.events("bad_signature"); len(recs) != 2 || recs[1]["cause"] != nil {
		t.Errorf("a forged signature without a proxy got a hint: %v", recs)
	}

	// nginx's proxy_set_header Host $host drops a non-default port, and sets no
	// X-Forwarded-Host: a request with an Origin (a POST) is checked again for the Origin's
	// host, which names the cause; one that does not verify there either gets no such hint.
	before := len(plain.logs.events("bad_signature"))
	r = c.sign("POST", "/api/x", []byte("{}"))
	r.Host = "app.example:8443"
	r.Header.Set("Origin", testOrigin)
	wantRefused(t, plain.serve(r), 401, "bad_signature")
	recs = plain.logs.events("bad_signature")
	if len(recs) != before+1 || !strings.Contains(fmt.Sprint(recs[before]["cause"]), `signed for "`+testHost+`" (the Origin's host) but the request arrived for host "app.example:8443"`) {
		t.Errorf("bad_signature records %v, want a cause naming the origin the request was signed for", recs[before:])
	}
	r = c.sign("POST", "/api/x", []byte("{}"))
	r.Host = "app.example:8443"
	r.Header.Set("Origin", "https://elsewhere.example")
	wantRefused(t, plain.serve(r), 401, "bad_signature")
	if recs = plain.logs.events("bad_signature"); len(recs) != before+2 || recs[before+1]["cause"] != nil {
		t.Errorf("a signature that verifies for no candidate host got a hint: %v", recs[before+1:])
	}

	e := newEnv(t, func(cfg *server.Config) {
		cfg.Authority = func(r *http.Request) string { return r.Header.Get("X-Forwarded-Host") }
	})
	c = e.newClient()
	c.login("alice")
	wantOK(t, e.serve(viaProxy(c.sign("GET", "/api/x", nil), testHost)))
	wantOK(t, e.serve(viaProxy(c.sign("GET", "/api/x", nil), strings.ToUpper(testHost)+":443")))
	wantRefused(t, e.serve(viaProxy(c.sign("GET", "/api/x", nil), "other.example")), 401, "bad_signature")
}

// With Config.Authority, the event socket's default Origin check compares the Origin with it,
// not with the proxy's Host.
func TestEventOriginBehindAProxy(t *testing.T) {
	e := newEnv(t, func(cfg *server.Config) {
		cfg.Authority = func(r *http.Request) string { return r.Header.Get("X-Forwarded-Host") }
	})
	srv := httptest.NewServer(e.mux)
	defer srv.Close()
	dial := func(origin string) int {
		d := websocket.Dialer{Subprotocols: []string{"sessionvault.v1"}}
		h := http.Header{"Origin": {origin}, "X-Forwarded-Host": {testHost}}
		conn, resp, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/sv/events", h)
		if err == nil {
			conn.Close()
			return 101
		}
		if resp == nil {
			t.Fatalf("%s: %v", origin, err)
		}
		return resp.StatusCode
	}
	if got := dial("https://" + testHost); got != 101 {
		t.Errorf("same-origin upgrade via the proxy: %d, want 101", got)
	}
	if got := dial("https://" + testHost + ":443"); got != 101 {
		t.Errorf("Origin with the default port: %d, want 101", got)
	}
	if got := dial("https://evil.example"); got != 403 {
		t.Errorf("cross-origin upgrade: %d, want 403", got)
	}
	// The record names the host the Origin was compared with: the Authority's, not the proxy's.
	recs := e.logs.events("socket_refused")
	if len(recs) != 1 || !strings.Contains(fmt.Sprint(recs[0]["cause"]), `is not of the request's host "`+testHost+`"`) {
		t.Errorf("socket_refused records %v, want one naming %s", recs, testHost)
	}
}

// FromContext gives each caller its own copy of the claims: a handler that writes to it changes
// nothing that later requests of the session see.
func TestClaimsAreTheHandlersOwn(t *testing.T) {
	e := newEnv(t)
	var seen []string
	e.mux.Handle("/mut/", e.mgr.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := server.FromContext(r.Context())
		seen = append(seen, info.Claims["role"])
		info.Claims["role"] = "admin"
	})))
	c := e.newClient()
	c.login("alice")
	wantOK(t, c.do(c.sign("GET", "/mut/a", nil)))
	wantOK(t, c.do(c.sign("GET", "/mut/b", nil)))
	if len(seen) != 2 || seen[0] != "user" || seen[1] != "user" {
		t.Fatalf("claims seen %q, want user twice", seen)
	}
}

// A Handler mounted away from its prefix answers 404 and says why in the log, once.
func TestHandlerMountedElsewhereWarns(t *testing.T) {
	e := newEnv(t)
	e.mux.Handle("/auth/", e.mgr.Handler())
	for range 2 {
		wantRefused(t, e.serve(httptest.NewRequest("POST", "/auth/reset/SECRET-TOKEN-"+strings.Repeat("A", 500), nil)), 404, "not_found")
	}
	if ev := e.logs.events("mounted_elsewhere"); len(ev) != 1 || ev[0]["prefix"] != "/sv/" || ev[0]["path"] != "/auth/" {
		t.Fatalf("warnings %v, want one naming the prefix and the path's first segment only", ev)
	}
}

func TestReadyAfterClose(t *testing.T) {
	e := newEnv(t)
	if err := e.mgr.Ready(); err != nil {
		t.Fatalf("Ready() = %v on a live manager", err)
	}
	e.mgr.Close()
	if err := e.mgr.Ready(); !errors.Is(err, server.ErrNotReady) {
		t.Fatalf("Ready() = %v after Close, want ErrNotReady", err)
	}
}

// Users who share an address with whoever caused its refusals (a NAT, a proxy without
// ClientAddr) keep working on lanes this node has verified; new logins and unknown lanes from the
// address are refused 429 before any store read.
func TestThrottledAddressKeepsCachedLanes(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.ThrottleThreshold = 3 })
	neighbour := e.newClient()
	neighbour.login("alice")
	wantOK(t, neighbour.get("/api/x")) // verified once: its lane's verifiers are cached
	attacker := e.newClient()          // same address (newClient's default)
	for range 3 {
		pub, _ := e.newVault().Begin(protocol.HandshakeLogin)
		wantRefused(t, attacker.loginRaw(pub, "mallory", "guess"), 401, "bad_credentials")
	}
	pub, _ := e.newVault().Begin(protocol.HandshakeLogin)
	wantRefused(t, attacker.loginRaw(pub, "mallory", testPassword), 429, "rate_limited")
	forged := &rawLane{seq: 1}
	rand.Read(forged.lane[:])
	wantRefused(t, attacker.do(attacker.signRaw(forged, "GET", "/api/x", nil)), 429, "rate_limited")
	wantRefused(t, attacker.do(attacker.newRequest("GET", "/api/x", nil)), 429, "rate_limited")
	// The neighbour's valid requests pass; a forged one on its lane is refused as such.
	wantOK(t, neighbour.get("/api/y"))
	wantRefused(t, e.serve(edit(neighbour.sign("GET", "/api/z", nil), "Signature", func(string) string {
		return "sv=:" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + ":"
	})), 401, "bad_signature")
}

// TestThrottledAddressNamingAnUnverifiedLane: what lets a throttled address through is a lane
// this node has verified a request of, not one a request merely named (a cache entry exists
// from the first request that names a live lane, before its HMAC is checked): forged
// signatures that name someone else's lane are answered 429 once the address is throttled,
// until that lane's own worker has made a valid request here.
func TestThrottledAddressNamingAnUnverifiedLane(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.ThrottleThreshold = 3 })
	victim := e.newClient()
	victim.remote = "192.0.2.77:4000"
	l := victim.rawLogin("alice")
	attacker := e.newClient()
	forged := l.copy()
	forged.key = protocol.Key{}
	for range 3 {
		wantRefused(t, attacker.do(attacker.signRaw(forged, "GET", "/api/x", nil)), 401, "bad_signature")
	}
	wantRefused(t, attacker.do(attacker.signRaw(forged, "GET", "/api/x", nil)), 429, "rate_limited")
	// Once alice's worker has a request verified here, her lane is one the address may name
	// (neighbours behind one NAT keep working); a forgery on it is still refused as such.
	if w := e.serve(victim.signRaw(l, "GET", "/api/x", nil)); w.Code != 200 {
		t.Fatalf("alice: %d %s", w.Code, w.Body)
	}
	wantRefused(t, attacker.do(attacker.signRaw(forged, "GET", "/api/x", nil)), 401, "bad_signature")
}

// TestPlainHTTPLoginWarnsOnce: a login over plain HTTP to a host browsers do not treat as
// secure gets a cookie they drop (Secure, __Host-), so reloads would silently lose sessions:
// the server says so once per process. Over TLS, behind a TLS proxy (X-Forwarded-Proto), or
// on localhost and loopback addresses, it says nothing.
func TestPlainHTTPLoginWarnsOnce(t *testing.T) {
	login := func(e *env, edit func(*http.Request)) {
		t.Helper()
		c := e.newClient()
		pub, err := c.v.Begin(protocol.HandshakeLogin)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(map[string]any{"pub": b64u(pub[:]), "credentials": map[string]string{"user": "alice", "password": testPassword}})
		r := c.newRequest("POST", "/sv/login", body)
		r.Header.Set("Content-Type", "application/json")
		edit(r)
		wantOK(t, e.serve(r))
	}
	for _, c := range []struct {
		name  string
		edit  func(*http.Request)
		warns int
	}{
		{"plain HTTP", func(r *http.Request) {}, 1},
		{"TLS", func(r *http.Request) { r.TLS = &tls.ConnectionState{} }, 0},
		{"TLS proxy", func(r *http.Request) { r.Header.Set("X-Forwarded-Proto", "https") }, 0},
		{"localhost", func(r *http.Request) { r.Host = "localhost:8080" }, 0},
		{"under localhost", func(r *http.Request) { r.Host = "app.localhost" }, 0},
		{"127.0.0.1", func(r *http.Request) { r.Host = "127.0.0.1:8080" }, 0},
		{"[::1]", func(r *http.Request) { r.Host = "[::1]:8080" }, 0},
		{"LAN address", func(r *http.Request) { r.Host = "192.0.2.2:8101" }, 1},
	} {
		e := newEnv(t)
		login(e, c.edit)
		login(e, c.edit)
		recs := e.logs.events("insecure_transport")
		if len(recs) != c.warns {
			t.Errorf("%s: %d insecure_transport records, want %d: %s", c.name, len(recs), c.warns, e.logs)
		}
	}
}
