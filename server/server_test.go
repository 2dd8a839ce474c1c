package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"math/bits"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
)

// overNetwork makes c talk to a real loopback HTTP server instead of calling the mux.
func overNetwork(t *testing.T, c *client) {
	srv := httptest.NewServer(c.e.mux)
	t.Cleanup(srv.Close)
	c.do = func(r *http.Request) *httptest.ResponseRecorder {
		t.Helper()
		var body io.Reader
		if r.Body != nil {
			b, _ := io.ReadAll(r.Body)
			body = bytes.NewReader(b)
		}
		out, err := http.NewRequest(r.Method, srv.URL+r.URL.RequestURI(), body)
		if err != nil {
			t.Fatal(err)
		}
		out.Header = r.Header.Clone()
		out.Host = r.Host
		resp, err := srv.Client().Do(out)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		w := httptest.NewRecorder()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return w
	}
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	overNetwork(t, c)
	c.login("alice")
	if c.reply.Epoch != 0 || c.reply.IdleTimeout != 1800 || c.reply.RotateEvery != 600 {
		t.Errorf("login reply %+v", c.reply)
	}
	if want := e.clock.Now().Add(12 * time.Hour).UnixMilli(); c.reply.Expires != want {
		t.Errorf("expires %d, want %d", c.reply.Expires, want)
	}

	// A GET and a POST with a body; the handler sees the session and the verified body.
	w := c.get("/api/me?x=1&y=%20")
	wantOK(t, w)
	info := e.lastInfo()
	if info.UserID != "alice" || info.Claims["role"] != "user" || info.Lane != c.reply.Lane || info.Epoch != 0 || info.Handle == "" {
		t.Errorf("info %+v", info)
	}
	body := []byte(`{"hello":"world"}`)
	w = c.do(c.sign("POST", "/api/items", body))
	wantOK(t, w)
	if !bytes.Equal(w.Body.Bytes(), body) {
		t.Errorf("handler got body %q", w.Body)
	}
	w = c.do(c.sign("PUT", "/api/items/1", []byte{}))
	wantOK(t, w)

	// After RotateEvery the server asks for a rotation; the worker rotates; the new epoch works.
	e.clock.Add(10*time.Minute + time.Second)
	w = c.get("/api/me")
	wantOK(t, w)
	if w.Header().Get("Sv-Action") != "rotate" {
		t.Fatalf("no rotate hint after RotateEvery: %v", w.Header())
	}
	wantOK(t, c.rotate())
	if st := c.v.Status(); st.Epoch != 1 {
		t.Fatalf("vault epoch %d after rotation", st.Epoch)
	}
	w = c.get("/api/me")
	wantOK(t, w)
	if w.Header().Get("Sv-Action") != "" || e.lastInfo().Epoch != 1 {
		t.Errorf("after rotation: action %q epoch %d", w.Header().Get("Sv-Action"), e.lastInfo().Epoch)
	}

	// Privilege change: re-key.
	w = c.do(c.sign("POST", "/api/elevate", []byte("{}")))
	wantOK(t, w)
	if w.Header().Get("Sv-Action") != "rekey" {
		t.Fatalf("no rekey action: %v", w.Header())
	}
	old := c.v
	oldLane := c.reply.Lane
	wantOK(t, c.rekey())
	if c.reply.Lane == oldLane {
		t.Fatal("rekey kept the lane")
	}
	w = c.get("/api/me")
	wantOK(t, w)
	if got := e.lastInfo(); got.Claims["role"] != "admin" || got.Handle == info.Handle {
		t.Errorf("after rekey: %+v (old handle %s)", got, info.Handle)
	}
	_ = old

	// Logout; the lane is dead with reason logout.
	w = c.do(c.sign("POST", "/sv/logout", nil))
	wantOK(t, w)
	wantRefused(t, c.get("/api/me"), 401, "logout")

	for _, ev := range []string{"created", "rotated", "rekeyed", "logout"} {
		if len(e.logs.events(ev)) == 0 {
			t.Errorf("no %s audit event", ev)
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	c.login("alice")
	// Activity keeps the session alive past the idle timeout's length.
	for range 4 {
		e.clock.Add(20 * time.Minute)
		wantOK(t, c.get("/api/me"))
	}
	e.clock.Add(29 * time.Minute)
	wantOK(t, c.get("/api/me"))
	// 30 minutes of silence end it.
	e.clock.Add(30 * time.Minute)
	wantRefused(t, c.get("/api/me"), 401, "expired")
	wantRefused(t, c.get("/api/me"), 401, "expired")
	if len(e.logs.events("expired")) != 1 {
		t.Errorf("want one expired event, log:\n%s", e.logs)
	}
}

func TestAbsoluteTimeoutNotExtendedByRotationOrRekey(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	c.login("alice")
	expires := c.reply.Expires
	start := e.clock.Now()
	for e.clock.Now().Sub(start) < 12*time.Hour-20*time.Minute {
		e.clock.Add(15 * time.Minute)
		wantOK(t, c.get("/api/me"))
		wantOK(t, c.rotate())
		if e.clock.Now().Sub(start) > 6*time.Hour && e.clock.Now().Sub(start) < 6*time.Hour+16*time.Minute {
			wantOK(t, c.do(c.sign("POST", "/api/elevate", []byte("{}"))))
			wantOK(t, c.rekey())
			if c.reply.Expires != expires {
				t.Fatalf("rekey moved the deadline: %d -> %d", expires, c.reply.Expires)
			}
		}
	}
	e.clock.Add(start.Add(12*time.Hour).Sub(e.clock.Now()) - time.Second)
	wantOK(t, c.get("/api/me"))
	e.clock.Add(time.Second)
	// Refused at the deadline: as expired, or as unknown if the request's own sweep removed the
	// session first (a store keeps no tombstone past the absolute deadline).
	if w := c.get("/api/me"); w.Code != 401 || w.Header().Get("Sv-Error") != "expired" && w.Header().Get("Sv-Error") != "unknown_session" {
		t.Fatalf("at the deadline: %d %q", w.Code, w.Header().Get("Sv-Error"))
	}
	for _, ev := range e.logs.events("expired") {
		if ev["reason"] != "absolute" {
			t.Errorf("expired event %v", ev)
		}
	}
}

func TestSessionIDEntropyAndNotSentToClient(t *testing.T) {
	var spy *spyStore
	e := newEnv(t, withSpy(&spy), func(c *server.Config) { c.MaxSessionsPerUser = -1 })
	c := e.newClient()
	var transcript bytes.Buffer // every byte the client received
	do := c.do
	c.do = func(r *http.Request) *httptest.ResponseRecorder {
		w := do(r)
		for k, v := range w.Header() {
			transcript.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
		transcript.Write(w.Body.Bytes())
		return w
	}
	const n = 256
	for i := range n {
		c.v = e.newVault()
		c.login("user" + string(rune('a'+i%26)))
		wantOK(t, c.get("/api/me"))
		wantOK(t, c.rotate())
	}
	wantOK(t, c.do(c.sign("POST", "/api/elevate", []byte("{}"))))
	wantOK(t, c.rekey())
	wantOK(t, c.do(c.sign("POST", "/sv/logout", nil)))

	ids := spy.ids()
	if len(ids) != n+1 {
		t.Fatalf("%d sessions created", len(ids))
	}
	seen := map[string]bool{}
	ones := 0
	for _, id := range ids {
		if len(id) != 32 {
			t.Fatalf("session ID of %d bytes, want 32 (256 bits)", len(id))
		}
		if seen[string(id)] {
			t.Fatal("duplicate session ID")
		}
		seen[string(id)] = true
		for _, b := range id {
			ones += bits.OnesCount8(b)
		}
	}
	// Monobit: with 65,792 random bits the count of ones is within 5 sigma (~640) of half.
	total := len(ids) * 256
	if d := ones - total/2; d > 640 || d < -640 {
		t.Errorf("session IDs look biased: %d ones in %d bits", ones, total)
	}
	for i, id := range ids {
		if l := leaks(transcript.String(), map[string][]byte{"id": id}); len(l) > 0 {
			t.Fatalf("session ID %d reached the client", i)
		}
		if l := leaks(e.logs.String(), map[string][]byte{"id": id}); len(l) > 0 {
			t.Fatalf("session ID %d reached the log", i)
		}
	}
	// The handle is not the ID.
	if h := e.lastInfo().Handle; h == "" || len(h) > 16 {
		t.Errorf("handle %q", h)
	}
}

func TestRekeyRenewsSessionID(t *testing.T) {
	var spy *spyStore
	e := newEnv(t, withSpy(&spy))
	c := e.newClient()
	c.login("alice")
	other := e.newClient() // a second session of the same user is untouched
	other.login("alice")
	oldIDs := spy.ids()
	oldID := oldIDs[0]

	w := c.do(c.sign("POST", "/api/elevate", []byte("{}")))
	wantOK(t, w)
	if w.Header().Get("Sv-Action") != "rekey" {
		t.Fatalf("Sv-Action %q", w.Header().Get("Sv-Action"))
	}
	// Until the re-key, the old ID keeps its old claims (no privilege on the old ID), and every
	// response repeats the request.
	w = c.get("/api/me")
	wantOK(t, w)
	if e.lastInfo().Claims["role"] != "user" || w.Header().Get("Sv-Action") != "rekey" {
		t.Fatalf("before rekey: claims %v action %q", e.lastInfo().Claims, w.Header().Get("Sv-Action"))
	}
	oldHandle := e.lastInfo().Handle
	oldLane := c.reply.Lane
	wantOK(t, c.rekey())
	ids := spy.ids()
	newID := ids[len(ids)-1]
	if bytes.Equal(newID, oldID) || len(newID) != 32 {
		t.Fatal("rekey kept the session ID")
	}
	w = c.get("/api/me")
	wantOK(t, w)
	got := e.lastInfo()
	if got.Claims["role"] != "admin" || got.Handle == oldHandle || got.Handle != protocol.SessionHandle(newID) {
		t.Fatalf("after rekey: %+v", got)
	}
	if w.Header().Get("Sv-Action") != "" {
		t.Errorf("Sv-Action after rekey: %q", w.Header().Get("Sv-Action"))
	}
	// The old ID is dead, with reason rekeyed, in the store and for its lane.
	if _, _, err := e.store.Session(context.Background(), oldID); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("old session still in the store: %v", err)
	}
	if st := c.v.Status(); st.State != vault.StateActive || st.Epoch != 0 || c.reply.Lane == oldLane {
		t.Fatalf("vault after rekey: %+v, lane %s (was %s)", st, c.reply.Lane, oldLane)
	}
	wantOK(t, other.get("/api/me"))
	if e.lastInfo().Claims["role"] != "user" {
		t.Error("rekey changed another session's claims")
	}

	// With a raw lane (a copy of the old key), the old lane is refused as rekeyed.
	raw := c.rawLogin("bob")
	w = c.do(c.signRaw(raw, "POST", "/api/elevate", []byte("{}")))
	wantOK(t, w)
	eph, _ := protocol.NewEphemeral(rand.Reader)
	wantOK(t, c.do(c.signRaw(raw, "POST", "/sv/rekey", pubBody(eph.Public()))))
	wantRefused(t, c.do(c.signRaw(raw, "GET", "/api/me", nil)), 401, "rekeyed")
	// A second re-key of the dead session is refused too.
	eph2, _ := protocol.NewEphemeral(rand.Reader)
	wantRefused(t, c.do(c.signRaw(raw, "POST", "/sv/rekey", pubBody(eph2.Public()))), 401, "rekeyed")
	if n := len(e.logs.events("rekeyed")); n != 2 {
		t.Errorf("%d rekeyed events", n)
	}
}

func TestConcurrentSessionLimitEvictsOldest(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.MaxSessionsPerUser = 3 })
	var cs []*client
	for range 5 {
		c := e.newClient()
		c.login("alice")
		cs = append(cs, c)
		e.clock.Add(time.Second)
	}
	bob := e.newClient()
	bob.login("bob")
	for i, c := range cs {
		w := c.get("/api/me")
		if i < 2 {
			wantRefused(t, w, 401, "limit_evicted")
		} else {
			wantOK(t, w)
		}
	}
	wantOK(t, bob.get("/api/me"))
	if n := len(e.logs.events("limit_evicted")); n != 2 {
		t.Errorf("%d limit_evicted events, want 2", n)
	}
	list, err := e.mgr.Sessions(context.Background(), "alice")
	if err != nil || len(list) != 3 {
		t.Fatalf("Sessions: %v %v", list, err)
	}
}

