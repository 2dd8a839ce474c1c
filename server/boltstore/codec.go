package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/internal/record"
)

// Record encoding, version 1. Every value starts with a version byte; the rest is a fixed
// sequence of fields, encoded as package [record] says (bytes, string, time, u32/u64, uvarint,
// string map):
//
//	session    v1 | user string | claims string map | created time | expires time |
//	           last seen time | user agent bytes | lanes uvarint(n) [16]byte*
//	                                                                   (key: the session ID)
//	lane       v1 | session ID bytes | epoch u32 | key bytes | prev key bytes | prev until time |
//	           rotated at time | rotate client pub bytes | rotate reply bytes | event seq u64
//	                                                                   (key: the lane ID)
//	tombstone  v1 | until time | reason string | lanes uvarint(n) [16]byte*
//
// Decoding is strict: an unknown version, a length past the end, a nanosecond field out of
// range, a non-minimal varint, unordered or duplicate claims, or trailing bytes are errors
// wrapping errCorrupt, and no input panics.
const recordVersion = 1

var errCorrupt = errors.New("boltstore: corrupt record")

func corrupt(kind, what string) error { return fmt.Errorf("%w: %s: %s", errCorrupt, kind, what) }

// newDecoder returns a decoder of record v, past its version byte. Byte fields are copies, so
// the result shares no memory with the bolt page (valid only during the transaction).
func newDecoder(kind string, v []byte) record.Decoder[[]byte] {
	d := record.NewDecoder(v, kind, corrupt)
	d.Version(recordVersion)
	return d
}

func appendLanes(b []byte, lanes []protocol.LaneID) []byte {
	b = binary.AppendUvarint(b, uint64(len(lanes)))
	for _, l := range lanes {
		b = append(b, l[:]...)
	}
	return b
}

func encodeSession(s *server.Session, lanes []protocol.LaneID) []byte {
	n := 1 + 10 + len(s.UserID) + record.StringMapSize(s.Claims) + 3*record.TimeSize + 10 + len(s.UserAgent) + 10 + len(lanes)*protocol.LaneIDSize
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = record.AppendString(b, s.UserID)
	b = record.AppendStringMap(b, s.Claims)
	b = record.AppendTime(b, s.Created)
	b = record.AppendTime(b, s.Expires)
	b = record.AppendTime(b, s.LastSeen)
	b = record.AppendBytes(b, s.UserAgent)
	return appendLanes(b, lanes)
}

func encodeLane(l *server.Lane) []byte {
	b := make([]byte, 0, 1+5*10+len(l.SessionID)+len(l.Key)+len(l.PrevKey)+len(l.RotateClientPub)+len(l.RotateReply)+4+8+2*record.TimeSize)
	b = append(b, recordVersion)
	b = record.AppendBytes(b, l.SessionID)
	b = binary.BigEndian.AppendUint32(b, l.Epoch)
	b = record.AppendBytes(b, l.Key)
	b = record.AppendBytes(b, l.PrevKey)
	b = record.AppendTime(b, l.PrevUntil)
	b = record.AppendTime(b, l.RotatedAt)
	b = record.AppendBytes(b, l.RotateClientPub)
	b = record.AppendBytes(b, l.RotateReply)
	return binary.BigEndian.AppendUint64(b, l.EventSeq)
}

type tombstone struct {
	until  time.Time
	reason string
	lanes  []protocol.LaneID // of a session tombstone
}

func encodeTombstone(t *tombstone) []byte {
	b := make([]byte, 0, 1+record.TimeSize+10+len(t.reason)+10+len(t.lanes)*protocol.LaneIDSize)
	b = append(b, recordVersion)
	b = record.AppendTime(b, t.until)
	b = record.AppendString(b, t.reason)
	return appendLanes(b, t.lanes)
}

// decodeLanes reads a lanes field, uvarint(n) [16]byte* (see appendLanes).
func decodeLanes(d *record.Decoder[[]byte]) []protocol.LaneID {
	n := d.Count(protocol.LaneIDSize)
	if n == 0 {
		return nil
	}
	out := make([]protocol.LaneID, n)
	for i := range out {
		copy(out[i][:], d.Next(protocol.LaneIDSize))
	}
	return out
}

// decodeSession decodes a session record stored under id into s (copying id).
func decodeSession(s *server.Session, id, v []byte) ([]protocol.LaneID, error) {
	d := newDecoder("session", v)
	s.UserID = d.Str()
	s.Claims = d.StringMap()
	s.Created = d.Time()
	s.Expires = d.Time()
	s.LastSeen = d.Time()
	s.UserAgent = d.Bytes()
	lanes := decodeLanes(&d)
	if err := d.Finish(); err != nil {
		return nil, err
	}
	s.ID = d.Copy(id)
	return lanes, nil
}

// decodeLane decodes a lane record stored under id into l.
func decodeLane(l *server.Lane, id, v []byte) error {
	if len(id) != protocol.LaneIDSize {
		return corrupt("lane", "bad key size")
	}
	d := newDecoder("lane", v)
	copy(l.ID[:], id)
	l.SessionID = d.Bytes()
	l.Epoch = d.Uint32()
	l.Key = d.Bytes()
	l.PrevKey = d.Bytes()
	l.PrevUntil = d.Time()
	l.RotatedAt = d.Time()
	l.RotateClientPub = d.Bytes()
	l.RotateReply = d.Bytes()
	l.EventSeq = d.Uint64()
	return d.Finish()
}

func decodeTombstone(v []byte) (*tombstone, error) {
	d := newDecoder("tombstone", v)
	t := &tombstone{}
	t.until = d.Time()
	t.reason = d.Str()
	t.lanes = decodeLanes(&d)
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return t, nil
}
