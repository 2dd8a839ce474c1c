package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"testing"
	"time"
)

var errTest = errors.New("test: corrupt record")

func testCorrupt(kind, what string) error { return fmt.Errorf("%w: %s: %s", errTest, kind, what) }

// fields is one value of each field kind, the record that the tests and FuzzDecode read.
type fields struct {
	b1, b2, b3 []byte
	s1, s2     string
	t          time.Time
	st         time.Time
	u32        uint32
	u64        uint64
	n          uint64
	list       []string // count-prefixed, elements at least 1 byte (a string field)
	m          map[string]string
}

func (f *fields) append(b []byte) []byte {
	b = AppendBytes(b, f.b1)
	b = AppendBytes(b, f.b2)
	b = AppendString(b, f.s1)
	b = AppendTime(b, f.t)
	b = AppendSortableTime(b, f.st)
	b = binary.BigEndian.AppendUint32(b, f.u32)
	b = binary.BigEndian.AppendUint64(b, f.u64)
	b = binary.AppendUvarint(b, f.n)
	b = binary.AppendUvarint(b, uint64(len(f.list)))
	for _, s := range f.list {
		b = AppendString(b, s)
	}
	b = AppendString(b, f.s2)
	b = AppendStringMap(b, f.m)
	return AppendBytes(b, f.b3)
}

func decodeFields[T string | []byte](v T) (*fields, error) {
	d := NewDecoder(v, "fields", testCorrupt)
	f := &fields{}
	f.b1 = d.Bytes()
	f.b2 = d.Bytes()
	f.s1 = d.Str()
	f.t = d.Time()
	f.st = d.SortableTime()
	f.u32 = d.Uint32()
	f.u64 = d.Uint64()
	f.n = d.Uvarint()
	if n := d.Count(1); n > 0 {
		f.list = make([]string, n)
		for i := range f.list {
			f.list[i] = d.Str()
		}
	}
	f.s2 = d.Str()
	f.m = d.StringMap()
	f.b3 = d.Bytes()
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return f, nil
}

// decodeBoth decodes v as []byte and as string, and fails t unless the two agree.
func decodeBoth(t *testing.T, v []byte) (*fields, error) {
	t.Helper()
	fb, errb := decodeFields(v)
	fs, errs := decodeFields(string(v))
	if fmt.Sprint(errb) != fmt.Sprint(errs) {
		t.Fatalf("%x: []byte error %v, string error %v", v, errb, errs)
	}
	if errb == nil && !bytes.Equal(fb.append(nil), fs.append(nil)) {
		t.Fatalf("%x: []byte and string decode differently", v)
	}
	return fb, errb
}

func sample() *fields {
	return &fields{
		b1:   nil,
		b2:   []byte{},
		b3:   bytes.Repeat([]byte{0xbb}, 200),
		s1:   "alice",
		s2:   strings.Repeat("s", 130),
		t:    time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC),
		st:   time.Unix(-5, 7).UTC(),
		u32:  math.MaxUint32,
		u64:  math.MaxUint64,
		n:    math.MaxUint64,
		list: []string{"a", "", "ccc"},
		m:    map[string]string{"role": "admin", "": "x", "name": "", "é": "ü"},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, f := range []*fields{sample(), {}} {
		v := f.append(nil)
		g, err := decodeBoth(t, v)
		if err != nil {
			t.Fatal(err)
		}
		if g.b1 != nil || (f.b2 != nil && g.b2 == nil) || !bytes.Equal(g.b3, f.b3) {
			t.Errorf("bytes: got %#v %#v %#v", g.b1, g.b2, g.b3)
		}
		if g.s1 != f.s1 || g.s2 != f.s2 || !g.t.Equal(f.t) || !g.st.Equal(f.st) ||
			g.u32 != f.u32 || g.u64 != f.u64 || g.n != f.n || len(g.list) != len(f.list) || !maps.Equal(g.m, f.m) {
			t.Errorf("got %+v, want %+v", g, f)
		}
		if g.t.Location() != time.UTC || g.st.Location() != time.UTC {
			t.Error("times not in UTC")
		}
		if !bytes.Equal(g.append(nil), v) {
			t.Error("re-encoding differs")
		}
	}
	// The zero time.Time round-trips exactly.
	d := NewDecoder(AppendTime(nil, time.Time{}), "t", nil)
	if tm := d.Time(); !tm.IsZero() || d.Finish() != nil {
		t.Errorf("zero time: %v, %v", tm, d.Err())
	}
}