func TestRevokeUserUsesIndex(t *testing.T) {
	var spy *spyStore
	e := newEnv(t, withSpy(&spy))
	var alice, bob []*client
	for range 3 {
		a, b := e.newClient(), e.newClient()
		a.login("alice")
		b.login("bob")
		alice, bob = append(alice, a), append(bob, b)
	}
	spy.resetCalls()
	n, err := e.mgr.RevokeUser(context.Background(), "alice")
	if err != nil || n != 3 {
		t.Fatalf("RevokeUser: %d %v", n, err)
	}
	calls := spy.callList()
	// The index, the three sessions, and the index once more (nothing new: done).
	if len(calls) != 5 || calls[0] != "UserSessions:alice" || calls[4] != "UserSessions:alice" {
		t.Fatalf("store calls %v, want UserSessions:alice, 3 deletes, UserSessions:alice", calls)
	}
	for _, call := range calls[1:4] {
		if !strings.HasPrefix(call, "Delete:") || !strings.HasSuffix(call, ":revoked") {
			t.Errorf("call %s", call)
		}
	}
	for _, a := range alice {
		wantRefused(t, a.get("/api/me"), 401, "revoked")
	}
	for _, b := range bob {
		wantOK(t, b.get("/api/me"))
	}
	if len(e.logs.events("revoked")) < 3 {
		t.Error("no revoked events")
	}
}

