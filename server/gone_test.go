package server_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
)

// cancelled returns r with a context that is already done: the browser aborted the request (a
// logout that stopped waiting for it) while the server was still working on it.
func cancelled(r *http.Request) *http.Request {
	ctx, cancel := context.WithCancel(r.Context())
	cancel()
	return r.WithContext(ctx)
}

func (e *env) sessionsOf(user string) int {
	e.t.Helper()
	list, err := e.store.UserSessions(context.Background(), user)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(list)
}

func TestLoginOfAGoneClientMakesNoSession(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	c.do = func(r *http.Request) *httptest.ResponseRecorder { return e.serve(cancelled(r)) }
	pub, err := c.v.Begin(protocol.HandshakeLogin)
	if err != nil {
		t.Fatal(err)
	}
	w := c.loginRaw(pub, "alice", testPassword)
	wantRefused(t, w, 503, "unavailable")
	if sc := w.Header().Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("Set-Cookie %q for a login nobody waits for", sc)
	}
	if n := e.sessionsOf("alice"); n != 0 {
		t.Fatalf("alice has %d sessions, want 0", n)
	}
	if ev := e.logs.events("login_failed"); len(ev) != 1 || ev[0]["reason"] != "client_gone" {
		t.Fatalf("audit: %v", ev)
	}
	// The same login from a client that waits works.
	c.do = e.serve
	c.login("alice")
	if n := e.sessionsOf("alice"); n != 1 {
		t.Fatalf("alice has %d sessions, want 1", n)
	}
}

// rekeyLeaving logs alice in on st and sends a re-key whose client leaves when st calls the
// function arm gave it (arm(nil) after the answer).
func rekeyLeaving(t *testing.T, st server.Store, arm func(context.CancelFunc)) (*env, *client, *httptest.ResponseRecorder) {
	t.Helper()
	e := newEnv(t, func(c *server.Config) { c.Store = st })
	c := e.newClient()
	c.login("alice")
	pub, err := c.v.Begin(protocol.HandshakeRekey)
	if err != nil {
		t.Fatal(err)
	}
	r := c.sign("POST", "/sv/rekey", pubBody(pub))
	ctx, cancel := context.WithCancel(r.Context())
	arm(cancel)
	w := e.serve(r.WithContext(ctx))
	arm(nil)
	return e, c, w
}

// leaveAfterSeen is a store through which the client goes away just after its request was
// verified (the replay check is verification's last store call).
type leaveAfterSeen struct {
	server.Store
	leave context.CancelFunc
}

func (s *leaveAfterSeen) Seen(ctx context.Context, id protocol.LaneID, seq uint64) error {
	err := s.Store.Seen(ctx, id, seq)
	if s.leave != nil {
		s.leave()
	}
	return err
}

func TestRekeyOfAGoneClientKeepsTheSession(t *testing.T) {
	st := &leaveAfterSeen{Store: memstore.New()}
	e, c, w := rekeyLeaving(t, st, func(leave context.CancelFunc) { st.leave = leave })
	wantRefused(t, w, 503, "unavailable")
	if sc := w.Header().Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("Set-Cookie %q for a re-key nobody waits for", sc)
	}
	if n := e.sessionsOf("alice"); n != 1 {
		t.Fatalf("alice has %d sessions, want the old one only", n)
	}
	if ev := e.logs.events("rekey_refused"); len(ev) != 1 || ev[0]["reason"] != "client_gone" {
		t.Fatalf("audit: %v", ev)
	}
	c.v.AbortRekey()
	wantOK(t, c.get("/api/me"))
}

