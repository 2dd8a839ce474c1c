package protocol

// Fuzz targets for every parser, seeded from testdata/*.txt. A target that finds no seed fails:
// an empty seed corpus would fuzz nothing useful and hide a broken testdata glob.
//
//	go test ./internal/protocol -run '^$' -fuzz FuzzParseDictionary -fuzztime 20s

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"
)

func seedCount(f *testing.F, n int) {
	f.Helper()
	if n == 0 {
		f.Fatal("no seeds loaded from testdata")
	}
	f.Logf("%d seeds", n)
}

// sfSeeds returns every structured field value in the vectors.
func sfSeeds(f *testing.F) []string {
	var out []string
	for _, v := range loadVectors(f, "*.txt") {
		for _, k := range []string{"signature-input", "signature", "content-digest"} {
			out = append(out, v.all(k)...)
		}
	}
	return out
}

// FuzzParseDictionary: parse never panics and every error has a class; whatever parses is
// canonical (Append returns the input exactly) and is the serialization httpsfv, an independent
// RFC 8941 implementation, produces for it.
func FuzzParseDictionary(f *testing.F) {
	seeds := append(sfSeeds(f), canonicalDicts...)
	for s := range nonCanonicalDicts {
		seeds = append(seeds, s)
	}
	for _, s := range seeds {
		f.Add(s)
	}
	seedCount(f, len(seeds))
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDictionary(s)
		// The lazy parse that ParseSigned uses accepts and refuses the same, with the same error.
		var buf [2]Member
		ld, lerr := parseDictionaryInto(s, buf[:0], true)
		if (err == nil) != (lerr == nil) || (err != nil && err.Error() != lerr.Error()) {
			t.Fatalf("%q: eager %v, lazy %v", s, err, lerr)
		}
		if err != nil {
			if ErrorClass(err) == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		for i := range d {
			if ld[i].Key != d[i].Key || ld[i].Raw != d[i].Raw || ld[i].IsInner != d[i].IsInner {
				t.Fatalf("%q: lazy member %d differs", s, i)
			}
		}
		if got := string(d.Append(nil)); got != s {
			t.Fatalf("Append(Parse(%q)) = %q", s, got)
		}
		for _, m := range d {
			if m.IsInner {
				items, ps, err := ParseInnerList(m.Raw)
				if err != nil || string(AppendInnerList(nil, items, ps)) != m.Raw {
					t.Fatalf("member %q: Raw %q does not reparse: %v", m.Key, m.Raw, err)
				}
			}
		}
		hd, err := httpsfv.UnmarshalDictionary([]string{s})
		if err != nil {
			t.Fatalf("httpsfv refuses %q, which we accept: %v", s, err)
		}
		if hs, err := httpsfv.Marshal(hd); err != nil || hs != s {
			t.Fatalf("httpsfv serializes %q as %q (%v)", s, hs, err)
		}
	})
}

func FuzzParseInnerList(f *testing.F) {
	var n int
	for _, s := range sfSeeds(f) {
		if _, m, ok := strings.Cut(s, "="); ok && strings.HasPrefix(m, "(") {
			f.Add(m)
			n++
		}
	}
	seedCount(f, n)
	f.Fuzz(func(t *testing.T, s string) {
		items, ps, err := ParseInnerList(s)
		if err != nil {
			if ErrorClass(err) == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if got := string(AppendInnerList(nil, items, ps)); got != s {
			t.Fatalf("AppendInnerList(Parse(%q)) = %q", s, got)
		}
	})
}

func FuzzParseKeyID(f *testing.F) {
	var n int
	for _, v := range loadVectors(f, "*.txt") {
		for _, k := range v.all("keyid") {
			f.Add(k)
			n++
		}
	}
	seedCount(f, n)
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseKeyID(s)
		if err != nil {
			if ErrorClass(err) != "malformed" {
				t.Fatalf("class of %v", err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("ParseKeyID(%q).String() = %q", s, id.String())
		}
	})
}

// FuzzDecodeMessage: decode never panics; what decodes re-encodes to the input exactly; list and
// integer accessors on every field never panic and round-trip what they accept.
func FuzzDecodeMessage(f *testing.F) {
	vs := loadVectors(f, "abi-*.txt")
	for _, v := range vs {
		f.Add(v.hex(f, "message"))
	}
	seedCount(f, len(vs))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			if ErrorClass(err) == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if got := m.Append(nil); !bytes.Equal(got, b) {
			t.Fatalf("Append(Decode(%x)) = %x", b, got)
		}
		if len(m.Fields) > MaxFields {
			t.Fatalf("%d fields", len(m.Fields))
		}
		for _, fl := range m.Fields {
			if items, err := SplitList(fl.Value, MaxFields); err == nil {
				if got := AppendList(nil, items); !bytes.Equal(got, fl.Value) {
					t.Fatalf("AppendList(SplitList(%x)) = %x", fl.Value, got)
				}
			}
			if n, ok, err := m.Uint(fl.Tag); ok && err == nil {
				if got := AppendUintField(nil, fl.Tag, n); !bytes.Equal(got[2:], fl.Value) {
					t.Fatalf("Uint field %x re-encodes as %x", fl.Value, got[2:])
				}
			}
		}
	})
}

