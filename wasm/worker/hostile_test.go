//go:build !wasm

package main

// Hostile ABI input: whatever the page's script (or a compromised worker.js) passes through the
// three exports, the module answers with a typed error, never traps, and keeps working.

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
)

// loggedIn returns a pair (wasm and native twin) with a bound policy and an active session.
func loggedIn(t testing.TB, seed uint64) *pair {
	t.Helper()
	p := newPair(t, seed)
	p.do("policy", req(vault.OpPolicy, fs(1, "https://app.example")))
	p.policy = vault.Policy{Self: "https://app.example", Origins: []string{"https://app.example"}, Methods: []string{"GET", "POST"}}
	p.bound = true
	login(p)
	return p
}

var okSign = req(vault.OpSign, fs(1, "GET"), fs(2, "https://app.example"), fs(3, "/api/x"))

// stillWorks checks that the instance answers status and, with a session, signs.
func stillWorks(t testing.TB, in *instance, session bool) {
	t.Helper()
	in.mustOK(t, req(vault.OpStatus))
	if session {
		in.mustOK(t, okSign)
	}
	b, err := in.Exec(req(vault.OpStatus)) // the browser's path
	if err != nil {
		t.Fatal(err)
	}
	checkOK(t, b)
}

func TestHostileMessages(t *testing.T) {
	p := loggedIn(t, 21)
	cases := []struct {
		name string
		in   []byte
		code string
	}{
		{"empty", nil, vault.CodeBadMessage},
		{"one byte", []byte{1}, vault.CodeBadMessage},
		{"wrong version", []byte{2, vault.OpStatus}, vault.CodeBadMessage},
		{"version zero", []byte{0, 0, 0, 0}, vault.CodeBadMessage},
		{"text", []byte("GET /api HTTP/1.1\r\n"), vault.CodeBadMessage},
		{"json", []byte(`{"op":"sign","path":"/api"}`), vault.CodeBadMessage},
		{"unknown op", []byte{1, 0x42}, vault.CodeUnknownOp},
		{"op zero", []byte{1, 0}, vault.CodeUnknownOp},
		{"op 0xff", []byte{1, 0xff, 1, 0}, vault.CodeUnknownOp},
		{"field past end", []byte{1, vault.OpSign, 1, 5, 'G', 'E', 'T'}, vault.CodeBadMessage},
		{"length overflow", []byte{1, vault.OpSign, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, vault.CodeBadMessage},
		{"length 11 bytes", append([]byte{1, vault.OpSign, 1}, bytes.Repeat([]byte{0x80}, 11)...), vault.CodeBadMessage},
		{"non-minimal length", []byte{1, vault.OpSign, 1, 0x83, 0x00, 'G', 'E', 'T'}, vault.CodeBadMessage},
		{"tags out of order", req(vault.OpSign, fs(2, "https://app.example"), fs(1, "GET")), vault.CodeBadMessage},
		{"repeated tag", req(vault.OpSign, fs(1, "GET"), fs(1, "GET")), vault.CodeBadMessage},
		{"too many fields", func() []byte {
			var fs []field
			for i := range 33 {
				fs = append(fs, field{byte(i + 1), nil})
			}
			return req(vault.OpSign, fs...)
		}(), vault.CodeTooLarge},
		{"unexpected field", req(vault.OpStatus, fs(9, "x")), vault.CodeBadInput},
		{"missing path", req(vault.OpSign, fs(1, "GET"), fs(2, "https://app.example")), vault.CodeBadInput},
		{"integer too long", req(vault.OpBegin, f(1, []byte{0x81, 0x00})), vault.CodeBadInput},
		{"integer with junk", req(vault.OpBegin, f(1, []byte{1, 2})), vault.CodeBadInput},
		{"empty integer", req(vault.OpBegin, f(1, nil)), vault.CodeBadInput},
		{"method too long", req(vault.OpSign, fs(1, "GETGETGETGETGETGET"), fs(2, "https://app.example"), fs(3, "/x")), vault.CodeTooLarge},
		{"path too long", req(vault.OpSign, fs(1, "GET"), fs(2, "https://app.example"), f(3, bytes.Repeat([]byte("a"), protocol.MaxComponentLen+1))), vault.CodeTooLarge},
		{"bad list", req(vault.OpPolicy, fs(1, "https://app.example"), f(2, []byte{5, 'a'})), vault.CodeBadInput},
		{"event garbage", req(vault.OpEvent, f(1, []byte("not an event"))), vault.CodeBadEvent},
		{"event empty", req(vault.OpEvent, f(1, nil)), vault.CodeBadEvent},
		{"challenge short", req(vault.OpSocketAuth, f(1, make([]byte, 15))), vault.CodeBadInput},
		{"challenge long", req(vault.OpSocketAuth, f(1, make([]byte, 65))), vault.CodeBadInput},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := p.do(c.name, c.in) // also byte-identical to the native vault
			if r.code() != c.code {
				t.Fatalf("got %q (%q), want %s", r.code(), r.str(1), c.code)
			}
			if r.raw[0] != protocol.CodecVersion {
				t.Fatalf("reply version %d", r.raw[0])
			}
			stillWorks(t, p.wasm, true)
		})
	}
}

