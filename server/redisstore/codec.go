package redisstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

// Record encoding, version 1 (the approach of boltstore's codec, with the layout of this store).
// Every record starts with a version byte; the rest is a fixed sequence of fields:
//
//	bytes   uvarint(0) for nil, else uvarint(len+1) || data  (nil and empty both round-trip)
//	string  uvarint(len) || data
//	time    i64be Unix seconds || u32be nanoseconds (< 1e9); the zero time.Time round-trips
//	u32/u64 big endian
//
//	session  v1 | user string | claims uvarint(n) (key string, value string)* in strictly
//	         increasing key order | created time | expires time | user agent bytes
//	         (hash field "s"; the ID is the key's, LastSeen is field "t")
//	lane     v1 | epoch u32 | key bytes | prev key bytes | prev until time | rotated at time |
//	         rotate client pub bytes | rotate reply bytes | event seq u64
//	         (hash field "l"+lane ID; the session ID is the key's. The epoch sits at bytes 1..4
//	         so that the UpdateLane script compares it without decoding.)
//	seen     i64be (Unix seconds with the sign bit flipped) || u32be nanoseconds: 12 bytes
//	         whose byte order is time order, so the Touch script compares them bytewise
//	notice   v1 | flags (bit 0: resync) | reason string | lane IDs, 16 bytes each, to the end
//
// Decoding is strict: an unknown version, a length past the end, a nanosecond field out of
// range, unordered or duplicate claims, a non-minimal varint or trailing bytes are errors, and
// no input panics. Each record has exactly one encoding (FuzzDecode checks it).
const recordVersion = 1

var errCorrupt = errors.New("redisstore: corrupt record")

func corrupt(kind, what string) error { return fmt.Errorf("%w: %s: %s", errCorrupt, kind, what) }

const (
	timeSize   = 12
	noticeSync = 1 << 0 // notice flag: resync
)

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

// appendSortableTime encodes t so that byte order is time order.
func appendSortableTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func encodeSession(s *server.Session) []byte {
	n := 1 + 10 + len(s.UserID) + 10 + 2*timeSize + 10 + len(s.UserAgent)
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
	return appendBytes(b, s.UserAgent)
}

// laneHead is the first bytes of an encoded lane: the version and the epoch.
func laneHead(epoch uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{recordVersion}, epoch)
}

func encodeLane(l *server.Lane) []byte {
	b := make([]byte, 0, 5+5*10+len(l.Key)+len(l.PrevKey)+len(l.RotateClientPub)+len(l.RotateReply)+8+2*timeSize)
	b = append(b, laneHead(l.Epoch)...)
	b = appendBytes(b, l.Key)
	b = appendBytes(b, l.PrevKey)
	b = appendTime(b, l.PrevUntil)
	b = appendTime(b, l.RotatedAt)
	b = appendBytes(b, l.RotateClientPub)
	b = appendBytes(b, l.RotateReply)
	return binary.BigEndian.AppendUint64(b, l.EventSeq)
}

func encodeSeen(t time.Time) []byte { return appendSortableTime(make([]byte, 0, timeSize), t) }

// encodeNoticeHead is a notice without its lanes: the Delete script appends them.
func encodeNoticeHead(reason string, resync bool) []byte {
	b := make([]byte, 0, 2+10+len(reason))
	flags := byte(0)
	if resync {
		flags |= noticeSync
	}
	b = append(b, recordVersion, flags)
	return appendString(b, reason)
}

func encodeNotice(n *Notice) []byte {
	b := encodeNoticeHead(n.Reason, n.Resync)
	for _, l := range n.Lanes {
		b = append(b, l[:]...)
	}
	return b
}

// decoder reads one record from a string (what go-redis returns). String fields are substrings
// of the input (immutable, so sharing is safe); byte fields are copied into own, a single buffer,
// so that no returned slice can grow into another.
type decoder struct {
	kind string
	s    string // the rest of the record
	own  []byte // copies of byte fields
	err  error
}

func newDecoder(kind, v string) decoder {
	d := decoder{kind: kind, s: v}
	if len(v) == 0 || v[0] != recordVersion {
		d.fail("unknown version")
		return d
	}
	d.s = v[1:]
	return d
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = corrupt(d.kind, what)
	}
	d.s = ""
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var v uint64
	for i := 0; i < len(d.s) && i < binary.MaxVarintLen64; i++ {
		c := d.s[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // overflow
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if i > 0 && c == 0 { // not minimal
				break
			}
			d.s = d.s[i+1:]
			return v
		}
	}
	d.fail("bad varint")
	return 0
}