func TestAdminSessionsAndRevoke(t *testing.T) {
	e := newEnv(t)
	a1, a2 := e.newClient(), e.newClient()
	a1.login("alice")
	e.clock.Add(time.Second)
	a2.login("alice")
	list, err := e.mgr.Sessions(context.Background(), "alice")
	if err != nil || len(list) != 2 {
		t.Fatalf("%v %v", list, err)
	}
	if list[0].Lanes != 1 || list[0].UserID != "alice" || list[0].Claims["role"] != "user" || !list[0].Created.Before(list[1].Created) {
		t.Errorf("%+v", list)
	}
	wantOK(t, a2.get("/api/me"))
	if h := e.lastInfo().Handle; h != list[1].Handle {
		t.Fatalf("Info handle %s, Sessions handle %s", h, list[1].Handle)
	}
	if err := e.mgr.Revoke(context.Background(), "bob", list[1].Handle); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("revoking another user's session: %v", err)
	}
	if err := e.mgr.Revoke(context.Background(), "alice", list[1].Handle); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, a2.get("/api/me"), 401, "revoked")
	wantOK(t, a1.get("/api/me"))
	if err := e.mgr.Revoke(context.Background(), "alice", list[1].Handle); !errors.Is(err, server.ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
}

func TestReuseDetectedRevokes(t *testing.T) {
	t.Run("old epoch after grace", func(t *testing.T) {
		e := newEnv(t)
		c := e.newClient()
		victim := c.rawLogin("alice")
		thief := victim.copy()
		eph, _ := protocol.NewEphemeral(rand.Reader)
		wantOK(t, c.rotateRaw(victim, eph))
		e.clock.Add(31 * time.Second)
		thief.seq = 1000
		wantRefused(t, c.do(c.signRaw(thief, "GET", "/api/x", nil)), 401, "reuse_detected")
		wantRefused(t, c.do(c.signRaw(victim, "GET", "/api/x", nil)), 401, "reuse_detected")
		if ev := e.logs.events("reuse_detected"); len(ev) != 1 || ev[0]["level"] != "ERROR" || ev[0]["handle"] == nil {
			t.Errorf("reuse events %v", ev)
		}
	})
	t.Run("second rotation of one epoch", func(t *testing.T) {
		e := newEnv(t)
		c := e.newClient()
		victim := c.rawLogin("alice")
		thief := victim.copy()
		thief.seq = 500
		eph, _ := protocol.NewEphemeral(rand.Reader)
		wantOK(t, c.rotateRaw(thief, eph)) // the thief rotates first
		eph2, _ := protocol.NewEphemeral(rand.Reader)
		wantRefused(t, c.rotateRaw(victim, eph2), 401, "reuse_detected")
		wantRefused(t, c.do(c.signRaw(thief, "GET", "/api/x", nil)), 401, "reuse_detected")
		if len(e.logs.events("reuse_detected")) != 1 {
			t.Error("no reuse_detected event")
		}
	})
	t.Run("old epoch, signed before the rotation, replayed after grace, does not revoke", func(t *testing.T) {
		// A signed request that never reached the server (or was refused before its nonce was
		// recorded): whoever saw it can send it after the grace, but it proves no copied key.
		e := newEnv(t)
		c := e.newClient()
		victim := c.rawLogin("alice")
		unsent := c.signRaw(victim, "GET", "/api/x", nil)
		e.clock.Add(time.Second)
		eph, _ := protocol.NewEphemeral(rand.Reader)
		wantOK(t, c.rotateRaw(victim, eph))
		e.clock.Add(31 * time.Second)
		wantRefused(t, c.do(unsent), 401, "expired_signature")
		wantOK(t, c.do(c.signRaw(victim, "GET", "/api/x", nil)))
		if len(e.logs.events("reuse_detected")) != 0 {
			t.Error("a replay of a signature made before the rotation revoked the session")
		}
	})
	t.Run("forged old epoch does not revoke", func(t *testing.T) {
		// Someone who only knows the public lane ID cannot get a session revoked.
		e := newEnv(t)
		c := e.newClient()
		victim := c.rawLogin("alice")
		eph, _ := protocol.NewEphemeral(rand.Reader)
		wantOK(t, c.rotateRaw(victim, eph))
		e.clock.Add(time.Minute)
		forger := &rawLane{lane: victim.lane, epoch: 0, seq: 9}
		rand.Read(forger.key[:])
		wantRefused(t, c.do(c.signRaw(forger, "GET", "/api/x", nil)), 401, "bad_signature")
		forger.epoch = 7
		wantRefused(t, c.do(c.signRaw(forger, "GET", "/api/x", nil)), 401, "bad_signature")
		wantOK(t, c.do(c.signRaw(victim, "GET", "/api/x", nil)))
	})
	t.Run("replayed old request does not revoke", func(t *testing.T) {
		e := newEnv(t)
		c := e.newClient()
		victim := c.rawLogin("alice")
		captured := c.signRaw(victim, "GET", "/api/x", nil)
		wantOK(t, c.do(captured.Clone(context.Background())))
		eph, _ := protocol.NewEphemeral(rand.Reader)
		wantOK(t, c.rotateRaw(victim, eph))
		e.clock.Add(40 * time.Second) // past grace, within the signature's age
		wantRefused(t, c.do(captured.Clone(context.Background())), 401, "replay")
		wantOK(t, c.do(c.signRaw(victim, "GET", "/api/x", nil)))
	})
}

