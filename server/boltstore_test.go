package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/boltstore"
)

func openBolt(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	st, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestDurableStoreRestart runs a session across a restart of the server on boltstore: the
// session survives with a configured StoreKey, a request accepted before a clean restart is
// refused as a replay after it (the store saved its replay windows), one signed but never sent
// is accepted (it is no replay), the file holds no key, and a server without the StoreKey cannot
// use the sessions.
func TestDurableStoreRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sv.db")
	st := openBolt(t, path)
	e := newEnv(t, func(c *server.Config) { c.Store = st })
	c := e.newClient()
	c.login("alice")             // a session from before the floor (the clock starts at the whole second)
	e.clock.Add(7 * time.Second) // after the store's replay floor plus the accepted future skew
	wantOK(t, c.get("/api/me"))
	wantOK(t, c.rotate())
	wantOK(t, c.get("/api/me"))
	// Signed before the restart: one accepted (and captured by an observer), one never sent.
	// (This first Open was not after a clean Close: its floor applies, so sign past it.)
	e.clock.t = time.Now().Add(7 * time.Second)
	captured := c.sign("GET", "/api/me", nil)
	wantOK(t, e.serve(captured.Clone(captured.Context())))
	unsent := c.sign("GET", "/api/me", nil)
	raw := c.rawLogin("bob")
	e.mgr.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The file alone: no key material of bob's lane in it.
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sk, ek := protocol.SignKey(&raw.key), protocol.EventKey(&raw.key)
	if l := leaks(string(file), map[string][]byte{"K0": raw.key[:], "sign": sk[:], "event": ek[:]}); len(l) > 0 {
		t.Fatalf("key material in the store file: %v", l)
	}
	if !bytes.Contains(file, raw.lane[:]) {
		t.Fatal("positive control: the lane ID is not in the file")
	}

	st2 := openBolt(t, path)
	defer st2.Close()
	e2 := newEnv(t, func(c *server.Config) { c.Store = st2 })
	e2.clock.t = e.clock.Now()
	c2 := e2.newClient()
	c2.v = c.v
	wantRefused(t, e2.serve(captured), 401, "replay")
	wantOK(t, e2.serve(unsent))
	wantOK(t, c2.get("/api/me"))
	wantOK(t, c2.rotate())
	wantOK(t, c2.get("/api/me"))

	// Without the StoreKey (a random per-process key), the stored keys are useless.
	e3 := newEnv(t, func(c *server.Config) { c.Store = st2; c.StoreKey = nil })
	e3.clock.t = e.clock.Now()
	c3 := e3.newClient()
	raw.seq = 100
	wantRefused(t, e3.serve(c3.signRaw(raw, "GET", "/api/me", nil)), 401, "unknown_session")
	if len(e3.logs.events("internal_error")) != 1 {
		t.Errorf("no unseal_failed event: %s", e3.logs)
	}
}

// TestFreshStoreAcceptsNewSessionsAtOnce: the replay floor after a store opens delays only
// sessions that existed before it; a login right after start signs and is accepted at once.
func TestFreshStoreAcceptsNewSessionsAtOnce(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "sv.db"))
	defer st.Close()
	e := newEnv(t, func(c *server.Config) { c.Store = st })
	e.clock.t = time.Now().Add(time.Second)
	c := e.newClient()
	c.login("alice")
	wantOK(t, c.get("/api/me"))
}

