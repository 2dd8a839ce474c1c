package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
	"github.com/sessionvault/sessionvault/server"
)

// The reload / new-tab join (PROTOCOL.md section 3.2): the cookie set at login, the boot script's
// ticket and POST {prefix}join, driven by the native vault state machine.

// The ticket line: a ticket, nothing, or "!" and a refusal worth a retry.
var ticketLine = regexp.MustCompile(`(?m)^let ticket = "((?:![a-z_]+)?[A-Za-z0-9_-]*)";$`)

// loginCookie logs c in as user and returns the join cookie the login set.
func (c *client) loginCookie(user string) *http.Cookie {
	c.e.t.Helper()
	pub, err := c.v.Begin(protocol.HandshakeLogin)
	if err != nil {
		c.e.t.Fatal(err)
	}
	w := c.loginRaw(pub, user, testPassword)
	if w.Code != 200 {
		c.e.t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	c.finish(c.v, w.Body.Bytes())
	return joinCookie(c.e.t, w)
}

// joinCookie returns the join cookie a response sets (fails the test if none).
func joinCookie(t *testing.T, w *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	for _, ck := range w.Result().Cookies() {
		if ck.Name == server.DefaultCookieName {
			return ck
		}
	}
	t.Fatalf("no %s cookie in %q", server.DefaultCookieName, w.Header().Values("Set-Cookie"))
	return nil
}

// bootRequest is a GET of the boot script with cookie (if not nil) and the three fetch metadata
// headers (each only if not empty).
func (c *client) bootRequest(cookie *http.Cookie, dest, mode, site string) *http.Request {
	r := c.newRequest("GET", "/sv/worker.js", nil)
	if cookie != nil {
		r.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	for k, v := range map[string]string{"Sec-Fetch-Dest": dest, "Sec-Fetch-Mode": mode, "Sec-Fetch-Site": site} {
		if v != "" {
			r.Header.Set(k, v)
		}
	}
	return r
}

// boot fetches the boot script and returns the response and its ticket ("" if none).
func (c *client) boot(cookie *http.Cookie, dest, mode, site string) (*httptest.ResponseRecorder, string) {
	c.e.t.Helper()
	w := c.do(c.bootRequest(cookie, dest, mode, site))
	if w.Code != 200 {
		c.e.t.Fatalf("boot script: %d %s", w.Code, w.Body)
	}
	m := ticketLine.FindStringSubmatch(w.Body.String())
	if m == nil {
		c.e.t.Fatalf("boot script has no ticket line:\n%.300s", w.Body)
	}
	return w, m[1]
}

// workerTicket is what a fresh worker of the session's browser gets.
func (c *client) workerTicket(cookie *http.Cookie) string {
	c.e.t.Helper()
	_, t := c.boot(cookie, "worker", "same-origin", "same-origin")
	if len(t) != 43 {
		c.e.t.Fatalf("no ticket for a fresh worker with a live cookie (got %q)", t)
	}
	return t
}

func (c *client) joinRequest(cookie *http.Cookie, body []byte) *http.Request {
	r := c.newRequest("POST", "/sv/join", body)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	if cookie != nil {
		r.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	return r
}

func joinBody(pub [32]byte, ticket string) []byte {
	b, _ := json.Marshal(map[string]string{"pub": b64u(pub[:]), "ticket": ticket})
	return b
}

// join runs the worker side of a join in a fresh vault and returns it (nil if refused) and the
// response.
func (c *client) join(cookie *http.Cookie, ticket string) (*vault.Vault, *httptest.ResponseRecorder) {
	c.e.t.Helper()
	v := c.e.newVault()
	pub, err := v.Begin(protocol.HandshakeJoin)
	if err != nil {
		c.e.t.Fatal(err)
	}
	w := c.do(c.joinRequest(cookie, joinBody(pub, ticket)))
	if w.Code != 200 {
		return nil, w
	}
	var rep loginReply
	if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
		c.e.t.Fatalf("join reply %s: %v", w.Body, err)
	}
	var lane protocol.LaneID
	copy(lane[:], mustB64u(c.e.t, rep.Lane))
	var spub [32]byte
	copy(spub[:], mustB64u(c.e.t, rep.Pub))
	h := vault.Handshake{Lane: lane, ServerPub: spub, Confirm: mustB64u(c.e.t, rep.Confirm), ServerTime: rep.ServerTime, Expires: rep.Expires,
		Ticket: mustB64u(c.e.t, ticket)}
	if err := v.Finish(h); err != nil {
		c.e.t.Fatalf("finish join: %v", err)
	}
	return v, w
}

// forge returns ck with one character of its value changed.
func forge(ck *http.Cookie) *http.Cookie {
	v := []byte(ck.Value)
	i := len(v) / 2
	if v[i] == 'A' {
		v[i] = 'B'
	} else {
		v[i] = 'A'
	}
	return &http.Cookie{Name: ck.Name, Value: string(v)}
}

func TestJoinCookieAttributes(t *testing.T) {
	var spy *spyStore
	e := newEnv(t, withSpy(&spy))
	c := e.newClient()
	pub, _ := c.v.Begin(protocol.HandshakeLogin)
	w := c.loginRaw(pub, "alice", testPassword)
	wantOK(t, w)
	sc := w.Header().Values("Set-Cookie")
	if len(sc) != 1 {
		t.Fatalf("login Set-Cookie: %q, want one", sc)
	}
	line := sc[0]
	for _, attr := range []string{"__Host-session=", "; Path=/", "; Secure", "; HttpOnly", "; SameSite=Strict"} {
		if !strings.Contains(line, attr) {
			t.Errorf("Set-Cookie %q lacks %q", line, attr)
		}
	}
	for _, attr := range []string{"Max-Age", "Expires", "Domain"} {
		if strings.Contains(strings.ToLower(line), strings.ToLower(attr)) {
			t.Errorf("Set-Cookie %q has %s: the default cookie is a session cookie", line, attr)
		}
	}
	ck := joinCookie(t, w)
	ids := spy.ids()
	if len(ids) != 1 {
		t.Fatalf("%d sessions in the store", len(ids))
	}
	if l := leaks(ck.Value, map[string][]byte{"session ID": ids[0]}); len(l) > 0 {
		t.Fatalf("the cookie carries the %v", l)
	}
	if strings.Contains(ck.Value, protocol.SessionHandle(ids[0])) {
		t.Fatal("the cookie carries the session handle")
	}
	// A second login is a second session: another cookie value.
	c2 := e.newClient()
	if ck2 := c2.loginCookie("alice"); ck2.Value == ck.Value {
		t.Fatal("two sessions, one cookie value")
	}
}

func TestJoinCookieLifetime(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.Join.CookieLifetime = 24 * time.Hour
		c.Join.CookieName = "__Host-app"
		c.AbsoluteTimeout = time.Hour
	})
	c := e.newClient()
	pub, _ := c.v.Begin(protocol.HandshakeLogin)
	w := c.loginRaw(pub, "alice", testPassword)
	wantOK(t, w)
	var ck *http.Cookie
	for _, x := range w.Result().Cookies() {
		if x.Name == "__Host-app" {
			ck = x
		}
	}
	if ck == nil {
		t.Fatalf("no __Host-app cookie: %q", w.Header().Values("Set-Cookie"))
	}
	if ck.MaxAge != 3600 {
		t.Fatalf("Max-Age %d, want 3600 (the session's remaining lifetime, below CookieLifetime)", ck.MaxAge)
	}
}

