package vault

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// lowOrder are X25519 public keys of small order (and their non-canonical forms), for which
// the shared secret is all zero whatever the scalar.
var lowOrder = func() [][32]byte {
	var out [][32]byte
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000", // 0
		"0100000000000000000000000000000000000000000000000000000000000000", // 1
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p-1
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p+1
		"0000000000000000000000000000000000000000000000000000000000000080", // 0, top bit set
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880", // order 8, top bit set
	} {
		var k [32]byte
		hex.Decode(k[:], []byte(h))
		out = append(out, k)
	}
	return out
}()

// noKey checks that a vault whose handshake failed holds nothing and signs nothing.
func noKey(t *testing.T, v *Vault, what string) {
	t.Helper()
	if v.State() != StateEmpty {
		t.Fatalf("%s: state %v, want empty", what, v.State())
	}
	if !v.key.IsZero() || !v.eventKey.IsZero() || v.signer != nil || v.eph != nil {
		t.Fatalf("%s: the vault holds key material", what)
	}
	_, err := v.Sign(getMe)
	wantCode(t, err, CodeNoSession)
	_, _, err = v.SocketAuth(make([]byte, 32))
	wantCode(t, err, CodeNoSession)
}

func TestHandshakeWrongConfirm(t *testing.T) {
	tamper := map[string]func(h *Handshake){
		"flipped bit":     func(h *Handshake) { h.Confirm = append([]byte(nil), h.Confirm...); h.Confirm[5] ^= 1 },
		"zero":            func(h *Handshake) { h.Confirm = make([]byte, 32) },
		"short":           func(h *Handshake) { h.Confirm = h.Confirm[:31] },
		"empty":           func(h *Handshake) { h.Confirm = nil },
		"long":            func(h *Handshake) { h.Confirm = append(append([]byte(nil), h.Confirm...), 0) },
		"other lane":      func(h *Handshake) { h.Lane[0] ^= 1 },
		"substituted pub": func(h *Handshake) { h.ServerPub = mustEphemeral(t).Public() },
	}
	for name, f := range tamper {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, 0)
			pub, _ := h.v.Begin(protocol.HandshakeLogin)
			reply := h.srv.login(pub)
			f(&reply)
			wantCode(t, h.v.Finish(reply), CodeBadConfirm)
			noKey(t, h.v, name)
			// Nothing is left to finish: the same reply again is a state error.
			wantCode(t, h.v.Finish(h.srv.login(pub)), CodeBadState)
			// A fresh login works.
			h.login()
			h.sign(getMe)
		})
	}
}

