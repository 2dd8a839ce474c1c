package vault

import (
	"bytes"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// abiCases are malformed ABI requests. Each is refused with its code before the operation looks
// at the vault's state, so the code is the same in every state, and nothing changes.
var abiCases = func() []struct {
	name string
	in   []byte
	code string
} {
	lane := make([]byte, protocol.LaneIDSize)
	pub := bytes.Repeat([]byte{9}, protocol.PublicKeySize)
	tag := make([]byte, protocol.TagSize)
	finish := func(fs ...protocol.Field) []byte { return msg(OpFinish, fs...) }
	okFinish := []protocol.Field{field(1, lane), field(2, pub), field(3, tag), ufield(4, 1)}
	with := func(base []protocol.Field, tagN byte, f *protocol.Field) []protocol.Field {
		var out []protocol.Field
		for _, b := range base {
			if b.Tag == tagN {
				if f != nil {
					out = append(out, *f)
				}
				continue
			}
			out = append(out, b)
		}
		if f != nil && !hasTag(base, tagN) {
			out = append(out, *f)
		}
		return out
	}
	fp := func(f protocol.Field) *protocol.Field { return &f }
	rotFinish := []protocol.Field{field(1, pub), ufield(2, 1), field(3, tag)}
	sign := []protocol.Field{sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/")}
	raw := func(b ...byte) []byte { return b }
	manyFields := []byte{protocol.CodecVersion, OpStatus}
	for i := 0; i <= protocol.MaxFields; i++ {
		manyFields = append(manyFields, byte(i), 0)
	}
	type c = struct {
		name string
		in   []byte
		code string
	}
	return []c{
		// framing
		{"nil", nil, CodeBadMessage},
		{"one byte", raw(1), CodeBadMessage},
		{"version 0", raw(0, OpStatus), CodeBadMessage},
		{"version 2", raw(2, OpStatus), CodeBadMessage},
		{"tags out of order", raw(1, OpBegin, 2, 0, 1, 1, 1), CodeBadMessage},
		{"tag repeated", raw(1, OpBegin, 1, 1, 1, 1, 1, 1), CodeBadMessage},
		{"non-minimal length", raw(1, OpBegin, 1, 0x81, 0x00, 1), CodeBadMessage},
		{"length past end", raw(1, OpSign, 1, 5, 'G', 'E', 'T'), CodeBadMessage},
		{"length truncated", raw(1, OpSign, 1, 0x80), CodeBadMessage},
		{"length overflows", append(raw(1, OpSign, 1), bytes.Repeat([]byte{0xff}, 10)...), CodeBadMessage},
		{"huge length", append(raw(1, OpSign, 1), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), CodeBadMessage},
		{"tag without length", raw(1, OpStatus, 1), CodeBadMessage},
		{"too many fields", manyFields, CodeTooLarge},
		{"message too large", append(raw(1, OpSign, 5, 0x80, 0x80, 0x80, 0x04), make([]byte, protocol.MaxMessageSize)...), CodeTooLarge},
		// operations
		{"op 0", raw(1, 0), CodeUnknownOp},
		{"op 0x0c", raw(1, 0x0c), CodeUnknownOp},
		{"op 0xff", msg(0xff, sfield(1, "x")), CodeUnknownOp},
		// unknown fields
		{"status with a field", msg(OpStatus, ufield(1, 0)), CodeBadInput},
		{"wipe with a field", msg(OpWipe, ufield(1, 0)), CodeBadInput},
		{"abort-rekey with a field", msg(OpAbortRekey, ufield(1, 0)), CodeBadInput},
		{"rotate-begin with a field", msg(OpRotateBegin, field(1, pub)), CodeBadInput},
		{"policy field 5", msg(OpPolicy, sfield(1, appOrigin), sfield(5, "x")), CodeBadInput},
		{"policy field 0", msg(OpPolicy, sfield(0, "x"), sfield(1, appOrigin)), CodeBadInput},
		{"begin field 2", msg(OpBegin, ufield(1, 1), ufield(2, 1)), CodeBadInput},
		{"finish field 7", finish(append(okFinish, field(7, nil))...), CodeBadInput},
		{"sign field 6", msg(OpSign, append(sign, field(6, nil))...), CodeBadInput},
		{"sign field 0", msg(OpSign, append([]protocol.Field{field(0, nil)}, sign...)...), CodeBadInput},
		{"rotate-finish field 4", msg(OpRotateFinish, append(rotFinish, ufield(4, 0))...), CodeBadInput},
		{"event field 2", msg(OpEvent, field(1, nil), field(2, nil)), CodeBadInput},
		{"socket field 0", msg(OpSocketAuth, field(0, nil), field(1, make([]byte, 32))), CodeBadInput},
		{"field 31", msg(OpStatus, field(31, nil)), CodeBadInput},
		{"field 32", msg(OpStatus, field(32, nil)), CodeBadInput},
		{"field 255", msg(OpSign, append(sign, field(255, nil))...), CodeBadInput},
		// missing fields
		{"policy without self", msg(OpPolicy, lfield(2, appOrigin)), CodeBadInput},
		{"begin without kind", msg(OpBegin), CodeBadInput},
		{"finish without lane", finish(with(okFinish, 1, nil)...), CodeBadInput},
		{"finish without public key", finish(with(okFinish, 2, nil)...), CodeBadInput},
		{"finish without confirm", finish(with(okFinish, 3, nil)...), CodeBadInput},
		{"finish without server time", finish(with(okFinish, 4, nil)...), CodeBadInput},
		{"finish empty", finish(), CodeBadInput},
		{"sign without method", msg(OpSign, sign[1:]...), CodeBadInput},
		{"sign without origin", msg(OpSign, sign[0], sign[2]), CodeBadInput},
		{"sign without path", msg(OpSign, sign[:2]...), CodeBadInput},
		{"rotate-finish without public key", msg(OpRotateFinish, rotFinish[1:]...), CodeBadInput},
		{"rotate-finish without epoch", msg(OpRotateFinish, rotFinish[0], rotFinish[2]), CodeBadInput},
		{"rotate-finish without confirm", msg(OpRotateFinish, rotFinish[:2]...), CodeBadInput},
		{"event without event", msg(OpEvent), CodeBadInput},
		{"socket without challenge", msg(OpSocketAuth), CodeBadInput},
		// wrong lengths
		{"finish lane 15", finish(with(okFinish, 1, fp(field(1, lane[:15])))...), CodeBadInput},
		{"finish lane 17", finish(with(okFinish, 1, fp(field(1, append(lane, 0))))...), CodeBadInput},
		{"finish lane empty", finish(with(okFinish, 1, fp(field(1, nil)))...), CodeBadInput},
		{"finish public key 31", finish(with(okFinish, 2, fp(field(2, pub[:31])))...), CodeBadInput},
		{"finish public key 33", finish(with(okFinish, 2, fp(field(2, append(pub, 0))))...), CodeBadInput},
		{"finish confirm 31", finish(with(okFinish, 3, fp(field(3, tag[:31])))...), CodeBadInput},
		{"finish confirm 64", finish(with(okFinish, 3, fp(field(3, make([]byte, 64))))...), CodeBadInput},
		{"finish ticket empty", finish(append(okFinish, field(6, nil))...), CodeBadInput},
		{"finish ticket 257", finish(append(okFinish, field(6, make([]byte, 257)))...), CodeBadInput},
		{"rotate-finish public key 0", msg(OpRotateFinish, with(rotFinish, 1, fp(field(1, nil)))...), CodeBadInput},
		{"rotate-finish public key 64", msg(OpRotateFinish, with(rotFinish, 1, fp(field(1, append(pub, pub...))))...), CodeBadInput},
		{"rotate-finish confirm 33", msg(OpRotateFinish, with(rotFinish, 3, fp(field(3, append(tag, 1))))...), CodeBadInput},
		{"sign method 17", msg(OpSign, sfield(1, strings.Repeat("G", 17)), sign[1], sign[2]), CodeTooLarge},
		{"policy self 257", msg(OpPolicy, sfield(1, "https://"+strings.Repeat("a", 249))), CodeTooLarge},
		// integer encodings
		{"begin kind empty", msg(OpBegin, field(1, nil)), CodeBadInput},
		{"begin kind non-minimal", msg(OpBegin, field(1, []byte{0x81, 0x00})), CodeBadInput},
		{"begin kind trailing byte", msg(OpBegin, field(1, []byte{1, 0})), CodeBadInput},
		{"begin kind unterminated", msg(OpBegin, field(1, []byte{0x81})), CodeBadInput},
		{"begin kind 65 bits", msg(OpBegin, field(1, append(bytes.Repeat([]byte{0xff}, 9), 0x02))), CodeBadInput},
		{"begin kind 11 bytes", msg(OpBegin, field(1, append(bytes.Repeat([]byte{0x80}, 10), 0x01))), CodeBadInput},
		{"begin kind 4", msg(OpBegin, ufield(1, 4)), CodeBadInput},
		{"begin kind 2^64-1", msg(OpBegin, ufield(1, ^uint64(0))), CodeBadInput},
		{"begin kind as text", msg(OpBegin, sfield(1, "1")), CodeBadInput},
		{"finish time non-minimal", finish(with(okFinish, 4, fp(field(4, []byte{0x81, 0x80, 0x00})))...), CodeBadInput},
		{"finish time 2^53+1", finish(with(okFinish, 4, fp(ufield(4, 1<<53+1)))...), CodeBadInput},
		{"finish time 2^64-1", finish(with(okFinish, 4, fp(ufield(4, ^uint64(0))))...), CodeBadInput},
		{"finish expires 2^53+1", finish(append(okFinish, ufield(5, 1<<53+1))...), CodeBadInput},
		{"finish expires empty", finish(append(okFinish, field(5, nil))...), CodeBadInput},
		{"rotate-finish epoch 2^32", msg(OpRotateFinish, with(rotFinish, 2, fp(ufield(2, 1<<32)))...), CodeBadInput},
		{"rotate-finish epoch non-minimal", msg(OpRotateFinish, with(rotFinish, 2, fp(field(2, []byte{0x82, 0x00})))...), CodeBadInput},
		{"rotate-finish epoch empty", msg(OpRotateFinish, with(rotFinish, 2, fp(field(2, nil)))...), CodeBadInput},
		// lists
		{"policy list item past end", msg(OpPolicy, sfield(1, appOrigin), field(2, []byte{5, 'a', 'b'})), CodeBadInput},
		{"policy list non-minimal length", msg(OpPolicy, sfield(1, appOrigin), field(4, []byte{0x83, 0x00, 'G', 'E', 'T'})), CodeBadInput},
		{"policy list truncated length", msg(OpPolicy, sfield(1, appOrigin), field(3, []byte{0x80})), CodeBadInput},
	}
}()

func hasTag(fs []protocol.Field, tag byte) bool {
	for _, f := range fs {
		if f.Tag == tag {
			return true
		}
	}
	return false
}

// vaultsInEveryState returns fresh harnesses in each state, each with a probe that checks that
// the vault still works as it did.
func vaultsInEveryState(t *testing.T) map[string]*harness {
	out := map[string]*harness{}
	bare := &harness{t: t, local: &clock{t0}, remote: &clock{t0}}
	bare.v = New(newRand(1), bare.local.now)
	bare.srv = newFakeServer(t, bare.remote, 2)
	out["no policy"] = bare
	out["empty"] = newHarness(t, 0)
	p := newHarness(t, 0)
	p.v.Begin(protocol.HandshakeLogin)
	out["pending"] = p
	out["active"] = active(t)
	r := active(t)
	r.v.BeginRotate()
	out["rotating"] = r
	w := active(t)
	w.v.Wipe()
	out["wiped"] = w
	return out
}

// probe checks that h's vault still does what its state allows.
func probe(t *testing.T, name string, h *harness) {
	t.Helper()
	switch h.v.State() {
	case StatePending:
		if err := h.v.Finish(h.srv.login(h.v.eph.Public())); err != nil {
			t.Fatalf("%s: the pending handshake no longer finishes: %v", name, err)
		}
		h.v.Begin(protocol.HandshakeLogin)
	case StateActive:
		h.sign(getMe)
	case StateRotating:
		h.sign(getMe)
	}
	if name == "no policy" && h.v.policy != nil {
		t.Fatalf("a policy got bound")
	}
}

func TestCallMalformed(t *testing.T) {
	if len(abiCases) < 30 {
		t.Fatalf("only %d cases", len(abiCases))
	}
	for name, h := range vaultsInEveryState(t) {
		for _, c := range abiCases {
			before := snapshot(h.v)
			code, m := call(t, h.v, c.in)
			if code != c.code {
				e, _ := m.Get(1)
				t.Errorf("%s: %s: got %s (%s), want %s", name, c.name, code, e, c.code)
				continue
			}
			unchanged(t, h.v, before, name+": "+c.name)
		}
		probe(t, name, h)
	}
}

// Error replies carry fixed text, never input bytes.
func TestCallErrorsQuoteNothing(t *testing.T) {
	h := active(t)
	marker := "ZZMARKERZZ"
	for _, in := range [][]byte{
		msg(OpSign, sfield(1, "GET"), sfield(2, "https://"+strings.ToLower(marker)+".example"), sfield(3, "/")),
		msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/"+marker+"/../x")),
		msg(OpSign, sfield(1, marker), sfield(2, appOrigin), sfield(3, "/")),
		msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/"), sfield(4, marker+" x")),
		msg(OpEvent, sfield(1, marker)),
		msg(OpSocketAuth, sfield(1, marker)),
		msg(OpPolicy, sfield(1, marker)),
		msg(OpFinish, sfield(1, marker)),
		msg(0x77, sfield(1, marker)),
		append([]byte{9}, marker...),
	} {
		out := h.v.Call(in)
		if bytes.Contains(bytes.ToLower(out), bytes.ToLower([]byte(marker))) {
			t.Fatalf("reply %q quotes the input", out)
		}
	}
}

// Random corruptions of valid requests, in every state: no panic, and every reply decodes with a
// known status (checked by call).
func TestCallMutations(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(7, 7))
	seeds := callSeeds()
	for name, h := range vaultsInEveryState(t) {
		for i := 0; i < 3000; i++ {
			in := append([]byte(nil), seeds[rng.IntN(len(seeds))]...)
			switch rng.IntN(4) {
			case 0:
				if len(in) > 0 {
					in[rng.IntN(len(in))] ^= byte(1 << rng.IntN(8))
				}
			case 1:
				in = in[:rng.IntN(len(in)+1)]
			case 2:
				at := rng.IntN(len(in) + 1)
				in = append(in[:at], append([]byte{byte(rng.Uint32())}, in[at:]...)...)
			case 3:
				if len(in) > 2 {
					in[2+rng.IntN(len(in)-2)] = byte(rng.Uint32())
				}
			}
			call(t, h.v, in)
		}
		_ = name
	}
}

// callSeeds are well-formed requests of every operation, and the malformed table.
func callSeeds() [][]byte {
	pub := bytes.Repeat([]byte{9}, 32)
	s := [][]byte{
		msg(OpPolicy, sfield(1, appOrigin), lfield(2, appOrigin), lfield(3, "/api/"), lfield(4, "GET")),
		msg(OpBegin, ufield(1, 1)),
		msg(OpBegin, ufield(1, 2)),
		msg(OpFinish, field(1, make([]byte, 16)), field(2, pub), field(3, make([]byte, 32)), ufield(4, 1767225600000), ufield(5, 1767229200000), sfield(6, "ticket")),
		msg(OpSign, sfield(1, "POST"), sfield(2, appOrigin), sfield(3, "/api/x"), sfield(4, "a=1"), sfield(5, "{}")),
		msg(OpRotateBegin),
		msg(OpRotateFinish, field(1, pub), ufield(2, 1), field(3, make([]byte, 32))),
		msg(OpEvent, field(1, make([]byte, 111))),
		msg(OpSocketAuth, field(1, make([]byte, 32))),
		msg(OpStatus),
		msg(OpWipe),
	}
	for _, c := range abiCases {
		if len(c.in) < 1<<16 {
			s = append(s, c.in)
		}
	}
	return s
}

func FuzzCall(f *testing.F) {
	seeds := callSeeds()
	if len(seeds) == 0 {
		f.Fatal("no seeds")
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h := active(t)
		h.sign(getMe)
		secrets := secretsOf(h.srv)
		in2 := append([]byte(nil), in...)
		_, m := call(t, h.v, in)
		if !bytes.Equal(in, in2) {
			t.Fatal("Call modified its input")
		}
		out := m.Append(nil)
		for name, s := range secrets {
			if how := leak(out, s); how != "" {
				t.Fatalf("reply carries the %s (%s)", name, how)
			}
		}
		// Whatever the input did, the vault is in a consistent state.
		switch h.v.State() {
		case StateActive, StateRotating:
			h.sign(getMe)
		case StateWiped, StateEmpty, StatePending:
			if !h.v.key.IsZero() || h.v.signer != nil {
				t.Fatalf("state %v with a key", h.v.State())
			}
		}
	})
}
