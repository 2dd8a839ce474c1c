package protocol

import (
	"crypto/sha256"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParseKeyID(t *testing.T) {
	lane := LaneID(mustHexS("00112233445566778899aabbccddeeff"))
	const l = "ABEiM0RVZneImaq7zN3u_w"
	for s, want := range map[string]uint32{l + ".0": 0, l + ".1": 1, l + ".4294967295": 0xffffffff, l + ".10": 10} {
		id, err := ParseKeyID(s)
		if err != nil || id.Lane != lane || id.Epoch != want || id.String() != s {
			t.Errorf("ParseKeyID(%s) = %+v, %v", s, id, err)
		}
	}
	for _, s := range []string{
		"", l, l + ".", l + ".00", l + ".01", l + ".-1", l + ".+1", l + ".1 ", l + ". 1", l + ".4294967296",
		l + ".99999999999999999999999", l + ".1a", l[:21] + ".0", l + "A.0", l[:21] + "x.0", l[:21] + "=.0",
		strings.Replace(l, "_", "/", 1) + ".0", strings.Replace(l, "_", "+", 1) + ".0", "AAAAAAAAAAAAAAAAAAAAAA==.0",
		l[:10] + "\n" + l[11:] + ".0",
	} {
		if id, err := ParseKeyID(s); ErrorClass(err) != "malformed" {
			t.Errorf("ParseKeyID(%q) = %+v, %v", s, id, err)
		}
	}
}

func TestWindowCheckCreated(t *testing.T) {
	now := time.Unix(1700000000, 999_000_000)
	cases := []struct {
		w       Window
		created int64
		want    string
	}{
		{Window{}, 1700000000, ""},
		{Window{}, 1700000000 - 60, ""},
		{Window{}, 1700000000 - 61, "expired"},
		{Window{}, 1700000000 + 5, ""},
		{Window{}, 1700000000 + 6, "future"},
		{Window{}, 0, "expired"},
		{Window{MaxAge: 10 * time.Second, Skew: time.Second}, 1700000000 - 10, ""},
		{Window{MaxAge: 10 * time.Second, Skew: time.Second}, 1700000000 - 11, "expired"},
		{Window{MaxAge: 10 * time.Second, Skew: time.Second}, 1700000000 + 1, ""},
		{Window{MaxAge: 10 * time.Second, Skew: time.Second}, 1700000000 + 2, "future"},
		{Window{MaxAge: 1500 * time.Millisecond}, 1700000000 - 1, ""},
		{Window{MaxAge: 1500 * time.Millisecond}, 1700000000 - 2, "expired"},
		{Window{}, 999999999999999, "future"},
	}
	for _, c := range cases {
		if got := ErrorClass(c.w.CheckCreated(c.created, now)); got != c.want {
			t.Errorf("%+v created %d: %q, want %q", c.w, c.created, got, c.want)
		}
	}
}

func profileRequest(body bool) *Request {
	r := &Request{Method: "POST", Authority: "example.com", Path: "/foo", Query: "a=b"}
	if body {
		r.ContentDigest = ContentDigest([]byte("body"))
	}
	return r
}

func TestSignVerifyRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 20))
	for i := 0; i < 200; i++ {
		k := randKey(rng)
		r := profileRequest(i%2 == 0)
		r.Path = "/" + strings.Repeat("p", rng.IntN(100))
		p := Params{Created: rng.Int64N(1e15), KeyID: KeyID{Lane: LaneID(randBytes(rng, 16)), Epoch: rng.Uint32()}, Nonce: 1 + rng.Uint64N(1<<63-1)}
		in, sig, err := NewSigner(&k).Sign(r, &p)
		if err != nil {
			t.Fatal(err)
		}
		if p.HasBody != (i%2 == 0) {
			t.Fatal("Sign did not set HasBody")
		}
		s, err := ParseSigned(in, sig)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if s.Params != p {
			t.Fatalf("parsed %+v, signed %+v", s.Params, p)
		}
		if err := NewVerifier(&k).Verify(s, r); err != nil {
			t.Fatal(err)
		}
		k[i%KeySize] ^= 1
		if err := NewVerifier(&k).Verify(s, r); ErrorClass(err) != "bad_signature" {
			t.Fatalf("other key: %v", err)
		}
	}
}

func TestSignRefusesBadComponents(t *testing.T) {
	k := Key{1}
	s := NewSigner(&k)
	for name, r := range map[string]*Request{
		"no method":          {Authority: "a"},
		"no authority":       {Method: "GET"},
		"control in path":    {Method: "GET", Authority: "a", Path: "/a\x00b"},
		"newline in query":   {Method: "GET", Authority: "a", Query: "a\nb"},
		"DEL in authority":   {Method: "GET", Authority: "a\x7f"},
		"CR in digest":       {Method: "GET", Authority: "a", ContentDigest: "x\r"},
		"long path":          {Method: "GET", Authority: "a", Path: "/" + strings.Repeat("a", MaxComponentLen)},
		"long authority":     {Method: "GET", Authority: strings.Repeat("a", MaxComponentLen+1)},
		"newline in method":  {Method: "GET\n", Authority: "a"},
		"control in a field": {Method: "GET", Authority: "a", Path: "/\x1f"},
	} {
		p := Params{Created: 1, Nonce: 1}
		if _, _, err := s.Sign(r, &p); err == nil {
			t.Errorf("%s: signed", name)
		} else if c := ErrorClass(err); c == "" || c == "bad_signature" {
			t.Errorf("%s: %v", name, err)
		}
	}
	// HTAB is allowed.
	p := Params{Created: 1, Nonce: 1}
	if _, _, err := s.Sign(&Request{Method: "GET", Authority: "a", Path: "/a\tb"}, &p); err != nil {
		t.Fatalf("HTAB: %v", err)
	}
}