func mustEphemeral(t *testing.T) *protocol.Ephemeral {
	e, err := protocol.NewEphemeral(newRand(77))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestHandshakeLowOrderRefused(t *testing.T) {
	for i, lo := range lowOrder {
		h := newHarness(t, 0)
		pub, _ := h.v.Begin(protocol.HandshakeLogin)
		reply := h.srv.login(pub)
		reply.ServerPub = lo
		err := h.v.Finish(reply)
		wantCode(t, err, CodeBadInput)
		noKey(t, h.v, "low-order key "+string(rune('0'+i)))
	}
}

func TestHandshakeInputChecks(t *testing.T) {
	h := newHarness(t, 0)
	pub, _ := h.v.Begin(protocol.HandshakeLogin)
	reply := h.srv.login(pub)
	for _, st := range []int64{0, -1} {
		bad := reply
		bad.ServerTime = st
		before := snapshot(h.v)
		wantCode(t, h.v.Finish(bad), CodeBadInput)
		unchanged(t, h.v, before, "a finish without server time")
	}
	reply.Expires = t0.Add(12 * time.Hour).UnixMilli()
	if err := h.v.Finish(reply); err != nil {
		t.Fatal(err)
	}
	if s := h.v.Status(); s.ExpiresMs != reply.Expires || s.OffsetMs != 0 {
		t.Fatalf("status %+v", s)
	}
}

func TestJoin(t *testing.T) {
	ticket := []byte("single-use-join-ticket-0123456789")
	t.Run("ok", func(t *testing.T) {
		h := newHarness(t, 0)
		pub, err := h.v.Begin(protocol.HandshakeJoin)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.v.Finish(h.srv.handshake(protocol.HandshakeJoin, pub, ticket)); err != nil {
			t.Fatal(err)
		}
		h.sign(getMe)
	})
	t.Run("ticket required", func(t *testing.T) {
		h := newHarness(t, 0)
		pub, _ := h.v.Begin(protocol.HandshakeJoin)
		reply := h.srv.handshake(protocol.HandshakeJoin, pub, ticket)
		for _, tk := range [][]byte{nil, {}} {
			bad := reply
			bad.Ticket = tk
			before := snapshot(h.v)
			wantCode(t, h.v.Finish(bad), CodeBadInput)
			unchanged(t, h.v, before, "a join without a ticket")
		}
		if err := h.v.Finish(reply); err != nil {
			t.Fatalf("the pending join no longer finishes: %v", err)
		}
		h.sign(getMe)
	})
	// The ticket is bound into the transcript: a server (or a man in the middle) that derived
	// with any other ticket, or as a login, fails the confirmation.
	for name, srvSide := range map[string]func(s *fakeServer, pub [32]byte) Handshake{
		"other ticket": func(s *fakeServer, pub [32]byte) Handshake {
			r := s.handshake(protocol.HandshakeJoin, pub, []byte("another-ticket"))
			r.Ticket = ticket
			return r
		},
		"ticket one byte shorter": func(s *fakeServer, pub [32]byte) Handshake {
			r := s.handshake(protocol.HandshakeJoin, pub, ticket[:len(ticket)-1])
			r.Ticket = ticket
			return r
		},
		"server derived a login": func(s *fakeServer, pub [32]byte) Handshake {
			r := s.handshake(protocol.HandshakeLogin, pub, nil)
			r.Ticket = ticket
			return r
		},
		"server derived a rekey": func(s *fakeServer, pub [32]byte) Handshake {
			r := s.handshake(protocol.HandshakeRekey, pub, nil)
			r.Ticket = ticket
			return r
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, 0)
			pub, _ := h.v.Begin(protocol.HandshakeJoin)
			wantCode(t, h.v.Finish(srvSide(h.srv, pub)), CodeBadConfirm)
			noKey(t, h.v, name)
		})
	}
	// And a vault that began a login refuses a join reply.
	t.Run("vault began a login", func(t *testing.T) {
		h := newHarness(t, 0)
		pub, _ := h.v.Begin(protocol.HandshakeLogin)
		wantCode(t, h.v.Finish(h.srv.handshake(protocol.HandshakeJoin, pub, ticket)), CodeBadConfirm)
		noKey(t, h.v, "login/join")
	})
}

func TestRotation(t *testing.T) {
	h := active(t)
	old := h.srv.key
	oldSig, _ := h.sign(getMe)
	h.rotate()
	if s := h.v.Status(); s.State != StateActive || s.Epoch != 1 {
		t.Fatalf("after rotation: %+v", s)
	}
	if h.srv.key == old {
		t.Fatal("the fake server did not ratchet")
	}
	for i := 0; i < 20; i++ {
		r := SignRequest{Method: "POST", Origin: appOrigin, Path: "/api/x", Body: []byte{byte(i)}, HasBody: i%2 == 0}
		sig, signed := h.sign(r) // verifies under epoch 1 with keyid epoch 1
		if signed.KeyID.Epoch != 1 {
			t.Fatalf("keyid %s", signed.KeyID)
		}
		// The old epoch's key does not produce it, whatever the keyid says.
		if _, err := verifyUnder(old, r, sig); protocol.ErrorClass(err) != "bad_signature" {
			t.Fatalf("signature verifies under the old key: %v", err)
		}
	}
	// Nor does an old signature verify under the new key.
	if _, err := verifyUnder(h.srv.key, getMe, oldSig); protocol.ErrorClass(err) != "bad_signature" {
		t.Fatalf("old signature under the new key: %v", err)
	}
	// Socket auth moved to the new key too.
	ch := make([]byte, 32)
	id, tag, err := h.v.SocketAuth(ch)
	if err != nil {
		t.Fatal(err)
	}
	oldSK := protocol.SignKey(&old)
	if id.Epoch != 1 || tag == protocol.SocketAuth(&oldSK, h.srv.lane, 1, ch) {
		t.Fatal("socket auth still under the old key")
	}
	// Several more rotations, each a fresh exchange.
	seen := map[[32]byte]bool{}
	for e := uint32(2); e <= 6; e++ {
		pub, _ := h.v.BeginRotate()
		if seen[pub] {
			t.Fatal("rotation reused an ephemeral key")
		}
		seen[pub] = true
		r := h.srv.rotate(pub)
		if err := h.v.FinishRotate(r.ServerPub, r.Epoch, r.Confirm); err != nil {
			t.Fatal(err)
		}
		h.srv.commit(r)
		if _, s := h.sign(getMe); s.KeyID.Epoch != e {
			t.Fatalf("epoch %d, keyid %s", e, s.KeyID)
		}
	}
}

