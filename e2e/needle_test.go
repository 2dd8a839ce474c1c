package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// Needle is one encoding of a secret, as it could appear in a haystack.
type Needle struct {
	Name  string // "hex", "base64url-nopad", "base64-core+1", ...
	Bytes []byte
}

// Encodings returns the forms of secret to look for. Every form is searched
// for as bytes in every haystack:
//
//   - raw: the bytes themselves; in a heap snapshot's string views (see
//     HeapSnapshot) this finds a "binary string" (one char per byte).
//   - hex, HEX: lower and upper case.
//   - base64, base64-nopad, base64url, base64url-nopad: the whole secret
//     encoded on its own.
//   - base64-core+N, base64url-core+N (N = 0, 1, 2): the stable middle of the
//     encoding when the secret sits at any offset inside a longer encoded
//     value (a key inside a JSON blob or a ticket); these find an embedded
//     secret that the forms above miss.
//   - base64-pct: base64 with + / = percent-encoded, as in a URL or a form.
//   - latin1-utf8: the UTF-8 of the binary string (one char per byte), as
//     TextEncoder or JSON.stringify + a UTF-8 body would write it.
//
// There is no separate UTF-16 form: a string that holds the secret's bytes as
// UTF-16 code units (TextDecoder("utf-16le") over the key, at any offset)
// shows the raw bytes in a heap snapshot's UTF-16 views, where "raw" finds it.
//
// A secret shorter than 8 bytes is refused (false positives); test secrets
// are 16 bytes or more.
func Encodings(secret []byte) []Needle {
	if len(secret) < 8 {
		panic(fmt.Sprintf("e2e: a %d-byte secret is too short to search for", len(secret)))
	}
	n := []Needle{
		{"raw", secret},
		{"hex", []byte(hex.EncodeToString(secret))},
		{"HEX", []byte(strings.ToUpper(hex.EncodeToString(secret)))},
		{"base64", []byte(base64.StdEncoding.EncodeToString(secret))},
		{"base64-nopad", []byte(base64.RawStdEncoding.EncodeToString(secret))},
		{"base64url", []byte(base64.URLEncoding.EncodeToString(secret))},
		{"base64url-nopad", []byte(base64.RawURLEncoding.EncodeToString(secret))},
		{"base64-pct", []byte(url.QueryEscape(base64.StdEncoding.EncodeToString(secret)))},
	}
	for off := range 3 {
		core := secret[off:]
		core = core[:len(core)/3*3]
		n = append(n,
			Needle{fmt.Sprintf("base64-core+%d", off), []byte(base64.RawStdEncoding.EncodeToString(core))},
			Needle{fmt.Sprintf("base64url-core+%d", off), []byte(base64.RawURLEncoding.EncodeToString(core))},
		)
	}
	var l1 []byte
	for _, c := range secret {
		l1 = utf8.AppendRune(l1, rune(c))
	}
	if !bytes.Equal(l1, secret) {
		n = append(n, Needle{"latin1-utf8", l1})
	}
	return n
}

// Finding is one place where a secret was found.
type Finding struct {
	Secret   int    // index into the secrets searched for
	Encoding string // Needle.Name
	Where    string // haystack name
	Offset   int    // of the first occurrence
	Context  string // a few bytes around it, quoted
}

func (f Finding) String() string {
	return fmt.Sprintf("secret #%d found as %s in %s at offset %d: %s", f.Secret, f.Encoding, f.Where, f.Offset, f.Context)
}

// Find searches a haystack for every encoding of every secret and returns one
// Finding per (secret, encoding) that occurs.
func Find(where string, hay []byte, secrets ...[]byte) []Finding {
	var out []Finding
	for i, s := range secrets {
		out = append(out, findNeedles(where, hay, i, Encodings(s))...)
	}
	return out
}

func findNeedles(where string, hay []byte, secret int, needles []Needle) []Finding {
	var out []Finding
	for _, n := range needles {
		off := bytes.Index(hay, n.Bytes)
		if off < 0 || len(n.Bytes) == 0 {
			continue
		}
		lo, hi := max(0, off-24), min(len(hay), off+len(n.Bytes)+24)
		out = append(out, Finding{Secret: secret, Encoding: n.Name, Where: where, Offset: off, Context: fmt.Sprintf("%q", hay[lo:hi])})
	}
	return out
}

// Haystack is a named byte string to search.
type Haystack struct {
	Name  string
	Bytes []byte
}

// FindIn searches several haystacks.
func FindIn(hays []Haystack, secrets ...[]byte) []Finding {
	var out []Finding
	for _, h := range hays {
		out = append(out, Find(h.Name, h.Bytes, secrets...)...)
	}
	return out
}

// AssertNoSecrets fails the test with every finding.
func AssertNoSecrets(t testing.TB, hays []Haystack, secrets ...[]byte) {
	t.Helper()
	f := FindIn(hays, secrets...)
	for _, x := range f {
		t.Errorf("LEAK: %s", x)
	}
}

// randomSecret returns n random bytes, for planted values and negative
// controls.
func randomSecret(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestEncodingsFindEmbedded(t *testing.T) {
	// Pure Go: no browser. An embedded secret is found at every alignment,
	// in both base64 alphabets, without padding.
	secret := randomSecret(32)
	for off := range 6 {
		blob := append(randomSecret(off), secret...)
		blob = append(blob, randomSecret(5)...)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
			hay := []byte(`{"x":"` + enc.EncodeToString(blob) + `"}`)
			if len(Find("json", hay, secret)) == 0 {
				t.Errorf("offset %d: embedded secret not found in %s", off, hay)
			}
		}
		hay := []byte(hex.EncodeToString(blob))
		if len(Find("hex", hay, secret)) == 0 {
			t.Errorf("offset %d: embedded secret not found in hex", off)
		}
	}
	if f := Find("noise", randomSecret(1<<16), randomSecret(32)); len(f) != 0 {
		t.Errorf("false positive in random noise: %v", f)
	}
}
