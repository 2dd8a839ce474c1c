package protocol

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestCodecRoundTripRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(30, 30))
	for i := 0; i < 500; i++ {
		m := Message{Code: byte(rng.Uint32())}
		tag := -1
		for range rng.IntN(MaxFields + 1) {
			tag += 1 + rng.IntN(5)
			if tag > 255 {
				break
			}
			n := rng.IntN(20)
			if rng.IntN(10) == 0 {
				n = 100 + rng.IntN(20000) // multi-byte lengths
			}
			m.Fields = append(m.Fields, Field{Tag: byte(tag), Value: randBytes(rng, n)})
		}
		b := m.Append(nil)
		got, err := DecodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Code != m.Code || len(got.Fields) != len(m.Fields) || !bytes.Equal(got.Append(nil), b) {
			t.Fatalf("round trip differs")
		}
		for j, f := range got.Fields {
			v, ok := got.Get(f.Tag)
			if !ok || !bytes.Equal(v, m.Fields[j].Value) {
				t.Fatal("Get differs")
			}
			if cap(f.Value) != len(f.Value) {
				t.Fatal("a field's capacity reaches into the next field")
			}
		}
	}
}

func TestCodecLimits(t *testing.T) {
	big := make([]byte, MaxMessageSize+1)
	big[0], big[1] = 1, 4
	if _, err := DecodeMessage(big); ErrorClass(err) != "too_large" {
		t.Fatalf("oversize: %v", err)
	}
	ok := AppendField([]byte{1, 4}, 1, make([]byte, MaxMessageSize-7)) // 2 header + 1 tag + 4 length bytes
	if len(ok) != MaxMessageSize {
		t.Fatalf("test message is %d bytes", len(ok))
	}
	if _, err := DecodeMessage(ok); err != nil {
		t.Fatalf("large message within the limit: %v", err)
	}
}

func TestCodecUint(t *testing.T) {
	for _, n := range []uint64{0, 1, 127, 128, 300, 1<<32 - 1, 1<<63 + 5, 1<<64 - 1} {
		b := AppendUintField([]byte{1, 0}, 3, n)
		m, err := DecodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		got, present, err := m.Uint(3)
		if !present || err != nil || got != n {
			t.Fatalf("Uint(%d) = %d %v %v", n, got, present, err)
		}
		if v, _ := m.Get(3); !bytes.Equal(v, binary.AppendUvarint(nil, n)) {
			t.Fatalf("%d encodes as %x", n, v)
		}
	}
	m := Message{Fields: []Field{{1, nil}, {2, []byte{0x80, 0}}, {3, []byte{1, 2}}, {4, []byte{0x80}}, {5, bytes.Repeat([]byte{0xff}, 10)}}}
	if _, present, err := m.Uint(9); present || err != nil {
		t.Fatal("absent field")
	}
	for tag := byte(1); tag <= 5; tag++ {
		if _, present, err := m.Uint(tag); !present || ErrorClass(err) != "malformed" {
			t.Errorf("field %d: %v %v", tag, present, err)
		}
	}
}

func TestSplitList(t *testing.T) {
	items := []string{"", "a", string(make([]byte, 200)), "GET"}
	v := AppendList(nil, items)
	got, err := SplitList(v, 4)
	if err != nil || !slices.Equal(got, items) {
		t.Fatalf("SplitList = %q, %v", got, err)
	}
	if _, err := SplitList(v, 3); ErrorClass(err) != "too_large" {
		t.Fatalf("max 3: %v", err)
	}
	if got, err := SplitList(nil, 0); err != nil || len(got) != 0 {
		t.Fatalf("empty list: %v %v", got, err)
	}
	for name, bad := range map[string][]byte{
		"length past end":    {3, 'a', 'b'},
		"non-minimal length": {0x81, 0x00, 'a'},
		"truncated length":   {0x80},
		"overflow length":    {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
		"trailing garbage":   {1, 'a', 5},
	} {
		if _, err := SplitList(bad, 10); ErrorClass(err) != "malformed" {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestUvarint(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 31))
	for i := 0; i < 2000; i++ {
		n := rng.Uint64() >> rng.IntN(64)
		b := appendUvarint(nil, n)
		if !bytes.Equal(b, binary.AppendUvarint(nil, n)) || uvarintLen(n) != len(b) {
			t.Fatalf("%d: %x", n, b)
		}
		got, w := uvarint(append(b, 0xaa))
		if got != n || w != len(b) {
			t.Fatalf("uvarint(%x) = %d, %d", b, got, w)
		}
		if _, w := uvarint(b[:len(b)-1]); w != 0 {
			t.Fatalf("truncated %x: w=%d", b, w)
		}
	}
	if _, w := uvarint(bytes.Repeat([]byte{0xff}, 11)); w >= 0 {
		t.Fatal("11-byte varint accepted")
	}
	if _, w := uvarint(append(bytes.Repeat([]byte{0xff}, 9), 2)); w >= 0 {
		t.Fatal("65-bit varint accepted")
	}
	if n, w := uvarint(append(bytes.Repeat([]byte{0xff}, 9), 1)); w != 10 || n != 1<<64-1 {
		t.Fatal("2^64-1 refused")
	}
}
