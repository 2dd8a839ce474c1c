package vault

import (
	"testing"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// illegal runs every operation that state must refuse, checking the code and that nothing
// changed. ops lists the operations by name with the code each must fail with.
func illegal(t *testing.T, h *harness, ops map[string]string) {
	t.Helper()
	v := h.v
	var zeroPub [protocol.PublicKeySize]byte
	run := map[string]func() error{
		"begin-login":   func() error { _, err := v.Begin(protocol.HandshakeLogin); return err },
		"begin-join":    func() error { _, err := v.Begin(protocol.HandshakeJoin); return err },
		"begin-rekey":   func() error { _, err := v.Begin(protocol.HandshakeRekey); return err },
		"finish":        func() error { return v.Finish(h.srv.login(h.srv.ephemeral().Public())) },
		"sign":          func() error { _, err := v.Sign(getMe); return err },
		"begin-rotate":  func() error { _, err := v.BeginRotate(); return err },
		"finish-rotate": func() error { return v.FinishRotate(zeroPub, v.epoch+1, make([]byte, 32)) },
		"event": func() error {
			ek := protocol.Key{}
			b := h.srv.seal(&ek, protocol.Event{Type: protocol.EventRevoked, Lane: v.lane, Epoch: v.epoch, Seq: 1 << 40})
			_, err := v.HandleEvent(b)
			return err
		},
		"socket-auth": func() error { _, _, err := v.SocketAuth(make([]byte, 32)); return err },
	}
	for name, code := range ops {
		f, ok := run[name]
		if !ok {
			t.Fatalf("no op %s", name)
		}
		// The fake server's state is not the vault's: keep it so that later steps still match.
		srv := *h.srv
		before := snapshot(v)
		err := f()
		*h.srv = srv
		if err == nil {
			t.Fatalf("state %v: %s succeeded", before.State, name)
		}
		wantCode(t, err, code)
		unchanged(t, v, before, before.State.String()+": "+name)
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t, 0)
	v := h.v

	// A vault with no policy does nothing.
	bare := New(newRand(9), h.local.now)
	if _, err := bare.Begin(protocol.HandshakeLogin); err == nil {
		t.Fatal("begin without a policy succeeded")
	} else {
		wantCode(t, err, CodeBadState)
	}
	if bare.State() != StateEmpty || bare.eph != nil {
		t.Fatal("refused begin changed the vault")
	}

	// empty
	if v.State() != StateEmpty {
		t.Fatalf("new vault: %v", v.State())
	}
	illegal(t, h, map[string]string{
		"finish": CodeBadState, "sign": CodeNoSession, "begin-rotate": CodeNoSession,
		"finish-rotate": CodeBadState, "event": CodeNoSession, "socket-auth": CodeNoSession,
		"begin-rekey": CodeBadState,
	})

	// empty -> pending; a second Begin restarts with a fresh key.
	first, err := v.Begin(protocol.HandshakeLogin)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := v.Begin(protocol.HandshakeLogin)
	if err != nil {
		t.Fatal(err)
	}
	if pub == first {
		t.Fatal("a restarted handshake reused the ephemeral key")
	}
	if v.State() != StatePending {
		t.Fatalf("after begin: %v", v.State())
	}
	illegal(t, h, map[string]string{
		"sign": CodeNoSession, "begin-rotate": CodeNoSession, "finish-rotate": CodeBadState,
		"event": CodeNoSession, "socket-auth": CodeNoSession, "begin-rekey": CodeBadState,
	})
	// The reply to the first key does not complete the second handshake.
	stale := h.srv.login(first)
	wantCode(t, v.Finish(stale), CodeBadConfirm)
	if v.State() != StateEmpty {
		t.Fatalf("after a failed finish: %v", v.State())
	}
	pub, _ = v.Begin(protocol.HandshakeLogin)

	// pending -> active
	if err := v.Finish(h.srv.login(pub)); err != nil {
		t.Fatal(err)
	}
	if s := v.Status(); s.State != StateActive || s.Epoch != 0 || s.Reason != "" {
		t.Fatalf("after finish: %+v", s)
	}
	h.sign(getMe)
	illegal(t, h, map[string]string{
		"begin-login": CodeBadState, "begin-join": CodeBadState, "finish": CodeBadState,
		"finish-rotate": CodeBadState,
	})
	h.sign(getMe)

	// active -> rotating: still signs under epoch 0; Begin and Finish refused.
	rpub, err := v.BeginRotate()
	if err != nil {
		t.Fatal(err)
	}
	if v.State() != StateRotating {
		t.Fatalf("after begin-rotate: %v", v.State())
	}
	h.sign(getMe)
	illegal(t, h, map[string]string{
		"begin-login": CodeBadState, "begin-join": CodeBadState, "begin-rekey": CodeBadState,
		"finish": CodeBadState,
	})
	if again, err := v.BeginRotate(); err != nil || again != rpub {
		t.Fatalf("begin-rotate while rotating: %v, same key %v", err, again == rpub)
	}

	// rotating -> active at epoch 1
	r := h.srv.rotate(rpub)
	if err := v.FinishRotate(r.ServerPub, r.Epoch, r.Confirm); err != nil {
		t.Fatal(err)
	}
	h.srv.commit(r)
	if s := v.Status(); s.State != StateActive || s.Epoch != 1 {
		t.Fatalf("after rotation: %+v", s)
	}
	h.sign(getMe)
	illegal(t, h, map[string]string{"finish-rotate": CodeBadState, "finish": CodeBadState})
	h.sign(getMe)

	// active -> wiped
	v.Wipe()
	if s := v.Status(); s.State != StateWiped || s.Epoch != 0 || s.Reason != "logout" {
		t.Fatalf("after wipe: %+v", s)
	}
	illegal(t, h, map[string]string{
		"finish": CodeBadState, "sign": CodeNoSession, "begin-rotate": CodeNoSession,
		"finish-rotate": CodeBadState, "event": CodeNoSession, "socket-auth": CodeNoSession,
		"begin-rekey": CodeBadState,
	})
	v.Wipe() // idempotent
	if v.State() != StateWiped {
		t.Fatalf("second wipe: %v", v.State())
	}

	// wiped -> pending -> active: a new login works, and the policy is still bound.
	h.login()
	if s := v.Status(); s.Epoch != 0 || s.Reason != "" {
		t.Fatalf("after the second login: %+v", s)
	}
	_, signed := h.sign(getMe)
	if signed.Nonce != 1 {
		t.Fatalf("a new lane starts its nonces at 1, got %d", signed.Nonce)
	}
	wantCode(t, v.BindPolicy(appPolicy), CodePolicyBound)
}

// Wipe of an empty vault leaves it empty; Wipe of a pending vault drops the handshake.
func TestWipeEarly(t *testing.T) {
	h := newHarness(t, 0)
	h.v.Wipe()
	if s := h.v.Status(); s.State != StateEmpty || s.Reason != "" {
		t.Fatalf("wipe of an empty vault: %+v", s)
	}
	pub, _ := h.v.Begin(protocol.HandshakeLogin)
	h.v.Wipe()
	if h.v.State() != StateWiped || h.v.eph != nil {
		t.Fatalf("wipe of a pending vault: %v", h.v.State())
	}
	wantCode(t, h.v.Finish(h.srv.login(pub)), CodeBadState)
}

func TestBeginRefusals(t *testing.T) {
	h := newHarness(t, 0)
	for _, kind := range []int{0, 4, -1, 1 << 20} {
		before := snapshot(h.v)
		_, err := h.v.Begin(kind)
		wantCode(t, err, CodeBadInput)
		unchanged(t, h.v, before, "begin of an unknown kind")
	}
	// A failing random source is an internal error and leaves the vault empty.
	v := New(failingReader{}, h.local.now)
	v.BindPolicy(appPolicy)
	_, err := v.Begin(protocol.HandshakeLogin)
	wantCode(t, err, CodeInternal)
	if v.State() != StateEmpty {
		t.Fatalf("after a random failure: %v", v.State())
	}
	// The same for a rotation: the vault stays active on its epoch.
	a := active(t)
	a.v.rand = failingReader{}
	before := snapshot(a.v)
	_, err = a.v.BeginRotate()
	wantCode(t, err, CodeInternal)
	unchanged(t, a.v, before, "a rotation without randomness")
	a.sign(getMe)
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{StateEmpty: "empty", StatePending: "pending", StateActive: "active",
		StateRotating: "rotating", StateWiped: "wiped", 9: "unknown"} {
		if s.String() != want {
			t.Errorf("%d: %q", s, s.String())
		}
	}
}

func TestCodes(t *testing.T) {
	for i, c := range codes {
		if StatusOf(c) != byte(i+1) || CodeOf(byte(i+1)) != c {
			t.Errorf("%s: status %d", c, StatusOf(c))
		}
	}
	if CodeOf(0) != "" || CodeOf(200) != CodeInternal || StatusOf("nope") != StatusOf(CodeInternal) {
		t.Error("edge codes")
	}
}
