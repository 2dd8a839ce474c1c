package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

// gate releases its waiters once n of them are waiting.
type gate struct {
	mu sync.Mutex
	n  int
	ch chan struct{}
}

func newGate(n int) *gate { return &gate{n: n, ch: make(chan struct{})} }

func (g *gate) wait() {
	g.mu.Lock()
	g.n--
	if g.n == 0 {
		close(g.ch)
	}
	g.mu.Unlock()
	<-g.ch
}

// interleaveStore makes concurrent logins of one user interleave as they can in production:
// every session is created, then every login reads the user's index, then each evicts.
type interleaveStore struct {
	server.Store
	created     chan struct{}
	createGate  *gate
	sessionGate *gate
}

func (s *interleaveStore) Create(ctx context.Context, sess *server.Session, l *server.Lane) error {
	s.created <- struct{}{}
	err := s.Store.Create(ctx, sess, l)
	s.createGate.wait()
	return err
}

func (s *interleaveStore) UserSessions(ctx context.Context, user string) ([]*server.Session, error) {
	list, err := s.Store.UserSessions(ctx, user)
	s.sessionGate.wait()
	return list, err
}

// TestConcurrentLoginsKeepTheNewest: logins of one user that read the user's sessions at once,
// past MaxSessionsPerUser, each end only sessions older than their own: the newest survives
// (before, each ended the other's and both users' tabs, answered 200, held dead keys), and the
// bound holds again after the next login.
func TestConcurrentLoginsKeepTheNewest(t *testing.T) {
	var is *interleaveStore
	e := newEnv(t, func(c *server.Config) {
		c.MaxSessionsPerUser = 1
		is = &interleaveStore{Store: c.Store, created: make(chan struct{}, 3), createGate: newGate(3), sessionGate: newGate(3)}
		c.Store = is
	})
	clients := []*client{e.newClient(), e.newClient(), e.newClient()}
	lanes := make([]*rawLane, 3)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); lanes[i] = c.rawLogin("alice") }()
		<-is.created // this login's session has its creation time: the next is a second newer
		e.clock.Add(time.Second)
	}
	wg.Wait()
	for i, c := range clients {
		w := c.do(c.signRaw(lanes[i], "GET", "/api/x", nil))
		want, reason := 401, "limit_evicted"
		if i == len(clients)-1 {
			want, reason = 200, ""
		}
		if w.Code != want || w.Header().Get("Sv-Error") != reason {
			t.Errorf("login %d of 3 (oldest first): its request answered %d %q, want %d %q", i, w.Code, w.Header().Get("Sv-Error"), want, reason)
		}
	}
	if n := len(e.logs.events("limit_evicted")); n != 2 {
		t.Errorf("%d limit_evicted records, want 2 (each older session once)", n)
	}
	list, err := e.mgr.Sessions(t.Context(), "alice")
	if err != nil || len(list) != 1 {
		t.Fatalf("alice's live sessions: %d %v, want 1", len(list), err)
	}
}

// TestSlowLoginCountsAsTheNewest (found by review): login A begins first but its Authenticator
// is slow (a password hash, a directory); login B begins later and finishes first. A's session
// is created when A finishes, so it is the newest and ends B's; with its creation taken at the
// request's start it counted as older than B, ended nothing, and both sessions lived past
// MaxSessionsPerUser until the user's next login.
func TestSlowLoginCountsAsTheNewest(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	e := newEnv(t, func(c *server.Config) {
		c.MaxSessionsPerUser = 1
		c.Authenticator = server.AuthenticatorFunc(func(ctx context.Context, r *http.Request, cred json.RawMessage) (string, map[string]string, error) {
			var cr struct{ User, Password string }
			json.Unmarshal(cred, &cr)
			if cr.Password == "slow" {
				close(entered)
				<-release
			}
			return cr.User, nil, nil
		})
	})
	a, b := e.newClient(), e.newClient()
	pubA, _ := a.v.Begin(protocol.HandshakeLogin)
	done := make(chan int)
	go func() { done <- a.loginRaw(pubA, "alice", "slow").Code }()
	<-entered
	e.clock.Add(time.Second)
	pubB, _ := b.v.Begin(protocol.HandshakeLogin)
	if w := b.loginRaw(pubB, "alice", "x"); w.Code != 200 {
		t.Fatalf("login B: %d", w.Code)
	}
	e.clock.Add(time.Second) // A's authenticator returns a second after B's login
	close(release)
	if code := <-done; code != 200 {
		t.Fatalf("login A: %d", code)
	}
	e.clock.Add(time.Minute)
	list, err := e.mgr.Sessions(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) > 1 {
		t.Errorf("alice has %d live sessions with MaxSessionsPerUser=1 (both logins answered 200; no later login will fix it)", len(list))
	}
	// The survivor is the login that finished last.
	if len(list) == 1 && !list[0].Created.Equal(e.clock.Now().Add(-time.Minute)) {
		t.Errorf("the session kept was created at %v, want the slow login's, which finished last", list[0].Created)
	}
}
