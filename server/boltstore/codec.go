package boltstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

// Record encoding, version 1. Every value starts with a version byte; the rest is a fixed
// sequence of fields:
//
//	bytes   uvarint(0) for nil, else uvarint(len+1) || data  (nil and empty both round-trip)
//	string  uvarint(len) || data
//	time    i64be Unix seconds || u32be nanoseconds (< 1e9); the zero time.Time round-trips
//	u32/u64 big endian
//
//	session    v1 | user string | claims uvarint(n) (key string, value string)* in strictly
//	           increasing key order | created time | expires time | last seen time |
//	           user agent bytes | lanes uvarint(n) [16]byte*          (key: the session ID)
//	lane       v1 | session ID bytes | epoch u32 | key bytes | prev key bytes | prev until time |
//	           rotated at time | rotate client pub bytes | rotate reply bytes | event seq u64
//	                                                                   (key: the lane ID)
//	tombstone  v1 | until time | reason string | lanes uvarint(n) [16]byte*
//
// Decoding is strict: an unknown version, a length past the end, a nanosecond field out of
// range, unordered or duplicate claims, or trailing bytes are errors, and no input panics.
const recordVersion = 1

var errCorrupt = errors.New("boltstore: corrupt record")

func corrupt(kind, what string) error { return fmt.Errorf("%w: %s: %s", errCorrupt, kind, what) }

const timeSize = 12

func appendBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// appendSortableTime encodes t so that byte order is time order (index keys).
func appendSortableTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func appendLanes(b []byte, lanes []protocol.LaneID) []byte {
	b = binary.AppendUvarint(b, uint64(len(lanes)))
	for _, l := range lanes {
		b = append(b, l[:]...)
	}
	return b
}

func encodeSession(s *server.Session, lanes []protocol.LaneID) []byte {
	n := 1 + 10 + len(s.UserID) + 10 + 3*timeSize + 10 + len(s.UserAgent) + 10 + len(lanes)*protocol.LaneIDSize
	keys := make([]string, 0, len(s.Claims))
	for k, v := range s.Claims {
		keys = append(keys, k)
		n += 20 + len(k) + len(v)
	}
	slices.Sort(keys)
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = appendString(b, s.UserID)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, s.Claims[k])
	}
	b = appendTime(b, s.Created)
	b = appendTime(b, s.Expires)
	b = appendTime(b, s.LastSeen)
	b = appendBytes(b, s.UserAgent)
	return appendLanes(b, lanes)
}

func encodeLane(l *server.Lane) []byte {
	b := make([]byte, 0, 1+5*10+len(l.SessionID)+len(l.Key)+len(l.PrevKey)+len(l.RotateClientPub)+len(l.RotateReply)+4+8+2*timeSize)
	b = append(b, recordVersion)
	b = appendBytes(b, l.SessionID)
	b = binary.BigEndian.AppendUint32(b, l.Epoch)
	b = appendBytes(b, l.Key)
	b = appendBytes(b, l.PrevKey)
	b = appendTime(b, l.PrevUntil)
	b = appendTime(b, l.RotatedAt)
	b = appendBytes(b, l.RotateClientPub)
	b = appendBytes(b, l.RotateReply)
	return binary.BigEndian.AppendUint64(b, l.EventSeq)
}

type tombstone struct {
	until  time.Time
	reason string
	lanes  []protocol.LaneID // of a session tombstone
}

func encodeTombstone(t *tombstone) []byte {
	b := make([]byte, 0, 1+timeSize+10+len(t.reason)+10+len(t.lanes)*protocol.LaneIDSize)
	b = append(b, recordVersion)
	b = appendTime(b, t.until)
	b = appendString(b, t.reason)
	return appendLanes(b, t.lanes)
}

// decoder reads one record. It copies byte fields into own, a single buffer, so that the result
// shares no memory with the bolt page (valid only during the transaction) nor with other results.
type decoder struct {
	kind string
	orig []byte
	b    []byte // the rest of orig
	own  []byte // copies of byte fields
	str  string // string(orig) once a string field is read; string fields are substrings
	err  error
}