// A failed rotation leaves the vault signing under the old epoch, still rotating with the same
// ephemeral key, so that the retried request is the same request and the server (which may have
// rotated already) can answer it again.
func TestRotationWrongConfirm(t *testing.T) {
	h := active(t)
	pub, err := h.v.BeginRotate()
	if err != nil {
		t.Fatal(err)
	}
	r := h.srv.rotate(pub)
	bad := map[string]func() error{
		"flipped confirm": func() error {
			c := append([]byte(nil), r.Confirm...)
			c[0] ^= 0x80
			return h.v.FinishRotate(r.ServerPub, r.Epoch, c)
		},
		"short confirm":   func() error { return h.v.FinishRotate(r.ServerPub, r.Epoch, r.Confirm[:16]) },
		"no confirm":      func() error { return h.v.FinishRotate(r.ServerPub, r.Epoch, nil) },
		"substituted pub": func() error { return h.v.FinishRotate(mustEphemeral(t).Public(), r.Epoch, r.Confirm) },
	}
	for name, f := range bad {
		before := snapshot(h.v)
		wantCode(t, f(), CodeBadConfirm)
		unchanged(t, h.v, before, name)
		if h.v.State() != StateRotating {
			t.Fatalf("%s: state %v", name, h.v.State())
		}
		h.sign(getMe) // still epoch 0
		again, err := h.v.BeginRotate()
		if err != nil || again != pub {
			t.Fatalf("%s: retried BeginRotate: %v, same key %v", name, err, again == pub)
		}
	}
	for _, lo := range lowOrder {
		before := snapshot(h.v)
		wantCode(t, h.v.FinishRotate(lo, r.Epoch, r.Confirm), CodeBadInput)
		unchanged(t, h.v, before, "a low-order rotation key")
	}
	// The server answers the retried request again; now it lands.
	if err := h.v.FinishRotate(r.ServerPub, r.Epoch, r.Confirm); err != nil {
		t.Fatal(err)
	}
	h.srv.commit(r)
	if _, s := h.sign(getMe); s.KeyID.Epoch != 1 {
		t.Fatalf("keyid %s", s.KeyID)
	}
	if h.v.eph != nil {
		t.Fatal("the rotation's ephemeral key outlived the rotation")
	}
}

func TestRotationEpochAdvancesByOne(t *testing.T) {
	h := active(t)
	h.rotate() // epoch 1
	pub, _ := h.v.BeginRotate()
	r := h.srv.rotate(pub) // epoch 2
	for _, e := range []uint32{0, 1, 3, 4, 1 << 31, ^uint32(0)} {
		before := snapshot(h.v)
		wantCode(t, h.v.FinishRotate(r.ServerPub, e, r.Confirm), CodeBadInput)
		unchanged(t, h.v, before, "a rotation to the wrong epoch")
	}
	// Through the ABI, an epoch beyond 32 bits is refused before the vault sees it.
	before := snapshot(h.v)
	code, _ := call(t, h.v, msg(OpRotateFinish, field(1, r.ServerPub[:]), ufield(2, 1<<32+2), field(3, r.Confirm)))
	if code != CodeBadInput {
		t.Fatalf("epoch 2^32+2: %s", code)
	}
	unchanged(t, h.v, before, "a 33-bit epoch")
	m := mustCall(t, h.v, msg(OpRotateFinish, field(1, r.ServerPub[:]), ufield(2, 2), field(3, r.Confirm)))
	h.srv.commit(r)
	if getUint(t, m, 1) != uint64(StateActive) || getUint(t, m, 2) != 2 {
		t.Fatalf("reply %+v", m)
	}
	h.sign(getMe)
}