func TestEncoding(t *testing.T) {
	for _, c := range []struct{ got, want []byte }{
		{AppendBytes(nil, nil), []byte{0}},
		{AppendBytes(nil, []byte{}), []byte{1}},
		{AppendBytes([]byte{9}, []byte("ab")), []byte{9, 3, 'a', 'b'}},
		{AppendBytes(nil, make([]byte, 127))[:2], []byte{0x80, 0x01}},
		{AppendString(nil, ""), []byte{0}},
		{AppendString(nil, "ab"), []byte{2, 'a', 'b'}},
		{AppendTime(nil, time.Time{}), []byte{0xff, 0xff, 0xff, 0xf1, 0x88, 0x6e, 0x09, 0x00, 0, 0, 0, 0}},
		{AppendTime(nil, time.Unix(-1, 5)), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 5}},
		{AppendSortableTime(nil, time.Unix(-1, 5)), []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 5}},
		{AppendSortableTime(nil, time.Unix(1, 0)), []byte{0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("got %x, want %x", c.got, c.want)
		}
	}
	if len(AppendTime(nil, time.Now())) != TimeSize || len(AppendSortableTime(nil, time.Now())) != TimeSize {
		t.Error("a time is not TimeSize bytes")
	}
}

func TestSortableTimeOrder(t *testing.T) {
	times := []time.Time{time.Unix(-1<<40, 0), {}, time.Unix(-1, 0), time.Unix(-1, 999999999), time.Unix(0, 0), time.Unix(0, 1), time.Unix(1<<40, 0)}
	for i := 1; i < len(times); i++ {
		if bytes.Compare(AppendSortableTime(nil, times[i-1]), AppendSortableTime(nil, times[i])) >= 0 {
			t.Errorf("%v does not sort before %v", times[i-1], times[i])
		}
	}
}

// wantCorrupt checks that decoding v fails with what, as an error built by testCorrupt.
func wantCorrupt(t *testing.T, name string, v []byte, what string) {
	t.Helper()
	_, err := decodeBoth(t, v)
	if !errors.Is(err, errTest) {
		t.Errorf("%s: %v, want an error wrapping errTest", name, err)
	} else if what != "" && err.Error() != "test: corrupt record: fields: "+what {
		t.Errorf("%s: %v, want %q", name, err, what)
	}
}

func TestTruncated(t *testing.T) {
	for _, f := range []*fields{sample(), {}} {
		v := f.append(nil)
		for n := range len(v) {
			wantCorrupt(t, fmt.Sprintf("truncated to %d of %d bytes", n, len(v)), v[:n], "")
		}
	}
	// A length that runs past the end is reported as such, not read short.
	wantCorrupt(t, "bytes", []byte{5, 'a'}, "length past the end")
	wantCorrupt(t, "empty", nil, "bad varint")
}

func TestTrailingBytes(t *testing.T) {
	v := sample().append(nil)
	wantCorrupt(t, "trailing zero", append(v, 0), "trailing bytes")
	wantCorrupt(t, "trailing record", append(v, v...), "trailing bytes")
}

func TestVarint(t *testing.T) {
	for _, x := range []uint64{0, 1, 127, 128, 255, 300, 1<<14 - 1, 1 << 14, 1<<63 - 1, 1 << 63, math.MaxUint64} {
		for _, tail := range []string{"", "x"} {
			v := string(binary.AppendUvarint(nil, x)) + tail
			d := NewDecoder(v, "v", testCorrupt)
			if got := d.Uvarint(); got != x || d.Err() != nil || d.Rest() != tail {
				t.Errorf("Uvarint(%x) = %d, %v, rest %q; want %d", v, got, d.Err(), d.Rest(), x)
			}
		}
	}
	bad := map[string]string{
		"empty":                     "",
		"unterminated":              "\x80",
		"non-minimal zero":          "\x80\x00",
		"non-minimal one":           "\x81\x00",
		"non-minimal long":          "\xff\xff\x80\x00",
		"non-minimal ten bytes":     "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00",
		"overflow in the 10th byte": "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02",
		"eleven bytes":              "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x81\x00",
	}
	for name, v := range bad {
		d := NewDecoder(v, "v", testCorrupt)
		if got := d.Uvarint(); got != 0 || !errors.Is(d.Err(), errTest) || d.Err().Error() != "test: corrupt record: v: bad varint" {
			t.Errorf("%s (%x): %d, %v; want bad varint", name, v, got, d.Err())
		}
	}
}