// Every prefix of valid requests: a typed error (bad_message inside a field), never internal,
// never a trap, the same bytes as the native vault, and the instance keeps signing.
func TestHostileTruncated(t *testing.T) {
	p := loggedIn(t, 22)
	ev := protocol.Event{Type: protocol.EventRotate, Lane: p.sess.lane, Seq: 99}
	sealed, _ := protocol.SealEvent(&p.sess.eventKey, &ev)
	reqs := [][]byte{
		req(vault.OpSign, fs(1, "POST"), fs(2, "https://app.example"), fs(3, "/api/x"), fs(4, "a=1"), f(5, bytes.Repeat([]byte("b"), 300))),
		req(vault.OpFinish, f(1, make([]byte, 16)), f(2, make([]byte, 32)), f(3, make([]byte, 32)), fu(4, 1_700_000_000_000), fu(5, 1_700_000_900_000), f(6, make([]byte, 200))),
		req(vault.OpPolicy, fs(1, "https://app.example"), fl(2, []string{"https://a.example", "https://b.example"}), fl(3, []string{"/api/"}), fl(4, []string{"GET"})),
		req(vault.OpEvent, f(1, sealed)),
		req(vault.OpRotateFinish, f(1, make([]byte, 32)), fu(2, 1), f(3, make([]byte, 32))),
	}
	for _, q := range reqs {
		bounds := map[int]bool{2: true}
		if m, err := protocol.DecodeMessage(q); err == nil {
			n := 2
			for _, fl := range m.Fields {
				n += 1 + len(protocol.AppendUintField(nil, 0, uint64(len(fl.Value)))) - 2 + len(fl.Value)
				bounds[n] = true
			}
		}
		for n := 0; n < len(q); n++ {
			r := p.do("truncated", q[:n])
			switch {
			case r.code() == vault.CodeInternal:
				t.Fatalf("op %x cut at %d: internal", q[1], n)
			case !bounds[n] && r.code() != vault.CodeBadMessage:
				t.Fatalf("op %x cut at %d (inside a field): %q", q[1], n, r.code())
			}
		}
		stillWorks(t, p.wasm, true)
	}
}