// TestUncleanRestartAsksToSignAgain: after a start without a clean Close (a crash, kill -9,
// log.Fatal), the store has no replay windows and a floor: a session from before it is refused
// while its signatures could be ones the previous process saw. The refusal is 503 restarted with
// Retry-After (the worker signs the request again after it; a 401 would read as "logged out" to
// the application), the session goes on, and a request signed Retry-After seconds later, by the
// signer's own clock, is accepted: one second earlier it is not.
func TestUncleanRestartAsksToSignAgain(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "sv.db")) // never closed before: a floor applies
	defer st.Close()
	floor := st.ReplayFloor()
	if floor.IsZero() {
		t.Fatal("positive control: a store opened without a clean Close has no replay floor")
	}
	e := newEnv(t, func(c *server.Config) { c.Store = st })
	e.clock.t = floor.Add(-time.Second) // a session from before the floor
	c := e.newClient()
	c.login("alice")
	e.clock.t = floor.Add(2 * time.Second)
	w := c.get("/api/me")
	wantRefused(t, w, 503, "restarted")
	wait, err := strconv.Atoi(w.Header().Get("Retry-After"))
	if err != nil || wait < 1 || wait > 7 {
		t.Fatalf("Retry-After %q, want 1..7 seconds", w.Header().Get("Retry-After"))
	}
	if got := w.Header().Get("Www-Authenticate"); got != "" {
		t.Errorf("a 503 restarted carries WWW-Authenticate %q", got)
	}
	e.clock.Add(time.Duration(wait-1) * time.Second)
	wantRefused(t, c.get("/api/me"), 503, "restarted")
	e.clock.Add(time.Second)
	wantOK(t, c.get("/api/me"))
	wantOK(t, c.rotate())
	if n := len(e.logs.events("revoked")) + len(e.logs.events("expired")); n != 0 {
		t.Errorf("the refusals ended the session: %s", e.logs)
	}

	// A signer whose clock runs 3 s behind the server's waits by its own clock.
	e.clock.t = floor.Add(-time.Second)
	raw := e.newClient().rawLogin("bob")
	raw.offset = -3 * time.Second
	e.clock.t = floor.Add(4 * time.Second)
	w = e.serve(c.signRaw(raw, "GET", "/api/me", nil))
	wantRefused(t, w, 503, "restarted")
	wait, _ = strconv.Atoi(w.Header().Get("Retry-After"))
	e.clock.Add(time.Duration(wait-1) * time.Second)
	wantRefused(t, e.serve(c.signRaw(raw, "GET", "/api/me", nil)), 503, "restarted")
	e.clock.Add(time.Second)
	wantOK(t, e.serve(c.signRaw(raw, "GET", "/api/me", nil)))
}

// TestCleanRestartAfterCrashRefusesPreCrashReplay: a request accepted before a crash must not be
// accepted again after the crash, even when the process that came up after the crash was then
// restarted cleanly (a deploy right after a crash). That process's saved windows hold only what
// it saw, from its floor on; the store that restores them must keep that floor.
func TestCleanRestartAfterCrashRefusesPreCrashReplay(t *testing.T) {
	dir := t.TempDir()
	path, crash := filepath.Join(dir, "sv.db"), filepath.Join(dir, "crash.db")
	st := openBolt(t, path)
	e := newEnv(t, func(c *server.Config) { c.Store = st })
	e.clock.t = time.Now() // after st's floor: no floor check for this session here
	c := e.newClient()
	c.login("alice")
	captured := c.sign("GET", "/api/me", nil)
	wantOK(t, e.serve(captured.Clone(captured.Context()))) // accepted, and seen by an observer
	// The file as a kill -9 leaves it: every commit is in it, the clean mark is not.
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crash, file, 0o600); err != nil {
		t.Fatal(err)
	}

	// Up after the crash: the floor asks for a new signature, which is accepted.
	st2 := openBolt(t, crash)
	if st2.ReplayFloor().IsZero() {
		t.Fatal("positive control: no floor after a crash")
	}
	wantRefused(t, newEnv(t, func(c *server.Config) { c.Store = st2 }).serve(captured.Clone(captured.Context())), 503, "restarted")
	e2 := newEnv(t, func(c *server.Config) { c.Store = st2 })
	e2.clock.t = time.Now().Add(server.DefaultSkew + 2*time.Second)
	e.clock.t = e2.clock.t // the vault's clock
	c2 := e2.newClient()
	c2.v = c.v
	wantOK(t, c2.get("/api/me"))
	e2.mgr.Close()
	if err := st2.Close(); err != nil { // clean
		t.Fatal(err)
	}

	// Restarted cleanly, within the captured request's signature-age window.
	st3 := openBolt(t, crash)
	defer st3.Close()
	e3 := newEnv(t, func(c *server.Config) { c.Store = st3 })
	e3.clock.t = e2.clock.Now()
	if w := e3.serve(captured); w.Code == 200 {
		t.Fatalf("a request accepted before the crash was accepted again after a clean restart that followed it (floor %v)", st3.ReplayFloor())
	}
}
