package protocol

import (
	"encoding/base64"
	"time"
)

// Profile constants (PROTOCOL.md section 4).
const (
	// Label is the signature label in Signature-Input and Signature.
	Label = "sv"
	// Alg is the RFC 9421 algorithm name.
	Alg = "hmac-sha256"
	// Tag is the RFC 9421 application tag.
	Tag = "sessionvault"
	// MaxComponentLen bounds one component value (path, query, authority, ...).
	MaxComponentLen = 8192
)

// Request is the part of an HTTP request that the signature covers.
type Request struct {
	Method    string // as sent, e.g. "POST"
	Authority string // host[:port] as in the target URI: lowercase host, no default port
	Path      string // the escaped absolute path; "" means "/"
	Query     string // the raw query without '?'; "" when absent or empty
	// ContentDigest is the Content-Digest field value; "" when the request has no body.
	ContentDigest string
	// Field looks up other header fields by lowercase name, for components outside the profile
	// (used by [VerifyAny]); nil means none.
	Field func(name string) (string, bool)
}

// component returns the value of one covered component.
func (r *Request) component(name string) (string, bool) {
	switch name {
	case "@method":
		return r.Method, r.Method != ""
	case "@authority":
		return r.Authority, r.Authority != ""
	case "@path":
		if r.Path == "" {
			return "/", true
		}
		return r.Path, true
	case "@query":
		return r.Query, true // appendBase writes the leading "?" (no allocation here)
	case "content-digest":
		if r.ContentDigest != "" {
			return r.ContentDigest, true
		}
	}
	if r.Field != nil && name != "" && name[0] != '@' {
		return r.Field(name)
	}
	return "", false
}

// KeyID names a lane's key for one epoch: "<lane base64url>.<epoch>" on the wire.
type KeyID struct {
	Lane  LaneID
	Epoch uint32
}

// AppendKeyID appends the wire form of id.
func AppendKeyID(b []byte, id KeyID) []byte {
	b = base64.RawURLEncoding.AppendEncode(b, id.Lane[:])
	b = append(b, '.')
	return appendUint(b, uint64(id.Epoch))
}

// String returns the wire form.
func (id KeyID) String() string { return string(AppendKeyID(nil, id)) }

// ParseKeyID parses "<22 base64url chars>.<epoch>" with a canonical decimal epoch.
func ParseKeyID(s string) (KeyID, error) {
	var id KeyID
	if len(s) < 24 || s[22] != '.' {
		return id, malformed("keyid: expected <lane>.<epoch>", s, 0)
	}
	n, err := base64.RawURLEncoding.Strict().Decode(id.Lane[:], []byte(s[:22]))
	if err != nil || n != LaneIDSize {
		return id, malformed("keyid: bad lane", s, 0)
	}
	e, ok := parseCanonicalUint(s[23:], 0xffffffff)
	if !ok {
		return id, malformed("keyid: bad epoch", s, 23)
	}
	id.Epoch = uint32(e)
	return id, nil
}

