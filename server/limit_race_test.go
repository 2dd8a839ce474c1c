package server_test

import (
	"context"
	"sync"
	"testing"
	"time"

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