// next returns the next n bytes of the record.
func (d *decoder) next(n uint64) string {
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.s)) {
		d.fail("length past the end")
		return ""
	}
	v := d.s[:n]
	d.s = d.s[n:]
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
// field still to come and extra, extra bytes (an ID the caller adds).
func (d *decoder) keep(v string) []byte {
	if d.own == nil {
		d.own = make([]byte, 0, len(d.s)+len(v)+64)
	}
	start := len(d.own)
	d.own = append(d.own, v...)
	return d.own[start:len(d.own):len(d.own)]
}

func (d *decoder) string() string { return d.next(d.uvarint()) }

func (d *decoder) u32() uint32 {
	v := d.next(4)
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint32([]byte(v))
}

func (d *decoder) u64() uint64 {
	v := d.next(8)
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint64([]byte(v))
}

func (d *decoder) timeFrom(sec uint64) time.Time {
	nsec := d.u32()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 {
		d.fail("nanoseconds out of range")
		return time.Time{}
	}
	return time.Unix(int64(sec), int64(nsec)).UTC()
}

func (d *decoder) time() time.Time { return d.timeFrom(d.u64()) }

func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.s)/min) {
		d.fail("count past the end")
		return 0
	}
	return int(n)
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.s) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// decodeSession decodes session record v and last-seen record seen of the session id into s.
func decodeSession(s *server.Session, id, v, seen string) error {
	t, err := decodeSeen(seen)
	if err != nil {
		return err
	}
	d, err := decodeSessionFields(s, v)
	if err != nil {
		return err
	}
	s.LastSeen = t
	if len(id) <= cap(d.own)-len(d.own) {
		s.ID = d.keep(id)
	} else {
		s.ID = []byte(id)
	}
	return nil
}

// decodeSessionRecord decodes session record v into s, leaving ID and LastSeen alone.
func decodeSessionRecord(s *server.Session, v string) error {
	_, err := decodeSessionFields(s, v)
	return err
}

func decodeSessionFields(s *server.Session, v string) (*decoder, error) {
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
	s.UserAgent = d.bytes()
	return &d, d.finish()
}

func decodeSeen(v string) (time.Time, error) {
	if len(v) != timeSize {
		return time.Time{}, corrupt("last seen", "bad size")
	}
	d := decoder{kind: "last seen", s: v}
	t := d.timeFrom(d.u64() ^ 1<<63)
	return t, d.err
}

// decodeLane decodes lane record v of lane id in session sessionID into l.
func decodeLane(l *server.Lane, id protocol.LaneID, sessionID, v string) error {
	d := newDecoder("lane", v)
	l.ID = id
	l.Epoch = d.u32()
	l.Key = d.bytes()
	l.PrevKey = d.bytes()
	l.PrevUntil = d.time()
	l.RotatedAt = d.time()
	l.RotateClientPub = d.bytes()
	l.RotateReply = d.bytes()
	l.EventSeq = d.u64()
	if err := d.finish(); err != nil {
		return err
	}
	if len(sessionID) <= cap(d.own)-len(d.own) {
		l.SessionID = d.keep(sessionID)
	} else {
		l.SessionID = []byte(sessionID)
	}
	return nil
}

func decodeNotice(v string) (Notice, error) {
	d := newDecoder("notice", v)
	flags := d.next(1)
	reason := d.string()
	if d.err != nil {
		return Notice{}, d.err
	}
	if flags[0]&^noticeSync != 0 {
		return Notice{}, corrupt("notice", "unknown flags")
	}
	if len(d.s)%protocol.LaneIDSize != 0 {
		return Notice{}, corrupt("notice", "partial lane ID")
	}
	n := Notice{Reason: reason, Resync: flags[0]&noticeSync != 0}
	if len(d.s) > 0 {
		n.Lanes = make([]protocol.LaneID, len(d.s)/protocol.LaneIDSize)
		for i := range n.Lanes {
			copy(n.Lanes[i][:], d.s[i*protocol.LaneIDSize:])
		}
	}
	return n, nil
}
