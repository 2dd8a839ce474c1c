package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
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