func TestJoinConfigErrors(t *testing.T) {
	for _, jc := range []server.JoinConfig{
		{CookieName: "session"},
		{CookieName: "__Secure-session"},
		{CookieName: "__Host-a;b"},
		{CookieLifetime: -1},
		{TicketLifetime: 2 * time.Minute},
	} {
		_, err := server.New(server.Config{Store: newEnv(t).store, Join: jc})
		if err == nil {
			t.Errorf("%+v: accepted", jc)
		}
	}
}

func TestBootScript(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	anon, none := c.boot(nil, "worker", "same-origin", "same-origin")
	if none != "" {
		t.Fatal("a ticket without a cookie")
	}
	if got := anon.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q", got)
	}
	if got := anon.Header().Get("Content-Type"); !strings.HasPrefix(got, "text/javascript") {
		t.Errorf("Content-Type %q", got)
	}
	ck := c.loginCookie("alice")
	w, ticket := c.boot(ck, "worker", "same-origin", "same-origin")
	if len(ticket) != 43 {
		t.Fatalf("ticket %q", ticket)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Error("a script with a ticket may be cached")
	}
	if got := strings.Replace(w.Body.String(), ticket, "", 1); got != anon.Body.String() {
		t.Fatal("the script with a ticket differs from the one without in more than the ticket")
	}
	if _, t2 := c.boot(ck, "worker", "same-origin", "same-origin"); t2 == ticket || t2 == "" {
		t.Fatal("a second worker got the same ticket, or none")
	}
	// A HEAD gets the headers and no body, and makes no ticket (nor counts a refusal).
	before, issued := e.mgr.TicketRefusals(), len(e.logs.events("ticket_issued"))
	head := c.bootRequest(ck, "worker", "same-origin", "same-origin")
	head.Method = http.MethodHead
	if w := c.do(head); w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("HEAD boot script: %d, %d bytes, %v", w.Code, w.Body.Len(), w.Header())
	}
	if after := e.mgr.TicketRefusals(); !maps.Equal(before, after) || len(e.logs.events("ticket_issued")) != issued || issued != 2 {
		t.Errorf("a HEAD changed the refusal counts (%v -> %v) or issued a ticket (%d issued before it)", before, after, issued)
	}

	forged := forge(ck)
	cases := []struct {
		name             string
		cookie           *http.Cookie
		dest, mode, site string
		reason           string
	}{
		{"page fetch", ck, "empty", "cors", "same-origin", server.RefusedDest},
		{"fetch no-cors", ck, "empty", "no-cors", "same-origin", server.RefusedDest},
		{"script tag", ck, "script", "no-cors", "same-origin", server.RefusedDest},
		{"import", ck, "script", "cors", "same-origin", server.RefusedDest},
		{"iframe", ck, "iframe", "navigate", "same-origin", server.RefusedDest},
		{"navigation", ck, "document", "navigate", "none", server.RefusedDest},
		{"shared worker", ck, "sharedworker", "same-origin", "same-origin", server.RefusedDest},
		{"service worker", ck, "serviceworker", "same-origin", "same-origin", server.RefusedDest},
		{"static import in a module worker", ck, "worker", "cors", "same-origin", server.RefusedMode},
		{"cross-site worker", ck, "worker", "same-origin", "cross-site", server.RefusedSite},
		{"same-site worker", ck, "worker", "same-origin", "same-site", server.RefusedSite},
		{"no metadata", ck, "", "", "", server.RefusedNoMetadata},
		{"no cookie", nil, "worker", "same-origin", "same-origin", server.RefusedNoCookie},
		{"forged cookie", forged, "worker", "same-origin", "same-origin", server.RefusedBadCookie},
		{"garbage cookie", &http.Cookie{Name: ck.Name, Value: strings.Repeat("A", 500)}, "worker", "same-origin", "same-origin", server.RefusedBadCookie},
	}
	for _, tc := range cases {
		before := e.mgr.TicketRefusals()[tc.reason]
		w, tk := c.boot(tc.cookie, tc.dest, tc.mode, tc.site)
		if tk != "" {
			t.Errorf("%s: got a ticket", tc.name)
		}
		if w.Body.String() != anon.Body.String() {
			t.Errorf("%s: the script differs from the ticketless one", tc.name)
		}
		if after := e.mgr.TicketRefusals()[tc.reason]; after != before+1 {
			t.Errorf("%s: refusals for %s went %d -> %d", tc.name, tc.reason, before, after)
		}
	}
	if n := len(e.logs.events("ticket_issued")); n != 2 {
		t.Errorf("%d ticket_issued events, want 2", n)
	}
	if n := len(e.logs.events("ticket_refused")); n < len(cases) {
		t.Errorf("%d ticket_refused events, want at least %d", n, len(cases))
	}
}