func TestStringMap(t *testing.T) {
	m := map[string]string{"b": "2", "a": "1", "": "0"}
	if got, want := AppendStringMap(nil, m), []byte("\x03\x00\x010\x01a\x011\x01b\x012"); !bytes.Equal(got, want) {
		t.Errorf("AppendStringMap = %q, want %q (keys in order)", got, want)
	}
	if n := len(AppendStringMap(nil, m)); n > StringMapSize(m) {
		t.Errorf("StringMapSize %d < %d", StringMapSize(m), n)
	}
	for name, v := range map[string]string{
		"unordered": "\x02\x01b\x00\x01a\x00",
		"repeated":  "\x02\x01a\x00\x01a\x00",
	} {
		d := NewDecoder(v, "m", testCorrupt)
		if got := d.StringMap(); got != nil || d.Err() == nil ||
			d.Err().Error() != "test: corrupt record: m: map keys not in strictly increasing order" {
			t.Errorf("%s: %v, %v", name, got, d.Err())
		}
	}
	d := NewDecoder("\x00", "m", testCorrupt)
	if got := d.StringMap(); got != nil || d.Finish() != nil {
		t.Errorf("empty map: %#v, %v", got, d.Err())
	}
}

func TestCount(t *testing.T) {
	for _, c := range []struct {
		v    string
		size int
		want int
		ok   bool
	}{
		{"\x00", 16, 0, true},
		{"\x01" + strings.Repeat("x", 16), 16, 1, true},
		{"\x02" + strings.Repeat("x", 31), 16, 0, false},
		{"\x02" + strings.Repeat("x", 32), 16, 2, true},
		{string(binary.AppendUvarint(nil, 1<<40)) + "xx", 1, 0, false},
		{string(binary.AppendUvarint(nil, math.MaxUint64)), 1, 0, false},
	} {
		d := NewDecoder(c.v, "c", testCorrupt)
		got := d.Count(c.size)
		if got != c.want || (d.Err() == nil) != c.ok {
			t.Errorf("Count(%d) of %x = %d, %v; want %d, ok %v", c.size, c.v, got, d.Err(), c.want, c.ok)
		}
		if !c.ok && d.Err().Error() != "test: corrupt record: c: count past the end" {
			t.Errorf("Count of %x: %v", c.v, d.Err())
		}
	}
}

func TestTimeNanoseconds(t *testing.T) {
	for _, sortable := range []bool{false, true} {
		v := binary.BigEndian.AppendUint32(make([]byte, 8), 1e9)
		d := NewDecoder(v, "t", testCorrupt)
		var got time.Time
		if sortable {
			got = d.SortableTime()
		} else {
			got = d.Time()
		}
		if !got.IsZero() || d.Err() == nil || d.Err().Error() != "test: corrupt record: t: nanoseconds out of range" {
			t.Errorf("sortable %v: %v, %v", sortable, got, d.Err())
		}
	}
}

func TestVersion(t *testing.T) {
	for _, c := range []struct {
		v  string
		ok bool
	}{{"", false}, {"\x02", false}, {"\x01", true}, {"\x01\x00", true}} {
		d := NewDecoder(c.v, "r", testCorrupt)
		d.Version(1)
		if (d.Err() == nil) != c.ok || !c.ok && d.Err().Error() != "test: corrupt record: r: unknown version" {
			t.Errorf("Version(1) of %x: %v", c.v, d.Err())
		}
		if c.ok && d.Rest() != c.v[1:] {
			t.Errorf("Version(1) of %x left %x", c.v, d.Rest())
		}
	}
}

