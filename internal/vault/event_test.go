package vault

import (
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// wiped checks that v holds no key and tells why.
func wiped(t *testing.T, v *Vault, reason string) {
	t.Helper()
	s := v.Status()
	if s.State != StateWiped || s.Reason != reason || s.Epoch != 0 {
		t.Fatalf("status %+v, want wiped because %q", s, reason)
	}
	if !v.key.IsZero() || !v.eventKey.IsZero() || !v.prevEvent.IsZero() || v.signer != nil || v.eph != nil {
		t.Fatal("a wiped vault holds key material")
	}
	_, err := v.Sign(getMe)
	wantCode(t, err, CodeNoSession)
	_, _, err = v.SocketAuth(make([]byte, 32))
	wantCode(t, err, CodeNoSession)
	_, err = v.BeginRotate()
	wantCode(t, err, CodeNoSession)
}

func TestEventWipes(t *testing.T) {
	for _, c := range []struct {
		typ           protocol.EventType
		reason, want  string
		whileRotating bool
	}{
		{protocol.EventRevoked, "admin", "admin", false},
		{protocol.EventRevoked, "", "revoked", false},
		{protocol.EventRevoked, "reuse_detected", "reuse_detected", true},
		{protocol.EventExpired, "", "expired", false},
		{protocol.EventExpired, "idle", "idle", true},
	} {
		h := active(t)
		if c.whileRotating {
			h.v.BeginRotate()
		}
		ev, err := h.v.HandleEvent(h.srv.event(c.typ, c.reason, 0))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != c.typ || ev.Reason != c.reason {
			t.Fatalf("event %+v", ev)
		}
		wiped(t, h.v, c.want)
		// Further events find no session.
		_, err = h.v.HandleEvent(h.srv.event(protocol.EventRevoked, "", 0))
		wantCode(t, err, CodeNoSession)
		// A new login clears the reason.
		h.login()
		if s := h.v.Status(); s.Reason != "" {
			t.Fatalf("reason after login: %q", s.Reason)
		}
	}
}

func TestEventRotateAndExpiring(t *testing.T) {
	h := active(t)
	before := h.v.Status()
	ev, err := h.v.HandleEvent(h.srv.event(protocol.EventRotate, "", 0))
	if err != nil || ev.Type != protocol.EventRotate {
		t.Fatalf("rotate: %+v %v", ev, err)
	}
	if h.v.Status() != before {
		t.Fatal("a rotate event changed the status; the caller starts the rotation")
	}
	deadline := t0.Add(5 * time.Minute).UnixMilli()
	ev, err = h.v.HandleEvent(h.srv.event(protocol.EventExpiring, "absolute", deadline))
	if err != nil || ev.Type != protocol.EventExpiring || ev.Deadline != deadline {
		t.Fatalf("expiring: %+v %v", ev, err)
	}
	if s := h.v.Status(); s.ExpiresMs != deadline || s.State != StateActive {
		t.Fatalf("status %+v", s)
	}
	// An expiring event without a deadline keeps the known one.
	if _, err := h.v.HandleEvent(h.srv.event(protocol.EventExpiring, "", 0)); err != nil {
		t.Fatal(err)
	}
	if h.v.Status().ExpiresMs != deadline {
		t.Fatal("deadline lost")
	}
	h.sign(getMe)

	// Through the ABI.
	m := mustCall(t, h.v, msg(OpEvent, field(1, h.srv.event(protocol.EventExpiring, "idle", deadline+1))))
	if getUint(t, m, 1) != uint64(protocol.EventExpiring) || getUint(t, m, 3) != uint64(deadline+1) || getUint(t, m, 4) != uint64(StateActive) {
		t.Fatalf("reply %+v", m)
	}
	if r, _ := m.Get(2); string(r) != "idle" {
		t.Fatalf("reason %q", r)
	}
	m = mustCall(t, h.v, msg(OpEvent, field(1, h.srv.event(protocol.EventRevoked, "logout", 0))))
	if getUint(t, m, 1) != uint64(protocol.EventRevoked) || getUint(t, m, 4) != uint64(StateWiped) {
		t.Fatalf("reply %+v", m)
	}
	wiped(t, h.v, "logout")
}

// Every bad event is refused with the right code and changes nothing; the genuine next event
// still lands afterwards.
func TestEventRefused(t *testing.T) {
	h := active(t)
	h.rotate() // epoch 1, so that "previous epoch" and "unknown epoch" differ
	h.advance(EventGrace + time.Second)
	if _, err := h.v.HandleEvent(h.srv.event(protocol.EventRotate, "", 0)); err != nil {
		t.Fatal(err)
	}
	seq := h.srv.seq // the last seq accepted
	ek := h.srv.eventKey(1)
	ek0 := h.srv.eventKey(0)
	base := protocol.Event{Type: protocol.EventRevoked, Lane: h.srv.lane, Epoch: 1, Seq: seq + 1000, Reason: "admin"}
	seal := func(k protocol.Key, f func(e *protocol.Event)) []byte {
		e := base
		if f != nil {
			f(&e)
		}
		return h.srv.seal(&k, e)
	}
	good := seal(ek, nil)
	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x01
		return b
	}
	otherLane := h.srv.lane
	otherLane[15] ^= 0xff
	var zero protocol.Key
	cases := []struct {
		name string
		b    []byte
		code string
	}{
		{"tag flipped", flip(len(good) - 1), CodeBadEvent},
		{"tag first byte flipped", flip(len(good) - 32), CodeBadEvent},
		{"type changed", func() []byte { b := append([]byte(nil), good...); b[1] = byte(protocol.EventExpired); return b }(), CodeBadEvent},
		{"seq changed", flip(29), CodeBadEvent},
		{"deadline changed", flip(45), CodeBadEvent},
		{"reason changed", flip(47), CodeBadEvent},
		{"version changed", flip(0), CodeBadEvent},
		{"zero tag", append(append([]byte(nil), good[:len(good)-32]...), make([]byte, 32)...), CodeBadEvent},
		{"sealed under the sign key", func() []byte { sk := h.srv.signKey(); return seal(sk, nil) }(), CodeBadEvent},
		{"sealed under the epoch key", seal(h.srv.key, nil), CodeBadEvent},
		{"sealed under a zero key", seal(zero, nil), CodeBadEvent},
		{"other lane", seal(ek, func(e *protocol.Event) { e.Lane = otherLane }), CodeBadEvent},
		{"zero lane", seal(ek, func(e *protocol.Event) { e.Lane = protocol.LaneID{} }), CodeBadEvent},
		{"unknown epoch 2", seal(ek, func(e *protocol.Event) { e.Epoch = 2 }), CodeBadEvent},
		{"unknown epoch max", seal(ek, func(e *protocol.Event) { e.Epoch = ^uint32(0) }), CodeBadEvent},
		{"previous epoch after grace", seal(ek0, func(e *protocol.Event) { e.Epoch = 0 }), CodeBadEvent},
		{"current epoch under the previous key", seal(ek0, nil), CodeBadEvent},
		{"replayed seq", seal(ek, func(e *protocol.Event) { e.Seq = seq }), CodeReplayedEvent},
		{"lower seq", seal(ek, func(e *protocol.Event) { e.Seq = seq - 1 }), CodeReplayedEvent},
		{"seq zero", seal(ek, func(e *protocol.Event) { e.Seq = 0 }), CodeReplayedEvent},
		{"extra byte", append(append([]byte(nil), good...), 0), CodeBadEvent},
		{"doubled", append(append([]byte(nil), good...), good...), CodeBadEvent},
		{"empty", nil, CodeBadEvent},
		{"garbage", []byte("not an event at all, just some bytes that are long enough to look like one.........."), CodeBadEvent},
	}
	for n := 0; n < len(good); n++ {
		cases = append(cases, struct {
			name string
			b    []byte
			code string
		}{"truncated to " + string(rune('0'+n/10)) + string(rune('0'+n%10)), good[:n], CodeBadEvent})
	}
	for _, c := range cases {
		before := snapshot(h.v)
		_, err := h.v.HandleEvent(c.b)
		if err == nil {
			t.Fatalf("%s: accepted", c.name)
		}
		if !isCode(err, c.code) {
			t.Fatalf("%s: %v, want %s", c.name, err, c.code)
		}
		unchanged(t, h.v, before, c.name)
		// And through the ABI.
		if code, _ := call(t, h.v, msg(OpEvent, field(1, c.b))); code != c.code {
			t.Fatalf("%s: ABI %s, want %s", c.name, code, c.code)
		}
		unchanged(t, h.v, before, c.name+" (ABI)")
	}
	// A replay of an accepted event is refused, after the forged high-seq attempts above did not
	// move the counter: the genuine next seq still lands.
	ev := h.srv.event(protocol.EventExpiring, "", t0.Add(time.Hour).UnixMilli())
	if _, err := h.v.HandleEvent(ev); err != nil {
		t.Fatalf("the genuine next event: %v", err)
	}
	_, err := h.v.HandleEvent(ev)
	wantCode(t, err, CodeReplayedEvent)
	h.sign(getMe)
}