// parseCanonicalUint parses a decimal with no sign, no leading zeros, at most max.
func parseCanonicalUint(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) {
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

// Params are the signature parameters of the profile.
type Params struct {
	Created int64 // Unix seconds, server time as the worker knows it
	KeyID   KeyID
	Nonce   uint64 // per-lane sequence number, starting at 1; on the wire as a decimal string
	HasBody bool   // content-digest is covered
}

// Component lists of the profile, in the order the worker writes them.
const (
	componentsNoBody = `("@method" "@authority" "@path" "@query")`
	componentsBody   = `("@method" "@authority" "@path" "@query" "content-digest")`
)

// AppendSignatureParams appends the "@signature-params" value (the Signature-Input member value).
func AppendSignatureParams(b []byte, p *Params) []byte {
	if p.HasBody {
		b = append(b, componentsBody...)
	} else {
		b = append(b, componentsNoBody...)
	}
	b = append(b, ";created="...)
	b = appendInt(b, p.Created)
	b = append(b, `;keyid="`...)
	b = AppendKeyID(b, p.KeyID)
	b = append(b, `";nonce="`...)
	b = appendUint(b, p.Nonce)
	b = append(b, `";alg="`+Alg+`";tag="`+Tag+`"`...)
	return b
}

// appendBase appends the RFC 9421 signature base for covered components of r, ending with the
// "@signature-params" line whose value is sigParams.
func appendBase(b []byte, r *Request, names []string, sigParams string) ([]byte, error) {
	for _, name := range names {
		v, ok := r.component(name)
		if !ok {
			return nil, &parseError{what: "covered component " + quote(name) + " is absent", class: ErrProfile}
		}
		prefix := ""
		if name == "@query" {
			prefix = "?"
		}
		if len(prefix)+len(v) > MaxComponentLen {
			return nil, &parseError{what: "component " + quote(name) + " too long", class: ErrTooLarge}
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 && v[i] != '\t' || v[i] == 0x7f {
				return nil, &parseError{what: "control character in component " + quote(name), class: ErrMalformed}
			}
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':', ' ')
		b = append(b, prefix...)
		b = append(b, v...)
		b = append(b, '\n')
	}
	b = append(b, `"@signature-params": `...)
	return append(b, sigParams...), nil
}

var profileNames = [...]string{"@method", "@authority", "@path", "@query", "content-digest"}

// Signer signs requests for one lane epoch. It is not safe for concurrent use (the worker is
// single-threaded). Wipe zeroes its key material.
type Signer struct {
	mac *MAC
	buf []byte // the signature base
	out []byte // each field value in turn, copied out as a string: no other allocation per Sign
}

// NewSigner returns a Signer keyed with the epoch's sign key ([SignKey]).
func NewSigner(signKey *Key) *Signer { return &Signer{mac: NewMAC(signKey[:])} }

// Wipe zeroes the signer's key-derived state and buffers.
func (s *Signer) Wipe() {
	s.mac.Wipe()
	clear(s.buf[:cap(s.buf)])
	clear(s.out[:cap(s.out)])
}

// Sign returns the Signature-Input and Signature field values for r under p.
func (s *Signer) Sign(r *Request, p *Params) (sigInput, signature string, err error) {
	p.HasBody = r.ContentDigest != ""
	n := 4
	if p.HasBody {
		n = 5
	}
	s.out = append(append(s.out[:0], Label...), '=')
	s.out = AppendSignatureParams(s.out, p)
	sigInput = string(s.out)
	s.buf, err = appendBase(s.buf[:0], r, profileNames[:n], sigInput[len(Label)+1:])
	if err != nil {
		return "", "", err
	}
	s.mac.Reset()
	s.mac.Write(s.buf)
	tag := s.mac.Sum()
	s.out = append(append(s.out[:0], Label...), "=:"...)
	s.out = base64.StdEncoding.AppendEncode(s.out, tag[:])
	s.out = append(s.out, ':')
	clear(s.buf)
	return sigInput, string(s.out), nil
}

// Signed is a parsed, profile-checked signature, not yet verified.
type Signed struct {
	Params
	raw string // "@signature-params" value as received
	tag [TagSize]byte
}

// ParseSigned parses the Signature-Input and Signature field values (each the single field line;
// the caller refuses repeated lines) and checks the profile: label "sv", components exactly the
// profile's (content-digest iff the request has a body), parameters exactly created, keyid, nonce,
// alg="hmac-sha256", tag="sessionvault". Other labels in the dictionaries are ignored.
func ParseSigned(sigInput, signature string) (*Signed, error) {
	// Both fields are parsed into stack arrays, and Signature-Input lazily (validated, its inner
	// lists and parameters not built): the "sv" member is read again from its Raw text below into
	// fixed arrays. This keeps a verify to a few allocations (the budgets in README.md, "What it costs").
	var inBuf, sgBuf [2]Member
	in, err := parseDictionaryInto(sigInput, inBuf[:0], true)
	if err != nil {
		return nil, err
	}
	sg, err := parseDictionaryInto(signature, sgBuf[:0], false)
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

	// m.Raw is a canonical inner list with parameters: "(item item ...);key=value;...".
	p := sfParser{s: m.Raw, i: 1, lazy: true}
	var comps [len(profileNames)]string
	nc, compsOK := 0, true
	for ; p.i < len(p.s) && p.s[p.i] != ')'; nc++ {
		if nc > 0 {
			p.i++ // the one space
		}
		it, err := p.bareItem()
		if err != nil {
			return nil, err
		}
		if p.i < len(p.s) && p.s[p.i] == ';' {
			compsOK = false // a component parameter
			if _, err := p.params(); err != nil {
				return nil, err
			}
		}
		if nc < len(comps) && it.Kind == KindString {
			comps[nc] = it.Str
		} else {
			compsOK = false
		}
	}
	p.i++ // ')'
	if nc != 4 && nc != 5 {
		return nil, &parseError{what: "covered components are not the profile's", class: ErrProfile}
	}
	for i := range nc {
		if !compsOK || comps[i] != profileNames[i] {
			return nil, &parseError{what: "covered components are not the profile's", class: ErrProfile}
		}
	}
	s.HasBody = nc == 5
	var params [5]Param
	np := 0
	for ; p.i < len(p.s) && p.s[p.i] == ';'; np++ {
		p.i++
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		v := BareItem{Kind: KindBoolean, Bool: true}
		if p.i < len(p.s) && p.s[p.i] == '=' {
			p.i++
			if v, err = p.bareItem(); err != nil {
				return nil, err
			}
		}
		if np < len(params) {
			params[np] = Param{Key: key, Value: v}
		}
	}
	if np != len(params) {
		return nil, &parseError{what: "signature parameters are not the profile's", class: ErrProfile}
	}
	var seen uint8
	for _, p := range params {
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

// Window is the accepted range of `created` around the verifier's clock.
type Window struct {
	MaxAge time.Duration // how old created may be; if zero, DefaultMaxAge
	Skew   time.Duration // how far in the future; if zero, DefaultSkew
}

// Defaults for [Window].
const (
	DefaultMaxAge = 60 * time.Second
	DefaultSkew   = 5 * time.Second
)

// CheckCreated checks created against now.
func (w Window) CheckCreated(created int64, now time.Time) error {
	age, skew := w.MaxAge, w.Skew
	if age == 0 {
		age = DefaultMaxAge
	}
	if skew == 0 {
		skew = DefaultSkew
	}
	t := now.Unix()
	switch {
	case created < t-int64(age/time.Second):
		return &parseError{what: "created is older than the accepted age", class: ErrExpired}
	case created > t+int64(skew/time.Second):
		return &parseError{what: "created is in the future", class: ErrFuture}
	}
	return nil
}

// Verifier checks signatures under one lane epoch's sign key. It reuses its buffer and MAC state,
// so a verify allocates nothing; it is not safe for concurrent use (the server keeps one per lane
// epoch behind a mutex, or a pool).
type Verifier struct {
	mac *MAC
	buf []byte
}

// NewVerifier returns a Verifier for the epoch's sign key ([SignKey]).
func NewVerifier(signKey *Key) *Verifier {
	return &Verifier{mac: NewMAC(signKey[:]), buf: make([]byte, 0, 512)}
}

// Wipe zeroes the verifier's key-derived state.
func (v *Verifier) Wipe() { v.mac.Wipe() }

// Verify checks the MAC of s over r. It checks neither `created` ([Window.CheckCreated]) nor the
// body digest ([CheckContentDigest]) nor replay: the caller does, in that order after Verify.
func (v *Verifier) Verify(s *Signed, r *Request) error {
	if s.HasBody != (r.ContentDigest != "") {
		return &parseError{what: "content-digest coverage does not match the body", class: ErrDigest}
	}
	n := 4
	if s.HasBody {
		n = 5
	}
	var err error
	v.buf, err = appendBase(v.buf[:0], r, profileNames[:n], s.raw)
	if err != nil {
		return err
	}
	v.mac.Reset()
	v.mac.Write(v.buf)
	v.mac.Sum()
	if !v.mac.Equal(s.tag[:]) {
		return &parseError{what: "signature does not verify", class: ErrBadSignature}
	}
	return nil
}

// VerifyAny verifies the signature labelled label over any covered components (derived ones of
// [Request] plus header fields through r.Field) with hmac-sha256 under key. It checks no profile:
// it exists for RFC 9421's own test vector (Appendix B.2.5) and interoperability tests.
func VerifyAny(sigInput, signature, label string, key []byte, r *Request) error {
	in, err := ParseDictionary(sigInput)
	if err != nil {
		return err
	}
	sg, err := ParseDictionary(signature)
	if err != nil {
		return err
	}
	m, ok := in.Get(label)
	if !ok || !m.IsInner {
		return &parseError{what: "label not found in Signature-Input", class: ErrProfile}
	}
	sm, ok := sg.Get(label)
	if !ok || sm.IsInner || sm.Item.Kind != KindBytes {
		return &parseError{what: "label not found in Signature", class: ErrProfile}
	}
	names := make([]string, 0, len(m.Inner))
	for _, it := range m.Inner {
		if it.Kind != KindString || len(it.Params) != 0 {
			return &parseError{what: "component parameters are not supported", class: ErrProfile}
		}
		names = append(names, it.Str)
	}
	base, err := appendBase(nil, r, names, m.Raw)
	if err != nil {
		return err
	}
	mac := NewMAC(key)
	defer mac.Wipe()
	mac.Reset()
	mac.Write(base)
	mac.Sum()
	if !mac.Equal(sm.Item.Bytes) {
		return &parseError{what: "signature does not verify", class: ErrBadSignature}
	}
	return nil
}

// SignatureBase returns the signature base the profile signs for r and p (for documentation,
// vectors and interoperability tests).
func SignatureBase(r *Request, p *Params) (string, error) {
	p.HasBody = r.ContentDigest != ""
	n := 4
	if p.HasBody {
		n = 5
	}
	b, err := appendBase(nil, r, profileNames[:n], string(AppendSignatureParams(nil, p)))
	return string(b), err
}

// ContentDigest returns the RFC 9530 Content-Digest field value for body: "sha-256=:<base64>:".
func ContentDigest(body []byte) string {
	sum := sum256(body)
	return DigestValue(&sum)
}

// DigestValue formats a SHA-256 sum as a Content-Digest field value.
func DigestValue(sum *[sha256Size]byte) string {
	b := make([]byte, 0, 54)
	b = append(b, "sha-256=:"...)
	b = base64.StdEncoding.AppendEncode(b, sum[:])
	return string(append(b, ':'))
}

// CheckContentDigest checks a Content-Digest field value against the SHA-256 of the body as read.
// The field must be a canonical dictionary with a sha-256 member of 32 bytes; other algorithms are
// ignored (RFC 9530 section 2) but do not satisfy the check.
func CheckContentDigest(field string, sum *[sha256Size]byte) error {
	var buf [2]Member
	d, err := parseDictionaryInto(field, buf[:0], false)
	if err != nil {
		return err
	}
	m, ok := d.Get("sha-256")
	if !ok || m.IsInner || m.Item.Kind != KindBytes || len(m.Item.Bytes) != sha256Size {
		return &parseError{what: "content-digest has no sha-256 member", input: field, class: ErrDigest}
	}
	if !ctEqual(m.Item.Bytes, sum[:]) {
		return &parseError{what: "content-digest does not match the body", class: ErrDigest}
	}
	return nil
}
