package protocol

import (
	"bytes"
	"crypto/ecdh"
	"encoding/hex"
	"math/rand/v2"
	"testing"
)

// RFC 7748 section 5.2, first vector.
func TestX25519RFC7748(t *testing.T) {
	var k, u, out [32]byte
	hex.Decode(k[:], []byte("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"))
	hex.Decode(u[:], []byte("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"))
	want := "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
	x25519Compact(&out, &k, &u)
	if got := hex.EncodeToString(out[:]); got != want {
		t.Fatalf("compact: got %s want %s", got, want)
	}
	if err := x25519(&out, &k, &u); err != nil || hex.EncodeToString(out[:]) != want {
		t.Fatalf("native: got %x, %v", out, err)
	}
}

// RFC 7748 section 5.2, iterated vector after 1,000 iterations.
func TestX25519Iterated(t *testing.T) {
	k := [32]byte{9}
	u := [32]byte{9}
	for i := 0; i < 1000; i++ {
		var r [32]byte
		x25519Compact(&r, &k, &u)
		u, k = k, r
	}
	if got := hex.EncodeToString(k[:]); got != "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51" {
		t.Fatalf("got %s", got)
	}
}

// The compact implementation (used in wasm) agrees with crypto/ecdh on random inputs.
func TestX25519MatchesECDH(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		var k, u, got [32]byte
		for j := range k {
			k[j] = byte(rng.Uint32())
			u[j] = byte(rng.Uint32())
		}
		if i%2 == 0 {
			u = basePoint
		}
		priv, err := ecdh.X25519().NewPrivateKey(k[:])
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		if i%2 == 0 {
			want = priv.PublicKey().Bytes()
		} else {
			pub, _ := ecdh.X25519().NewPublicKey(u[:])
			want, err = priv.ECDH(pub)
			if err != nil {
				continue // low order point: both refuse (checked below)
			}
		}
		x25519Compact(&got, &k, &u)
		if !bytes.Equal(got[:], want) {
			t.Fatalf("case %d: k=%x u=%x: compact %x, ecdh %x", i, k, u, got, want)
		}
	}
}

func TestX25519LowOrderRefused(t *testing.T) {
	e, err := NewEphemeral(bytes.NewReader(make([]byte, 32)))
	if err != nil {
		t.Fatal(err)
	}
	var zero [32]byte
	if _, err := e.shared(zero[:]); ErrorClass(err) != "key_agreement" {
		t.Fatalf("all-zero point: got %v", err)
	}
}