func TestRotationGraceWindow(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	l := c.rawLogin("alice")
	inflight := l.copy() // requests signed before the rotation, sent after it
	inflight.seq = 100
	eph, _ := protocol.NewEphemeral(rand.Reader)
	cpub := eph.Public()
	epochs := []uint32{}
	wantOK(t, c.rotateRaw(l, eph))
	epochs = append(epochs, l.epoch)
	// A retry of the same rotation (same client key), signed under the old epoch, gets the same
	// answer, within the grace window and after it.
	retry := func() *httptest.ResponseRecorder {
		return c.do(c.signRaw(inflight, "POST", "/sv/rotate", pubBody(cpub)))
	}
	r1 := retry()
	wantOK(t, r1)
	e.clock.Add(20 * time.Second)
	wantOK(t, c.do(c.signRaw(inflight, "GET", "/api/x", nil))) // in grace
	wantOK(t, c.do(c.signRaw(l, "GET", "/api/x", nil)))
	e.clock.Add(20 * time.Second)
	r2 := retry()
	wantOK(t, r2)
	if r1.Body.String() != r2.Body.String() {
		t.Fatalf("retries answered differently: %s vs %s", r1.Body, r2.Body)
	}
	var rep struct{ Epoch uint32 }
	json.Unmarshal(r2.Body.Bytes(), &rep)
	if rep.Epoch != 1 || epochs[0] != 1 {
		t.Fatalf("epochs %v %d", epochs, rep.Epoch)
	}
	// Any other use of the old key after the grace window revokes.
	wantRefused(t, c.do(c.signRaw(inflight, "GET", "/api/x", nil)), 401, "reuse_detected")
	wantRefused(t, c.do(c.signRaw(l, "GET", "/api/x", nil)), 401, "reuse_detected")
}

func TestRotationHintAndVaultRotation(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.RotateEvery = time.Minute; c.RotateGrace = 10 * time.Second })
	c := e.newClient()
	c.login("alice")
	for i := range 5 {
		e.clock.Add(61 * time.Second)
		w := c.get("/api/x")
		wantOK(t, w)
		if w.Header().Get("Sv-Action") != "rotate" {
			t.Fatalf("round %d: no hint", i)
		}
		wantOK(t, c.rotate())
		if c.v.Status().Epoch != uint32(i+1) {
			t.Fatalf("epoch %d", c.v.Status().Epoch)
		}
	}
}

func TestStrictModeUnknownLane(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	l := &rawLane{seq: 1}
	rand.Read(l.lane[:])
	rand.Read(l.key[:])
	wantRefused(t, c.do(c.signRaw(l, "GET", "/api/x", nil)), 401, "unknown_session")
	ev := e.logs.events("unknown_session")
	if len(ev) != 1 || ev[0]["lane"] != l.lane.String() || ev[0]["client"] != "192.0.2.10" {
		t.Fatalf("events %v", ev)
	}
	if e.calls.Load() != 0 {
		t.Fatal("handler ran")
	}
	// A login never accepts a client-chosen session or lane: the reply's lane is the server's.
	c.login("alice")
	if c.reply.Lane == l.lane.String() {
		t.Fatal("server reused a client lane")
	}
}

func TestThrottling(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.ThrottleThreshold = 5; c.ThrottleWindow = time.Minute })
	good := e.newClient()
	good.login("alice")
	bad := e.newClient()
	bad.remote = "198.51.100.7:5555"
	bad.login("mallory")
	forged := &rawLane{seq: 1}
	rand.Read(forged.lane[:])
	// Three unknown sessions and two failed logins: five refusals.
	for range 3 {
		wantRefused(t, bad.do(bad.signRaw(forged, "GET", "/api/x", nil)), 401, "unknown_session")
	}
	pub, _ := e.newVault().Begin(protocol.HandshakeLogin)
	wantRefused(t, bad.loginRaw(pub, "mallory", "guess1"), 401, "bad_credentials")
	wantRefused(t, bad.loginRaw(pub, "mallory", "guess2"), 401, "bad_credentials")
	// Now everything from that address is throttled, even a valid request or login.
	w := bad.get("/api/x")
	wantRefused(t, w, 429, "rate_limited")
	if w.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	wantRefused(t, bad.loginRaw(pub, "mallory", testPassword), 429, "rate_limited")
	// Another address is not affected; IPv6 neighbours in one /64 share a count.
	wantOK(t, good.get("/api/x"))
	if ev := e.logs.events("brute_force_suspected"); len(ev) != 1 || ev[0]["client"] != "198.51.100.7" {
		t.Fatalf("brute force events %v", ev)
	}
	if ev := e.logs.events("login_failed"); len(ev) != 2 {
		t.Fatalf("login_failed events %v", ev)
	}
	// The window passes.
	e.clock.Add(61 * time.Second)
	wantOK(t, bad.get("/api/x"))

	v6 := e.newClient()
	for i := range 5 {
		v6.remote = "[2001:db8:1:2::" + string(rune('a'+i)) + "]:443"
		wantRefused(t, v6.do(v6.signRaw(forged, "GET", "/api/x", nil)), 401, "unknown_session")
	}
	v6.remote = "[2001:db8:1:2:ffff::1]:443"
	wantRefused(t, v6.do(v6.signRaw(forged, "GET", "/api/x", nil)), 429, "rate_limited")
	v6.remote = "[2001:db8:1:3::1]:443"
	wantRefused(t, v6.do(v6.signRaw(forged, "GET", "/api/x", nil)), 401, "unknown_session")
}