func newDecoder(kind string, v []byte) decoder {
	d := decoder{kind: kind, orig: v, b: v}
	if len(v) == 0 || v[0] != recordVersion {
		d.fail("unknown version")
		return d
	}
	d.b = v[1:]
	return d
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = corrupt(d.kind, what)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n > 1 && d.b[n-1] == 0 { // overflow, truncated, or not minimal
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// next returns the next n bytes of the record (aliasing it).
func (d *decoder) next(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length past the end")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	v := d.next(n - 1)
	if d.err != nil {
		return nil
	}
	return d.keep(v)
}

// keep copies v into the decoder's buffer, which is allocated once with room for every byte
// field still to come (and a record key).
func (d *decoder) keep(v []byte) []byte {
	if d.own == nil {
		d.own = make([]byte, 0, len(d.b)+len(v)+64)
	}
	start := len(d.own)
	d.own = append(d.own, v...)
	return d.own[start:len(d.own):len(d.own)]
}

func (d *decoder) string() string {
	n := d.uvarint()
	start := len(d.orig) - len(d.b)
	d.next(n)
	if d.err != nil || n == 0 {
		return ""
	}
	if d.str == "" {
		d.str = string(d.orig)
	}
	return d.str[start : start+int(n)]
}

func (d *decoder) u32() uint32 {
	v := d.next(4)
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (d *decoder) u64() uint64 {
	v := d.next(8)
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (d *decoder) time() time.Time {
	sec := int64(d.u64())
	nsec := d.u32()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 {
		d.fail("nanoseconds out of range")
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// count reads an element count and checks that n elements of at least min bytes fit.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.fail("count past the end")
		return 0
	}
	return int(n)
}

func (d *decoder) lanes() []protocol.LaneID {
	n := d.count(protocol.LaneIDSize)
	if n == 0 {
		return nil
	}
	out := make([]protocol.LaneID, n)
	for i := range out {
		copy(out[i][:], d.next(protocol.LaneIDSize))
	}
	return out
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// decodeSession decodes a session record stored under id into s (copying id).
func decodeSession(s *server.Session, id, v []byte) ([]protocol.LaneID, error) {
	d := newDecoder("session", v)
	s.UserID = d.string()
	if n := d.count(2); n > 0 {
		s.Claims = make(map[string]string, n)
		prev := ""
		for i := range n {
			k, val := d.string(), d.string()
			if i > 0 && k <= prev {
				d.fail("claims not in strictly increasing order")
				break
			}
			s.Claims[k] = val
			prev = k
		}
	}
	s.Created = d.time()
	s.Expires = d.time()
	s.LastSeen = d.time()
	s.UserAgent = d.bytes()
	lanes := d.lanes()
	if err := d.finish(); err != nil {
		return nil, err
	}
	if len(id) <= cap(d.own)-len(d.own) {
		s.ID = d.keep(id)
	} else {
		s.ID = bytes.Clone(id)
	}
	return lanes, nil
}

// decodeLane decodes a lane record stored under id into l.
func decodeLane(l *server.Lane, id, v []byte) error {
	if len(id) != protocol.LaneIDSize {
		return corrupt("lane", "bad key size")
	}
	d := newDecoder("lane", v)
	copy(l.ID[:], id)
	l.SessionID = d.bytes()
	l.Epoch = d.u32()
	l.Key = d.bytes()
	l.PrevKey = d.bytes()
	l.PrevUntil = d.time()
	l.RotatedAt = d.time()
	l.RotateClientPub = d.bytes()
	l.RotateReply = d.bytes()
	l.EventSeq = d.u64()
	return d.finish()
}

func decodeTombstone(v []byte) (*tombstone, error) {
	d := newDecoder("tombstone", v)
	t := &tombstone{}
	t.until = d.time()
	t.reason = d.string()
	t.lanes = d.lanes()
	if err := d.finish(); err != nil {
		return nil, err
	}
	return t, nil
}
