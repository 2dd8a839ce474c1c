// Package fastsig is the server's fast path for the one signature form the worker writes. It
// recognizes Signature-Input and Signature values that are exactly what protocol.Signer produces
// (a single "sv" member, canonical text), extracts the parameters without building a structured-
// field tree, and builds the signature base into a reused buffer, with no allocation.
//
// It accepts a strict subset of what protocol.ParseSigned accepts: a value is taken only if
// re-serializing the extracted parameters with protocol.AppendSignatureParams gives back the
// received text byte for byte. Anything else (another label alongside, any deviation) returns
// false, and the caller uses protocol.ParseSigned and protocol.Verifier, which also say what is
// wrong. The differential tests and the fuzz target check that whenever Parse accepts, ParseSigned
// accepts with the same parameters, and that AppendBase equals protocol.SignatureBase.
//
// # Concurrency
//
// Functions are safe for concurrent use; they keep no state.
package fastsig

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

var (
	// The component lists up to ";created=", taken from the protocol's own serializer.
	listBody   = components(true)
	listNoBody = components(false)
	// b64Char marks the characters of standard base64 with padding. (The decoder alone is not
	// enough: it skips CR and LF even in strict mode.)
	b64Char = func() (t [256]bool) {
		for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") {
			t[c] = true
		}
		return t
	}()
)

func components(body bool) string {
	s := string(protocol.AppendSignatureParams(nil, &protocol.Params{HasBody: body}))
	return s[:strings.Index(s, ";created=")+len(";created=")]
}

// Signed is a parsed signature of the fast path.
type Signed struct {
	protocol.Params
	Raw string // the "@signature-params" value: Signature-Input without "sv="
	Tag [protocol.TagSize]byte
}

// maxParams bounds the "@signature-params" text the fast path considers; ours is about 190 bytes.
const maxParams = 320

// Parse fills s from the two field values if they are exactly the canonical profile form, and
// reports whether they were.
func Parse(sigInput, signature string, s *Signed) bool {
	raw, ok := strings.CutPrefix(sigInput, protocol.Label+"=")
	if !ok || len(raw) > maxParams {
		return false
	}
	var rest string
	switch {
	case strings.HasPrefix(raw, listNoBody):
		s.HasBody = false
		rest = raw[len(listNoBody):]
	case strings.HasPrefix(raw, listBody):
		s.HasBody = true
		rest = raw[len(listBody):]
	default:
		return false
	}
	// <int>;keyid="<keyid>";nonce="<n>";alg=...;tag=...
	v, rest, ok := field(rest, "", ';')
	if !ok || len(v) > 15 { // an RFC 8941 integer has at most 15 digits
		return false
	}
	created, ok := digits(v, 1<<63-1)
	if !ok {
		return false
	}
	s.Created = int64(created)
	if v, rest, ok = field(rest, `;keyid="`, '"'); !ok {
		return false
	}
	kid, err := protocol.ParseKeyID(v)
	if err != nil {
		return false
	}
	s.KeyID = kid
	if v, _, ok = field(rest[1:], `;nonce="`, '"'); !ok {
		return false
	}
	if s.Nonce, ok = digits(v, 1<<63-1); !ok || s.Nonce == 0 {
		return false
	}
	// The exactness check: the protocol's serializer must give back the received text.
	var buf [maxParams]byte
	if string(protocol.AppendSignatureParams(buf[:0], &s.Params)) != raw {
		return false
	}
	s.Raw = raw

	// Signature: sv=:<44 base64 characters>:
	const b64Len = 44
	if len(signature) != len(protocol.Label)+2+b64Len+1 || !strings.HasPrefix(signature, protocol.Label+"=:") || signature[len(signature)-1] != ':' {
		return false
	}
	var src [b64Len]byte
	copy(src[:], signature[len(protocol.Label)+2:])
	for _, c := range src {
		if !b64Char[c] {
			return false
		}
	}
	var dst [33]byte
	n, err := base64.StdEncoding.Strict().Decode(dst[:], src[:])
	if err != nil || n != protocol.TagSize {
		return false
	}
	copy(s.Tag[:], dst[:protocol.TagSize])
	return true
}

// field cuts prefix from s and returns the text up to end (excluded) and the rest from end on.
func field(s, prefix string, end byte) (v, rest string, ok bool) {
	s, ok = strings.CutPrefix(s, prefix)
	if !ok {
		return "", "", false
	}
	i := strings.IndexByte(s, end)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i:], true
}

// digits parses a canonical decimal (no sign, no leading zero) of at most max.
func digits(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 19 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// ErrComponent reports a component value the profile refuses (a control character or too
// long); protocol.Verifier reports the same inputs as malformed or too large.
var ErrComponent = errors.New("fastsig: component value refused")

// AppendBase appends the RFC 9421 signature base of the profile for r and s to b: the same bytes
// as protocol.SignatureBase. r.ContentDigest must be non-empty exactly when s.HasBody.
func AppendBase(b []byte, r *protocol.Request, s *Signed) ([]byte, error) {
	path := r.Path
	if path == "" {
		path = "/"
	}
	var err error
	b = append(b, `"@method": `...)
	if b, err = appendValue(b, "", r.Method, true); err != nil {
		return b, err
	}
	b = append(b, "\n\"@authority\": "...)
	if b, err = appendValue(b, "", r.Authority, true); err != nil {
		return b, err
	}
	b = append(b, "\n\"@path\": "...)
	if b, err = appendValue(b, "", path, false); err != nil {
		return b, err
	}
	b = append(b, "\n\"@query\": "...)
	if b, err = appendValue(b, "?", r.Query, false); err != nil {
		return b, err
	}
	if s.HasBody {
		b = append(b, "\n\"content-digest\": "...)
		if b, err = appendValue(b, "", r.ContentDigest, true); err != nil {
			return b, err
		}
	}
	b = append(b, "\n\"@signature-params\": "...)
	return append(b, s.Raw...), nil
}

func appendValue(b []byte, prefix, v string, required bool) ([]byte, error) {
	if required && v == "" || len(prefix)+len(v) > protocol.MaxComponentLen {
		return b, ErrComponent
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return b, ErrComponent
		}
	}
	b = append(b, prefix...)
	return append(b, v...), nil
}