// A logout's answer drops the join cookie even when the logout is refused (same-origin only):
// the worker that sends it may have no key the server accepts while an aborted login or re-key
// set the cookie of a session of its own.
func TestLogoutAlwaysClearsTheCookie(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Join.ClearSiteData = true })
	c := e.newClient()
	c.login("alice")
	unsigned := func(site string) *http.Request {
		r := c.newRequest("POST", "/sv/logout", []byte{})
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		return r
	}
	w := e.serve(unsigned("same-origin"))
	wantRefused(t, w, 401, "missing_signature")
	if ck := joinCookie(t, w); ck.MaxAge >= 0 || ck.Value != "" {
		t.Fatalf("a refused same-origin logout did not clear the cookie: %q", w.Header().Values("Set-Cookie"))
	}
	if got := w.Header().Get("Clear-Site-Data"); got != "" {
		t.Errorf("Clear-Site-Data %q on a refused logout: it would clear the application's cookies too", got)
	}
	for _, site := range []string{"cross-site", "same-site", "none", ""} {
		w := e.serve(unsigned(site))
		wantRefused(t, w, 401, "missing_signature")
		if sc := w.Header().Values("Set-Cookie"); len(sc) != 0 {
			t.Errorf("Sec-Fetch-Site %q: a refused logout set %q", site, sc)
		}
	}
	// Refused: the session is untouched.
	wantOK(t, c.get("/api/me"))
	if n := e.sessionsOf("alice"); n != 1 {
		t.Fatalf("alice has %d sessions after refused logouts, want 1", n)
	}
	// A signed logout clears it once, with or without fetch metadata.
	for _, site := range []string{"same-origin", ""} {
		c := e.newClient()
		c.login("bob")
		r := c.sign("POST", "/sv/logout", []byte{})
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		w := e.serve(r)
		wantOK(t, w)
		if sc := w.Header().Values("Set-Cookie"); len(sc) != 1 || joinCookie(t, w).MaxAge >= 0 {
			t.Errorf("Sec-Fetch-Site %q: logout Set-Cookie %q, want one that clears", site, sc)
		}
		if got := w.Header().Get("Clear-Site-Data"); got != `"cookies"` {
			t.Errorf("Sec-Fetch-Site %q: Clear-Site-Data %q with ClearSiteData set", site, got)
		}
	}
}

// ctxStore honours a done context as redisstore does (every call starts with ctx.Err()), and
// lets the client go away just after the re-key's new session is created.
type ctxStore struct {
	server.Store
	leaveAfterCreate context.CancelFunc
}

func (s *ctxStore) Create(ctx context.Context, sess *server.Session, l *server.Lane) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.Store.Create(ctx, sess, l)
	if s.leaveAfterCreate != nil {
		s.leaveAfterCreate()
	}
	return err
}

func (s *ctxStore) Delete(ctx context.Context, id []byte, reason string) ([]protocol.LaneID, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Store.Delete(ctx, id, reason)
}

// A re-key whose client goes (its logout aborted it) just after the new session was stored, on
// a store that honours a done context (as redisstore does): the re-key completes as one, so one
// session is left (the new one, which no cookie and no worker reach: SECURITY.md's residual) and
// no false store alarm is raised. Before, the old session's delete and the new one's cleanup both
// failed on the done context: two sessions and two store_error records.
func TestRekeyGoneAfterCreateLeavesNoOrphan(t *testing.T) {
	st := &ctxStore{Store: memstore.New()}
	e, _, w := rekeyLeaving(t, st, func(leave context.CancelFunc) { st.leaveAfterCreate = leave })
	if n := e.sessionsOf("alice"); n != 1 {
		t.Fatalf("alice has %d sessions after a re-key nobody waited for, want 1 (answer %d %s)", n, w.Code, w.Header().Get("Sv-Error"))
	}
	if n := len(e.logs.events("store_error")); n != 0 {
		t.Fatalf("%d store_error records for a client that left", n)
	}
}