func TestJoin(t *testing.T) {
	var spy *spyStore
	e := newEnv(t, withSpy(&spy))
	c := e.newClient()
	ck := c.loginCookie("alice")
	wantOK(t, c.get("/api/me"))
	first := e.lastInfo()

	ticket := c.workerTicket(ck)
	v2, w := c.join(ck, ticket)
	if v2 == nil {
		t.Fatalf("join refused: %d %s", w.Code, w.Body)
	}
	if w.Header().Get("Set-Cookie") != "" {
		t.Error("join set a cookie")
	}
	var rep loginReply
	json.Unmarshal(w.Body.Bytes(), &rep)
	if rep.Expires != c.reply.Expires {
		t.Errorf("join reply expires %d, login's %d: a join must not extend the session", rep.Expires, c.reply.Expires)
	}
	wantOK(t, c.do(c.signWith(v2, "GET", "/api/me", nil)))
	second := e.lastInfo()
	if second.Handle != first.Handle || second.UserID != "alice" {
		t.Fatalf("joined lane is in session %s of %s, want %s of alice", second.Handle, second.UserID, first.Handle)
	}
	if second.Lane == first.Lane {
		t.Fatal("the joined lane is the login's lane")
	}
	// Both lanes work side by side, each with its own replay state.
	wantOK(t, c.get("/api/me"))
	wantOK(t, c.do(c.signWith(v2, "GET", "/api/me", nil)))
	infos, err := e.mgr.Sessions(t.Context(), "alice")
	if err != nil || len(infos) != 1 || infos[0].Lanes != 2 {
		t.Fatalf("sessions: %+v, %v; want one session with 2 lanes", infos, err)
	}

	// A second use of the ticket is refused and logged as ticket_reuse; the session lives on.
	v3, w := c.join(ck, ticket)
	if v3 != nil {
		t.Fatal("a ticket worked twice")
	}
	wantRefused(t, w, 401, "ticket_reuse")
	if len(e.logs.events("ticket_reuse")) != 1 {
		t.Error("no ticket_reuse audit event")
	}
	wantOK(t, c.get("/api/me"))

	joined := e.logs.events("joined")
	if len(joined) != 1 || joined[0]["handle"] != first.Handle || joined[0]["lane"] != second.Lane {
		t.Fatalf("joined events: %v", joined)
	}

	// Nothing secret in the logs: not the ticket, the cookie or the session ID.
	secrets := map[string][]byte{"ticket": mustB64u(t, ticket), "ticket text": []byte(ticket), "cookie": []byte(ck.Value)}
	for i, id := range spy.ids() {
		secrets["session ID "+string(rune('0'+i))] = id
	}
	if l := leaks(e.logs.String(), secrets); len(l) > 0 {
		t.Fatalf("the audit log carries %v", l)
	}
}

