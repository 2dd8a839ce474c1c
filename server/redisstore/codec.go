package redisstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/internal/record"
)

// Record encoding, version 1 (the approach of boltstore's codec, with the layout of this store).
// Every record starts with a version byte; the rest is a fixed sequence of fields, encoded as
// package [record] says (bytes, string, time, sortable time, u32/u64, uvarint, string map):
//
//	session  v1 | user string | claims string map | created time | expires time |
//	         user agent bytes  (hash field "s"; the ID is the key's, LastSeen is field "t")
//	lane     v1 | epoch u32 | key bytes | prev key bytes | prev until time | rotated at time |
//	         rotate client pub bytes | rotate reply bytes | event seq u64
//	         (hash field "l"+lane ID; the session ID is the key's. The epoch sits at bytes 1..4
//	         so that the UpdateLane script compares it without decoding.)
//	seen     sortable time, alone (no version byte): 12 bytes whose byte order is time order,
//	         so the Touch script compares them bytewise
//	notice   v1 | flags (bit 0: resync) | reason string | lane IDs, 16 bytes each, to the end
//
// Decoding is strict: an unknown version, a length past the end, a nanosecond field out of
// range, unordered or duplicate claims, a non-minimal varint or trailing bytes are errors
// wrapping errCorrupt, and no input panics. Each record has exactly one encoding (FuzzDecode
// checks it).
const recordVersion = 1

var errCorrupt = errors.New("redisstore: corrupt record")

func corrupt(kind, what string) error { return fmt.Errorf("%w: %s: %s", errCorrupt, kind, what) }

const noticeSync = 1 << 0 // notice flag: resync

// newDecoder returns a decoder of record v (what go-redis returns), past its version byte.
// String fields are substrings of v (immutable, so sharing is safe).
func newDecoder(kind, v string) record.Decoder[string] {
	d := record.NewDecoder(v, kind, corrupt)
	d.Version(recordVersion)
	return d
}

func encodeSession(s *server.Session) []byte {
	n := 1 + 10 + len(s.UserID) + record.StringMapSize(s.Claims) + 2*record.TimeSize + 10 + len(s.UserAgent)
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = record.AppendString(b, s.UserID)
	b = record.AppendStringMap(b, s.Claims)
	b = record.AppendTime(b, s.Created)
	b = record.AppendTime(b, s.Expires)
	return record.AppendBytes(b, s.UserAgent)
}

// laneHead is the first bytes of an encoded lane: the version and the epoch.
func laneHead(epoch uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{recordVersion}, epoch)
}

func encodeLane(l *server.Lane) []byte {
	b := make([]byte, 0, 5+5*10+len(l.Key)+len(l.PrevKey)+len(l.RotateClientPub)+len(l.RotateReply)+8+2*record.TimeSize)
	b = append(b, laneHead(l.Epoch)...)
	b = record.AppendBytes(b, l.Key)
	b = record.AppendBytes(b, l.PrevKey)
	b = record.AppendTime(b, l.PrevUntil)
	b = record.AppendTime(b, l.RotatedAt)
	b = record.AppendBytes(b, l.RotateClientPub)
	b = record.AppendBytes(b, l.RotateReply)
	return binary.BigEndian.AppendUint64(b, l.EventSeq)
}

func encodeSeen(t time.Time) []byte {
	return record.AppendSortableTime(make([]byte, 0, record.TimeSize), t)
}

// encodeNoticeHead is a notice without its lanes: the Delete script appends them.
func encodeNoticeHead(reason string, resync bool) []byte {
	b := make([]byte, 0, 2+10+len(reason))
	flags := byte(0)
	if resync {
		flags |= noticeSync
	}
	b = append(b, recordVersion, flags)
	return record.AppendString(b, reason)
}

func encodeNotice(n *Notice) []byte {
	b := encodeNoticeHead(n.Reason, n.Resync)
	for _, l := range n.Lanes {
		b = append(b, l[:]...)
	}
	return b
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
	s.ID = d.Copy(id)
	return nil
}

// decodeSessionRecord decodes session record v into s, leaving ID and LastSeen alone.
func decodeSessionRecord(s *server.Session, v string) error {
	_, err := decodeSessionFields(s, v)
	return err
}

func decodeSessionFields(s *server.Session, v string) (*record.Decoder[string], error) {
	d := newDecoder("session", v)
	s.UserID = d.Str()
	s.Claims = d.StringMap()
	s.Created = d.Time()
	s.Expires = d.Time()
	s.UserAgent = d.Bytes()
	return &d, d.Finish()
}

func decodeSeen(v string) (time.Time, error) {
	if len(v) != record.TimeSize {
		return time.Time{}, corrupt("last seen", "bad size")
	}
	d := record.NewDecoder(v, "last seen", corrupt)
	t := d.SortableTime()
	return t, d.Finish()
}

// decodeLane decodes lane record v of lane id in session sessionID into l.
func decodeLane(l *server.Lane, id protocol.LaneID, sessionID, v string) error {
	d := newDecoder("lane", v)
	l.ID = id
	l.Epoch = d.Uint32()
	l.Key = d.Bytes()
	l.PrevKey = d.Bytes()
	l.PrevUntil = d.Time()
	l.RotatedAt = d.Time()
	l.RotateClientPub = d.Bytes()
	l.RotateReply = d.Bytes()
	l.EventSeq = d.Uint64()
	if err := d.Finish(); err != nil {
		return err
	}
	l.SessionID = d.Copy(sessionID)
	return nil
}

func decodeNotice(v string) (Notice, error) {
	d := newDecoder("notice", v)
	flags := d.Next(1)
	reason := d.Str()
	if err := d.Err(); err != nil {
		return Notice{}, err
	}
	if flags[0]&^noticeSync != 0 {
		return Notice{}, corrupt("notice", "unknown flags")
	}
	rest := d.Rest()
	if len(rest)%protocol.LaneIDSize != 0 {
		return Notice{}, corrupt("notice", "partial lane ID")
	}
	n := Notice{Reason: reason, Resync: flags[0]&noticeSync != 0}
	if len(rest) > 0 {
		n.Lanes = make([]protocol.LaneID, len(rest)/protocol.LaneIDSize)
		for i := range n.Lanes {
			copy(n.Lanes[i][:], rest[i*protocol.LaneIDSize:])
		}
	}
	return n, nil
}
