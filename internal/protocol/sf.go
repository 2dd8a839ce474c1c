package protocol

import "encoding/base64"

// This file is a strict, canonical-only parser and serializer for the part of RFC 8941
// (Structured Field Values for HTTP) that RFC 9421 and RFC 9530 use: dictionaries whose members
// are items or inner lists, with parameters; bare items that are integers, strings, tokens, byte
// sequences or booleans. Decimals are refused: no header of this protocol uses them.
//
// Canonical-only means: the parser accepts exactly the text that [Dictionary.Append] would write
// for the value it returns (one space after each comma and between inner-list items, no other
// whitespace, no leading zeros, no "=?1" for true, no duplicate keys). So parse-then-encode
// returns the input byte for byte, and the text a verifier hashes for "@signature-params" is the
// text it parsed. RATIONALE.md ("Why a canonical-only structured-field parser?") explains the choice.

// ItemKind says which field of a [BareItem] holds its value.
type ItemKind uint8

// The bare item kinds.
const (
	KindInteger ItemKind = iota + 1
	KindString
	KindToken
	KindBytes
	KindBoolean
)

// MaxFieldLen bounds the length of one structured header value accepted by the parsers.
const MaxFieldLen = 8192

// BareItem is one RFC 8941 bare item. Str holds strings and tokens; Bytes aliases nothing (it is
// freshly decoded).
type BareItem struct {
	Kind  ItemKind
	Int   int64
	Str   string
	Bytes []byte
	Bool  bool
}

// Param is one parameter of an item or inner list.
type Param struct {
	Key   string
	Value BareItem
}

// Item is a bare item with its parameters.
type Item struct {
	BareItem
	Params []Param
}

// Member is one dictionary member: either an item (IsInner false) or an inner list.
type Member struct {
	Key     string
	IsInner bool
	Item    BareItem // when !IsInner
	Inner   []Item   // when IsInner
	Params  []Param
	// Raw is the member's value exactly as it appeared (inner list or item, with parameters):
	// for a Signature-Input member it is the "@signature-params" component value.
	Raw string
}

// Dictionary is an RFC 8941 dictionary in wire order.
type Dictionary []Member

// Get returns the member named key.
func (d Dictionary) Get(key string) (*Member, bool) {
	for i := range d {
		if d[i].Key == key {
			return &d[i], true
		}
	}
	return nil, false
}

// ParamValue returns the parameter named key.
func ParamValue(ps []Param, key string) (BareItem, bool) {
	for _, p := range ps {
		if p.Key == key {
			return p.Value, true
		}
	}
	return BareItem{}, false
}

type sfParser struct {
	s string
	i int
	// lazy validates inner lists and parameters without building them (Member.Inner and
	// Member.Params stay nil; Raw is set): ParseSigned and CheckContentDigest need only Raw and
	// bare member items, and building the rest is most of a verify's allocations.
	lazy bool
}

func (p *sfParser) fail(what string) error { return malformed("structured field: "+what, p.s, p.i) }

// ParseDictionary parses a canonical RFC 8941 dictionary.
func ParseDictionary(s string) (Dictionary, error) {
	return parseDictionaryInto(s, make(Dictionary, 0, 2), false)
}

// parseDictionaryInto is ParseDictionary appending to d[:0], so that a caller whose result does
// not escape can pass a stack array, and building no inner lists or parameters if lazy. It
// accepts and refuses exactly what ParseDictionary does, with the same errors.
func parseDictionaryInto(s string, d Dictionary, lazy bool) (Dictionary, error) {
	d = d[:0]
	if len(s) > MaxFieldLen {
		return nil, &parseError{what: "structured field too long", input: s[:64], offset: MaxFieldLen, class: ErrTooLarge}
	}
	p := sfParser{s: s, lazy: lazy}
	if s == "" {
		return nil, p.fail("empty dictionary")
	}
	for {
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		for i := range d {
			if d[i].Key == key {
				return nil, p.fail("duplicate dictionary key")
			}
		}
		m := Member{Key: key}
		start := p.i
		if p.i < len(s) && s[p.i] == '=' {
			p.i++
			start = p.i
			if p.i < len(s) && s[p.i] == '(' {
				m.IsInner = true
				if m.Inner, err = p.innerList(); err != nil {
					return nil, err
				}
			} else {
				if m.Item, err = p.bareItem(); err != nil {
					return nil, err
				}
				if m.Item.Kind == KindBoolean && m.Item.Bool {
					return nil, p.fail("non-canonical true member (write the key alone)")
				}
			}
		} else {
			m.Item = BareItem{Kind: KindBoolean, Bool: true}
		}
		if m.Params, err = p.params(); err != nil {
			return nil, err
		}
		m.Raw = s[start:p.i]
		d = append(d, m)
		if p.i == len(s) {
			return d, nil
		}
		if p.i+1 >= len(s) || s[p.i] != ',' || s[p.i+1] != ' ' {
			return nil, p.fail("expected \", \" between members")
		}
		p.i += 2
	}
}

