package protocol

// The worker ABI codec (PROTOCOL.md section 7). Every message crossing the wasm boundary, in
// either direction, is:
//
//	version 0x01 | code u8 | field*        field = tag u8 | length uvarint | value
//
// code is the operation in a request and the status in a reply. Tags are strictly increasing
// (so no field repeats), lengths are minimal uvarints, and integer values are minimal uvarints
// filling their field exactly. The decoder refuses anything else, so decode-then-encode returns
// the input byte for byte.

// CodecVersion is the first byte of every ABI message.
const CodecVersion = 1

// MaxMessageSize bounds an ABI message (a signed request's body travels inside one).
const MaxMessageSize = 8 << 20

// MaxFields bounds the number of fields in one message.
const MaxFields = 32

// Field is one tagged value. Value aliases the decoded buffer.
type Field struct {
	Tag   byte
	Value []byte
}

// Message is a decoded ABI message.
type Message struct {
	Code   byte
	Fields []Field
}

// DecodeMessage parses b strictly. The returned fields alias b.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	if len(b) > MaxMessageSize {
		return m, &parseError{what: "abi: message too large", offset: len(b), class: ErrTooLarge}
	}
	if len(b) < 2 {
		return m, &parseError{what: "abi: truncated header", offset: len(b), class: ErrMalformed}
	}
	if b[0] != CodecVersion {
		return m, &parseError{what: "abi: unknown version", class: ErrMalformed}
	}
	m.Code = b[1]
	i := 2
	last := -1
	for i < len(b) {
		if len(m.Fields) == MaxFields {
			return m, &parseError{what: "abi: too many fields", offset: i, class: ErrTooLarge}
		}
		tag := int(b[i])
		if tag <= last {
			return m, &parseError{what: "abi: tags out of order", offset: i, class: ErrMalformed}
		}
		last = tag
		i++
		n, w := uvarint(b[i:])
		if w <= 0 {
			return m, &parseError{what: "abi: bad length", offset: i, class: ErrMalformed}
		}
		if w != uvarintLen(n) {
			return m, &parseError{what: "abi: non-minimal length", offset: i, class: ErrMalformed}
		}
		i += w
		if n > uint64(len(b)-i) {
			return m, &parseError{what: "abi: field past end of message", offset: i, class: ErrMalformed}
		}
		if m.Fields == nil {
			m.Fields = make([]Field, 0, 8)
		}
		m.Fields = append(m.Fields, Field{Tag: byte(tag), Value: b[i : i+int(n) : i+int(n)]})
		i += int(n)
	}
	return m, nil
}

func uvarintLen(n uint64) int {
	w := 1
	for n >= 0x80 {
		n >>= 7
		w++
	}
	return w
}

// Append appends the encoding of m. Fields must be in increasing tag order.
func (m *Message) Append(b []byte) []byte {
	b = append(b, CodecVersion, m.Code)
	for _, f := range m.Fields {
		b = AppendField(b, f.Tag, f.Value)
	}
	return b
}

// Get returns the value of the field tagged tag.
func (m *Message) Get(tag byte) ([]byte, bool) {
	for _, f := range m.Fields {
		if f.Tag == tag {
			return f.Value, true
		}
	}
	return nil, false
}

// Uint returns the canonical uvarint in the field tagged tag.
func (m *Message) Uint(tag byte) (uint64, bool, error) {
	v, ok := m.Get(tag)
	if !ok {
		return 0, false, nil
	}
	n, w := uvarint(v)
	if w <= 0 || w != len(v) || w != uvarintLen(n) {
		return 0, true, &parseError{what: "abi: bad integer in field " + itoa(int(tag)), class: ErrMalformed}
	}
	return n, true, nil
}

// AppendField appends one field.
func AppendField(b []byte, tag byte, value []byte) []byte {
	b = append(b, tag)
	b = appendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

// AppendStringField appends one string field.
func AppendStringField(b []byte, tag byte, value string) []byte {
	b = append(b, tag)
	b = appendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

// AppendUintField appends one integer field.
func AppendUintField(b []byte, tag byte, n uint64) []byte {
	b = append(b, tag, byte(uvarintLen(n)))
	return appendUvarint(b, n)
}

// AppendList encodes a list of strings as one field value: (length uvarint | bytes)*.
func AppendList(b []byte, items []string) []byte {
	for _, s := range items {
		b = appendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// SplitList decodes a value written by [AppendList], refusing more than max items.
func SplitList(v []byte, max int) ([]string, error) {
	var out []string
	for i := 0; i < len(v); {
		if len(out) == max {
			return nil, &parseError{what: "abi: list too long", offset: i, class: ErrTooLarge}
		}
		n, w := uvarint(v[i:])
		if w <= 0 || w != uvarintLen(n) || n > uint64(len(v)-i-w) {
			return nil, &parseError{what: "abi: bad list item", offset: i, class: ErrMalformed}
		}
		i += w
		out = append(out, string(v[i:i+int(n)]))
		i += int(n)
	}
	return out, nil
}