func TestJoinLogoutEndsEveryLane(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Join.ClearSiteData = true })
	c := e.newClient()
	ck := c.loginCookie("alice")
	v2, w := c.join(ck, c.workerTicket(ck))
	if v2 == nil {
		t.Fatalf("join: %d %s", w.Code, w.Body)
	}
	// Log out through the joined lane: the login's lane is over too.
	w = c.do(c.signWith(v2, "POST", "/sv/logout", []byte{}))
	wantOK(t, w)
	cleared := joinCookie(t, w)
	if cleared.MaxAge >= 0 || cleared.Value != "" {
		t.Errorf("logout did not clear the cookie: %q", w.Header().Values("Set-Cookie"))
	}
	if got := w.Header().Get("Clear-Site-Data"); got != `"cookies"` {
		t.Errorf("Clear-Site-Data %q with ClearSiteData set", got)
	}
	wantRefused(t, c.get("/api/me"), 401, "logout")
	// The old cookie gets no ticket, and the response leaves the cookie alone: a clear would
	// land after, and delete, the cookie of a login made meanwhile in another tab.
	bw, tk := c.boot(ck, "worker", "same-origin", "same-origin")
	if tk != "" {
		t.Fatal("a ticket for a logged-out session")
	}
	if sc := bw.Header().Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("the boot script answered an ended session's cookie with Set-Cookie %q", sc)
	}
	if e.mgr.TicketRefusals()[server.RefusedSessionGone] != 1 {
		t.Errorf("refusals: %v", e.mgr.TicketRefusals())
	}
}

func TestJoinAfterLogoutWithIssuedTicket(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	ticket := c.workerTicket(ck)
	w := c.do(c.sign("POST", "/sv/logout", []byte{}))
	wantOK(t, w)
	v, w := c.join(ck, ticket)
	if v != nil {
		t.Fatal("joined a logged-out session")
	}
	wantRefused(t, w, 401, "logout")
}