// TestErrorsSticky checks that after the first error every read is zero, the rest is dropped
// and Finish reports that first error.
func TestErrorsSticky(t *testing.T) {
	d := NewDecoder([]byte{0x80}, "r", testCorrupt)
	d.Uvarint()
	first := d.Err()
	if first == nil || len(d.Rest()) != 0 {
		t.Fatalf("Uvarint of 80: %v, rest %x", first, d.Rest())
	}
	if d.Bytes() != nil || d.Str() != "" || !d.Time().IsZero() || d.Uint32() != 0 || d.Uint64() != 0 ||
		d.Count(1) != 0 || d.Next(0) != nil {
		t.Error("a read after an error returned a value")
	}
	d.Fail("other")
	if err := d.Finish(); err != first {
		t.Errorf("Finish = %v, want the first error %v", err, first)
	}
}

func TestNilConstructor(t *testing.T) {
	var zero Decoder[string]
	if err := zero.Finish(); err != nil {
		t.Errorf("zero Decoder: %v", err)
	}
	d := NewDecoder("", "kind", nil)
	d.Uint32()
	if err := d.Finish(); err == nil || err.Error() != "corrupt record: kind: length past the end" {
		t.Errorf("nil constructor: %v", err)
	}
}

// TestCopies checks that byte fields never alias the input nor each other.
func TestCopies(t *testing.T) {
	in := AppendBytes(AppendBytes(nil, []byte("ab")), []byte("cd"))
	d := NewDecoder(in, "r", testCorrupt)
	a, b := d.Bytes(), d.Bytes()
	id := d.Copy([]byte("key"))
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	_ = append(a, 'X') // must not overwrite b
	clear(in)
	if string(a) != "ab" || string(b) != "cd" || string(id) != "key" {
		t.Errorf("got %q %q %q", a, b, id)
	}
	if cap(a) != len(a) || cap(b) != len(b) {
		t.Errorf("capacities %d %d, want lengths", cap(a), cap(b))
	}
	// Copy of an empty key is non-nil; a key too long for the buffer is copied all the same.
	if c := d.Copy(nil); c == nil {
		t.Error("Copy(nil) = nil")
	}
	long := bytes.Repeat([]byte{7}, 1000)
	if c := d.Copy(long); !bytes.Equal(c, long) || &c[0] == &long[0] {
		t.Error("Copy of a long key")
	}
}

// TestStringAllocs checks that the string fields of a string input share its memory, and that
// those of a []byte input share one copy of it.
func TestStringAllocs(t *testing.T) {
	v := AppendString(AppendString(AppendString(nil, "alice"), ""), "bob")
	sv := string(v)
	if n := testing.AllocsPerRun(100, func() { readStrings(NewDecoder(sv, "r", testCorrupt)) }); n != 0 {
		t.Errorf("string input: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { readStrings(NewDecoder(v, "r", testCorrupt)) }); n != 1 {
		t.Errorf("[]byte input: %v allocations, want 1", n)
	}
}

func readStrings[T string | []byte](d Decoder[T]) {
	if d.Str() != "alice" || d.Str() != "" || d.Str() != "bob" || d.Finish() != nil {
		panic("bad record")
	}
}

// FuzzDecoder checks that no input panics, that []byte and string inputs decode alike, that
// what decodes re-encodes to the same bytes (one encoding per record), and that Uvarint accepts
// exactly the minimal varints that binary.Uvarint reads.
func FuzzDecoder(f *testing.F) {
	f.Add(sample().append(nil))
	f.Add((&fields{}).append(nil))
	f.Add([]byte{})
	f.Add([]byte{0x80, 0x00})
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"))
	f.Fuzz(func(t *testing.T, v []byte) {
		if g, err := decodeBoth(t, v); err == nil && !bytes.Equal(g.append(nil), v) {
			t.Fatalf("decode-encode changed the record:\n in  %x\n out %x", v, g.append(nil))
		}
		want, n := binary.Uvarint(v)
		ok := n > 0 && (n == 1 || v[n-1] != 0)
		d := NewDecoder(v, "v", testCorrupt)
		got := d.Uvarint()
		if (d.Err() == nil) != ok || ok && (got != want || len(d.Rest()) != len(v)-n) {
			t.Fatalf("Uvarint(%x) = %d, %v; binary.Uvarint %d, %d", v, got, d.Err(), want, n)
		}
	})
}