// A same-origin logout ends the session its join cookie names, signed or not, verified or not:
// a tab whose lane was evicted or wiped, a worker whose signatures a misconfigured proxy breaks
// and a worker that aborted a login whose reply set the cookie of a new session all send one the
// server cannot verify, and before, the browser's session outlived its user's logout (other tabs
// stayed logged in until the idle timeout). Cross-site and metadata-less requests, a cookie that
// does not open and a throttled address end nothing.
func TestLogoutEndsTheCookiesSession(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.ThrottleThreshold = 3 })
	withCookie := func(r *http.Request, ck *http.Cookie, site string) *http.Request {
		r.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		return r
	}
	unsigned := func(c *client, ck *http.Cookie, site string) *http.Request {
		return withCookie(c.newRequest("POST", "/sv/logout", []byte{}), ck, site)
	}
	alice := e.newClient()
	ck := alice.loginCookie("alice")

	// Not same-origin: refused, nothing ends, nothing is cleared.
	for _, site := range []string{"cross-site", "same-site", "none", ""} {
		w := e.serve(unsigned(alice, ck, site))
		wantRefused(t, w, 401, "missing_signature")
		if sc := w.Header().Values("Set-Cookie"); len(sc) != 0 {
			t.Errorf("Sec-Fetch-Site %q: set %q", site, sc)
		}
	}
	// A cookie that does not open: refused and audited, nothing ends.
	forged := &http.Cookie{Name: ck.Name, Value: ck.Value[:len(ck.Value)-4] + "AAAA"}
	wantRefused(t, e.serve(unsigned(alice, forged, "same-origin")), 401, "missing_signature")
	if ev := e.logs.events("logout_refused"); len(ev) != 1 || ev[0]["reason"] != "bad_cookie" {
		t.Errorf("audit of a forged cookie: %v", ev)
	}
	wantOK(t, alice.get("/api/me"))

	// The unsigned same-origin logout with the cookie ends alice's session (and every lane).
	w := e.serve(unsigned(alice, ck, "same-origin"))
	wantOK(t, w)
	if cl := joinCookie(t, w); cl.MaxAge >= 0 || cl.Value != "" {
		t.Errorf("cookie not cleared: %q", w.Header().Values("Set-Cookie"))
	}
	wantRefused(t, alice.get("/api/me"), 401, "logout")
	if n := e.sessionsOf("alice"); n != 0 {
		t.Fatalf("alice has %d sessions after logging out by cookie", n)
	}
	ev := e.logs.events("logout")
	if len(ev) != 1 || ev[0]["by"] != "cookie" || ev[0]["user"] != "alice" {
		t.Fatalf("audit: %v", ev)
	}
	for k, v := range ev[0] {
		if s, ok := v.(string); ok && strings.Contains(s, ck.Value) {
			t.Errorf("audit field %s carries the cookie", k)
		}
	}
	// Again (a second tab's logout, a retry): nothing left to end, still ok.
	wantOK(t, e.serve(unsigned(alice, ck, "same-origin")))

	// A signed logout whose signature does not verify (a proxy that rewrites the path or host)
	// is refused as such, and the cookie's session ends all the same.
	bob := e.newClient()
	bck := bob.loginCookie("bob")
	broken := withCookie(edit(bob.sign("POST", "/sv/logout", []byte{}), "Signature", func(string) string {
		return "sv=:" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + ":"
	}), bck, "same-origin")
	wantRefused(t, e.serve(broken), 401, "bad_signature")
	if n := e.sessionsOf("bob"); n != 0 {
		t.Fatalf("bob has %d sessions after a logout whose signature failed", n)
	}

	// A shared computer: carol logged in after dave in the same browser, so the cookie is
	// carol's; dave's signed logout ends his session and hers.
	dave, carol := e.newClient(), e.newClient()
	dave.login("dave")
	cck := carol.loginCookie("carol")
	wantOK(t, e.serve(withCookie(dave.sign("POST", "/sv/logout", []byte{}), cck, "same-origin")))
	if n, m := e.sessionsOf("dave"), e.sessionsOf("carol"); n != 0 || m != 0 {
		t.Fatalf("after the logout: dave %d, carol %d sessions, want 0 and 0", n, m)
	}

	// A throttled address reads nothing from the store for a cookie: 429, the session stays.
	erin := e.newClient()
	erin.remote = "198.51.100.7:40000" // an address of its own, with no refusals yet
	eck := erin.loginCookie("erin")
	for range 3 {
		pub, _ := e.newVault().Begin(protocol.HandshakeLogin)
		wantRefused(t, erin.loginRaw(pub, "mallory", "guess"), 401, "bad_credentials")
	}
	wantRefused(t, e.serve(unsigned(erin, eck, "same-origin")), 429, "rate_limited")
	if n := e.sessionsOf("erin"); n != 1 {
		t.Fatalf("erin has %d sessions after a throttled logout, want 1", n)
	}
	// Nor is a forged cookie from it logged again (a flood would fill the log).
	forgedE := &http.Cookie{Name: eck.Name, Value: eck.Value[:len(eck.Value)-4] + "AAAA"}
	for range 5 {
		e.serve(unsigned(erin, forgedE, "same-origin"))
	}
	if ev := e.logs.events("logout_refused"); len(ev) != 1 {
		t.Errorf("%d logout_refused events, want the first one only", len(ev))
	}
}

// A verified logout from a throttled address (its lane verified lately on this node, which
// lets it through) ends the session its cookie names too: the throttle spares the store reads of
// unverified requests, and this one is verified. Found by review: it answered ok and kept it.
func TestVerifiedLogoutFromAThrottledAddressEndsTheCookiesSession(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.ThrottleThreshold = 3 })
	dave, carol := e.newClient(), e.newClient()
	dave.remote = "198.51.100.9:1"
	carol.remote = dave.remote
	dave.login("dave")
	wantOK(t, dave.get("/api/me")) // caches dave's lane on this node
	cck := carol.loginCookie("carol")
	for range 3 {
		pub, _ := e.newVault().Begin(protocol.HandshakeLogin)
		dave.loginRaw(pub, "mallory", "guess")
	}
	r := dave.sign("POST", "/sv/logout", []byte{})
	r.AddCookie(&http.Cookie{Name: cck.Name, Value: cck.Value})
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	w := e.serve(r)
	wantOK(t, w)
	if n := e.sessionsOf("carol"); n != 0 {
		t.Errorf("carol has %d sessions after a verified logout carrying her cookie", n)
	}
}
