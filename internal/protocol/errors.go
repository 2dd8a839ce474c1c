package protocol

import "errors"

// Error classes. Every error returned by this package wraps exactly one of them, so that callers
// (the server's middleware, the vault, the vectors) can branch with [errors.Is]. The vectors in
// testdata name these classes in their `expect:` lines; see [ErrorClass].
var (
	// ErrMalformed: a header, structured field, key ID, event or ABI message does not parse.
	ErrMalformed = errors.New("protocol: malformed input")
	// ErrProfile: the input parses but is not the signature profile this protocol requires
	// (wrong label, missing or extra component or parameter, wrong algorithm or tag).
	ErrProfile = errors.New("protocol: signature outside profile")
	// ErrBadSignature: the MAC does not match (wrong key, tampered component or parameter).
	ErrBadSignature = errors.New("protocol: bad signature")
	// ErrExpired: `created` is older than the accepted age.
	ErrExpired = errors.New("protocol: signature expired")
	// ErrFuture: `created` is further in the future than the accepted skew.
	ErrFuture = errors.New("protocol: signature from the future")
	// ErrDigest: the Content-Digest does not match the body, or is missing where a body exists.
	ErrDigest = errors.New("protocol: content digest mismatch")
	// ErrKeyAgreement: a public key is invalid or the exchange produced a low-order result.
	ErrKeyAgreement = errors.New("protocol: key agreement failed")
	// ErrTooLarge: an input exceeds a protocol limit.
	ErrTooLarge = errors.New("protocol: input too large")
)

// classes maps the names used in test vectors to the sentinel errors.
var classes = map[string]error{
	"malformed":     ErrMalformed,
	"profile":       ErrProfile,
	"bad_signature": ErrBadSignature,
	"expired":       ErrExpired,
	"future":        ErrFuture,
	"digest":        ErrDigest,
	"key_agreement": ErrKeyAgreement,
	"too_large":     ErrTooLarge,
}

// ErrorClass returns the vector name ("malformed", "bad_signature", ...) of err's class, or ""
// when err wraps none of the package's sentinels.
func ErrorClass(err error) string {
	for name, e := range classes {
		if errors.Is(err, e) {
			return name
		}
	}
	return ""
}

// parseError is a malformed-input error that quotes a bounded piece of the offending input and
// says where parsing stopped. It never holds key material: parsers only see public headers.
type parseError struct {
	what   string
	input  string
	offset int
	class  error
}

func (e *parseError) Error() string {
	msg := "protocol: " + e.what
	if e.input == "" && e.offset == 0 {
		return msg // not a parse position: no `at offset 0 in ""`
	}
	in := e.input
	if len(in) > 64 {
		in = in[:64] + "..."
	}
	return msg + " at offset " + itoa(e.offset) + " in " + quote(in)
}

func (e *parseError) Unwrap() error { return e.class }

func malformed(what, input string, offset int) error {
	return &parseError{what: what, input: input, offset: offset, class: ErrMalformed}
}

// itoa and quote avoid fmt and strconv's larger surface in the wasm build.
func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

func quote(s string) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}
