package redisstore

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

func sampleRecords() (*server.Session, *server.Lane, *Notice) {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC)
	s := &server.Session{
		ID:        bytes.Repeat([]byte{0xaa}, 32),
		UserID:    "alice",
		Claims:    map[string]string{"role": "admin", "": "x", "name": ""},
		Created:   t0,
		Expires:   t0.Add(12 * time.Hour),
		LastSeen:  time.Date(1969, 12, 31, 23, 59, 59, 1, time.UTC),
		UserAgent: bytes.Repeat([]byte{0xbb}, 32),
	}
	l := &server.Lane{
		ID:              protocol.LaneID{1, 2, 3},
		SessionID:       s.ID,
		Epoch:           3,
		Key:             bytes.Repeat([]byte{0xcc}, 60),
		PrevKey:         []byte{},
		PrevUntil:       t0.Add(30 * time.Second),
		RotatedAt:       time.Unix(-5, 7).UTC(),
		RotateClientPub: bytes.Repeat([]byte{0xdd}, 32),
		EventSeq:        1<<64 - 1,
	}
	return s, l, &Notice{Lanes: []protocol.LaneID{{1}, {2}}, Reason: "revoked"}
}

func FuzzDecode(f *testing.F) {
	s, l, n := sampleRecords()
	f.Add(byte(0), encodeSession(s))
	f.Add(byte(0), encodeSession(&server.Session{}))
	f.Add(byte(1), encodeLane(l))
	f.Add(byte(1), encodeLane(&server.Lane{}))
	f.Add(byte(2), encodeSeen(s.LastSeen))
	f.Add(byte(2), encodeSeen(time.Time{}))
	f.Add(byte(3), encodeNotice(n))
	f.Add(byte(3), encodeNotice(&Notice{Resync: true}))
	f.Fuzz(func(t *testing.T, kind byte, v []byte) {
		// Decoding never panics; what decodes re-encodes to the same bytes (one encoding per
		// record, so nothing can be smuggled in a second form).
		var re []byte
		switch kind % 4 {
		case 0:
			var s server.Session
			if err := decodeSessionRecord(&s, string(v)); err != nil {
				return
			}
			re = encodeSession(&s)
		case 1:
			var l server.Lane
			if err := decodeLane(&l, protocol.LaneID{}, "sid", string(v)); err != nil {
				return
			}
			if !bytes.Equal(v[1:5], laneHead(l.Epoch)[1:]) {
				t.Fatalf("epoch not at bytes 1..4: %x", v)
			}
			re = encodeLane(&l)
		case 2:
			tm, err := decodeSeen(string(v))
			if err != nil {
				return
			}
			re = encodeSeen(tm)
		case 3:
			n, err := decodeNotice(string(v))
			if err != nil {
				return
			}
			re = encodeNotice(&n)
		}
		if !bytes.Equal(re, v) {
			t.Fatalf("decode-encode changed the record:\n in  %x\n out %x", v, re)
		}
	})
}

func TestCodecRoundTrip(t *testing.T) {
	s, l, n := sampleRecords()
	var gs server.Session
	if err := decodeSession(&gs, string(s.ID), string(encodeSession(s)), string(encodeSeen(s.LastSeen))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gs.ID, s.ID) || gs.UserID != s.UserID || !maps.Equal(gs.Claims, s.Claims) ||
		!gs.Created.Equal(s.Created) || !gs.Expires.Equal(s.Expires) || !gs.LastSeen.Equal(s.LastSeen) ||
		!bytes.Equal(gs.UserAgent, s.UserAgent) {
		t.Errorf("session: got %+v, want %+v", gs, s)
	}
	var gl server.Lane
	if err := decodeLane(&gl, l.ID, string(l.SessionID), string(encodeLane(l))); err != nil {
		t.Fatal(err)
	}
	if gl.ID != l.ID || !bytes.Equal(gl.SessionID, l.SessionID) || gl.Epoch != l.Epoch || !bytes.Equal(gl.Key, l.Key) ||
		gl.PrevKey == nil || len(gl.PrevKey) != 0 || !gl.PrevUntil.Equal(l.PrevUntil) || !gl.RotatedAt.Equal(l.RotatedAt) ||
		!bytes.Equal(gl.RotateClientPub, l.RotateClientPub) || gl.RotateReply != nil || gl.EventSeq != l.EventSeq {
		t.Errorf("lane: got %+v, want %+v", gl, l)
	}
	gn, err := decodeNotice(string(encodeNotice(n)))
	if err != nil || gn.Reason != n.Reason || len(gn.Lanes) != 2 || gn.Lanes[1] != n.Lanes[1] || gn.Resync {
		t.Errorf("notice: got %+v, %v", gn, err)
	}
	// The sortable time orders as time does, across the epoch.
	times := []time.Time{time.Time{}, time.Unix(-1, 0), time.Unix(-1, 999999999), time.Unix(0, 0), time.Unix(0, 1), time.Unix(1<<40, 0)}
	for i := 1; i < len(times); i++ {
		if bytes.Compare(encodeSeen(times[i-1]), encodeSeen(times[i])) >= 0 {
			t.Errorf("encodeSeen(%v) does not sort before encodeSeen(%v)", times[i-1], times[i])
		}
	}
}

func TestCodecStrict(t *testing.T) {
	s, l, _ := sampleRecords()
	sess, lane := string(encodeSession(s)), string(encodeLane(l))
	bad := map[string]string{
		"empty":            "",
		"unknown version":  "\x02" + sess[1:],
		"trailing":         sess + "\x00",
		"truncated":        sess[:len(sess)-1],
		"non-minimal":      "\x01\x85\x00",
		"claims unordered": "\x01\x00\x02\x01b\x00\x01a\x00" + strings.Repeat("\x00", 24) + "\x00",
	}
	for name, v := range bad {
		var gs server.Session
		if err := decodeSessionRecord(&gs, v); !errors.Is(err, errCorrupt) {
			t.Errorf("session %s: %v, want errCorrupt", name, err)
		}
	}
	var gl server.Lane
	if err := decodeLane(&gl, l.ID, "s", lane[:len(lane)-1]); !errors.Is(err, errCorrupt) {
		t.Errorf("truncated lane: %v", err)
	}
	seen := encodeSeen(time.Now())
	seen[8] = 0xff // nanoseconds out of range
	if _, err := decodeSeen(string(seen)); !errors.Is(err, errCorrupt) {
		t.Errorf("seen with bad nanoseconds: %v", err)
	}
	for _, v := range []string{"\x01\x00\x00" + "short", "\x01\x02\x00", "\x01\x00\x05ab"} {
		if _, err := decodeNotice(v); !errors.Is(err, errCorrupt) {
			t.Errorf("notice %q: %v, want errCorrupt", v, err)
		}
	}
}
