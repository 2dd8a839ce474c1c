package vault

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

func TestSignVerifies(t *testing.T) {
	h := active(t)
	reqs := []SignRequest{
		getMe,
		{Method: "GET", Origin: appOrigin, Path: "/api/items", Query: "page=2&sort=name"},
		{Method: "POST", Origin: appOrigin, Path: "/api/items", Body: []byte(`{"name":"x"}`), HasBody: true},
		{Method: "DELETE", Origin: appOrigin, Path: "/api/items/7"},
		{Method: "PUT", Origin: appOrigin, Path: "/api/items/7", Query: "a=%20b", Body: []byte("x"), HasBody: true},
	}
	for _, r := range reqs {
		sig, signed := h.sign(r)
		if signed.KeyID.Lane != h.srv.lane || signed.KeyID.Epoch != 0 {
			t.Fatalf("keyid %s", signed.KeyID)
		}
		if !strings.HasPrefix(sig.SignatureInput, "sv=(") || !strings.HasPrefix(sig.Signature, "sv=:") {
			t.Fatalf("field values %q %q", sig.SignatureInput, sig.Signature)
		}
		// A signature covers every component: change any and the server refuses it.
		for _, alt := range []SignRequest{
			{Method: "PATCH", Origin: r.Origin, Path: r.Path, Query: r.Query, Body: r.Body, HasBody: r.HasBody},
			{Method: r.Method, Origin: "https://other.example", Path: r.Path, Query: r.Query, Body: r.Body, HasBody: r.HasBody},
			{Method: r.Method, Origin: r.Origin, Path: r.Path + "x", Query: r.Query, Body: r.Body, HasBody: r.HasBody},
			{Method: r.Method, Origin: r.Origin, Path: r.Path, Query: r.Query + "&x", Body: r.Body, HasBody: r.HasBody},
		} {
			if _, err := h.srv.verify(alt, sig); protocol.ErrorClass(err) != "bad_signature" {
				t.Fatalf("%+v verified for %+v: %v", sig, alt, err)
			}
		}
		if r.HasBody {
			alt := r
			alt.Body = append([]byte("tampered"), r.Body...)
			if _, err := h.srv.verify(alt, sig); protocol.ErrorClass(err) != "digest" {
				t.Fatalf("a changed body verified: %v", err)
			}
		}
	}
}

func TestSignNonceIncreases(t *testing.T) {
	h := active(t)
	var last uint64
	for i := 0; i < 200; i++ {
		r := getMe
		if i%3 == 0 {
			r = SignRequest{Method: "POST", Origin: appOrigin, Path: "/api/x", Body: []byte{byte(i)}, HasBody: true}
		}
		if i%7 == 0 {
			// Refused requests neither consume nor reuse a nonce.
			_, err := h.v.Sign(SignRequest{Method: "GET", Origin: "https://evil.example", Path: "/"})
			wantCode(t, err, CodePolicyDenied)
			_, err = h.v.Sign(SignRequest{Method: "GET", Origin: appOrigin, Path: "/", Query: "a b"})
			wantCode(t, err, CodeBadInput)
		}
		if i == 100 {
			h.rotate() // nonces keep increasing across a rotation
		}
		_, s := h.sign(r)
		if s.Nonce != last+1 {
			t.Fatalf("request %d: nonce %d after %d", i, s.Nonce, last)
		}
		last = s.Nonce
	}
}

// The vault learns the server's clock at Finish, so a local clock an hour off still produces
// `created` within the server's window.
func TestSignCreatedUsesServerClock(t *testing.T) {
	for _, skew := range []time.Duration{time.Hour, -time.Hour, 0, 37 * time.Second, -26*time.Hour - 3*time.Millisecond} {
		h := newHarness(t, skew)
		h.login()
		if got, want := h.v.Status().OffsetMs, -skew.Milliseconds(); got != want {
			t.Fatalf("skew %v: offset %d ms, want %d", skew, got, want)
		}
		for i := 0; i < 3; i++ {
			_, s := h.sign(getMe) // h.sign checks the server's window
			if s.Created != h.remote.now().Unix() {
				t.Fatalf("skew %v: created %d, server now %d", skew, s.Created, h.remote.now().Unix())
			}
			h.advance(45 * time.Second)
		}
		// Without the offset, the local clock's time would be refused by the server.
		if skew.Abs() > protocol.DefaultMaxAge {
			if err := (protocol.Window{}).CheckCreated(h.local.now().Unix(), h.remote.now()); err == nil {
				t.Fatalf("skew %v: the control should fail the window", skew)
			}
		}
	}
}

const emptyDigest = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"