// Events sealed under the previous epoch's key are accepted for EventGrace after a rotation
// (a node that had not seen the rotation yet), then refused.
func TestEventGrace(t *testing.T) {
	h := active(t)
	h.advance(time.Hour)
	h.rotate() // epoch 1 at T
	h.advance(EventGrace - time.Millisecond)
	ev, err := h.v.HandleEvent(h.srv.eventAt(0, protocol.EventExpiring, "", t0.Add(2*time.Hour).UnixMilli()))
	if err != nil || ev.Epoch != 0 {
		t.Fatalf("previous-epoch event within the grace: %+v %v", ev, err)
	}
	if _, err := h.v.HandleEvent(h.srv.eventAt(1, protocol.EventRotate, "", 0)); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Millisecond) // exactly EventGrace after the rotation
	before := snapshot(h.v)
	_, err = h.v.HandleEvent(h.srv.eventAt(0, protocol.EventRevoked, "", 0))
	wantCode(t, err, CodeBadEvent)
	unchanged(t, h.v, before, "a stale-epoch event")

	// Only the one previous epoch: two rotations in a row drop epoch 0 at once.
	h.rotate() // epoch 2
	h.rotate() // epoch 3
	_, err = h.v.HandleEvent(h.srv.eventAt(1, protocol.EventRevoked, "", 0))
	wantCode(t, err, CodeBadEvent)
	if _, err := h.v.HandleEvent(h.srv.eventAt(2, protocol.EventRevoked, "admin", 0)); err != nil {
		t.Fatalf("epoch 2 within its grace: %v", err)
	}
	wiped(t, h.v, "admin")
}

