package fastsig

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// vector is one sign-*.txt or rfc9421-*.txt file of internal/protocol/testdata (key: value
// header lines, a blank line, a payload).
type vector struct {
	name string
	f    map[string][]string
}

func (v vector) get(k string) string {
	if len(v.f[k]) == 0 {
		return ""
	}
	return v.f[k][0]
}

func loadVectors(t testing.TB) []vector {
	files, err := filepath.Glob("../../../internal/protocol/testdata/sign-*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no sign vectors: %v", err)
	}
	var out []vector
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		v := vector{name: filepath.Base(name), f: map[string][]string{}}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				break
			}
			k, val, ok := strings.Cut(line, ": ")
			if !ok {
				k, val = strings.TrimSuffix(line, ":"), ""
			}
			v.f[k] = append(v.f[k], val)
		}
		out = append(out, v)
	}
	return out
}

func (v vector) request() *protocol.Request {
	return &protocol.Request{Method: v.get("method"), Authority: v.get("authority"), Path: v.get("path"), Query: v.get("query"), ContentDigest: v.get("content-digest")}
}

// check is the differential invariant: when Parse accepts, ParseSigned accepts with the same
// parameters, AppendBase equals protocol.SignatureBase, and a MAC under key over our base agrees
// with protocol.Verifier.
func check(t *testing.T, in, sig string, r *protocol.Request, key *protocol.Key) (fast bool) {
	t.Helper()
	var s Signed
	if !Parse(in, sig, &s) {
		return false
	}
	ref, err := protocol.ParseSigned(in, sig)
	if err != nil {
		t.Fatalf("fast path accepted what ParseSigned refuses (%v):\n%q\n%q", err, in, sig)
	}
	if ref.Params != s.Params {
		t.Fatalf("params differ: fast %+v, reference %+v", s.Params, ref.Params)
	}
	if s.Raw != in[len("sv="):] {
		t.Fatalf("raw %q", s.Raw)
	}
	if r == nil || s.HasBody != (r.ContentDigest != "") {
		return true
	}
	p := s.Params
	want, werr := protocol.SignatureBase(r, &p)
	got, gerr := AppendBase(nil, r, &s)
	if (werr == nil) != (gerr == nil) || werr == nil && string(got) != want {
		t.Fatalf("base differs:\nfast %q (%v)\nref  %q (%v)", got, gerr, want, werr)
	}
	if werr != nil || key == nil {
		return true
	}
	mac := protocol.NewMAC(key[:])
	mac.Reset()
	mac.Write(got)
	mac.Sum()
	fastOK := mac.Equal(s.Tag[:])
	refOK := protocol.NewVerifier(key).Verify(ref, r) == nil
	if fastOK != refOK {
		t.Fatalf("verification differs: fast %v, reference %v", fastOK, refOK)
	}
	return true
}

func TestVectors(t *testing.T) {
	vs := loadVectors(t)
	taken := 0
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			var key *protocol.Key
			if kh := v.get("sign-key"); kh != "" {
				b, err := hex.DecodeString(kh)
				if err != nil || len(b) != 32 {
					t.Fatalf("sign-key %q", kh)
				}
				key = new(protocol.Key)
				copy(key[:], b)
			}
			in, sig := v.get("signature-input"), v.get("signature")
			if in == "" || sig == "" {
				t.Skip("no signature fields")
			}
			if check(t, in, sig, v.request(), key) {
				taken++
				if strings.Contains(in, ", ") {
					t.Error("fast path took a field with other members")
				}
			} else if v.get("expect") == "ok" && !strings.Contains(in, ", ") && !strings.Contains(sig, ", ") {
				t.Errorf("fast path refused a canonical single-label signature: %q", in)
			}
		})
	}
	if taken < 5 {
		t.Fatalf("fast path took only %d vectors", taken)
	}
}

func randRequest(rng *rand.Rand) *protocol.Request {
	pick := func(opts ...string) string { return opts[rng.IntN(len(opts))] }
	r := &protocol.Request{
		Method:    pick("GET", "POST", "PUT", "DELETE", "get"),
		Authority: pick("app.example", "app.example:8443", "[::1]:8080", "x"),
		Path:      pick("", "/", "/api/v1/items/42", "/a%20b/c", "/ünï", "/tab\tpath", "/ctl\x01", strings.Repeat("/x", 5000)),
		Query:     pick("", "a=1&b=2", "q=%20", "x\x7fy"),
	}
	if rng.IntN(2) == 0 {
		r.ContentDigest = protocol.ContentDigest([]byte(pick("", "{}", "body")))
	}
	return r
}