func TestUserAgentBinding(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.BindUserAgent = true })
	c := e.newClient()
	c.login("alice")
	wantOK(t, c.get("/api/x"))
	c.ua = "OtherBrowser/2.0"
	wantRefused(t, c.get("/api/x"), 401, "user_agent_mismatch")
	if len(e.logs.events("user_agent_mismatch")) != 1 {
		t.Error("no audit event")
	}
	// The key was used from another browser: the session is over, whatever the User-Agent.
	c.ua = "TestBrowser/1.0"
	wantRefused(t, c.get("/api/x"), 401, "revoked")

	// Without binding, the User-Agent does not matter.
	e2 := newEnv(t)
	c2 := e2.newClient()
	c2.login("alice")
	c2.ua = "OtherBrowser/2.0"
	wantOK(t, c2.get("/api/x"))
}

func TestNoSecretsInLogs(t *testing.T) {
	var spy *spyStore
	e := newEnv(t, withSpy(&spy), func(c *server.Config) { c.ThrottleThreshold = 3; c.MaxSessionsPerUser = 2 })
	c := e.newClient()
	secrets := map[string][]byte{"password": []byte(testPassword), "store key": testStoreKey}
	addKey := func(name string, k protocol.Key) {
		secrets[name] = bytes.Clone(k[:])
		sk, ek := protocol.SignKey(&k), protocol.EventKey(&k)
		secrets[name+" sign"], secrets[name+" event"] = bytes.Clone(sk[:]), bytes.Clone(ek[:])
	}
	l := c.rawLogin("alice")
	addKey("K0", l.key)
	wantOK(t, c.do(c.signRaw(l, "POST", "/api/x", []byte(`{"a":1}`))))
	eph, _ := protocol.NewEphemeral(rand.Reader)
	wantOK(t, c.rotateRaw(l, eph))
	addKey("K1", l.key)
	// Failures of every kind.
	pub, _ := e.newVault().Begin(protocol.HandshakeLogin)
	wantRefused(t, c.loginRaw(pub, "alice", "down"), 503, "unavailable")
	wantRefused(t, c.loginRaw(pub, "alice", "panic"), 503, "unavailable")
	replay := c.signRaw(l, "GET", "/api/r", nil)
	wantOK(t, c.do(replay.Clone(context.Background())))
	wantRefused(t, c.do(replay.Clone(context.Background())), 401, "replay")
	bad := c.signRaw(l, "GET", "/api/x", nil)
	bad.URL.Path, bad.RequestURI = "/api/y", "/api/y"
	wantRefused(t, c.do(bad), 401, "bad_signature")
	wantRefused(t, c.loginRaw(pub, "alice", "wrong "+testPassword), 401, "bad_credentials")
	wantRefused(t, c.loginRaw(pub, "alice", testPassword), 429, "rate_limited")
	// Re-key, session limit, reuse, logout, expiry.
	e.clock.Add(time.Second)
	c2 := e.newClient()
	c2.remote = "203.0.113.5:1"
	c2.login("alice")
	wantOK(t, c2.do(c2.sign("POST", "/api/elevate", []byte("{}"))))
	wantOK(t, c2.rekey())
	e.clock.Add(time.Second)
	c3 := e.newClient()
	c3.remote = "203.0.113.6:1"
	c3.login("alice") // evicts the oldest (limit 2): l's session
	c4 := e.newClient()
	c4.remote = "203.0.113.7:1"
	wantRefused(t, c4.do(c4.signRaw(l, "GET", "/api/x", nil)), 401, "limit_evicted")
	bob := c4.rawLogin("bob")
	addKey("bob K0", bob.key)
	thief := bob.copy()
	thief.seq = 50
	eph, _ = protocol.NewEphemeral(rand.Reader)
	wantOK(t, c4.rotateRaw(bob, eph))
	addKey("bob K1", bob.key)
	e.clock.Add(31 * time.Second)
	wantRefused(t, c4.do(c4.signRaw(thief, "GET", "/api/x", nil)), 401, "reuse_detected")
	wantOK(t, c2.do(c2.sign("POST", "/sv/logout", nil)))
	e.clock.Add(31 * time.Minute)
	wantRefused(t, c3.get("/api/x"), 401, "expired")

	for _, s := range spy.sessions {
		secrets["session ID "+protocol.SessionHandle(s.ID)] = s.ID
	}
	for i, l := range spy.lanes { // sealed keys are not for logs either
		secrets["sealed key "+strconv.Itoa(i)] = l.Key
	}
	logs := e.logs.String()
	if l := leaks(logs, secrets); len(l) > 0 {
		t.Fatalf("secrets in the log: %v\n%s", l, logs)
	}
	// Positive controls: the log is not empty of what it should say, and the leak check
	// finds a planted secret.
	for _, ev := range []string{"created", "rotated", "rekeyed", "logout", "expired", "replay_refused",
		"bad_signature", "login_failed", "limit_evicted", "brute_force_suspected", "internal_error", "reuse_detected"} {
		if len(e.logs.events(ev)) == 0 {
			t.Errorf("no %s event in:\n%s", ev, logs)
		}
	}
	if os.Getenv("SV_DUMP") != "" {
		t.Log(logs)
	}
	if len(leaks(logs+b64u(secrets["K0"]), secrets)) != 1 {
		t.Error("leak check does not find a planted key")
	}
}