// Raw pointers and lengths that no alloc returned, as hostile JavaScript could pass.
func TestHostilePointers(t *testing.T) {
	p := loggedIn(t, 23)
	in := p.wasm
	memSize := in.MemSize()
	buf, err := in.Alloc(64)
	if err != nil || buf == 0 {
		t.Fatalf("alloc(64) = %d, %v", buf, err)
	}
	in.Write(buf, okSign)
	cases := []struct {
		name string
		p, n uint32
	}{
		{"null", 0, 0},
		{"null with length", 0, 16},
		{"low address", 8, 8},
		{"inside a buffer", buf + 1, 8},
		{"length past the buffer", buf, 65},
		{"length past memory", buf, memSize},
		{"length max", buf, 0xffffffff},
		{"pointer past memory", memSize + 4096, 8},
		{"pointer max", 0xffffffff, 1},
		{"pointer max no length", 0xffffffff, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := in.RawCall(c.p, c.n)
			if err != nil {
				t.Fatal(err)
			}
			checkCode(t, vault.CodeBadMessage, b)
			stillWorks(t, in, true)
			if b, err = in.RawExec(c.p, c.n); err != nil {
				t.Fatal(err)
			}
			checkCode(t, vault.CodeBadMessage, b)
			stillWorks(t, in, true)
		})
	}
	// The buffer itself, with its exact length and with a shorter one, works.
	b, err := in.RawCall(buf, uint32(len(okSign)))
	if err != nil {
		t.Fatal(err)
	}
	checkOK(t, b)
	b, _ = in.RawCall(buf, 0)
	checkCode(t, vault.CodeBadMessage, b)
	// A freed buffer is no longer accepted.
	if err := in.Free(buf); err != nil {
		t.Fatal(err)
	}
	b, _ = in.RawCall(buf, uint32(len(okSign)))
	checkCode(t, vault.CodeBadMessage, b)
	b, _ = in.RawExec(buf, uint32(len(okSign)))
	checkCode(t, vault.CodeBadMessage, b)
	stillWorks(t, in, true)
}

func TestHostileAllocFree(t *testing.T) {
	p := loggedIn(t, 24)
	in := p.wasm
	for _, n := range []uint32{0, protocol.MaxMessageSize + 1, 1 << 30, 0xffffffff} {
		a, err := in.Alloc(n)
		if err != nil {
			t.Fatalf("alloc(%d): %v", n, err)
		}
		if a != 0 {
			t.Fatalf("alloc(%d) = %#x, want 0", n, a)
		}
	}
	// The largest allowed buffer works and can be freed.
	big, err := in.Alloc(protocol.MaxMessageSize)
	if err != nil || big == 0 {
		t.Fatalf("alloc(8 MiB) = %#x, %v", big, err)
	}
	if uint64(big)+protocol.MaxMessageSize > uint64(in.MemSize()) {
		t.Fatalf("alloc(8 MiB) = %#x past memory %d", big, in.MemSize())
	}
	if err := in.Free(big); err != nil {
		t.Fatal(err)
	}
	// Unknown pointers and double frees are ignored.
	a, _ := in.Alloc(100)
	for _, q := range []uint32{0, 1, 8, a + 1, a - 1, 0x7fffffff, 0xffffffff, a, a, a, big} {
		if err := in.Free(q); err != nil {
			t.Fatalf("free(%#x): %v", q, err)
		}
	}
	stillWorks(t, in, true)
	// Many buffers alive at once are distinct and each still usable.
	var ptrs []uint32
	seen := map[uint32]bool{}
	for i := range 200 {
		q, err := in.Alloc(uint32(1 + i*37))
		if err != nil || q == 0 || seen[q] {
			t.Fatalf("alloc #%d = %#x, %v", i, q, err)
		}
		seen[q] = true
		ptrs = append(ptrs, q)
	}
	in.Write(ptrs[50], okSign) // ptrs[50] holds 1851 bytes
	b, err := in.RawCall(ptrs[50], uint32(len(okSign)))
	if err != nil {
		t.Fatal(err)
	}
	checkOK(t, b)
	for _, q := range ptrs {
		in.Free(q)
	}
	stillWorks(t, in, true)
}

