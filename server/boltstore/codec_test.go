package boltstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/internal/record"
)

func sampleRecords() (*server.Session, []protocol.LaneID, *server.Lane, *tombstone) {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC)
	s := &server.Session{
		ID:        bytes.Repeat([]byte{0xaa}, 32),
		UserID:    "alice",
		Claims:    map[string]string{"role": "admin", "": "x", "name": ""},
		Created:   t0,
		Expires:   t0.Add(12 * time.Hour),
		LastSeen:  t0.Add(time.Minute),
		UserAgent: bytes.Repeat([]byte{0xbb}, 32),
	}
	lanes := []protocol.LaneID{{1}, {2}}
	l := &server.Lane{
		ID:              lanes[0],
		SessionID:       s.ID,
		Epoch:           3,
		Key:             bytes.Repeat([]byte{0xcc}, 60),
		PrevKey:         []byte{},
		PrevUntil:       t0.Add(30 * time.Second),
		RotatedAt:       time.Unix(-5, 7),
		RotateClientPub: bytes.Repeat([]byte{0xdd}, 32),
		EventSeq:        1<<64 - 1,
	}
	return s, lanes, l, &tombstone{until: t0, reason: "logout", lanes: lanes}
}

func FuzzDecode(f *testing.F) {
	s, lanes, l, tomb := sampleRecords()
	f.Add(byte(0), encodeSession(s, lanes))
	f.Add(byte(0), encodeSession(&server.Session{}, nil))
	f.Add(byte(1), encodeLane(l))
	f.Add(byte(1), encodeLane(&server.Lane{}))
	f.Add(byte(2), encodeTombstone(tomb))
	f.Add(byte(2), encodeTombstone(&tombstone{}))
	f.Fuzz(func(t *testing.T, kind byte, v []byte) {
		// Decoding never panics; what decodes re-encodes to the same bytes (one encoding per
		// record, so nothing can be smuggled in a second form).
		var re []byte
		switch kind % 3 {
		case 0:
			var s server.Session
			lanes, err := decodeSession(&s, []byte("id"), v)
			if err != nil {
				return
			}
			re = encodeSession(&s, lanes)
		case 1:
			var l server.Lane
			if err := decodeLane(&l, make([]byte, protocol.LaneIDSize), v); err != nil {
				return
			}
			re = encodeLane(&l)
		case 2:
			tomb, err := decodeTombstone(v)
			if err != nil {
				return
			}
			re = encodeTombstone(tomb)
		}
		if !bytes.Equal(re, v) {
			t.Fatalf("decode-encode changed the record:\n in  %x\n out %x", v, re)
		}
	})
}

func TestCodecRoundTrip(t *testing.T) {
	s, lanes, l, tomb := sampleRecords()
	var s2 server.Session
	lanes2, err := decodeSession(&s2, s.ID, encodeSession(s, lanes))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encodeSession(&s2, lanes2), encodeSession(s, lanes)) || !bytes.Equal(s2.ID, s.ID) {
		t.Error("session changed in a round trip")
	}
	var l2 server.Lane
	if err := decodeLane(&l2, l.ID[:], encodeLane(l)); err != nil {
		t.Fatal(err)
	}
	if l2.PrevKey == nil || l2.RotateReply != nil {
		t.Errorf("nil and empty byte slices not kept: PrevKey %#v, RotateReply %#v", l2.PrevKey, l2.RotateReply)
	}
	if !l2.RotatedAt.Equal(l.RotatedAt) || l2.EventSeq != l.EventSeq {
		t.Errorf("lane changed in a round trip: %v %d", l2.RotatedAt, l2.EventSeq)
	}
	tomb2, err := decodeTombstone(encodeTombstone(tomb))
	if err != nil || tomb2.reason != "logout" || len(tomb2.lanes) != 2 || !tomb2.until.Equal(tomb.until) {
		t.Errorf("tombstone round trip: %+v, %v", tomb2, err)
	}
}

func TestCodecStrict(t *testing.T) {
	s, lanes, l, tomb := sampleRecords()
	decoders := map[string]func([]byte) error{
		"session": func(v []byte) error {
			var x server.Session
			_, err := decodeSession(&x, s.ID, v)
			return err
		},
		"lane": func(v []byte) error {
			var x server.Lane
			return decodeLane(&x, l.ID[:], v)
		},
		"tombstone": func(v []byte) error { _, err := decodeTombstone(v); return err },
	}
	good := map[string][]byte{
		"session":   encodeSession(s, lanes),
		"lane":      encodeLane(l),
		"tombstone": encodeTombstone(tomb),
	}
	for kind, v := range good {
		dec := decoders[kind]
		if err := dec(v); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		// Every truncation, a trailing byte, another version: all errors wrapping errCorrupt.
		for n := range len(v) {
			if err := dec(v[:n]); !errors.Is(err, errCorrupt) {
				t.Errorf("%s truncated to %d bytes: %v", kind, n, err)
			}
		}
		if err := dec(append(bytes.Clone(v), 0)); !errors.Is(err, errCorrupt) {
			t.Errorf("%s with a trailing byte: %v", kind, err)
		}
		w := bytes.Clone(v)
		w[0] = recordVersion + 1
		if err := dec(w); !errors.Is(err, errCorrupt) {
			t.Errorf("%s version 2: %v", kind, err)
		}
		// Flipping any single byte never panics.
		for i := range v {
			w := bytes.Clone(v)
			w[i] ^= 0xff
			dec(w)
		}
	}

	// Nanoseconds out of range.
	ts := encodeTombstone(tomb)
	binary.BigEndian.PutUint32(ts[1+8:], 1e9)
	if _, err := decodeTombstone(ts); !errors.Is(err, errCorrupt) {
		t.Errorf("nanoseconds 1e9: %v", err)
	}
	// A count that cannot fit.
	huge := binary.AppendUvarint(append([]byte{recordVersion}, make([]byte, record.TimeSize)...), 0)
	huge = binary.AppendUvarint(huge, 1<<40)
	if _, err := decodeTombstone(huge); !errors.Is(err, errCorrupt) {
		t.Errorf("huge lane count: %v", err)
	}
	// A non-minimal varint (0 as 0x80 0x00).
	nm := append([]byte{recordVersion}, make([]byte, record.TimeSize)...)
	nm = append(nm, 0x80, 0x00, 0)
	if _, err := decodeTombstone(nm); !errors.Is(err, errCorrupt) {
		t.Errorf("non-minimal varint: %v", err)
	}
	// Claims out of order or repeated.
	for _, keys := range [][2]string{{"b", "a"}, {"a", "a"}} {
		v := []byte{recordVersion}
		v = record.AppendString(v, "u")
		v = binary.AppendUvarint(v, 2)
		for _, k := range keys {
			v = record.AppendString(record.AppendString(v, k), "v")
		}
		for range 3 {
			v = record.AppendTime(v, time.Time{})
		}
		v = appendLanes(record.AppendBytes(v, nil), nil)
		var x server.Session
		if _, err := decodeSession(&x, s.ID, v); !errors.Is(err, errCorrupt) {
			t.Errorf("claims %q: %v", keys, err)
		}
	}
}