func TestKeysSealedAtRest(t *testing.T) {
	var spy *spyStore
	e := newEnv(t, withSpy(&spy))
	c := e.newClient()
	l := c.rawLogin("alice")
	secrets := map[string][]byte{}
	addKey := func(name string, k protocol.Key) {
		secrets[name] = bytes.Clone(k[:])
		sk, ek := protocol.SignKey(&k), protocol.EventKey(&k)
		secrets[name+" sign"], secrets[name+" event"] = bytes.Clone(sk[:]), bytes.Clone(ek[:])
	}
	addKey("K0", l.key)
	for i := range 3 {
		eph, _ := protocol.NewEphemeral(rand.Reader)
		wantOK(t, c.rotateRaw(l, eph))
		addKey("K"+string(rune('1'+i)), l.key)
	}
	var stored bytes.Buffer
	for _, ln := range spy.lanes {
		stored.Write(ln.Key)
		stored.Write(ln.PrevKey)
		stored.Write(ln.RotateClientPub)
		stored.Write(ln.RotateReply)
		if len(ln.Key) != 61 || ln.Key[0] != 1 {
			t.Errorf("sealed key of %d bytes", len(ln.Key))
		}
	}
	for _, s := range spy.sessions {
		stored.Write(s.ID)
	}
	if len(spy.lanes) != 4 {
		t.Fatalf("%d lane writes", len(spy.lanes))
	}
	if l := leaks(stored.String(), secrets); len(l) > 0 {
		t.Fatalf("plaintext key material reached the store: %v", l)
	}
	// The stored lane as a store thief sees it: a different StoreKey cannot use it.
	ctx := context.Background()
	stolenLane, stolenSess, err := e.store.Lane(ctx, l.lane)
	if err != nil {
		t.Fatal(err)
	}
	other := memstore.New()
	stolenLane.PrevKey = nil
	if err := other.Create(ctx, stolenSess, stolenLane); err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t, func(cfg *server.Config) { cfg.Store = other; cfg.StoreKey = bytes.Repeat([]byte{1}, 32) })
	c2 := e2.newClient()
	l.seq += 10
	wantRefused(t, c2.do(c2.signRaw(l, "GET", "/api/x", nil)), 401, "unknown_session")
	// With the right StoreKey the same copy works (the refusal above is the key's doing).
	e3 := newEnv(t, func(cfg *server.Config) { cfg.Store = other })
	c3 := e3.newClient()
	l.seq += 10
	wantOK(t, c3.do(c3.signRaw(l, "GET", "/api/x", nil)))
}