func FuzzSplitList(f *testing.F) {
	var n int
	for _, v := range loadVectors(f, "abi-*.txt") {
		m, err := DecodeMessage(v.hex(f, "message"))
		if err != nil {
			continue
		}
		for _, fl := range m.Fields {
			f.Add(fl.Value)
			n++
		}
	}
	seedCount(f, n)
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := SplitList(b, 16)
		if err != nil {
			if c := ErrorClass(err); c != "malformed" && c != "too_large" {
				t.Fatalf("class of %v", err)
			}
			return
		}
		if got := AppendList(nil, items); !bytes.Equal(got, b) {
			t.Fatalf("AppendList(SplitList(%x)) = %x", b, got)
		}
	})
}

// FuzzParseSignedVerify: ParseSigned and Verify never panic on any headers and request; a
// signature that verifies is exactly what the Signer writes for the parsed parameters (no two
// spellings of one signature verify).
func FuzzParseSignedVerify(f *testing.F) {
	vs := loadVectors(f, "sign-*.txt")
	var key Key
	for _, v := range vs {
		if v.name == "sign-post-body.txt" {
			key = Key(v.hex(f, "sign-key"))
		}
		f.Add(v.get(f, "signature-input"), v.get(f, "signature"), v.get(f, "method"), v.get(f, "authority"),
			v.get(f, "path"), v.get(f, "query"), v.get(f, "content-digest"), v.payload)
	}
	seedCount(f, len(vs))
	if key.IsZero() {
		f.Fatal("no sign-post-body.txt")
	}
	verifier := NewVerifier(&key)
	f.Fuzz(func(t *testing.T, sigInput, signature, method, authority, path, query, contentDigest string, body []byte) {
		s, err := ParseSigned(sigInput, signature)
		ref, rerr := parseSignedEager(sigInput, signature)
		if (err == nil) != (rerr == nil) || (err != nil && err.Error() != rerr.Error()) || (err == nil && *s != *ref) {
			t.Fatalf("ParseSigned = %+v, %v; eager reference = %+v, %v", s, err, ref, rerr)
		}
		if err != nil {
			if ErrorClass(err) == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		r := &Request{Method: method, Authority: authority, Path: path, Query: query, ContentDigest: contentDigest}
		if err := verifier.Verify(s, r); err != nil {
			if ErrorClass(err) == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		_ = (Window{}).CheckCreated(s.Created, timeUnix(s.Created))
		sum := sha256.Sum256(body)
		if contentDigest != "" {
			_ = CheckContentDigest(contentDigest, &sum)
		}
		p := s.Params
		in, sig, err := NewSigner(&key).Sign(r, &p)
		if err != nil {
			t.Fatalf("verified but cannot re-sign: %v", err)
		}
		inD, _ := ParseDictionary(sigInput)
		sgD, _ := ParseDictionary(signature)
		im, _ := inD.Get(Label)
		sm, _ := sgD.Get(Label)
		if in != Label+"="+im.Raw || sig != Label+"="+sm.Raw {
			t.Fatalf("verified %q / %q, but the signer writes %q / %q", sigInput, signature, in, sig)
		}
	})
}

// FuzzParseEvent: ParseEvent and OpenEvent never panic; what parses re-encodes to the same body,
// and what opens re-seals to the same bytes.
func FuzzParseEvent(f *testing.F) {
	vs := loadVectors(f, "event-*.txt")
	var key Key
	var n int
	for _, v := range vs {
		if !v.has("sealed") {
			continue
		}
		if v.name == "event-revoked.txt" {
			key = Key(v.hex(f, "event-key"))
		}
		f.Add(v.hex(f, "sealed"))
		n++
	}
	seedCount(f, n)
	if key.IsZero() {
		f.Fatal("no event-revoked.txt")
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEvent(b)
		if err != nil {
			if ErrorClass(err) == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if body := e.appendBody(nil); !bytes.Equal(body, b[:len(b)-TagSize]) {
			t.Fatalf("ParseEvent(%x) re-encodes as %x", b, body)
		}
		o, err := OpenEvent(&key, b)
		if err != nil {
			if ErrorClass(err) != "bad_signature" {
				t.Fatalf("parsed but does not open: %v", err)
			}
			return
		}
		sealed, err := SealEvent(&key, &o)
		if err != nil || !bytes.Equal(sealed, b) {
			t.Fatalf("opened %x re-seals as %x (%v)", b, sealed, err)
		}
	})
}

func timeUnix(s int64) time.Time { return time.Unix(s, 0) }

// parseSignedEager is ParseSigned as first written, over the fully built dictionary tree: the
// reference that the allocation-free ParseSigned must agree with, error for error.
func parseSignedEager(sigInput, signature string) (*Signed, error) {
	in, err := ParseDictionary(sigInput)
	if err != nil {
		return nil, err
	}
	sg, err := ParseDictionary(signature)
	if err != nil {
		return nil, err
	}
	m, ok := in.Get(Label)
	if !ok || !m.IsInner {
		return nil, &parseError{what: "no inner list labelled \"sv\" in Signature-Input", class: ErrProfile}
	}
	sm, ok := sg.Get(Label)
	if !ok || sm.IsInner || sm.Item.Kind != KindBytes || len(sm.Params) != 0 {
		return nil, &parseError{what: "no byte sequence labelled \"sv\" in Signature", class: ErrProfile}
	}
	if len(sm.Item.Bytes) != TagSize {
		return nil, &parseError{what: "signature must be 32 bytes", class: ErrProfile}
	}
	s := &Signed{raw: m.Raw}
	copy(s.tag[:], sm.Item.Bytes)
	switch len(m.Inner) {
	case 4, 5:
	default:
		return nil, &parseError{what: "covered components are not the profile's", class: ErrProfile}
	}
	for i, it := range m.Inner {
		if it.Kind != KindString || len(it.Params) != 0 || it.Str != profileNames[i] {
			return nil, &parseError{what: "covered components are not the profile's", class: ErrProfile}
		}
	}
	s.HasBody = len(m.Inner) == 5
	if len(m.Params) != 5 {
		return nil, &parseError{what: "signature parameters are not the profile's", class: ErrProfile}
	}
	var seen uint8
	for _, p := range m.Params {
		var bit uint8
		v := p.Value
		switch p.Key {
		case "created":
			bit = 1
			if v.Kind != KindInteger || v.Int < 0 {
				return nil, &parseError{what: "created must be a non-negative integer", class: ErrProfile}
			}
			s.Created = v.Int
		case "keyid":
			bit = 2
			if v.Kind != KindString {
				return nil, &parseError{what: "keyid must be a string", class: ErrProfile}
			}
			if s.KeyID, err = ParseKeyID(v.Str); err != nil {
				return nil, err
			}
		case "nonce":
			bit = 4
			var ok bool
			if v.Kind == KindString {
				s.Nonce, ok = parseCanonicalUint(v.Str, 1<<63-1)
			}
			if !ok || s.Nonce == 0 {
				return nil, &parseError{what: "nonce must be a positive decimal string", class: ErrProfile}
			}
		case "alg":
			bit = 8
			if v.Kind != KindString || v.Str != Alg {
				return nil, &parseError{what: "alg must be \"hmac-sha256\"", class: ErrProfile}
			}
		case "tag":
			bit = 16
			if v.Kind != KindString || v.Str != Tag {
				return nil, &parseError{what: "tag must be \"sessionvault\"", class: ErrProfile}
			}
		default:
			return nil, &parseError{what: "unexpected signature parameter " + quote(p.Key), class: ErrProfile}
		}
		seen |= bit
	}
	if seen != 31 {
		return nil, &parseError{what: "signature parameters are not the profile's", class: ErrProfile}
	}
	return s, nil
}