func TestJoinRefusals(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	other := e.newClient()
	ckB := other.loginCookie("bob")
	pub := [32]byte{9}
	lowOrder := [32]byte{} // all-zero: refused by X25519

	mk := func(cookie *http.Cookie, body []byte, mut func(*http.Request)) func() *http.Request {
		return func() *http.Request {
			r := c.joinRequest(cookie, body)
			if mut != nil {
				mut(r)
			}
			return r
		}
	}
	cases := []struct {
		name   string
		req    func() *http.Request
		status int
		reason string
	}{
		{"no cookie", mk(nil, joinBody(pub, c.workerTicket(ck)), nil), 401, "bad_ticket"},
		{"forged cookie", mk(forge(ck), joinBody(pub, c.workerTicket(ck)), nil), 401, "bad_ticket"},
		{"another session's ticket", mk(ckB, joinBody(pub, c.workerTicket(ck)), nil), 401, "bad_ticket"},
		{"unknown ticket", mk(ck, joinBody(pub, b64u(bytes.Repeat([]byte{7}, 32))), nil), 401, "bad_ticket"},
		{"short ticket", mk(ck, joinBody(pub, "abc"), nil), 400, "bad_request"},
		{"padded ticket", mk(ck, joinBody(pub, c.workerTicket(ck)+"="), nil), 400, "bad_request"},
		{"ticket not a string", mk(ck, []byte(`{"pub":"`+b64u(pub[:])+`","ticket":7}`), nil), 400, "bad_request"},
		{"no pub", mk(ck, []byte(`{"ticket":"`+c.workerTicket(ck)+`"}`), nil), 400, "bad_request"},
		{"low-order pub", mk(ck, joinBody(lowOrder, c.workerTicket(ck)), nil), 400, "bad_request"},
		{"not JSON", mk(ck, []byte("pub=x"), nil), 400, "bad_request"},
		{"empty body", mk(ck, []byte{}, nil), 400, "bad_request"},
		{"too large", mk(ck, bytes.Repeat([]byte(" "), 4096), nil), 413, "body_too_large"},
		{"form content type", mk(ck, joinBody(pub, c.workerTicket(ck)), func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }), 415, "unsupported_media"},
		{"cross-site", mk(ck, joinBody(pub, c.workerTicket(ck)), func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }), 403, "cross_site"},
		{"same-site", mk(ck, joinBody(pub, c.workerTicket(ck)), func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") }), 403, "cross_site"},
		{"GET", func() *http.Request { return c.newRequest("GET", "/sv/join", nil) }, 405, "method_not_allowed"},
		{"POST boot script", func() *http.Request { return c.newRequest("POST", "/sv/worker.js", nil) }, 405, "method_not_allowed"},
	}
	for _, tc := range cases {
		w := e.serve(tc.req())
		if w.Code != tc.status || w.Header().Get("Sv-Error") != tc.reason {
			t.Errorf("%s: got %d %q, want %d %q", tc.name, w.Code, w.Header().Get("Sv-Error"), tc.status, tc.reason)
		}
	}
	infos, _ := e.mgr.Sessions(t.Context(), "alice")
	if len(infos) != 1 || infos[0].Lanes != 1 {
		t.Fatalf("refused joins added lanes: %+v", infos)
	}
	wantOK(t, c.get("/api/me"))
}

func TestJoinTicketExpires(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Join.TicketLifetime = 300 * time.Millisecond })
	e.clock.t = time.Now() // the stores expire tickets by the wall clock
	c := e.newClient()
	ck := c.loginCookie("alice")
	ticket := c.workerTicket(ck)
	time.Sleep(500 * time.Millisecond)
	v, w := c.join(ck, ticket)
	if v != nil {
		t.Fatal("an expired ticket worked")
	}
	wantRefused(t, w, 401, "bad_ticket")
}

func TestJoinConcurrentOneTicket(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	ticket := c.workerTicket(ck)
	const n = 16
	var mu sync.Mutex
	codes := map[string]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub := [32]byte{9}
			w := httptest.NewRecorder()
			e.mux.ServeHTTP(w, c.joinRequest(ck, joinBody(pub, ticket)))
			mu.Lock()
			codes[w.Header().Get("Sv-Error")]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[""] != 1 || codes["ticket_reuse"] != n-1 {
		t.Fatalf("outcomes %v, want one success and %d ticket_reuse", codes, n-1)
	}
	infos, _ := e.mgr.Sessions(t.Context(), "alice")
	if len(infos) != 1 || infos[0].Lanes != 2 {
		t.Fatalf("sessions %+v, want one with 2 lanes", infos)
	}
}