// The previous-epoch key does not survive the lane: after a rotation, a wipe and a new login
// within EventGrace, there is no previous epoch (epoch 0 has none, and 0-1 must not wrap to
// 2^32-1 with a zeroed key).
func TestEventNoPreviousEpochAfterRelogin(t *testing.T) {
	for _, how := range []string{"logout", "revoked", "rekey"} {
		h := active(t)
		h.rotate()
		switch how {
		case "logout":
			h.v.Wipe()
			h.login()
		case "revoked":
			h.v.HandleEvent(h.srv.event(protocol.EventRevoked, "", 0))
			h.login()
		case "rekey":
			pub, err := h.v.Begin(protocol.HandshakeRekey)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.v.Finish(h.srv.handshake(protocol.HandshakeRekey, pub, nil)); err != nil {
				t.Fatal(err)
			}
		}
		if h.v.Status().Epoch != 0 {
			t.Fatal("not at epoch 0")
		}
		for _, k := range []protocol.Key{{}, h.srv.eventKey(0)} {
			before := snapshot(h.v)
			forged := h.srv.seal(&k, protocol.Event{Type: protocol.EventRevoked, Lane: h.srv.lane, Epoch: ^uint32(0), Seq: 99, Reason: "forged"})
			_, err := h.v.HandleEvent(forged)
			if err == nil {
				t.Fatalf("%s: an event for epoch 2^32-1 under a %v key was accepted", how, k.IsZero())
			}
			wantCode(t, err, CodeBadEvent)
			unchanged(t, h.v, before, how+": epoch 2^32-1")
		}
		h.sign(getMe)
	}
}