func TestRandomSignaturesTakeTheFastPath(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var key protocol.Key
	for i := range key {
		key[i] = byte(i)
	}
	signer := protocol.NewSigner(&key)
	for i := range 3000 {
		r := randRequest(rng)
		p := protocol.Params{Created: rng.Int64N(1e15), Nonce: 1 + rng.Uint64N(1<<63-1), KeyID: protocol.KeyID{Epoch: rng.Uint32()}}
		if i%7 == 0 {
			p.Created, p.Nonce, p.KeyID.Epoch = 0, 1<<63-1, 0
		}
		for j := range p.KeyID.Lane {
			p.KeyID.Lane[j] = byte(rng.Uint32())
		}
		in, sig, err := signer.Sign(r, &p)
		if err != nil {
			continue // a component the profile refuses; nothing to take
		}
		if !check(t, in, sig, r, &key) {
			t.Fatalf("fast path refused the signer's output %q %q", in, sig)
		}
		// Mutations: whatever the fast path still takes, the reference takes the same way.
		for range 20 {
			mi, ms := mutate(rng, in), sig
			if rng.IntN(3) == 0 {
				mi, ms = in, mutate(rng, sig)
			}
			check(t, mi, ms, r, &key)
		}
	}
}

func mutate(rng *rand.Rand, s string) string {
	b := []byte(s)
	const alphabet = "\"();=:., -09az_AZ+/\r\n\t\x00?*"
	switch rng.IntN(4) {
	case 0:
		if len(b) > 0 {
			b[rng.IntN(len(b))] = alphabet[rng.IntN(len(alphabet))]
		}
	case 1:
		i := rng.IntN(len(b) + 1)
		b = append(b[:i], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[i:]...)...)
	case 2:
		if len(b) > 0 {
			i := rng.IntN(len(b))
			b = append(b[:i], b[i+1:]...)
		}
	case 3:
		if len(b) > 0 {
			b[rng.IntN(len(b))] ^= 1 << rng.IntN(8)
		}
	}
	return string(b)
}

func TestParseAllocations(t *testing.T) {
	var key protocol.Key
	r := &protocol.Request{Method: "GET", Authority: "app.example", Path: "/api/items", Query: "id=42"}
	in, sig, err := protocol.NewSigner(&key).Sign(r, &protocol.Params{Created: 1700000000, Nonce: 7})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	var s Signed
	n := testing.AllocsPerRun(100, func() {
		if !Parse(in, sig, &s) {
			t.Fatal("refused")
		}
		buf, _ = AppendBase(buf[:0], r, &s)
	})
	if n != 0 {
		t.Errorf("%v allocations per parse and base", n)
	}
}

func FuzzParse(f *testing.F) {
	seeds := 0
	for _, v := range loadVectors(f) {
		if in, sig := v.get("signature-input"), v.get("signature"); in != "" {
			f.Add(in, sig)
			seeds++
		}
	}
	if seeds == 0 {
		f.Fatal("no seeds")
	}
	var key protocol.Key
	key[0] = 1
	f.Fuzz(func(t *testing.T, in, sig string) {
		r := &protocol.Request{Method: "POST", Authority: "example.com", Path: "/foo", Query: "param=Value&Pet=dog", ContentDigest: "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"}
		check(t, in, sig, r, &key)
		r.ContentDigest = ""
		check(t, in, sig, r, &key)
	})
}

func BenchmarkParseAndBase(b *testing.B) {
	var key protocol.Key
	r := &protocol.Request{Method: "GET", Authority: "app.example", Path: "/api/items", Query: "id=42"}
	in, sig, _ := protocol.NewSigner(&key).Sign(r, &protocol.Params{Created: 1700000000, Nonce: 7})
	buf := make([]byte, 0, 512)
	var s Signed
	b.ReportAllocs()
	for b.Loop() {
		Parse(in, sig, &s)
		buf, _ = AppendBase(buf[:0], r, &s)
	}
}

// FuzzDifferential is FuzzParse with the request fuzzed too: for any fields and any method,
// authority, path, query and Content-Digest, whatever the fast path takes the reference takes
// with the same parameters, the same signature base (or the same refusal of a component) and the
// same verdict under the key.
func FuzzDifferential(f *testing.F) {
	var key protocol.Key
	key[0] = 1
	signer := protocol.NewSigner(&key)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 16 {
		r := randRequest(rng)
		if len(r.Path) > 100 {
			r.Path = r.Path[:100]
		}
		p := protocol.Params{Created: rng.Int64N(1e10), Nonce: 1 + rng.Uint64N(1e6), KeyID: protocol.KeyID{Epoch: rng.Uint32N(5)}}
		in, sig, err := signer.Sign(r, &p)
		if err != nil {
			continue
		}
		f.Add(in, sig, r.Method, r.Authority, r.Path, r.Query, r.ContentDigest)
	}
	f.Fuzz(func(t *testing.T, in, sig, method, authority, path, query, digest string) {
		r := &protocol.Request{Method: method, Authority: authority, Path: path, Query: query, ContentDigest: digest}
		check(t, in, sig, r, &key)
	})
}