func TestJoinNeverExtendsTheSession(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.AbsoluteTimeout = time.Hour
		c.IdleTimeout = 50 * time.Minute
	})
	c := e.newClient()
	ck := c.loginCookie("alice")
	e.clock.Add(40 * time.Minute)
	wantOK(t, c.get("/api/me")) // not idle
	e.clock.Add(19 * time.Minute)
	v2, w := c.join(ck, c.workerTicket(ck))
	if v2 == nil {
		t.Fatalf("join: %d %s", w.Code, w.Body)
	}
	wantOK(t, c.do(c.signWith(v2, "GET", "/api/me", nil)))
	e.clock.Add(2 * time.Minute) // past login + AbsoluteTimeout
	// "expired", or "unknown_session" once a sweep (started in the background by requests at
	// this clock) removed the expired session.
	if w := c.do(c.signWith(v2, "GET", "/api/me", nil)); w.Code != 401 || (w.Header().Get("Sv-Error") != "expired" && w.Header().Get("Sv-Error") != "unknown_session") {
		t.Fatalf("joined lane past the login's absolute deadline: %d %q", w.Code, w.Header().Get("Sv-Error"))
	}
	if _, tk := c.boot(ck, "worker", "same-origin", "same-origin"); tk != "" {
		t.Fatal("a ticket for an expired session")
	}
}

func TestJoinIdleSessionGetsNoTicket(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.IdleTimeout = 10 * time.Minute })
	c := e.newClient()
	ck := c.loginCookie("alice")
	e.clock.Add(11 * time.Minute)
	if _, tk := c.boot(ck, "worker", "same-origin", "same-origin"); tk != "" {
		t.Fatal("a ticket for an idle session")
	}
}

func TestRekeyRotatesCookie(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	wantOK(t, c.get("/api/elevate"))
	pub, err := c.v.Begin(protocol.HandshakeRekey)
	if err != nil {
		t.Fatal(err)
	}
	w := c.do(c.sign("POST", "/sv/rekey", pubBody(pub)))
	wantOK(t, w)
	c.finish(c.v, w.Body.Bytes())
	ck2 := joinCookie(t, w)
	if ck2.Value == ck.Value {
		t.Fatal("re-key kept the cookie value")
	}
	if _, tk := c.boot(ck, "worker", "same-origin", "same-origin"); tk != "" {
		t.Fatal("the pre-re-key cookie still gets a ticket")
	}
	v2, w := c.join(ck2, c.workerTicket(ck2))
	if v2 == nil {
		t.Fatalf("join with the new cookie: %d %s", w.Code, w.Body)
	}
	wantOK(t, c.do(c.signWith(v2, "GET", "/api/me", nil)))
	if e.lastInfo().Claims["role"] != "admin" {
		t.Fatal("the joined lane lacks the re-keyed claims")
	}
}

func TestJoinUserAgentBinding(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.BindUserAgent = true })
	c := e.newClient()
	ck := c.loginCookie("alice")
	ticket := c.workerTicket(ck)
	thief := e.newClient()
	thief.ua = "Other/2.0"
	if _, tk := thief.boot(ck, "worker", "same-origin", "same-origin"); tk != "" {
		t.Fatal("a ticket for another User-Agent")
	}
	if v, w := thief.join(ck, ticket); v != nil || w.Header().Get("Sv-Error") != "bad_ticket" {
		t.Fatalf("join from another User-Agent: %d %q", w.Code, w.Header().Get("Sv-Error"))
	}
}

func TestJoinDisabled(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Join.Disabled = true })
	c := e.newClient()
	pub, _ := c.v.Begin(protocol.HandshakeLogin)
	w := c.loginRaw(pub, "alice", testPassword)
	wantOK(t, w)
	if sc := w.Header().Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("Set-Cookie with join disabled: %q", sc)
	}
	if _, tk := c.boot(&http.Cookie{Name: server.DefaultCookieName, Value: "x"}, "worker", "same-origin", "same-origin"); tk != "" {
		t.Fatal("a ticket with join disabled")
	}
	wantRefused(t, e.serve(c.joinRequest(nil, joinBody([32]byte{9}, strings.Repeat("A", 43)))), 404, "not_found")
}