// Operations out of order get bad_state, no_session or policy_bound, and change nothing.
func TestHostileOrder(t *testing.T) {
	p := newPair(t, 25)
	type step struct {
		name string
		q    []byte
		code string
	}
	run := func(steps []step) {
		t.Helper()
		for _, s := range steps {
			r := p.do(s.name, s.q)
			if r.code() != s.code {
				t.Fatalf("%s: got %q (%q), want %q", s.name, r.code(), r.str(1), s.code)
			}
			stillWorks(t, p.wasm, p.sess != nil)
		}
	}
	finishQ := req(vault.OpFinish, f(1, make([]byte, 16)), f(2, bytes.Repeat([]byte{9}, 32)), f(3, make([]byte, 32)), fu(4, 1))
	rotFinishQ := req(vault.OpRotateFinish, f(1, bytes.Repeat([]byte{9}, 32)), fu(2, 1), f(3, make([]byte, 32)))
	run([]step{
		{"sign before policy", okSign, vault.CodeNoSession},
		{"begin before policy", req(vault.OpBegin, fu(1, 1)), vault.CodeBadState},
		{"finish before begin", finishQ, vault.CodeBadState},
		{"rotate_begin before login", req(vault.OpRotateBegin), vault.CodeNoSession},
		{"rotate_finish before login", rotFinishQ, vault.CodeBadState},
		{"event before login", req(vault.OpEvent, f(1, make([]byte, 100))), vault.CodeNoSession},
		{"socket_auth before login", req(vault.OpSocketAuth, f(1, make([]byte, 32))), vault.CodeNoSession},
		{"policy", req(vault.OpPolicy, fs(1, "https://app.example")), ""},
		{"second policy", req(vault.OpPolicy, fs(1, "https://evil.example"), fl(4, []string{"GET"})), vault.CodePolicyBound},
		{"sign before login", okSign, vault.CodeNoSession},
		{"finish before begin, policy bound", finishQ, vault.CodeBadState},
		{"rekey before login", req(vault.OpBegin, fu(1, protocol.HandshakeRekey)), vault.CodeBadState},
	})
	p.policy = vault.Policy{Self: "https://app.example", Origins: []string{"https://app.example"}, Methods: []string{"GET"}}
	p.bound = true
	login(p)
	run([]step{
		{"rotate_finish without rotate_begin", rotFinishQ, vault.CodeBadState},
		{"login while active", req(vault.OpBegin, fu(1, protocol.HandshakeLogin)), vault.CodeBadState},
		{"finish while active", finishQ, vault.CodeBadState},
		{"third policy", req(vault.OpPolicy, fs(1, "https://app.example")), vault.CodePolicyBound},
	})
	// The policy still in force is the first one: another origin is refused.
	r := p.do("sign evil", req(vault.OpSign, fs(1, "GET"), fs(2, "https://evil.example"), fs(3, "/x")))
	if r.code() != vault.CodePolicyDenied {
		t.Fatalf("sign for another origin after a refused rebind: %q", r.code())
	}
	p.opWipe()
	run([]step{
		{"sign after wipe", okSign, vault.CodeNoSession},
		{"rotate_begin after wipe", req(vault.OpRotateBegin), vault.CodeNoSession},
		{"socket_auth after wipe", req(vault.OpSocketAuth, f(1, make([]byte, 32))), vault.CodeNoSession},
	})
	login(p)
	stillWorks(t, p.wasm, true)
}