// ParseInnerList parses the inner-list-with-parameters text of a single member value, such as the
// "@signature-params" value "(...);created=1".
func ParseInnerList(s string) ([]Item, []Param, error) {
	p := sfParser{s: s}
	if s == "" || s[0] != '(' {
		return nil, nil, p.fail("expected inner list")
	}
	items, err := p.innerList()
	if err != nil {
		return nil, nil, err
	}
	ps, err := p.params()
	if err != nil {
		return nil, nil, err
	}
	if p.i != len(s) {
		return nil, nil, p.fail("trailing characters")
	}
	return items, ps, nil
}

func isLcalpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool   { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isTchar(c byte) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func (p *sfParser) key() (string, error) {
	start := p.i
	if p.i >= len(p.s) || !(isLcalpha(p.s[p.i]) || p.s[p.i] == '*') {
		return "", p.fail("expected key")
	}
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !(isLcalpha(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) innerList() ([]Item, error) {
	p.i++ // '('
	var items []Item
	if !p.lazy {
		items = make([]Item, 0, 6)
	}
	for n := 0; ; n++ {
		if p.i >= len(p.s) {
			return nil, p.fail("unterminated inner list")
		}
		if p.s[p.i] == ')' {
			p.i++
			return items, nil
		}
		if n > 0 {
			if p.s[p.i] != ' ' {
				return nil, p.fail("expected one space between inner list items")
			}
			p.i++
		}
		if n >= 64 {
			return nil, &parseError{what: "structured field: inner list too long", input: p.s, offset: p.i, class: ErrTooLarge}
		}
		bi, err := p.bareItem()
		if err != nil {
			return nil, err
		}
		ps, err := p.params()
		if err != nil {
			return nil, err
		}
		if !p.lazy {
			items = append(items, Item{BareItem: bi, Params: ps})
		}
	}
}

func (p *sfParser) params() ([]Param, error) {
	var ps []Param
	var keys [32]string
	nk := 0
	for p.i < len(p.s) && p.s[p.i] == ';' {
		p.i++
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		for _, k := range keys[:nk] {
			if k == key {
				return nil, p.fail("duplicate parameter")
			}
		}
		v := BareItem{Kind: KindBoolean, Bool: true}
		if p.i < len(p.s) && p.s[p.i] == '=' {
			p.i++
			if v, err = p.bareItem(); err != nil {
				return nil, err
			}
			if v.Kind == KindBoolean && v.Bool {
				return nil, p.fail("non-canonical true parameter (write the key alone)")
			}
		}
		if nk >= len(keys) {
			return nil, &parseError{what: "structured field: too many parameters", input: p.s, offset: p.i, class: ErrTooLarge}
		}
		keys[nk] = key
		nk++
		if !p.lazy {
			if ps == nil {
				ps = make([]Param, 0, 6)
			}
			ps = append(ps, Param{Key: key, Value: v})
		}
	}
	return ps, nil
}

func (p *sfParser) bareItem() (BareItem, error) {
	if p.i >= len(p.s) {
		return BareItem{}, p.fail("expected item")
	}
	c := p.s[p.i]
	switch {
	case c == '-' || isDigit(c):
		return p.integer()
	case c == '"':
		return p.str()
	case c == ':':
		return p.bytes()
	case c == '?':
		if p.i+1 < len(p.s) && (p.s[p.i+1] == '0' || p.s[p.i+1] == '1') {
			b := p.s[p.i+1] == '1'
			p.i += 2
			return BareItem{Kind: KindBoolean, Bool: b}, nil
		}
		return BareItem{}, p.fail("bad boolean")
	case isAlpha(c) || c == '*':
		start := p.i
		p.i++
		for p.i < len(p.s) && (isTchar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
			p.i++
		}
		return BareItem{Kind: KindToken, Str: p.s[start:p.i]}, nil
	}
	return BareItem{}, p.fail("unexpected character")
}

func (p *sfParser) integer() (BareItem, error) {
	neg := false
	if p.s[p.i] == '-' {
		neg = true
		p.i++
	}
	start := p.i
	var n int64
	for p.i < len(p.s) && isDigit(p.s[p.i]) {
		if p.i-start >= 15 {
			return BareItem{}, p.fail("integer too long")
		}
		n = n*10 + int64(p.s[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	switch {
	case digits == 0:
		return BareItem{}, p.fail("expected digit")
	case p.i < len(p.s) && p.s[p.i] == '.':
		return BareItem{}, p.fail("decimals are not supported")
	case digits > 1 && p.s[start] == '0':
		return BareItem{}, p.fail("non-canonical integer (leading zero)")
	case neg && n == 0:
		return BareItem{}, p.fail("non-canonical integer (-0)")
	}
	if neg {
		n = -n
	}
	return BareItem{Kind: KindInteger, Int: n}, nil
}

func (p *sfParser) str() (BareItem, error) {
	p.i++
	start := p.i
	// Fast path for the common string without escapes: printable ASCII up to the closing quote.
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == '"' {
			p.i++
			return BareItem{Kind: KindString, Str: p.s[start : p.i-1]}, nil
		}
		if c == '\\' || c < 0x20 || c > 0x7e {
			break
		}
		p.i++
	}
	escaped := false
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '\\':
			if p.i+1 >= len(p.s) || (p.s[p.i+1] != '"' && p.s[p.i+1] != '\\') {
				return BareItem{}, p.fail("bad escape in string")
			}
			escaped = true
			p.i += 2
			continue
		case c == '"':
			raw := p.s[start:p.i]
			p.i++
			if !escaped {
				return BareItem{Kind: KindString, Str: raw}, nil
			}
			b := make([]byte, 0, len(raw))
			for j := 0; j < len(raw); j++ {
				if raw[j] == '\\' {
					j++
				}
				b = append(b, raw[j])
			}
			return BareItem{Kind: KindString, Str: string(b)}, nil
		case c < 0x20 || c > 0x7e:
			return BareItem{}, p.fail("control or non-ASCII character in string")
		}
		p.i++
	}
	return BareItem{}, p.fail("unterminated string")
}

func (p *sfParser) bytes() (BareItem, error) {
	p.i++
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != ':' {
		// Only the base64 alphabet: the decoder below would silently skip CR and LF.
		if c := p.s[p.i]; !(isAlpha(c) || isDigit(c) || c == '+' || c == '/' || c == '=') {
			return BareItem{}, p.fail("non-base64 character in byte sequence")
		}
		p.i++
	}
	if p.i >= len(p.s) {
		return BareItem{}, p.fail("unterminated byte sequence")
	}
	enc := p.s[start:p.i]
	b, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil {
		p.i = start
		return BareItem{}, p.fail("non-canonical base64 in byte sequence")
	}
	p.i++
	return BareItem{Kind: KindBytes, Bytes: b}, nil
}

// AppendBareItem appends the canonical serialization of v.
func AppendBareItem(b []byte, v BareItem) []byte {
	switch v.Kind {
	case KindInteger:
		return appendInt(b, v.Int)
	case KindString:
		b = append(b, '"')
		for i := 0; i < len(v.Str); i++ {
			if v.Str[i] == '"' || v.Str[i] == '\\' {
				b = append(b, '\\')
			}
			b = append(b, v.Str[i])
		}
		return append(b, '"')
	case KindToken:
		return append(b, v.Str...)
	case KindBytes:
		b = append(b, ':')
		b = base64.StdEncoding.AppendEncode(b, v.Bytes)
		return append(b, ':')
	case KindBoolean:
		if v.Bool {
			return append(b, '?', '1')
		}
		return append(b, '?', '0')
	}
	return b
}

// AppendParams appends ";key=value" for each parameter (";key" alone for true).
func AppendParams(b []byte, ps []Param) []byte {
	for _, p := range ps {
		b = append(b, ';')
		b = append(b, p.Key...)
		if p.Value.Kind == KindBoolean && p.Value.Bool {
			continue
		}
		b = append(b, '=')
		b = AppendBareItem(b, p.Value)
	}
	return b
}

// AppendInnerList appends "(item item);params".
func AppendInnerList(b []byte, items []Item, ps []Param) []byte {
	b = append(b, '(')
	for i, it := range items {
		if i > 0 {
			b = append(b, ' ')
		}
		b = AppendBareItem(b, it.BareItem)
		b = AppendParams(b, it.Params)
	}
	b = append(b, ')')
	return AppendParams(b, ps)
}

// Append appends the canonical serialization of d.
func (d Dictionary) Append(b []byte) []byte {
	for i, m := range d {
		if i > 0 {
			b = append(b, ',', ' ')
		}
		b = append(b, m.Key...)
		switch {
		case m.IsInner:
			b = append(b, '=')
			b = AppendInnerList(b, m.Inner, m.Params)
			continue
		case m.Item.Kind == KindBoolean && m.Item.Bool:
		default:
			b = append(b, '=')
			b = AppendBareItem(b, m.Item)
		}
		b = AppendParams(b, m.Params)
	}
	return b
}

func appendInt(b []byte, n int64) []byte {
	if n < 0 {
		b = append(b, '-')
		n = -n
	}
	return appendUint(b, uint64(n))
}

func appendUint(b []byte, n uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}