func TestConcurrentOutOfOrderNonces(t *testing.T) {
	// Replays count for throttling; this test replays on purpose.
	e := newEnv(t, func(c *server.Config) { c.ThrottleThreshold = -1 })
	c := e.newClient()
	c.login("alice")
	const n = 600
	reqs := make([]*http.Request, n)
	for i := range reqs {
		var body []byte
		if i%3 == 0 {
			body = []byte(`{"i":` + string(rune('0'+i%10)) + `}`)
		}
		method := "GET"
		if body != nil {
			method = "POST"
		}
		reqs[i] = c.sign(method, "/api/n", body)
	}
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	// A fixed shuffle: reverse blocks of 37.
	for i := 0; i < n; i += 37 {
		slices.Reverse(perm[i:min(i+37, n)])
	}
	// Each request twice, concurrently: exactly one of each pair passes.
	type result struct{ idx, code int }
	out := make(chan result, 2*n)
	sem := make(chan struct{}, 32)
	for _, i := range append(slices.Clone(perm), perm...) {
		sem <- struct{}{}
		r := reqs[i].Clone(context.Background())
		if reqs[i].Body != nil {
			b, _ := io.ReadAll(reqs[i].Body)
			reqs[i].Body = io.NopCloser(bytes.NewReader(b))
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		go func(i int, r *http.Request) {
			defer func() { <-sem }()
			w := httptest.NewRecorder()
			e.mux.ServeHTTP(w, r)
			out <- result{i, w.Code}
		}(i, r)
	}
	ok := make([]int, n)
	for range 2 * n {
		res := <-out
		switch res.code {
		case 200:
			ok[res.idx]++
		case 401:
		default:
			t.Errorf("request %d: status %d", res.idx, res.code)
		}
	}
	for i, k := range ok {
		if k != 1 {
			t.Fatalf("request %d accepted %d times", i, k)
		}
	}
	if got := e.calls.Load(); got != n {
		t.Fatalf("handler ran %d times, want %d", got, n)
	}
}

func TestStoreUnavailable(t *testing.T) {
	var fs *failStore
	e := newEnv(t, func(c *server.Config) { fs = &failStore{Store: c.Store}; c.Store = fs })
	c := e.newClient()
	c.login("alice")
	fs.fail.Store(true)
	wantRefused(t, c.get("/api/x"), 503, "store_unavailable")
	pub, _ := e.newVault().Begin(protocol.HandshakeLogin)
	wantRefused(t, c.loginRaw(pub, "alice", testPassword), 503, "store_unavailable")
	fs.fail.Store(false)
	wantOK(t, c.get("/api/x")) // recovers by itself
	if e.calls.Load() != 1 {
		t.Fatal("handler ran during the outage")
	}
}

func TestLoginRefusals(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	pub, _ := e.newVault().Begin(protocol.HandshakeLogin)
	post := func(path, ctype string, body []byte, mod func(*http.Request)) *httptest.ResponseRecorder {
		r := c.newRequest("POST", path, body)
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		if mod != nil {
			mod(r)
		}
		return e.serve(r)
	}
	good, _ := json.Marshal(map[string]any{"pub": b64u(pub[:]), "credentials": map[string]string{"user": "a", "password": testPassword}})
	var zero [32]byte
	lowOrder, _ := json.Marshal(map[string]any{"pub": b64u(zero[:]), "credentials": map[string]string{"user": "a", "password": testPassword}})
	cases := []struct {
		name   string
		w      *httptest.ResponseRecorder
		status int
		reason string
	}{
		{"not json", post("/sv/login", "application/json", []byte("{"), nil), 400, "bad_request"},
		{"no pub", post("/sv/login", "application/json", []byte(`{"credentials":{}}`), nil), 400, "bad_request"},
		{"short pub", post("/sv/login", "application/json", []byte(`{"pub":"AAAA"}`), nil), 400, "bad_request"},
		{"padded pub", post("/sv/login", "application/json", []byte(`{"pub":"`+b64u(pub[:])+`="}`), nil), 400, "bad_request"},
		{"low-order pub", post("/sv/login", "application/json", lowOrder, nil), 400, "bad_request"},
		{"text/plain", post("/sv/login", "text/plain", good, nil), 415, "unsupported_media"},
		{"no content type", post("/sv/login", "", good, nil), 415, "unsupported_media"},
		{"cross-site", post("/sv/login", "application/json", good, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }), 403, "cross_site"},
		{"too large", post("/sv/login", "application/json", bytes.Repeat([]byte(" "), 2<<20), nil), 413, "body_too_large"},
		{"GET", e.serve(c.newRequest("GET", "/sv/login", nil)), 405, "method_not_allowed"},
		{"unknown endpoint", post("/sv/nope", "application/json", good, nil), 404, "not_found"},
		{"authenticator error", post("/sv/login", "application/json", bytes.Replace(good, []byte(testPassword), []byte("down"), 1), nil), 503, "unavailable"},
		{"authenticator panic", post("/sv/login", "application/json", bytes.Replace(good, []byte(testPassword), []byte("panic"), 1), nil), 503, "unavailable"},
		{"bad credentials", post("/sv/login", "application/json", bytes.Replace(good, []byte(testPassword), []byte("nope"), 1), nil), 401, "bad_credentials"},
		{"unsigned logout", post("/sv/logout", "", nil, nil), 401, "missing_signature"},
		{"unsigned rotate", post("/sv/rotate", "application/json", []byte("{}"), nil), 401, "missing_signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantRefused(t, tc.w, tc.status, tc.reason) })
	}
	wantOK(t, post("/sv/login", "application/json; charset=utf-8", good, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-origin") }))

	// Without an Authenticator, login is not served.
	e2 := newEnv(t, func(c *server.Config) { c.Authenticator = nil })
	r := c.newRequest("POST", "/sv/login", good)
	r.Header.Set("Content-Type", "application/json")
	wantRefused(t, e2.serve(r), 404, "not_found")
}

func TestRequireRekeyOutsideRequire(t *testing.T) {
	e := newEnv(t)
	r := httptest.NewRequest("GET", "/", nil)
	if err := e.mgr.RequireRekey(httptest.NewRecorder(), r, nil); !errors.Is(err, server.ErrNoSession) {
		t.Fatalf("err %v", err)
	}
}

func TestNewConfig(t *testing.T) {
	st := memstore.New()
	bad := []server.Config{
		{},
		{Store: st, StoreKey: make([]byte, 16)},
		{Store: st, Prefix: "sv"},
		{Store: st, Prefix: "/sv"},
		{Store: st, RotateEvery: time.Minute, RotateGrace: time.Minute},
		{Store: st, Prefix: "//"},
		{Store: st, Prefix: "/a?x/"},
		{Store: st, Prefix: "/a/../"},
		{Store: st, Prefix: "/a//b/"},
		{Store: st, Prefix: "/" + strings.Repeat("a", 65) + "/"},
		{Store: st, IdleTimeout: -1},
		{Store: st, MaxBody: -1},
	}
	for i, cfg := range bad {
		if _, err := server.New(cfg); !errors.Is(err, server.ErrConfig) {
			t.Errorf("config %d: err %v", i, err)
		}
	}
	m, err := server.New(server.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}

func TestPrefixAndStripPrefix(t *testing.T) {
	// A custom prefix, and a protected handler mounted behind http.StripPrefix: the signature
	// covers the path as sent, not as the router rewrote it.
	e := newEnv(t, func(c *server.Config) { c.Prefix = "/auth/session/" })
	e.mux.Handle("/auth/session/", e.mgr.Handler())
	e.mux.Handle("/v2/", http.StripPrefix("/v2", e.mgr.Require(http.HandlerFunc(e.api))))
	c := e.newClient()
	pub, _ := c.v.Begin(protocol.HandshakeLogin)
	body, _ := json.Marshal(map[string]any{"pub": b64u(pub[:]), "credentials": map[string]string{"user": "a", "password": testPassword}})
	r := c.newRequest("POST", "/auth/session/login", body)
	r.Header.Set("Content-Type", "application/json")
	w := e.serve(r)
	wantOK(t, w)
	c.finish(c.v, w.Body.Bytes())
	wantOK(t, c.get("/v2/items?q=a%20b"))
}

// TestRekeyKeyIsChainedFromTheCurrentKey: page script can have the worker sign and send a rekey
// request that carries a public key of the page's own, and it reads the reply. Were the new
// session's key derived as a login's (PROTOCOL.md 3.1), the page would now hold it. Chained from
// the key the request was signed with (3.4), the reply is of no use to the page, while the worker,
// which holds that key, still completes the re-key.
func TestRekeyKeyIsChainedFromTheCurrentKey(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	l := c.rawLogin("alice")
	page, err := protocol.NewEphemeral(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ppub := page.Public()
	w := c.do(c.signRaw(l, "POST", "/sv/rekey", pubBody(ppub)))
	wantOK(t, w)
	var rep loginReply
	if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	var lane protocol.LaneID
	copy(lane[:], mustB64u(t, rep.Lane))
	var spub [32]byte
	copy(spub[:], mustB64u(t, rep.Pub))
	confirm := mustB64u(t, rep.Confirm)
	tr := protocol.HandshakeTranscript(protocol.HandshakeRekey, ppub, spub, lane, nil)

	// The page's best guess: a login's derivation with its own secret.
	own := *page // Handshake wipes its ephemeral
	guess, err := protocol.Handshake(&own, spub, tr, lane)
	if err != nil {
		t.Fatal(err)
	}
	if protocol.CheckConfirm(&guess, tr, confirm) == nil {
		t.Fatal("page script derived the re-keyed session's key from its own key pair")
	}
	wantRefused(t, c.do(c.signRaw(&rawLane{lane: lane, key: guess}, "GET", "/api/me", nil)), 401, "bad_signature")

	// The holder of the current key derives it: the reply is a real one.
	k, err := protocol.Rekey(&l.key, page, spub, tr, lane)
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.CheckConfirm(&k, tr, confirm); err != nil {
		t.Fatalf("the re-key's confirmation does not check under the chained key: %v", err)
	}
	wantOK(t, c.do(c.signRaw(&rawLane{lane: lane, key: k}, "GET", "/api/me", nil)))
}

// hookStore runs after once, right after the first UserSessions read.
type hookStore struct {
	server.Store
	after func()
}

func (h *hookStore) UserSessions(ctx context.Context, user string) ([]*server.Session, error) {
	l, err := h.Store.UserSessions(ctx, user)
	if f := h.after; f != nil {
		h.after = nil
		f()
	}
	return l, err
}

// TestRevokeUserCatchesARekeyInBetween: a re-key that lands between RevokeUser's read of the
// user's sessions and its deletes creates a successor the read did not list (and deletes the
// old session itself). Log out everywhere must end the successor too.
func TestRevokeUserCatchesARekeyInBetween(t *testing.T) {
	var hs *hookStore
	e := newEnv(t, func(c *server.Config) { hs = &hookStore{Store: c.Store}; c.Store = hs })
	c := e.newClient()
	l := c.rawLogin("alice")
	eph, _ := protocol.NewEphemeral(rand.Reader)
	pub := eph.Public()
	var next *rawLane
	hs.after = func() {
		w := c.do(c.signRaw(l, "POST", "/sv/rekey", pubBody(pub)))
		wantOK(t, w)
		var rep loginReply
		json.Unmarshal(w.Body.Bytes(), &rep)
		var lane protocol.LaneID
		copy(lane[:], mustB64u(t, rep.Lane))
		var spub [32]byte
		copy(spub[:], mustB64u(t, rep.Pub))
		tr := protocol.HandshakeTranscript(protocol.HandshakeRekey, pub, spub, lane, nil)
		k, err := protocol.Rekey(&l.key, eph, spub, tr, lane)
		if err != nil {
			t.Fatal(err)
		}
		next = &rawLane{lane: lane, key: k}
	}
	if _, err := e.mgr.RevokeUser(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if next == nil {
		t.Fatal("the re-key did not run")
	}
	w := c.do(c.signRaw(next, "GET", "/api/x", nil))
	if w.Code != 401 {
		t.Errorf("the re-keyed successor still verifies after RevokeUser: %d", w.Code)
	}
	if s, _ := e.mgr.Sessions(context.Background(), "alice"); len(s) != 0 {
		t.Errorf("%d live sessions after RevokeUser", len(s))
	}
}

// TestRekeyNeedsTheSessionCookie: a re-key must come with the session's join cookie, which the
// worker sends and page script never sees: a copy of the current key alone (a memory dump of the
// tab) cannot trade itself for a session of its own. Without it, or with another session's, the
// re-key is refused (403 cookie_required, counted) and the session goes on.
func TestRekeyNeedsTheSessionCookie(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	l := c.rawLogin("alice")
	other := e.newClient()
	other.rawLogin("alice") // another session of the same user, with its own cookie
	eph, _ := protocol.NewEphemeral(rand.Reader)
	for name, ck := range map[string]*http.Cookie{"no cookie": nil, "another session's cookie": other.cookie} {
		t.Run(name, func(t *testing.T) {
			saved := c.cookie
			c.cookie = nil
			r := c.signRaw(l, "POST", "/sv/rekey", pubBody(eph.Public()))
			if ck != nil {
				r.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
			}
			c.cookie = saved
			wantRefused(t, c.do(r), 403, "cookie_required")
			wantOK(t, c.do(c.signRaw(l, "GET", "/api/me", nil)))
		})
	}
	if len(e.logs.events("rekeyed")) != 0 {
		t.Fatal("a re-key went through without the session's cookie")
	}
	// An honest worker in a browser that lost the cookie retries on hints: that is not counted
	// against its address (past ThrottleThreshold it would be throttled, neighbours included).
	saved := c.cookie
	c.cookie = nil
	for range server.DefaultThrottleThreshold + 5 {
		wantRefused(t, c.do(c.signRaw(l, "POST", "/sv/rekey", pubBody(eph.Public()))), 403, "cookie_required")
	}
	c.cookie = saved
	wantOK(t, c.do(c.signRaw(l, "GET", "/api/me", nil)))
	// With it (the worker's case), the re-key goes through.
	wantOK(t, c.do(c.signRaw(l, "POST", "/sv/rekey", pubBody(eph.Public()))))
}

// TestRotateHintBeforeRekey: while a re-key is pending (and perhaps cannot complete: a browser
// without the cookie), a due rotation is hinted first, so the lane does not stop rotating; once
// rotated, the re-key hint follows.
func TestRotateHintBeforeRekey(t *testing.T) {
	e := newEnv(t)
	c := e.newClient()
	c.login("alice")
	w := c.do(c.sign("POST", "/api/elevate", []byte("{}")))
	if w.Header().Get("Sv-Action") != "rekey" {
		t.Fatalf("no rekey hint: %v", w.Header())
	}
	e.clock.Add(10*time.Minute + time.Second)
	if got := c.get("/api/me").Header().Get("Sv-Action"); got != "rotate" {
		t.Fatalf("hint %q with a rotation due and a re-key pending, want rotate", got)
	}
	wantOK(t, c.rotate())
	if got := c.get("/api/me").Header().Get("Sv-Action"); got != "rekey" {
		t.Fatalf("hint %q after the rotation, want rekey", got)
	}
}

type idleStore struct {
	server.Store
	idle time.Duration
}

func (s idleStore) IdleTimeout() time.Duration { return s.idle }

// TestStoreIdleTimeoutMustCoverTheManagers: a store that drops unused sessions on its own before
// the Manager's idle timeout would end them early, as unknown_session, with no expiring or
// expired event (an operator's review: Config.IdleTimeout 10m over a redisstore left at 10s
// logged users out after 70 s). New refuses it and says what to set.
func TestStoreIdleTimeoutMustCoverTheManagers(t *testing.T) {
	for _, c := range []struct {
		store, cfg time.Duration
		ok         bool
	}{
		{10 * time.Second, 10 * time.Minute, false},
		{time.Minute, 0, false}, // the default 30 min
		{10 * time.Minute, 10 * time.Minute, true},
		{time.Hour, 0, true},
		{0, 0, true}, // the store keeps sessions until their Expires
	} {
		m, err := server.New(server.Config{Store: idleStore{memstore.New(), c.store}, IdleTimeout: c.cfg})
		if c.ok {
			if err != nil {
				t.Errorf("store %v, config %v: %v", c.store, c.cfg, err)
				continue
			}
			m.Close()
		} else if !errors.Is(err, server.ErrConfig) || !strings.Contains(err.Error(), "redisstore.Options.IdleTimeout") {
			t.Errorf("store %v, config %v: err %v, want a ConfigError saying what to set", c.store, c.cfg, err)
		}
	}
}
