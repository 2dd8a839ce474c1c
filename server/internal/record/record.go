// Package record holds the field encodings that the stores' record codecs share (boltstore
// over bolt's []byte values, redisstore over the strings go-redis returns). Each store keeps its
// own record layouts, version byte and corrupt-record error; this package only appends and reads
// fields:
//
//	bytes          uvarint(0) for nil, else uvarint(len+1) || data  (nil and empty both round-trip)
//	string         uvarint(len) || data
//	time           i64be Unix seconds || u32be nanoseconds (< 1e9); the zero time.Time round-trips
//	sortable time  the same with the sign bit of the seconds flipped, so that byte order is time
//	               order (index keys, and values a script compares bytewise)
//	u32/u64        big endian
//	uvarint        as [binary.AppendUvarint]; a reader accepts only the minimal form
//	string map     uvarint(n) (key string, value string)* in strictly increasing key order
//
// # Errors
//
// Reading is strict: a length or count past the end, a varint that overflows or is not minimal,
// a nanosecond field out of range, map keys out of order, or trailing bytes at [Decoder.Finish] are errors, built by
// the constructor that the store passes to [NewDecoder], and no input panics. With the one
// encoding per value that strictness leaves, a record that decodes re-encodes to the same
// bytes.
//
// # Concurrency
//
// The append functions are safe for concurrent use. A [Decoder] is not: one goroutine reads a
// record.
package record

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// TimeSize is the size of an encoded time or sortable time.
const TimeSize = 12

// AppendBytes appends the encoding of v, which tells nil from empty, to b.
func AppendBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

// AppendString appends the encoding of s to b.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendTime appends the encoding of t (its instant; not its location or monotonic reading) to b.
func AppendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// AppendSortableTime appends an encoding of t whose byte order is time order to b.
func AppendSortableTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// StringMapSize is the most bytes that [AppendStringMap] appends for m.
func StringMapSize(m map[string]string) int {
	n := binary.MaxVarintLen64
	for k, v := range m {
		n += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	return n
}

// AppendStringMap appends the encoding of m, its keys in increasing order, to b.
func AppendStringMap(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = AppendString(b, k)
		b = AppendString(b, m[k])
	}
	return b
}

// Decoder reads the fields of one record from T, a []byte or a string.
//
// Its errors are sticky: after the first, every read returns a zero value and [Decoder.Finish]
// returns that error, so a record decoder reads all its fields and checks once at the end.
//
// Byte fields ([Decoder.Bytes], [Decoder.Copy]) are copies, never the input's memory (a bolt
// value is valid only during its transaction), made into one buffer that is allocated once; each
// has its capacity cut to its length, so appending to one cannot overwrite another. String
// fields ([Decoder.Str]) are substrings of one string copy of the whole input, made on the first
// string field; a string input is not copied at all.
//
// The zero Decoder reads an empty record. A Decoder is not safe for concurrent use.
type Decoder[T string | []byte] struct {
	kind    string
	corrupt func(kind, what string) error
	orig    T
	rest    T      // the unread end of orig
	own     []byte // copies of byte fields
	str     string // string(orig) once a string field is read
	err     error
}

// NewDecoder returns a decoder of record v. Its errors are corrupt(kind, what), where what
// says what is wrong ("length past the end"); if corrupt is nil they are plain errors saying
// "corrupt record: kind: what".
func NewDecoder[T string | []byte](v T, kind string, corrupt func(kind, what string) error) Decoder[T] {
	return Decoder[T]{kind: kind, corrupt: corrupt, orig: v, rest: v}
}

// Version reads the record's version byte and fails with "unknown version" unless it is want
// (or the record is empty).
func (d *Decoder[T]) Version(want byte) {
	if d.err != nil {
		return
	}
	if len(d.rest) == 0 || d.rest[0] != want {
		d.Fail("unknown version")
		return
	}
	d.rest = d.rest[1:]
}

// Fail records the error corrupt(kind, what) unless there is one already, and drops the unread
// rest of the record. A store calls it for what its layout forbids (unordered keys, say).
func (d *Decoder[T]) Fail(what string) {
	if d.err == nil {
		if d.corrupt != nil {
			d.err = d.corrupt(d.kind, what)
		} else {
			d.err = fmt.Errorf("corrupt record: %s: %s", d.kind, what)
		}
	}
	var rest T
	d.rest = rest
}

// Err returns the first error, or nil.
func (d *Decoder[T]) Err() error { return d.err }

// Rest returns the unread end of the record, without reading it.
func (d *Decoder[T]) Rest() T { return d.rest }

