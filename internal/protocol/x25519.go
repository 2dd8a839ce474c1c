package protocol

// A compact, constant-time X25519 (RFC 7748), after TweetNaCl's crypto_scalarmult (public
// domain): 16 limbs of 16 bits in int64, a Montgomery ladder with masked conditional swaps, and no
// branch or index that depends on a secret.
//
// Why our own: crypto/ecdh links the NIST curves and the FIPS module's self-tests into the wasm
// module (about 770 KB raw, a quarter of the size budget), and its private-key objects keep a copy
// of the scalar that nothing can zero. This one is about 4 KB of code and keeps every secret in
// arrays the caller wipes. The server builds use crypto/ecdh for speed (x25519_native.go); the
// tests check this implementation against crypto/ecdh and the RFC 7748 vectors, and the wazero
// tests check the wasm build against the native one. RATIONALE.md has the longer answer.

type fe [16]int64

var fe121665 = fe{0xDB41, 1}

func feCarry(o *fe) {
	for i := 0; i < 16; i++ {
		o[i] += 1 << 16
		c := o[i] >> 16
		if i < 15 {
			o[i+1] += c - 1
		} else {
			o[0] += 38 * (c - 1)
		}
		o[i] -= c << 16
	}
}

// feSelect swaps p and q when b is 1, in constant time.
func feSelect(p, q *fe, b int64) {
	c := ^(b - 1)
	for i := 0; i < 16; i++ {
		t := c & (p[i] ^ q[i])
		p[i] ^= t
		q[i] ^= t
	}
}

func fePack(o *[32]byte, n *fe) {
	var m, t fe
	t = *n
	feCarry(&t)
	feCarry(&t)
	feCarry(&t)
	for j := 0; j < 2; j++ {
		m[0] = t[0] - 0xffed
		for i := 1; i < 15; i++ {
			m[i] = t[i] - 0xffff - ((m[i-1] >> 16) & 1)
			m[i-1] &= 0xffff
		}
		m[15] = t[15] - 0x7fff - ((m[14] >> 16) & 1)
		b := (m[15] >> 16) & 1
		m[14] &= 0xffff
		feSelect(&t, &m, 1-b)
	}
	for i := 0; i < 16; i++ {
		o[2*i] = byte(t[i])
		o[2*i+1] = byte(t[i] >> 8)
	}
	clear(m[:])
	clear(t[:])
}

func feUnpack(o *fe, n *[32]byte) {
	for i := 0; i < 16; i++ {
		o[i] = int64(n[2*i]) + int64(n[2*i+1])<<8
	}
	o[15] &= 0x7fff
}

func feAdd(o, a, b *fe) {
	for i := 0; i < 16; i++ {
		o[i] = a[i] + b[i]
	}
}

func feSub(o, a, b *fe) {
	for i := 0; i < 16; i++ {
		o[i] = a[i] - b[i]
	}
}

func feMul(o, a, b *fe) {
	var t [31]int64
	for i := 0; i < 16; i++ {
		for j := 0; j < 16; j++ {
			t[i+j] += a[i] * b[j]
		}
	}
	for i := 0; i < 15; i++ {
		t[i] += 38 * t[i+16]
	}
	copy(o[:], t[:16])
	feCarry(o)
	feCarry(o)
}

func feInvert(o, in *fe) {
	c := *in
	for a := 253; a >= 0; a-- {
		feMul(&c, &c, &c)
		if a != 2 && a != 4 {
			feMul(&c, &c, in)
		}
	}
	*o = c
}

// scalarMult sets q = X25519(n, p) with RFC 7748 clamping of n.
func scalarMult(q, n, p *[32]byte) {
	var z [32]byte
	var x, a, b, c, d, e, f fe
	z = *n
	z[31] = (z[31] & 127) | 64
	z[0] &= 248
	feUnpack(&x, p)
	b = x
	a[0], d[0] = 1, 1
	for i := 254; i >= 0; i-- {
		r := int64(z[i>>3]>>(i&7)) & 1
		feSelect(&a, &b, r)
		feSelect(&c, &d, r)
		feAdd(&e, &a, &c)
		feSub(&a, &a, &c)
		feAdd(&c, &b, &d)
		feSub(&b, &b, &d)
		feMul(&d, &e, &e)
		feMul(&f, &a, &a)
		feMul(&a, &c, &a)
		feMul(&c, &b, &e)
		feAdd(&e, &a, &c)
		feSub(&a, &a, &c)
		feMul(&b, &a, &a)
		feSub(&c, &d, &f)
		feMul(&a, &c, &fe121665)
		feAdd(&a, &a, &d)
		feMul(&c, &c, &a)
		feMul(&a, &d, &f)
		feMul(&d, &b, &x)
		feMul(&b, &e, &e)
		feSelect(&a, &b, r)
		feSelect(&c, &d, r)
	}
	feInvert(&c, &c)
	feMul(&a, &a, &c)
	fePack(q, &a)
	clear(z[:])
	for _, v := range []*fe{&x, &a, &b, &c, &d, &e, &f} {
		clear(v[:])
	}
}

var basePoint = [32]byte{9}

// x25519Compact computes X25519(scalar, point) into out with the compact implementation.
func x25519Compact(out, scalar, point *[32]byte) {
	scalarMult(out, scalar, point)
}