// A request of exactly the 8 MiB limit: signed, identical to the native vault, verified.
func TestHostileHugeMessage(t *testing.T) {
	p := loggedIn(t, 26)
	head := req(vault.OpSign, fs(1, "POST"), fs(2, "https://app.example"), fs(3, "/api/upload"))
	body := make([]byte, protocol.MaxMessageSize-len(head)-1-4) // tag + 4-byte uvarint length
	for i := range body {
		body[i] = byte(i * 7)
	}
	q := req(vault.OpSign, fs(1, "POST"), fs(2, "https://app.example"), fs(3, "/api/upload"), f(5, body))
	if len(q) != protocol.MaxMessageSize {
		t.Fatalf("request is %d bytes, want %d", len(q), protocol.MaxMessageSize)
	}
	r := p.do("huge sign", q)
	if r.Code != 0 {
		t.Fatalf("huge sign: %s %q", r.code(), r.str(1))
	}
	if got, want := r.str(3), protocol.ContentDigest(body); got != want {
		t.Fatalf("content-digest %q, want %q", got, want)
	}
	s, err := protocol.ParseSigned(r.str(1), r.str(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.NewVerifier(&p.sess.signKey).Verify(s, &protocol.Request{Method: "POST", Authority: "app.example", Path: "/api/upload", ContentDigest: r.str(3)}); err != nil {
		t.Fatalf("huge signature does not verify: %v", err)
	}
	// 8 MiB of an unknown op, and a policy field far too long.
	big := req(0x77, f(1, make([]byte, protocol.MaxMessageSize-2-1-4)))
	if len(big) != protocol.MaxMessageSize {
		t.Fatalf("unknown op request is %d bytes", len(big))
	}
	checkCode(t, vault.CodeUnknownOp, p.do("huge unknown", big).raw)
	checkCode(t, vault.CodeBadMessage, p.do("huge garbage", big[1:]).raw)
	checkCode(t, vault.CodeBadMessage, p.do("huge zeros", make([]byte, protocol.MaxMessageSize)).raw)
	pol := req(vault.OpPolicy, f(1, make([]byte, protocol.MaxMessageSize-8)))
	checkCode(t, vault.CodeTooLarge, p.do("huge policy", pol).raw) // fields are checked before the bind
	stillWorks(t, p.wasm, true)
	// The module refuses to allocate past the limit, so a longer request cannot even be passed.
	if a, _ := p.wasm.Alloc(protocol.MaxMessageSize + 1); a != 0 {
		t.Fatalf("alloc past the limit = %#x", a)
	}
}

// Random bytes and mutations of valid requests: byte-identical to the native vault, never
// internal, never a trap; the session keeps signing.
func TestHostileFuzz(t *testing.T) {
	p := loggedIn(t, 27)
	rng := rand.New(rand.NewPCG(27, 27))
	ev := protocol.Event{Type: protocol.EventExpiring, Lane: p.sess.lane, Seq: 1, Deadline: 1}
	sealed, _ := protocol.SealEvent(&p.sess.eventKey, &ev)
	seeds := [][]byte{
		okSign,
		req(vault.OpSign, fs(1, "POST"), fs(2, "https://app.example"), fs(3, "/api/x"), fs(4, "q=1"), fs(5, "body")),
		req(vault.OpFinish, f(1, make([]byte, 16)), f(2, make([]byte, 32)), f(3, make([]byte, 32)), fu(4, 1)),
		req(vault.OpRotateFinish, f(1, make([]byte, 32)), fu(2, 1), f(3, make([]byte, 32))),
		req(vault.OpEvent, f(1, sealed)),
		req(vault.OpSocketAuth, f(1, make([]byte, 32))),
		req(vault.OpPolicy, fs(1, "https://app.example"), fl(3, []string{"/api/"})),
		req(vault.OpBegin, fu(1, 1)),
		req(vault.OpStatus),
	}
	n := 4000
	if testing.Short() {
		n = 500
	}
	p.skipUnmodelled = true // mutated begin requests draw key pairs the model does not see
	relogins := 0
	for i := range n {
		if p.sess == nil && i%64 == 0 { // back to a session, so that most of the fuzz hits one
			p.do("wipe", req(vault.OpWipe))
			login(p)
			relogins++
		}
		var q []byte
		switch rng.IntN(3) {
		case 0:
			q = make([]byte, rng.IntN(64))
			for j := range q {
				q[j] = byte(rng.Uint32())
			}
			if len(q) > 1 && rng.IntN(2) == 0 {
				q[0] = protocol.CodecVersion
			}
		default:
			q = append([]byte(nil), seeds[rng.IntN(len(seeds))]...)
			for range 1 + rng.IntN(4) {
				switch k := rng.IntN(4); {
				case k == 0 && len(q) > 0:
					q[rng.IntN(len(q))] ^= byte(1 + rng.IntN(255))
				case k == 1 && len(q) > 0:
					q = q[:rng.IntN(len(q))]
				case k == 2:
					q = append(q, byte(rng.Uint32()))
				default:
					if len(q) > 2 {
						q[2+rng.IntN(len(q)-2)] = byte(rng.IntN(40))
					}
				}
			}
		}
		r := p.do("fuzz", q)
		if r.code() == vault.CodeInternal {
			t.Errorf("fuzz #%d: internal for %x", i, q)
		}
		if p.sess != nil {
			if st := vault.State(decodeReply(t, p.do("status", req(vault.OpStatus)).raw).uint(t, 1)); st != vault.StateActive && st != vault.StateRotating {
				p.sess = nil // a mutated request may legitimately end the session (wipe, a valid rekey...)
			}
		}
	}
	t.Logf("%d fuzz requests, %d logins after a mutated request ended the session; outcomes %v", n, relogins, p.codes)
	stillWorks(t, p.wasm, false)
	if p.sess == nil {
		p.do("wipe", req(vault.OpWipe))
		login(p)
	}
	stillWorks(t, p.wasm, true)
}

// An event naming epoch 2^32-1 arrives at a lane on epoch 0 after a new login (or a re-key) that
// followed a rotation by less than the event grace. The vault's previous-epoch check
// (e.Epoch+1 == v.epoch) wraps around, and the previous event key it then uses was wiped to all
// zeros, so anyone can seal such an event: a forged revocation or a forged expiry deadline.
func TestEventEpochWrapIsRefused(t *testing.T) {
	for _, how := range []string{"login", "rekey"} {
		t.Run(how, func(t *testing.T) {
			p := loggedIn(t, 28)
			p.opRotateBegin()
			p.rng = rand.New(rand.NewPCG(0, 0))
			for p.sess.epoch == 0 { // rotate until it succeeds (the generator mixes in bad replies)
				if p.rotating == nil {
					p.opRotateBegin()
				}
				p.opRotateFinish()
			}
			p.clock.Advance(10 * time.Second)
			if how == "login" {
				p.opWipe()
				login(p)
			} else {
				rekey(p)
			}
			ev := protocol.Event{Type: protocol.EventRevoked, Lane: p.sess.lane, Epoch: 0xffffffff, Seq: 1, Reason: "forged"}
			var zero protocol.Key
			sealed, _ := protocol.SealEvent(&zero, &ev)
			r := p.do("forged event", req(vault.OpEvent, f(1, sealed)))
			if r.code() != vault.CodeBadEvent {
				t.Fatalf("an event sealed under the all-zero key was answered %q (reply %x)", r.code(), r.raw)
			}
		})
	}
}

// rekey runs a re-key handshake with a real native server side.
func rekey(p *pair) {
	p.t.Helper()
	r := p.do("begin rekey", req(vault.OpBegin, fu(1, protocol.HandshakeRekey)))
	if r.Code != 0 {
		p.fatalf("rekey begin: %s", r.code())
	}
	pub, _ := r.Get(1)
	p.takeScalar(pub)
	var cpub [32]byte
	copy(cpub[:], pub)
	var lane protocol.LaneID
	copy(lane[:], p.bytes(16))
	se := p.serverEph()
	spub := se.Public()
	tr := protocol.HandshakeTranscript(protocol.HandshakeRekey, cpub, spub, lane, nil)
	k, err := protocol.Rekey(&p.sess.key, se, cpub, tr, lane)
	if err != nil {
		p.fatalf("server rekey: %v", err)
	}
	c := protocol.Confirm(&k, tr)
	r = p.do("finish rekey", req(vault.OpFinish, f(1, lane[:]), f(2, spub[:]), f(3, c[:]), fu(4, uint64(p.nowMs()))))
	if r.Code != 0 {
		p.fatalf("rekey finish: %s %s", r.code(), r.str(1))
	}
	p.sess = newSession(k, lane)
}