// TestBootScriptCSP: the boot script confines the worker's connections to its own origin and
// Config.APIOrigins (canonical, lower-case), added beside any policy the application sets, with
// or without a ticket and on HEAD; anything but a plain origin in APIOrigins is a config error.
func TestBootScriptCSP(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	anon, _ := c.boot(nil, "worker", "same-origin", "same-origin")
	if got := anon.Header().Values("Content-Security-Policy"); len(got) != 1 || got[0] != "connect-src 'self'" {
		t.Errorf("default CSP %q", got)
	}
	ck := c.loginCookie("alice")
	w, ticket := c.boot(ck, "worker", "same-origin", "same-origin")
	if ticket == "" || w.Header().Get("Content-Security-Policy") != "connect-src 'self'" {
		t.Errorf("with a ticket: CSP %q", w.Header().Get("Content-Security-Policy"))
	}
	head := e.serve(c.newRequest("HEAD", "/sv/worker.js", nil))
	if head.Header().Get("Content-Security-Policy") != "connect-src 'self'" {
		t.Errorf("HEAD: CSP %q", head.Header().Get("Content-Security-Policy"))
	}

	e2 := newEnv(t, func(cfg *server.Config) {
		cfg.APIOrigins = []string{"https://API.example:8443", "http://localhost:8081/"}
	})
	w2, _ := e2.newClient().boot(nil, "worker", "same-origin", "same-origin")
	if got := w2.Header().Get("Content-Security-Policy"); got != "connect-src 'self' https://api.example:8443 http://localhost:8081" {
		t.Errorf("CSP with APIOrigins %q", got)
	}

	ok, err := server.New(server.Config{Store: e.store, StoreKey: testStoreKey, APIOrigins: []string{"https://ok.example", "http://127.0.0.1:8080"}})
	if err != nil {
		t.Fatalf("plain origins refused: %v", err)
	}
	ok.Close()
	for _, bad := range []string{"", "api.example", "https://", "ftp://api.example", "https://u:p@api.example",
		"https://api.example/v1", "https://api.example?x", "https://api.example#x", "https://a.example; script-src *",
		"https://*.example", "https://a.example,https://b.example", "https://a.example 'unsafe-inline'"} {
		m, err := server.New(server.Config{Store: e.store, StoreKey: testStoreKey, APIOrigins: []string{bad}})
		if err == nil {
			m.Close()
		}
		if !errors.Is(err, server.ErrConfig) {
			t.Errorf("APIOrigins %q: err %v, want ErrConfig", bad, err)
		}
	}
}

// TestBootScriptOnlyAtItsLiteralURL: the router unescapes /%73v/worker.js to the handler's
// /sv/worker.js, but a worker started from that URL would take /%73v/ for the directory of its
// own endpoints. Only the literal URL gets a ticket; the refusal is counted as "path".
func TestBootScriptOnlyAtItsLiteralURL(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	for _, spelling := range []string{"/%73v/worker.js", "/sv/worker%2Ejs", "/s%76/worker.js"} {
		r := c.bootRequest(ck, "worker", "same-origin", "same-origin")
		r2 := c.newRequest("GET", spelling, nil)
		r2.Header = r.Header
		w := c.do(r2)
		if w.Code != 200 {
			t.Fatalf("%s: %d (the router should serve the script)", spelling, w.Code)
		}
		if m := ticketLine.FindStringSubmatch(w.Body.String()); m == nil || m[1] != "" {
			t.Errorf("%s: the script carries a ticket (or has no ticket line)", spelling)
		}
	}
	if n := e.mgr.TicketRefusals()[server.RefusedPath]; n != 3 {
		t.Errorf("path refusals counted %d, want 3", n)
	}
	if _, ticket := c.boot(ck, "worker", "same-origin", "same-origin"); ticket == "" {
		t.Error("the literal URL got no ticket")
	}
}

// TestTicketsPerSessionBounded: a program holding a session's cookie can forge the fetch metadata
// and ask for boot scripts in a loop; past 32 tickets in a ticket lifetime (at the default lane
// bound) that session gets scripts without one (counted as rate_limited), so it cannot fill the
// ticket table that other users' reloads need. Another session is unaffected, and the next
// window issues again.
func TestTicketsPerSessionBounded(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	issued := 0
	for range 40 {
		switch _, ticket := c.boot(ck, "worker", "same-origin", "same-origin"); {
		case len(ticket) == 43:
			issued++
		case ticket != "!rate_limited":
			// The worker tells the page why it did not join, so a logged-in user is not shown a
			// login form; nothing else is said in place of a ticket.
			t.Errorf("a refused boot script carries %q, want !rate_limited", ticket)
		}
	}
	if issued != 32 {
		t.Fatalf("%d tickets for one session in one lifetime, want 32", issued)
	}
	if n := e.mgr.TicketRefusals()[server.RefusedRateLimited]; n != 8 {
		t.Errorf("rate_limited refusals %d, want 8", n)
	}
	bob := e.newClient()
	if _, ticket := bob.boot(bob.loginCookie("bob"), "worker", "same-origin", "same-origin"); ticket == "" {
		t.Error("another session got no ticket")
	}
	e.clock.Add(server.DefaultTicketLifetime)
	if _, ticket := c.boot(ck, "worker", "same-origin", "same-origin"); ticket == "" {
		t.Error("no ticket in the next window")
	}
}

