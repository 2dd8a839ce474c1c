package protocol

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"math/rand/v2"
	"strings"
	"testing"
)

// The plain-Go SHA-256 the wasm module uses (sha256.go) against FIPS 180-4's examples and
// against crypto/sha256, on every length across three blocks and in every way of splitting it.

func TestSHA256GenericKnownAnswers(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
		{strings.Repeat("a", 1000000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
	} {
		got := sum256Generic([]byte(c.in))
		if hex.EncodeToString(got[:]) != c.want {
			t.Errorf("SHA-256 of %d bytes = %x, want %s", len(c.in), got, c.want)
		}
		h := newSHA256Generic()
		h.Write([]byte(c.in))
		if s := hex.EncodeToString(h.Sum(nil)); s != c.want {
			t.Errorf("streamed SHA-256 of %d bytes = %s, want %s", len(c.in), s, c.want)
		}
	}
}

func TestSHA256GenericMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3*64+1)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for n := 0; n <= len(buf); n++ {
		msg := buf[:n]
		want := sha256.Sum256(msg)
		if got := sum256Generic(msg); got != want {
			t.Fatalf("len %d: %x, want %x", n, got, want)
		}
		for split := 0; split <= n; split++ {
			h := newSHA256Generic()
			h.Write(msg[:split])
			h.Write(msg[split:])
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				t.Fatalf("len %d split at %d: %x, want %x", n, split, got, want)
			}
		}
	}
}

func TestSHA256GenericStateRoundTrip(t *testing.T) {
	msg := []byte(strings.Repeat("sessionvault ", 20))
	want := sha256.Sum256(msg)
	for cut := 0; cut <= len(msg); cut += 7 {
		h := newSHA256Generic()
		h.Write(msg[:cut])
		st, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte("noise that the restore must discard"))
		h2 := newSHA256Generic()
		if err := h2.UnmarshalBinary(st); err != nil {
			t.Fatal(err)
		}
		h2.Write(msg[cut:])
		if got := h2.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("restored at %d: %x, want %x", cut, got, want)
		}
		// Sum does not change the state: summing twice gives the same digest.
		if got := h2.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("second Sum at %d: %x", cut, got)
		}
	}
	h := newSHA256Generic()
	good, _ := h.MarshalBinary()
	for _, bad := range [][]byte{nil, good[:len(good)-1], append(good[:len(good):len(good)], 0)} {
		if err := h.UnmarshalBinary(bad); err == nil {
			t.Errorf("state of %d bytes accepted", len(bad))
		}
	}
	if err := h.UnmarshalBinary(make([]byte, len(good))); err == nil {
		t.Error("an all-zero state (what MAC.Wipe leaves) accepted")
	}
}

// TestSHA256GenericStateIsStdlibs: the saved state is crypto/sha256's, byte for byte, and each
// restores the other's. In particular a state without its magic is refused, as crypto/sha256
// refuses it.
func TestSHA256GenericStateIsStdlibs(t *testing.T) {
	msg := []byte(strings.Repeat("sessionvault ", 20))
	want := sha256.Sum256(msg)
	for cut := 0; cut <= len(msg); cut += 5 {
		g, s := newSHA256Generic(), sha256.New()
		g.Write(msg[:cut])
		s.Write(msg[:cut])
		gs, _ := g.MarshalBinary()
		ss, _ := s.(stateHash).MarshalBinary()
		if !bytes.Equal(gs, ss) {
			t.Fatalf("state at %d:\n%x\ncrypto/sha256:\n%x", cut, gs, ss)
		}
		g2 := newSHA256Generic()
		if err := g2.UnmarshalBinary(ss); err != nil {
			t.Fatal(err)
		}
		g2.Write(msg[cut:])
		if got := g2.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("restored from crypto/sha256's state at %d: %x, want %x", cut, got, want)
		}
	}
	zero := make([]byte, sha256StateSize)
	if sha256.New().(stateHash).UnmarshalBinary(zero) == nil {
		t.Fatal("test bug: crypto/sha256 accepts a zeroed state")
	}
	if newSHA256Generic().UnmarshalBinary(zero) == nil {
		t.Fatal("a zeroed state restores")
	}
}

// TestMACGenericSHA256 is TestMAC and TestMACWipe on the wasm build's SHA-256: the same tags as
// crypto/hmac, every hash state as fresh after Wipe, and a wiped MAC refuses to be used again
// (it panics; with a zeroed state restored it would MAC under no key at all).
func TestMACGenericSHA256(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	fresh := memoryOf(t, newSHA256Generic())
	for _, kl := range []int{0, 32, 64, 65, 100} {
		key := randBytes(rng, kl)
		m := newMAC(key, newSHA256Generic)
		for _, n := range []int{0, 10, 64, 100, 300} {
			msg := randBytes(rng, n)
			m.Reset()
			m.Write(msg)
			got := m.Sum()
			ref := hmac.New(sha256.New, key)
			ref.Write(msg)
			if want := ref.Sum(nil); !bytes.Equal(got[:], want) {
				t.Fatalf("key %d bytes, msg %d bytes: %x, want %x", kl, n, got, want)
			}
		}
		m.Wipe()
		for name, h := range map[string]hash.Hash{"inner": m.inner, "outer": m.outer} {
			if mem := memoryOf(t, h); !bytes.Equal(mem, fresh) {
				t.Fatalf("key %d bytes: %s state after Wipe:\n%x\nfresh:\n%x", kl, name, mem, fresh)
			}
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("key %d bytes: a wiped MAC can be reused", kl)
				}
			}()
			m.Reset()
		}()
	}
}

func TestCtEqualGeneric(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"a", "a", true},
		{"a", "b", false},
		{"ab", "a", false},
		{"\x00", "", false},
		{"\x80", "\x00", false},
		{strings.Repeat("x", 32), strings.Repeat("x", 31) + "y", false},
	} {
		if got := ctEqualGeneric([]byte(c.a), []byte(c.b)); got != c.want {
			t.Errorf("ctEqualGeneric(%q, %q) = %v", c.a, c.b, got)
		}
	}
	for b := 0; b < 256; b++ {
		if got := ctEqualGeneric([]byte{0, byte(b)}, []byte{0, 0}); got != (b == 0) {
			t.Fatalf("differ by %#x: equal = %v", b, got)
		}
	}
}

func FuzzSHA256Generic(f *testing.F) {
	f.Add([]byte("abc"), uint8(1))
	f.Add(bytes.Repeat([]byte{0xff}, 130), uint8(64))
	f.Fuzz(func(t *testing.T, msg []byte, split uint8) {
		want := sha256.Sum256(msg)
		s := min(int(split), len(msg))
		h := newSHA256Generic()
		h.Write(msg[:s])
		h.Write(msg[s:])
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("%x, want %x", got, want)
		}
	})
}