func TestSocketAuth(t *testing.T) {
	h := active(t)
	check := func(ch []byte) {
		t.Helper()
		id, tag, err := h.v.SocketAuth(ch)
		if err != nil {
			t.Fatalf("challenge of %d bytes: %v", len(ch), err)
		}
		sk := h.srv.signKey()
		if want := protocol.SocketAuth(&sk, h.srv.lane, h.srv.epoch, ch); tag != want {
			t.Fatalf("tag %x, want %x", tag, want)
		}
		if id != (protocol.KeyID{Lane: h.srv.lane, Epoch: h.srv.epoch}) {
			t.Fatalf("keyid %s", id)
		}
		// Through the ABI.
		m := mustCall(t, h.v, msg(OpSocketAuth, field(1, ch)))
		kid, _ := m.Get(1)
		tg, _ := m.Get(2)
		if string(kid) != id.String() || string(tg) != string(tag[:]) {
			t.Fatalf("ABI reply %q %x", kid, tg)
		}
	}
	for _, n := range []int{16, 17, 32, 63, 64} {
		ch := make([]byte, n)
		for i := range ch {
			ch[i] = byte(i * 7)
		}
		check(ch)
	}
	// Different challenges, different tags.
	_, a, _ := h.v.SocketAuth(make([]byte, 32))
	_, b, _ := h.v.SocketAuth(append(make([]byte, 31), 1))
	if a == b {
		t.Fatal("the tag does not depend on the challenge")
	}
	for _, n := range []int{0, 1, 15, 65, 128, 4096} {
		before := snapshot(h.v)
		_, _, err := h.v.SocketAuth(make([]byte, n))
		wantCode(t, err, CodeBadInput)
		if code, _ := call(t, h.v, msg(OpSocketAuth, field(1, make([]byte, n)))); code != CodeBadInput {
			t.Fatalf("ABI challenge of %d bytes: %s", n, code)
		}
		unchanged(t, h.v, before, "a bad challenge")
	}
	h.rotate()
	check(make([]byte, 32))
}

// TestEventRekeyedDuringRekey: the server ends the old lane when it answers a re-key, and its
// revoked(rekeyed) event may arrive before the reply. While this vault's own re-key is in flight
// that event leaves the handshake (and the old key, still needed by nothing but the reply) in
// place, so the reply completes the re-key; any other revoked event, or rekeyed with no re-key in
// flight, wipes as always.
func TestEventRekeyedDuringRekey(t *testing.T) {
	h := active(t)
	pub, err := h.v.Begin(protocol.HandshakeRekey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.v.HandleEvent(h.srv.event(protocol.EventRevoked, "rekeyed", 0)); err != nil {
		t.Fatal(err)
	}
	if st := h.v.State(); st != StateActive {
		t.Fatalf("state %v after rekeyed during a re-key, want active (the re-key pending)", st)
	}
	if err := h.v.Finish(h.srv.handshake(protocol.HandshakeRekey, pub, nil)); err != nil {
		t.Fatalf("the re-key did not complete after the old lane's rekeyed event: %v", err)
	}
	h.sign(getMe)

	// rekeyed with no re-key in flight (another client re-keyed the session): wiped.
	h2 := active(t)
	h2.v.HandleEvent(h2.srv.event(protocol.EventRevoked, "rekeyed", 0))
	wiped(t, h2.v, "rekeyed")

	// Another reason during a re-key: wiped, handshake included.
	h3 := active(t)
	pub3, err := h3.v.Begin(protocol.HandshakeRekey)
	if err != nil {
		t.Fatal(err)
	}
	h3.v.HandleEvent(h3.srv.event(protocol.EventRevoked, "admin", 0))
	wiped(t, h3.v, "admin")
	if err := h3.v.Finish(h3.srv.handshake(protocol.HandshakeRekey, pub3, nil)); err == nil {
		t.Fatal("a re-key finished after the session was revoked")
	}
}

// TestAbortRekey: a re-key whose request failed is given up: the ephemeral key is wiped, the lane
// goes on (it signs, rotates, and a later revoked(rekeyed) event wipes it as for any lane). With
// no re-key in flight, abort changes nothing.
func TestAbortRekey(t *testing.T) {
	h := active(t)
	before := snapshot(h.v)
	h.v.AbortRekey()
	unchanged(t, h.v, before, "abort with no re-key")

	if _, err := h.v.Begin(protocol.HandshakeRekey); err != nil {
		t.Fatal(err)
	}
	eph := h.v.eph
	h.v.AbortRekey()
	if h.v.rekey || h.v.eph != nil {
		t.Fatal("the re-key's state survived the abort")
	}
	var tr [32]byte
	if _, err := protocol.Handshake(eph, h.srv.ephemeral().Public(), tr, h.srv.lane); err == nil {
		t.Fatal("the re-key's ephemeral key still works after the abort")
	}
	h.sign(getMe)
	h.rotate()
	h.v.HandleEvent(h.srv.event(protocol.EventRevoked, "rekeyed", 0))
	wiped(t, h.v, "rekeyed")
}