func TestSignContentDigest(t *testing.T) {
	h := active(t)
	cases := []struct {
		name   string
		r      SignRequest
		digest string
	}{
		{"no body", SignRequest{Method: "GET", Origin: appOrigin, Path: "/x"}, ""},
		{"no body, bytes ignored", SignRequest{Method: "GET", Origin: appOrigin, Path: "/x", Body: []byte("x")}, ""},
		{"empty body", SignRequest{Method: "POST", Origin: appOrigin, Path: "/x", HasBody: true}, emptyDigest},
		{"empty non-nil body", SignRequest{Method: "POST", Origin: appOrigin, Path: "/x", Body: []byte{}, HasBody: true}, emptyDigest},
		{"body", SignRequest{Method: "POST", Origin: appOrigin, Path: "/x", Body: []byte(`{"hello": "world"}`), HasBody: true},
			"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"}, // RFC 9530 appendix
	}
	for _, c := range cases {
		sig, _ := h.sign(c.r)
		if sig.ContentDigest != c.digest {
			t.Fatalf("%s: digest %q, want %q", c.name, sig.ContentDigest, c.digest)
		}
		if got := strings.Contains(sig.SignatureInput, `"content-digest"`); got != c.r.HasBody {
			t.Fatalf("%s: content-digest covered %v", c.name, got)
		}
		// Through the ABI: field 3 iff the request has a body (field 5 present, even empty).
		fs := []protocol.Field{sfield(1, c.r.Method), sfield(2, c.r.Origin), sfield(3, c.r.Path)}
		if c.r.HasBody {
			fs = append(fs, field(5, c.r.Body))
		}
		m := mustCall(t, h.v, msg(OpSign, fs...))
		d, ok := m.Get(3)
		if ok != c.r.HasBody || string(d) != c.digest {
			t.Fatalf("%s: ABI digest %q present %v", c.name, d, ok)
		}
		in, _ := m.Get(1)
		sg, _ := m.Get(2)
		if _, err := h.srv.verify(c.r, Signature{SignatureInput: string(in), Signature: string(sg), ContentDigest: string(d)}); err != nil {
			t.Fatalf("%s: ABI signature refused: %v", c.name, err)
		}
	}
	// A body signature presented without its digest, or a bodyless one with a digest, is refused.
	withBody, _ := h.sign(cases[2].r)
	withBody.ContentDigest = ""
	if _, err := verifyUnder(h.srv.key, cases[2].r, withBody); !errors.Is(err, protocol.ErrDigest) {
		t.Fatalf("digest stripped: %v", err)
	}
	noBody, _ := h.sign(cases[0].r)
	noBody.ContentDigest = emptyDigest
	if _, err := verifyUnder(h.srv.key, cases[0].r, noBody); !errors.Is(err, protocol.ErrDigest) {
		t.Fatalf("digest added: %v", err)
	}
}

func TestSignQuery(t *testing.T) {
	h := active(t)
	for _, q := range []string{"", "a=1", "a=1&b=2", "q=%20x%2F%23", "a=b?c", "x", "=", "a=b/c", "k=" + strings.Repeat("v", 1000),
		strings.Repeat("q", protocol.MaxComponentLen-1)} { // @query is "?" + query
		r := SignRequest{Method: "GET", Origin: appOrigin, Path: "/api", Query: q}
		sig, _ := h.sign(r)
		// "" and a bare "?" are the same request: @query is "?" for both.
		if q == "" {
			alt := r
			alt.Query = ""
			if _, err := verifyUnder(h.srv.key, alt, sig); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []struct{ q, code string }{
		{"a b", CodeBadInput},
		{"a=#x", CodeBadInput},
		{"#", CodeBadInput},
		{"a=\x00", CodeBadInput},
		{"a=\t", CodeBadInput},
		{"a=\r\nX-Evil: 1", CodeBadInput},
		{"a=\x7f", CodeBadInput},
		{"a=\x80", CodeBadInput},
		{"q=é", CodeBadInput},
		{strings.Repeat("q", protocol.MaxComponentLen), CodeTooLarge},
		{strings.Repeat("q", protocol.MaxComponentLen+1), CodeTooLarge},
	} {
		before := snapshot(h.v)
		_, err := h.v.Sign(SignRequest{Method: "GET", Origin: appOrigin, Path: "/api", Query: c.q})
		wantCode(t, err, c.code)
		unchanged(t, h.v, before, "a refused query")
	}
}

// Through the ABI, sizes are bounded before anything is signed.
func TestSignABILimits(t *testing.T) {
	h := active(t)
	for _, c := range []struct {
		name string
		in   []byte
		code string
	}{
		{"method too long", msg(OpSign, sfield(1, strings.Repeat("A", 17)), sfield(2, appOrigin), sfield(3, "/")), CodeTooLarge},
		{"origin too long", msg(OpSign, sfield(1, "GET"), sfield(2, "https://"+strings.Repeat("a", 250)), sfield(3, "/")), CodeTooLarge},
		{"path too long", msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/"+strings.Repeat("a", protocol.MaxComponentLen))), CodeTooLarge},
		{"query too long", msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/"), sfield(4, strings.Repeat("a", protocol.MaxComponentLen+1))), CodeTooLarge},
		{"query one too long", msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/"), sfield(4, strings.Repeat("a", protocol.MaxComponentLen))), CodeTooLarge},
		{"denied", msg(OpSign, sfield(1, "GET"), sfield(2, "https://evil.example"), sfield(3, "/")), CodePolicyDenied},
		{"bad query", msg(OpSign, sfield(1, "GET"), sfield(2, appOrigin), sfield(3, "/"), sfield(4, "a b")), CodeBadInput},
	} {
		before := snapshot(h.v)
		if code, _ := call(t, h.v, c.in); code != c.code {
			t.Fatalf("%s: %s, want %s", c.name, code, c.code)
		}
		unchanged(t, h.v, before, c.name)
	}
	// A large body is fine.
	body := make([]byte, 1<<20)
	m := mustCall(t, h.v, msg(OpSign, sfield(1, "POST"), sfield(2, appOrigin), sfield(3, "/up"), field(5, body)))
	if d, _ := m.Get(3); string(d) != protocol.ContentDigest(body) {
		t.Fatalf("digest %q", d)
	}
}
