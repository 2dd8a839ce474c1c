package server_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/redistest"
	"github.com/sessionvault/sessionvault/server"
)

// streamed is one long-lived request through Require whose handler holds a SessionContext
// until it ends (or until release, which calls stop first).
type streamed struct {
	handle  string
	cause   chan error
	release chan struct{}
	done    chan *httptest.ResponseRecorder
}

// holdStream mounts /stream/ on e (once) and starts r on it in the background. before, if set,
// runs in the handler before SessionContext.
func holdStream(t *testing.T, e *env, r *http.Request, before func(server.Info)) *streamed {
	t.Helper()
	s := &streamed{cause: make(chan error, 1), release: make(chan struct{}), done: make(chan *httptest.ResponseRecorder, 1)}
	registered := make(chan string, 1)
	h := e.mgr.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := server.FromContext(r.Context())
		if before != nil {
			before(info)
		}
		ctx, stop, err := e.mgr.SessionContext(r)
		if err != nil {
			t.Errorf("SessionContext: %v", err)
			registered <- ""
			return
		}
		registered <- info.Handle
		select {
		case <-ctx.Done():
		case <-s.release:
			stop()
		}
		<-ctx.Done()
		s.cause <- context.Cause(ctx)
		stop()
	}))
	go func() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		s.done <- w
	}()
	select {
	case s.handle = <-registered:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not start")
	}
	return s
}

func (s *streamed) wantEnded(t *testing.T, reason string) {
	t.Helper()
	select {
	case err := <-s.cause:
		var ended *server.EndedError
		if !errors.As(err, &ended) || ended.Reason != reason {
			t.Fatalf("the stream's context ended with %v, want the session ended: %s", err, reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the stream's context did not end (want %s)", reason)
	}
}

// TestSessionContextEndsWithTheSession: Require checks a request once; a handler that streams
// for long gets from SessionContext a context that ends when its session does (revocation,
// logout, a session already gone before the watch began), with the reason as its cause, and
// that stop releases without any session ending.
func TestSessionContextEndsWithTheSession(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	c.login("alice")
	s := holdStream(t, e, c.sign("GET", "/stream/a", nil), nil)
	if err := e.mgr.Revoke(t.Context(), "alice", s.handle); err != nil {
		t.Fatal(err)
	}
	s.wantEnded(t, "revoked")

	c = e.newClient()
	c.login("bob")
	s = holdStream(t, e, c.sign("GET", "/stream/b", nil), nil)
	wantOK(t, c.do(c.sign("POST", "/sv/logout", []byte{})))
	s.wantEnded(t, "logout")

	// Revoked after Require let the request in and before the watch began: the store says so.
	c = e.newClient()
	c.login("carol")
	s = holdStream(t, e, c.sign("GET", "/stream/c", nil), func(info server.Info) {
		if err := e.mgr.Revoke(context.Background(), "carol", info.Handle); err != nil {
			t.Error(err)
		}
	})
	s.wantEnded(t, "revoked")

	// stop without the session ending: Canceled, and the session goes on.
	c = e.newClient()
	c.login("dave")
	s = holdStream(t, e, c.sign("GET", "/stream/d", nil), nil)
	close(s.release)
	select {
	case err := <-s.cause:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stopped: cause %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not end the context")
	}
	wantOK(t, c.get("/api/me"))

	// Its absolute timeout, however busy the user.
	// (Seconds, not less: each request here may take a while on a loaded machine under -race.)
	short := newEnv(t, realClock, func(c *server.Config) { c.AbsoluteTimeout, c.IdleTimeout = 3*time.Second, 2700*time.Millisecond })
	c = short.newClient()
	c.login("erin")
	s = holdStream(t, short, c.sign("GET", "/stream/e", nil), nil)
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		wantOK(t, c.get("/api/me"))
	}
	s.wantEnded(t, "expired")

	// A handler that returns without stop leaves no watch behind (nor a timer).
	forgetful := e.mgr.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := e.mgr.SessionContext(r); err != nil {
			t.Error(err)
		}
	}))
	c = e.newClient()
	c.login("frank")
	for range 10 {
		ctx, cancel := context.WithCancel(context.Background())
		forgetful.ServeHTTP(httptest.NewRecorder(), c.sign("GET", "/stream/f", nil).WithContext(ctx))
		cancel() // as net/http does when ServeHTTP returns
	}
	waitFor(t, 5*time.Second, "no watch left", func() bool { return server.WatchCount(e.mgr) == 0 })

	// Its idle timeout: requests keep the session (and the stream) alive; without them it ends.
	idle := newEnv(t, realClock, func(c *server.Config) { c.IdleTimeout, c.AbsoluteTimeout = 3*time.Second, time.Minute })
	c = idle.newClient()
	c.login("grace")
	s = holdStream(t, idle, c.sign("GET", "/stream/g", nil), nil)
	for range 12 { // 3.6 s (past the idle timeout) of a user who keeps working
		time.Sleep(300 * time.Millisecond)
		wantOK(t, c.get("/api/me"))
	}
	select {
	case err := <-s.cause:
		t.Fatalf("the stream of a session in use ended: %v", err)
	default:
	}
	s.wantEnded(t, "expired") // idle from now on

	// Not a verified request.
	if _, _, err := e.mgr.SessionContext(httptest.NewRequest("GET", "/x", nil)); !errors.Is(err, server.ErrNoSession) {
		t.Fatalf("SessionContext of an unverified request: %v, want ErrNoSession", err)
	}
}