// TestBootScriptSaysStoreDown: with the store down, a fresh worker of a logged-in browser gets
// no ticket, and the script says why (!store_unavailable), so the page can wait and reload
// rather than show a login form. Once the store is back, tickets are issued again.
func TestBootScriptSaysStoreDown(t *testing.T) {
	var fs *failStore
	e := newEnv(t, func(c *server.Config) { fs = &failStore{Store: c.Store}; c.Store = fs })
	c := e.newClient()
	ck := c.loginCookie("alice")
	fs.fail.Store(true)
	if _, ticket := c.boot(ck, "worker", "same-origin", "same-origin"); ticket != "!store_unavailable" {
		t.Errorf("boot script with the store down carries %q, want !store_unavailable", ticket)
	}
	if n := e.mgr.TicketRefusals()[server.RefusedStoreDown]; n != 1 {
		t.Errorf("store_unavailable refusals %d, want 1", n)
	}
	fs.fail.Store(false)
	if _, ticket := c.boot(ck, "worker", "same-origin", "same-origin"); len(ticket) != 43 {
		t.Errorf("with the store back: %q, want a ticket", ticket)
	}
}

// TestStaleJoinLeavesTheNewCookie (found by review): tab B's join goes out with the cookie of a
// session that tab A re-keys meanwhile. Its refusal must not clear the cookie: the browser
// applies the clear when the answer arrives, after the re-key's reply set the new session's
// cookie, and would drop that (no reload or new tab of the live session could join).
func TestStaleJoinLeavesTheNewCookie(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	ticket := c.workerTicket(ck) // tab B's fresh worker got its ticket with the old cookie
	pub, err := c.v.Begin(protocol.HandshakeRekey)
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, c.do(c.sign("POST", "/sv/rekey", pubBody(pub)))) // tab A re-keys
	_, jw := c.join(ck, ticket)                                // tab B's join, with the old cookie
	if jw.Code != 401 || jw.Header().Get("Sv-Error") != "rekeyed" {
		t.Fatalf("stale join: %d %q, want 401 rekeyed", jw.Code, jw.Header().Get("Sv-Error"))
	}
	if sc := jw.Header().Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("the stale join's refusal set a cookie: %q", sc)
	}
}

// TestJoinWithALowOrderKeyIsAudited: a join whose public key is of low order (never our
// module's: X25519 with it gives no shared secret) is refused 400, audited as join_refused and
// counted against the address, and its ticket is spent.
func TestJoinWithALowOrderKeyIsAudited(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	ticket := c.workerTicket(ck)
	w := c.do(c.joinRequest(ck, joinBody([32]byte{}, ticket)))
	if w.Code != 400 || w.Header().Get("Sv-Error") != "bad_request" {
		t.Fatalf("join with the zero key: %d %q, want 400 bad_request", w.Code, w.Header().Get("Sv-Error"))
	}
	recs := e.logs.events("join_refused")
	if len(recs) != 1 || recs[0]["reason"] != "bad public key" {
		t.Fatalf("join_refused records: %v", recs)
	}
	if _, w := c.join(ck, ticket); w.Code != 401 || w.Header().Get("Sv-Error") != "ticket_reuse" {
		t.Fatalf("the ticket again: %d %q, want 401 ticket_reuse", w.Code, w.Header().Get("Sv-Error"))
	}
}

// TestJoinLongTicketIsABadRequest: a ticket longer than 43 characters is a malformed join
// (400 bad_request), not a panic of the decoder (which answered 503 unavailable, audited an
// internal error, and did not count the refusal against the address).
func TestJoinLongTicketIsABadRequest(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	ck := c.loginCookie("alice")
	pub := [32]byte{9}
	for _, ticket := range []string{strings.Repeat("A", 44), strings.Repeat("A", 100), c.workerTicket(ck) + "AAAA"} {
		w := e.serve(c.joinRequest(ck, joinBody(pub, ticket)))
		wantRefused(t, w, 400, "bad_request")
	}
	if got := e.logs.events("internal_error"); len(got) != 0 {
		t.Fatalf("malformed tickets were audited as internal errors: %v", got)
	}
}