// Finish fails with "trailing bytes" if any of the record is unread, and returns the first error.
func (d *Decoder[T]) Finish() error {
	if d.err == nil && len(d.rest) != 0 {
		d.Fail("trailing bytes")
	}
	return d.err
}

// Uvarint reads a minimally encoded uvarint.
func (d *Decoder[T]) Uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var v uint64
	for i := 0; i < len(d.rest) && i < binary.MaxVarintLen64; i++ {
		c := d.rest[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // overflow
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if i > 0 && c == 0 { // not minimal
				break
			}
			d.rest = d.rest[i+1:]
			return v
		}
	}
	d.Fail("bad varint")
	return 0
}

// Next reads the next n bytes of the record and returns them as they are in the input: for a
// []byte input, aliasing it (copy them out; see [Decoder]). After an error it returns the zero T.
func (d *Decoder[T]) Next(n uint64) T {
	var v T
	if d.err != nil {
		return v
	}
	if n > uint64(len(d.rest)) {
		d.Fail("length past the end")
		return v
	}
	v, d.rest = d.rest[:n], d.rest[n:]
	return v
}

// Bytes reads a bytes field: nil, or a copy (see [Decoder]).
func (d *Decoder[T]) Bytes() []byte {
	n := d.Uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	v := d.Next(n - 1)
	if d.err != nil {
		return nil
	}
	return d.keep(v)
}

// keep copies v into the decoder's buffer, which is allocated once with room for every byte
// field still to come and some more (an ID for [Decoder.Copy]).
func (d *Decoder[T]) keep(v T) []byte {
	if d.own == nil {
		d.own = make([]byte, 0, len(d.rest)+len(v)+64)
	}
	start := len(d.own)
	d.own = append(d.own, v...)
	return d.own[start:len(d.own):len(d.own)]
}

// Copy returns a non-nil copy of v (a record's key, say), in the room left in the buffer of byte
// fields when it fits.
func (d *Decoder[T]) Copy(v T) []byte {
	if len(v) <= cap(d.own)-len(d.own) {
		return d.keep(v)
	}
	return append(make([]byte, 0, len(v)), v...)
}

// Str reads a string field. (Not String, so that a Decoder is no [fmt.Stringer] that printing
// would read from.)
func (d *Decoder[T]) Str() string {
	n := d.Uvarint()
	start := len(d.orig) - len(d.rest)
	d.Next(n)
	if d.err != nil || n == 0 {
		return ""
	}
	if d.str == "" {
		d.str = string(d.orig)
	}
	return d.str[start : start+int(n)]
}

// Uint32 reads a u32 field.
func (d *Decoder[T]) Uint32() uint32 {
	v := d.Next(4)
	if d.err != nil {
		return 0
	}
	return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
}

// Uint64 reads a u64 field.
func (d *Decoder[T]) Uint64() uint64 {
	v := d.Next(8)
	if d.err != nil {
		return 0
	}
	return uint64(v[0])<<56 | uint64(v[1])<<48 | uint64(v[2])<<40 | uint64(v[3])<<32 |
		uint64(v[4])<<24 | uint64(v[5])<<16 | uint64(v[6])<<8 | uint64(v[7])
}

// Time reads a time field, in UTC.
func (d *Decoder[T]) Time() time.Time { return d.timeFrom(d.Uint64()) }

// SortableTime reads a sortable time field, in UTC.
func (d *Decoder[T]) SortableTime() time.Time { return d.timeFrom(d.Uint64() ^ 1<<63) }

func (d *Decoder[T]) timeFrom(sec uint64) time.Time {
	nsec := d.Uint32()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 {
		d.Fail("nanoseconds out of range")
		return time.Time{}
	}
	return time.Unix(int64(sec), int64(nsec)).UTC()
}

// StringMap reads a string map field: nil when it is empty. Keys out of order, or repeated, fail
// with "map keys not in strictly increasing order", so that a map has one encoding.
func (d *Decoder[T]) StringMap() map[string]string {
	n := d.Count(2)
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	prev := ""
	for i := range n {
		k, v := d.Str(), d.Str()
		if i > 0 && k <= prev {
			d.Fail("map keys not in strictly increasing order")
			return nil
		}
		m[k] = v
		prev = k
	}
	return m
}

// Count reads an element count as a uvarint and fails with "count past the end" unless that many
// elements of at least size bytes each (size > 0) fit in the rest of the record, which bounds
// what a caller allocates for them.
func (d *Decoder[T]) Count(size int) int {
	n := d.Uvarint()
	if d.err == nil && n > uint64(len(d.rest)/size) {
		d.Fail("count past the end")
		return 0
	}
	return int(n)
}