// TestRedisSessionContextAcrossNodes: a stream held on node B ends when node A revokes the
// session, through A's notice over Redis.
func TestRedisSessionContextAcrossNodes(t *testing.T) {
	srv := redistest.Own(t, false)
	a, b := redisNodes(t, srv.URL(), realClock)
	c := a.newClient()
	c.login("alice") // on A
	s := holdStream(t, b, c.sign("GET", "/stream/a", nil), nil)
	if err := a.mgr.Revoke(t.Context(), "alice", s.handle); err != nil {
		t.Fatal(err)
	}
	s.wantEnded(t, "revoked")
}

// Found by review: a stream held on node B whose session node A revokes while B's subscription is
// down (an ACL keeps it from subscribing again) ends when B resyncs, as its event sockets do.
func TestRedisSessionContextAfterResync(t *testing.T) {
	srv := redistest.Own(t, false)
	ctx := t.Context()
	bURL, deafen, hear := deafNode(t, srv)
	a := newEnv(t, onStore(redisStore(t, srv.URL(), "ev:"), nil), realClock)
	b := newEnv(t, onStore(redisStore(t, bURL, "ev:"), nil), realClock)
	c := a.newClient()
	c.login("alice")
	s := holdStream(t, b, c.sign("GET", "/stream/a", nil), nil)

	deafen()
	waitFor(t, 10*time.Second, "B notices the loss", func() bool { return !server.FanoutReady(b.mgr) })
	if err := a.mgr.Revoke(ctx, "alice", handleOf(t, a, "alice")); err != nil {
		t.Fatal(err)
	}
	hear()
	waitFor(t, 10*time.Second, "B resynced", func() bool { return server.FanoutReady(b.mgr) })
	s.wantEnded(t, "revoked")
}

// Found by review: a stream on a node that missed the revocation (its subscription still down)
// ends at the session's idle deadline, when it asks the store, with the revocation's reason (it
// was reported as expired).
func TestRedisSessionContextAtDeadlineAfterMissedRevocation(t *testing.T) {
	srv := redistest.Own(t, false)
	bURL, deafen, _ := deafNode(t, srv)
	idle := func(c *server.Config) { c.IdleTimeout = 2 * time.Second }
	a := newEnv(t, onStore(redisStore(t, srv.URL(), "ev:"), nil), realClock, idle)
	b := newEnv(t, onStore(redisStore(t, bURL, "ev:"), nil), realClock, idle)
	c := a.newClient()
	c.login("alice")
	s := holdStream(t, b, c.sign("GET", "/stream/a", nil), nil)
	deafen()
	waitFor(t, 10*time.Second, "B notices the loss", func() bool { return !server.FanoutReady(b.mgr) })
	if err := a.mgr.Revoke(t.Context(), "alice", handleOf(t, a, "alice")); err != nil {
		t.Fatal(err)
	}
	s.wantEnded(t, "revoked")
}

// Found by review: Close (and EndStreams, which http.Server.Shutdown can run) end the streams,
// with ErrShutdown, and the session goes on; otherwise Shutdown, which waits for handlers, waited
// for them until their sessions ended.
func TestSessionContextEndsOnShutdown(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	c.login("alice")
	s := holdStream(t, e, c.sign("GET", "/stream/a", nil), nil)
	e.mgr.EndStreams()
	select {
	case err := <-s.cause:
		if !errors.Is(err, server.ErrShutdown) {
			t.Fatalf("EndStreams: cause %v, want ErrShutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("EndStreams did not end the stream")
	}
	wantOK(t, c.get("/api/me")) // the session goes on
	s = holdStream(t, e, c.sign("GET", "/stream/b", nil), nil)
	e.mgr.Close()
	select {
	case err := <-s.cause:
		if !errors.Is(err, server.ErrShutdown) {
			t.Fatalf("Close: cause %v, want ErrShutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the stream")
	}
}
