package protocol

import (
	"errors"
	"math/bits"
)

// SHA-256 (FIPS 180-4) and a constant-time compare in plain Go, for the wasm module
// (sha256_wasm.go selects them; sha256_native.go selects the standard library's for the
// server). crypto/sha256 and crypto/subtle link the FIPS 140 module (its self-tests, a DRBG,
// AES, SHA-3 and an os-backed entropy source): 278 KB of a module that every worker start
// reads and compiles. Wasm has no SHA instructions, so crypto/sha256 would run generic Go code
// like this anyway. This file builds everywhere so that native tests compare it with
// crypto/sha256 (sha256_test.go).

const (
	sha256Size      = 32
	sha256BlockSize = 64
)

var sha256K = [64]uint32{
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

type sha256Digest struct {
	h   [8]uint32
	x   [sha256BlockSize]byte
	nx  int
	len uint64
}

// The saved state is crypto/sha256's: a magic, the chaining value, the buffered bytes padded
// with zeros to a block, and the length, from which the buffered count follows. A state that
// does not start with the magic is refused: MAC.Wipe zeroes the saved pad states, and a zeroed
// state must not restore (an all-zero chaining value would make a MAC that needs no key).
const (
	sha256Magic     = "sha\x03"
	sha256StateSize = len(sha256Magic) + 8*4 + sha256BlockSize + 8
)

func newSHA256Generic() stateHash {
	d := new(sha256Digest)
	d.Reset()
	return d
}

func (d *sha256Digest) Reset() {
	d.h = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
	d.nx = 0
	d.len = 0
}

func (d *sha256Digest) Size() int      { return sha256Size }
func (d *sha256Digest) BlockSize() int { return sha256BlockSize }

func (d *sha256Digest) Write(p []byte) (int, error) {
	n := len(p)
	d.len += uint64(n)
	if d.nx > 0 {
		c := copy(d.x[d.nx:], p)
		d.nx += c
		if d.nx == sha256BlockSize {
			sha256Block(&d.h, d.x[:])
			d.nx = 0
		}
		p = p[c:]
	}
	if len(p) >= sha256BlockSize {
		m := len(p) &^ (sha256BlockSize - 1)
		sha256Block(&d.h, p[:m])
		p = p[m:]
	}
	if len(p) > 0 {
		d.nx = copy(d.x[:], p)
	}
	return n, nil
}

func (d *sha256Digest) Sum(in []byte) []byte {
	c := *d
	s := c.checkSum()
	clear(c.x[:])
	return append(in, s[:]...)
}

func (d *sha256Digest) checkSum() [sha256Size]byte {
	n := d.len
	var tmp [64 + 8]byte
	tmp[0] = 0x80
	var t uint64
	if n%64 < 56 {
		t = 56 - n%64
	} else {
		t = 64 + 56 - n%64
	}
	n <<= 3
	pad := tmp[:t+8]
	putU64(pad[t:], n)
	d.Write(pad)
	var out [sha256Size]byte
	for i, v := range d.h {
		putU32(out[i*4:], v)
	}
	return out
}

func (d *sha256Digest) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, sha256StateSize)
	b = append(b, sha256Magic...)
	for _, v := range d.h {
		b = appendU32(b, v)
	}
	b = append(b, d.x[:d.nx]...)
	var zero [sha256BlockSize]byte
	b = append(b, zero[:sha256BlockSize-d.nx]...)
	return appendU64(b, d.len), nil
}

var errSHA256State = errors.New("protocol: invalid sha256 state")

func (d *sha256Digest) UnmarshalBinary(b []byte) error {
	if len(b) != sha256StateSize || string(b[:len(sha256Magic)]) != sha256Magic {
		return errSHA256State
	}
	b = b[len(sha256Magic):]
	for i := range d.h {
		d.h[i] = getU32(b[i*4:])
	}
	copy(d.x[:], b[32:])
	d.len = getU64(b[32+sha256BlockSize:])
	d.nx = int(d.len % sha256BlockSize)
	return nil
}

func sum256Generic(p []byte) [sha256Size]byte {
	var d sha256Digest
	d.Reset()
	d.Write(p)
	s := d.checkSum()
	clear(d.x[:])
	return s
}

func sha256Block(h *[8]uint32, p []byte) {
	var w [64]uint32
	h0, h1, h2, h3, h4, h5, h6, h7 := h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
	for len(p) >= sha256BlockSize {
		for i := 0; i < 16; i++ {
			w[i] = getU32(p[i*4:])
		}
		for i := 16; i < 64; i++ {
			v1 := w[i-2]
			t1 := bits.RotateLeft32(v1, -17) ^ bits.RotateLeft32(v1, -19) ^ (v1 >> 10)
			v2 := w[i-15]
			t2 := bits.RotateLeft32(v2, -7) ^ bits.RotateLeft32(v2, -18) ^ (v2 >> 3)
			w[i] = t1 + w[i-7] + t2 + w[i-16]
		}
		a, b, c, d, e, f, g, hh := h0, h1, h2, h3, h4, h5, h6, h7
		for i := 0; i < 64; i++ {
			t1 := hh + (bits.RotateLeft32(e, -6) ^ bits.RotateLeft32(e, -11) ^ bits.RotateLeft32(e, -25)) + ((e & f) ^ (^e & g)) + sha256K[i] + w[i]
			t2 := (bits.RotateLeft32(a, -2) ^ bits.RotateLeft32(a, -13) ^ bits.RotateLeft32(a, -22)) + ((a & b) ^ (a & c) ^ (b & c))
			hh, g, f, e, d, c, b, a = g, f, e, d+t1, c, b, a, t1+t2
		}
		h0 += a
		h1 += b
		h2 += c
		h3 += d
		h4 += e
		h5 += f
		h6 += g
		h7 += hh
		p = p[sha256BlockSize:]
	}
	clear(w[:])
	h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7] = h0, h1, h2, h3, h4, h5, h6, h7
}

// ctEqual reports whether a and b are equal, in time that depends only on their lengths.
func ctEqualGeneric(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range a {
		v |= a[i] ^ b[i]
	}
	return (uint32(v)-1)>>31 == 1
}
