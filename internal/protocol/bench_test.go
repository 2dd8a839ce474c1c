package protocol

// Benchmarks of the server's hot path (the budgets in README.md, "What it costs": verify one signed request in at most
// 2 us and faster than golang-jwt HS256 parse+verify in the same run). Run with
//
//	go test ./internal/protocol -run '^$' -bench . -benchmem
//
// BenchmarkVerify is what the middleware does per request before the replay check: parse the two
// signature fields and check the profile, recompute the HMAC with the lane epoch's reused
// Verifier, check created, and check the Content-Digest against the body's SHA-256 (which the
// middleware computes while reading the body, so it is outside the measured work).

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

type benchCase struct {
	key          Key
	r            *Request
	in, sig      string
	sum          [sha256.Size]byte
	now          time.Time
	created      int64
	requestBytes int
}

func newBenchCase(b *testing.B, body bool) *benchCase {
	c := &benchCase{key: Key{1, 2, 3}, now: time.Unix(1700000001, 0), created: 1700000000}
	c.r = &Request{Method: "POST", Authority: "app.example.com", Path: "/api/v1/items/12345", Query: "expand=owner&limit=50"}
	payload := []byte(`{"name":"widget","quantity":3,"tags":["a","b"]}`)
	if body {
		c.r.ContentDigest = ContentDigest(payload)
		c.sum = sha256.Sum256(payload)
	} else {
		c.r.Method = "GET"
	}
	p := Params{Created: c.created, KeyID: KeyID{Lane: LaneID{9, 8, 7}, Epoch: 3}, Nonce: 41}
	var err error
	c.in, c.sig, err = NewSigner(&c.key).Sign(c.r, &p)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkSign(b *testing.B) {
	c := newBenchCase(b, true)
	s := NewSigner(&c.key)
	p := Params{Created: c.created, KeyID: KeyID{Lane: LaneID{9, 8, 7}, Epoch: 3}}
	b.ReportAllocs()
	for b.Loop() {
		p.Nonce++
		if _, _, err := s.Sign(c.r, &p); err != nil {
			b.Fatal(err)
		}
	}
}

func benchVerify(b *testing.B, body bool) {
	c := newBenchCase(b, body)
	v := NewVerifier(&c.key)
	b.ReportAllocs()
	for b.Loop() {
		s, err := ParseSigned(c.in, c.sig)
		if err != nil {
			b.Fatal(err)
		}
		if err := v.Verify(s, c.r); err != nil {
			b.Fatal(err)
		}
		if err := (Window{}).CheckCreated(s.Created, c.now); err != nil {
			b.Fatal(err)
		}
		if body {
			if err := CheckContentDigest(c.r.ContentDigest, &c.sum); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkVerify(b *testing.B)       { benchVerify(b, true) }
func BenchmarkVerifyNoBody(b *testing.B) { benchVerify(b, false) }

// BenchmarkGolangJWTHS256 is the peer: parse and verify an HS256 JWT with five registered claims
// and a key lookup, as a session-token middleware would, with a reused parser.
func BenchmarkGolangJWTHS256(b *testing.B) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1700000001, 0)
	claims := jwt.RegisteredClaims{
		Issuer:    "app.example.com",
		Subject:   "user-12345",
		Audience:  jwt.ClaimStrings{"app.example.com"},
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
		ID:        "ABEiM0RVZneImaq7zN3u_w.3",
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		b.Fatal(err)
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithIssuer("app.example.com"), jwt.WithAudience("app.example.com"), jwt.WithExpirationRequired())
	keyFunc := func(*jwt.Token) (any, error) { return key, nil }
	b.ReportAllocs()
	for b.Loop() {
		var got jwt.RegisteredClaims
		t, err := parser.ParseWithClaims(token, &got, keyFunc)
		if err != nil || !t.Valid {
			b.Fatal(err)
		}
	}
}

// BenchmarkMAC isolates the HMAC of a typical signature base with the reused, precomputed state.
func BenchmarkMAC(b *testing.B) {
	c := newBenchCase(b, true)
	base, _ := SignatureBase(c.r, &Params{Created: c.created, Nonce: 1})
	m := NewMAC(c.key[:])
	b.SetBytes(int64(len(base)))
	b.ReportAllocs()
	for b.Loop() {
		m.Reset()
		m.WriteString(base)
		m.Sum()
	}
}

func BenchmarkParseSigned(b *testing.B) {
	c := newBenchCase(b, true)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSigned(c.in, c.sig); err != nil {
			b.Fatal(err)
		}
	}
}