func TestVerifyDigestCoverage(t *testing.T) {
	k := Key{2}
	p := Params{Created: 1, Nonce: 1}
	in, sig, _ := NewSigner(&k).Sign(profileRequest(false), &p)
	s, err := ParseSigned(in, sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := NewVerifier(&k).Verify(s, profileRequest(true)); ErrorClass(err) != "digest" {
		t.Fatalf("body added: %v", err)
	}
	in, sig, _ = NewSigner(&k).Sign(profileRequest(true), &p)
	s, _ = ParseSigned(in, sig)
	if err := NewVerifier(&k).Verify(s, profileRequest(false)); ErrorClass(err) != "digest" {
		t.Fatalf("body removed: %v", err)
	}
}

func TestCheckContentDigest(t *testing.T) {
	body := []byte(`{"hello": "world"}`)
	sum := sha256.Sum256(body)
	good := ContentDigest(body)
	if good != "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:" { // RFC 9530 section 2 example
		t.Fatalf("ContentDigest = %s", good)
	}
	if DigestValue(&sum) != good {
		t.Fatal("DigestValue differs")
	}
	cases := map[string]string{
		good:                          "",
		"sha-512=:AA==:, " + good:     "",
		good + ", unixsum=:AA==:":     "",
		"sha-512=:AA==:":              "digest",
		"sha-256=:AA==:":              "digest",
		"sha-256=(:" + good[9:] + ")": "digest",
		"sha-256=\"x\"":               "digest",
		"sha-256=:" + ContentDigest([]byte("x"))[9:]:               "digest",
		"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:;p": "",
		"sha-256 =:AA==:": "malformed",
		"":                "malformed",
		"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE:": "malformed",
	}
	for field, want := range cases {
		if got := ErrorClass(CheckContentDigest(field, &sum)); got != want {
			t.Errorf("%q: %q, want %q", field, got, want)
		}
	}
}

func TestVerifyAnyRefusals(t *testing.T) {
	key := rfcSharedSecret(t)
	r := vectorRequest(t, loadVectors(t, "rfc9421-b25.txt")[0])
	for name, c := range map[string][3]string{
		"component parameter": {`sig-b25=("date";sf "@authority" "content-type");created=1618884473;keyid="test-shared-secret"`, rfcB25Signature, "profile"},
		"token component":     {`sig-b25=(date "@authority" "content-type");created=1618884473;keyid="test-shared-secret"`, rfcB25Signature, "profile"},
		"unknown derived":     {`sig-b25=("@target-uri");created=1618884473`, rfcB25Signature, "profile"},
		"signature not bytes": {rfcB25SignatureInput, `sig-b25="x"`, "profile"},
		"signature missing":   {rfcB25SignatureInput, `other=:AA==:`, "profile"},
		"short signature":     {rfcB25SignatureInput, `sig-b25=:AA==:`, "bad_signature"},
		"bad Signature":       {rfcB25SignatureInput, `sig-b25=:AA=:`, "malformed"},
	} {
		if got := ErrorClass(VerifyAny(c[0], c[1], "sig-b25", key, r)); got != c[2] {
			t.Errorf("%s: %q, want %q", name, got, c[2])
		}
	}
}

// TestVerifyAllocs pins the budget of the budgets in README.md, "What it costs": a Verifier reused across requests
// allocates nothing in Verify, and the whole verify path allocates single digits.
func TestVerifyAllocs(t *testing.T) {
	k := Key{3}
	r := profileRequest(true)
	p := Params{Created: 1700000000, KeyID: KeyID{Epoch: 1}, Nonce: 1}
	in, sig, _ := NewSigner(&k).Sign(r, &p)
	v := NewVerifier(&k)
	s, _ := ParseSigned(in, sig)
	if n := testing.AllocsPerRun(100, func() {
		if err := v.Verify(s, r); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Verify allocates %v times", n)
	}
	sum := sha256.Sum256([]byte("body"))
	now := time.Unix(1700000001, 0)
	n := testing.AllocsPerRun(100, func() {
		s, err := ParseSigned(in, sig)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(s, r); err != nil {
			t.Fatal(err)
		}
		if err := (Window{}).CheckCreated(s.Created, now); err != nil {
			t.Fatal(err)
		}
		if err := CheckContentDigest(r.ContentDigest, &sum); err != nil {
			t.Fatal(err)
		}
	})
	if n >= 10 {
		t.Errorf("full verify allocates %v times", n)
	}
	t.Logf("full verify: %v allocations", n)
}
