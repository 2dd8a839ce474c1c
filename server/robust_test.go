package server_test

import (
	"context"
	"crypto/rand"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
)

// panicStore panics in Lane: a bug in a store must not take the server down or answer 500.
type panicStore struct{ server.Store }

func (panicStore) Lane(context.Context, protocol.LaneID) (*server.Lane, *server.Session, error) {
	panic("store bug")
}

func TestPanicsAreRecovered(t *testing.T) {
	var ps *panicStore
	e := newEnv(t, func(c *server.Config) { ps = &panicStore{Store: c.Store}; c.Store = ps })
	c := e.newClient()
	c.login("alice")
	wantRefused(t, c.get("/api/x"), 503, "unavailable")
	wantRefused(t, c.do(c.sign("POST", "/sv/logout", nil)), 503, "unavailable")
	if e.calls.Load() != 0 {
		t.Fatal("handler ran")
	}
	if len(e.logs.events("internal_error")) != 2 {
		t.Errorf("panics not logged: %s", e.logs)
	}
}

func TestConcurrentRotationsOneWins(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	l := c.rawLogin("alice")
	const n = 16
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		cp := l.copy()
		cp.seq = uint64(1 + i*10)
		eph, _ := protocol.NewEphemeral(rand.Reader)
		r := c.signRaw(cp, "POST", "/sv/rotate", pubBody(eph.Public()))
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := httptest.NewRecorder()
			e.mux.ServeHTTP(w, r)
			codes <- w.Code
		}()
	}
	wg.Wait()
	close(codes)
	ok := 0
	for code := range codes {
		if code == 200 {
			ok++
		} else if code != 401 {
			t.Errorf("status %d", code)
		}
	}
	// Exactly one rotation can win; every other one is a second rotation of epoch 0 and revokes
	// (or finds the session already revoked).
	if ok > 1 {
		t.Fatalf("%d rotations of one epoch succeeded", ok)
	}
	if len(e.logs.events("reuse_detected")) != 1 {
		t.Fatalf("want one reuse_detected event: %s", e.logs)
	}
	l.seq = 1000
	w := c.do(c.signRaw(l, "GET", "/api/x", nil))
	if w.Code != 401 {
		t.Fatalf("session survived conflicting rotations: %d", w.Code)
	}
}

func TestSweepRemovesExpiredSessions(t *testing.T) {
	st := memstore.New()
	e := newEnv(t, func(c *server.Config) { c.Store = st })
	c := e.newClient()
	c.login("alice")
	e.clock.Add(13 * time.Hour)
	c2 := e.newClient()
	c2.login("bob") // starts a sweep
	e.mgr.Close()   // waits for it
	list, err := st.UserSessions(context.Background(), "alice")
	if err != nil || len(list) != 0 {
		t.Fatalf("expired session not swept: %v %v", list, err)
	}
	wantOK(t, c2.get("/api/x"))
}