// The epoch counter does not wrap: past the last epoch, no rotation is accepted (epoch 0 is the
// handshake's).
func TestRotationEpochDoesNotWrap(t *testing.T) {
	h := active(t)
	pub, _ := h.v.BeginRotate()
	h.v.epoch = ^uint32(0) // as if after 2^32-1 rotations
	eph := h.srv.ephemeral()
	tr := protocol.RotateTranscript(h.srv.lane, 0, pub, eph.Public())
	spub := eph.Public()
	k, err := protocol.Ratchet(&h.srv.key, eph, pub, tr, h.srv.lane, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := protocol.Confirm(&k, tr)
	before := snapshot(h.v)
	wantCode(t, h.v.FinishRotate(spub, 0, c[:]), CodeBadInput)
	unchanged(t, h.v, before, "a wrapping rotation")
}

func TestRotationABI(t *testing.T) {
	h := active(t)
	m := mustCall(t, h.v, msg(OpRotateBegin))
	p1, _ := m.Get(1)
	m = mustCall(t, h.v, msg(OpRotateBegin))
	p2, _ := m.Get(1)
	if len(p1) != 32 || string(p1) != string(p2) {
		t.Fatalf("rotate-begin keys %x %x", p1, p2)
	}
	var pub [32]byte
	copy(pub[:], p1)
	r := h.srv.rotate(pub)
	bad := append([]byte(nil), r.Confirm...)
	bad[31] ^= 1
	if code, _ := call(t, h.v, msg(OpRotateFinish, field(1, r.ServerPub[:]), ufield(2, 1), field(3, bad))); code != CodeBadConfirm {
		t.Fatalf("bad confirm: %s", code)
	}
	m = mustCall(t, h.v, msg(OpRotateBegin))
	if p3, _ := m.Get(1); string(p3) != string(p1) {
		t.Fatal("the retried rotation has a new key")
	}
	m = mustCall(t, h.v, msg(OpRotateFinish, field(1, r.ServerPub[:]), ufield(2, 1), field(3, r.Confirm)))
	h.srv.commit(r)
	if getUint(t, m, 1) != uint64(StateActive) || getUint(t, m, 2) != 1 {
		t.Fatalf("reply %+v", m)
	}
	h.sign(getMe)
}

func TestFinishABI(t *testing.T) {
	h := newHarness(t, time.Hour)
	m := mustCall(t, h.v, msg(OpBegin, ufield(1, protocol.HandshakeLogin)))
	p, _ := m.Get(1)
	var pub [32]byte
	copy(pub[:], p)
	r := h.srv.login(pub)
	exp := r.ServerTime + 3600_000
	m = mustCall(t, h.v, msg(OpFinish, field(1, r.Lane[:]), field(2, r.ServerPub[:]), field(3, r.Confirm),
		ufield(4, uint64(r.ServerTime)), ufield(5, uint64(exp))))
	if getUint(t, m, 1) != uint64(StateActive) || getUint(t, m, 2) != 0 {
		t.Fatalf("reply %+v", m)
	}
	m = mustCall(t, h.v, msg(OpStatus))
	if getUint(t, m, 1) != uint64(StateActive) || getUint(t, m, 3) != uint64(exp) {
		t.Fatalf("status %+v", m)
	}
	if z := getUint(t, m, 4); z != uint64(2*3600_000-1) { // zigzag(-3600000)
		t.Fatalf("offset zigzag %d", z)
	}
	h.sign(getMe)
}
