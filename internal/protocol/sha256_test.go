package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
	overfull := bytes.Clone(good)
	overfull[8*4+sha256BlockSize] = sha256BlockSize // buffered count must stay under a block
	if err := h.UnmarshalBinary(overfull); err == nil {
		t.Error("state with a full buffer accepted")
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
