package server

import (
	"context"
	"errors"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// LaneID is a lane's public identifier (16 random bytes; base64url in a signature's keyid), as
// the Store methods take it. An alias, so that a Store implemented outside this module can name it.
type LaneID = protocol.LaneID

// Window bounds the created time of a signature ([Config.Window]): how old (MaxAge, default
// [DefaultMaxAge]) and how far in the future (Skew, default [DefaultSkew]) it may be.
type Window = protocol.Window

// The defaults of [Window].
const (
	DefaultMaxAge = protocol.DefaultMaxAge
	DefaultSkew   = protocol.DefaultSkew
)

// Store keeps sessions, their lanes, the per-user index and the replay windows. Implementations:
// server/memstore (tests, one process), server/boltstore (the durable embedded default) and
// server/redisstore (many nodes). Every implementation passes storetest.Run.
//
// Stores never see a usable key: [Lane.Key] and [Lane.PrevKey] are sealed by the [Manager]
// (AES-256-GCM under Config.StoreKey, bound to the lane ID and epoch) before they reach a Store.
//
// All methods are safe for concurrent use and take ctx first. Errors: [ErrNotFound] (or a
// [*GoneError] wrapping it) for missing records, [ErrExists], [ErrConflict], [ErrReplay]; any other
// error means the store is unavailable and the server fails closed (503).
type Store interface {
	// Create stores a new session with its first lane. ErrExists if the session or lane ID is
	// already taken (IDs come from crypto/rand, so this means a broken random source).
	Create(ctx context.Context, s *Session, l *Lane) error
	// AddLane adds a lane to a live session (join). ErrNotFound (or *GoneError) if the session is
	// gone; ErrExists if the lane ID is taken.
	AddLane(ctx context.Context, l *Lane) error
	// Lane returns a lane and its session. For a lane of a deleted session it returns a
	// *GoneError carrying the deletion reason until the session's absolute expiry; after that, or
	// for an ID never seen, ErrNotFound.
	Lane(ctx context.Context, id LaneID) (*Lane, *Session, error)
	// UpdateLane replaces a lane whose stored Epoch is prevEpoch (compare-and-swap, so two
	// rotations of one lane cannot both win). ErrConflict if the stored epoch differs;
	// ErrNotFound/*GoneError if the lane is gone.
	UpdateLane(ctx context.Context, l *Lane, prevEpoch uint32) error
	// Touch raises the session's LastSeen to t (never lowers it). Missing sessions are ignored.
	Touch(ctx context.Context, sessionID []byte, t time.Time) error
	// Delete removes a session, its lanes, its user-index entry and its replay windows, leaves a
	// tombstone with reason for each lane until the session's absolute expiry, and returns the
	// removed lanes. Deleting a missing session returns no lanes and no error.
	Delete(ctx context.Context, sessionID []byte, reason string) ([]LaneID, error)
	// DeleteLane removes one lane from its live session (the session and its other lanes stay)
	// with the lane's replay window, and leaves a tombstone with reason for the lane until the
	// session's absolute expiry: Lane, Seen, UpdateLane and a second DeleteLane then return a
	// *GoneError with this reason, and AddLane refuses its ID (ErrExists). A later Delete of the
	// session keeps the lane's own reason. A session keeps the tombstones of its last
	// [LaneTombstones] lanes deleted this way; an older one's goes (that lane is then
	// ErrNotFound). ErrNotFound/*GoneError if the lane is gone. Stores shared by several nodes
	// ([Notifier]) publish a notice of the lane with the deletion.
	DeleteLane(ctx context.Context, id LaneID, reason string) error
	// Session returns a session and the IDs of its lanes.
	Session(ctx context.Context, sessionID []byte) (*Session, []LaneID, error)
	// UserSessions returns the user's live sessions through the per-user index (no scan), oldest
	// first by Created.
	UserSessions(ctx context.Context, userID string) ([]*Session, error)
	// Seen records nonce seq of lane in the lane's replay window (see [ReplayWindow]): nil if
	// seq is fresh, ErrReplay if it was seen or is older than the window. It is atomic per call
	// (concurrent calls with one seq: exactly one nil). ErrNotFound/*GoneError if the lane is gone.
	Seen(ctx context.Context, lane LaneID, seq uint64) error

	// PutTicket stores a join ticket of a session until expires. hash is a 32-byte hash of the
	// ticket (the ticket itself never reaches a store). The store does not check the session:
	// the Manager does, at issue and again at join (AddLane). ErrExists if hash is taken.
	PutTicket(ctx context.Context, sessionID, hash []byte, expires time.Time) error
	// TakeTicket uses up the ticket stored under hash for sessionID: nil the first time (atomic:
	// of concurrent calls, on any number of nodes, exactly one gets nil), [ErrTicketUsed] on
	// every later call until the ticket's expiry, [ErrNotFound] for a ticket never stored,
	// stored for another session, or expired. A ticket is unusable from its expiry on, by the
	// store's clock.
	TakeTicket(ctx context.Context, sessionID, hash []byte) error
}

// Sweeper is an optional Store ability: Sweep removes the sessions whose Expires is at or before
// now (with their lanes, user-index entries and replay windows; no tombstone, since a tombstone
// lives only until Expires) and the tombstones whose lifetime has ended, and returns the number
// of sessions removed. The idle timeout is not the store's: the Manager enforces it on each
// request (and deletes with a reason); an idle session nobody uses again goes at its Expires.
// The Manager calls Sweep periodically when present.
type Sweeper interface {
	Sweep(ctx context.Context, now time.Time) (int, error)
}

// ReplayFloor is an optional Store ability of stores that keep replay windows in process memory
// (boltstore): the time the windows start from. The Manager refuses signatures whose created
// time is before the floor, so a restart cannot reopen a window for requests captured before it.
type ReplayFloor interface {
	ReplayFloor() time.Time
}

// IdleBound is an optional Store ability of stores that drop sessions left unused on their own
// (redisstore with Options.IdleTimeout): after how long. [New] refuses a Config.IdleTimeout
// longer than it, since the store would end sessions before the Manager's idle timeout, as
// unknown_session, without the expiring and expired events.
type IdleBound interface {
	IdleTimeout() time.Duration
}

// Session is one login of one user.
type Session struct {
	// ID is the session's 32-byte random identifier. It is a secret of the server (the join
	// cookie carries it sealed): never logged, never sent to the worker. Logs and admin calls
	// name a session by its handle ([Info.Handle], [SessionInfo]).
	ID       []byte
	UserID   string
	Claims   map[string]string
	Created  time.Time // login time; the absolute timeout counts from here and nothing resets it
	Expires  time.Time // absolute deadline (Created + AbsoluteTimeout)
	LastSeen time.Time // last verified request, for the idle timeout
	// UserAgent is a SHA-256 of the User-Agent at login when UA binding is on, else nil.
	UserAgent []byte
}

// Lane is one worker's key under a session.
type Lane struct {
	ID        LaneID
	SessionID []byte
	Epoch     uint32
	Key       []byte // sealed K(Epoch)
	// PrevKey is the sealed K(Epoch-1) of the last rotation, nil at epoch 0. It is accepted until
	// PrevUntil (the grace window) and kept after it, until the next rotation, so that a late
	// use of it can be verified and detected as reuse.
	PrevKey   []byte
	PrevUntil time.Time // end of the grace window
	RotatedAt time.Time // when Epoch began (login time for epoch 0)
	// RotateClientPub and RotateReply remember the last rotation (client public key; server
	// public key || confirmation), so that a retried identical request gets the same answer and
	// a different one is detected as a second rotation.
	RotateClientPub []byte
	RotateReply     []byte
	EventSeq        uint64 // last event sequence number sent to the lane
}

// LaneTombstones is how many tombstones of lanes deleted alone ([Store.DeleteLane]) a store
// keeps per session; past it, the oldest goes. A lane whose tombstone went is ErrNotFound, which
// the worker is told as unknown_session and which also ends its key. The bound keeps joins in a
// loop (each evicting a lane past Config.MaxLanesPerSession) from growing a session's records
// without limit.
const LaneTombstones = 64

// Store errors.
var (
	ErrNotFound = errors.New("server: not found")
	ErrExists   = errors.New("server: already exists")
	ErrConflict = errors.New("server: concurrent update")
	ErrReplay   = errors.New("server: replayed nonce")
	// ErrTicketUsed: a join ticket was taken before (Store.TakeTicket).
	ErrTicketUsed = errors.New("server: join ticket already used")
)

// GoneError reports a lane or session that was deleted, and why ("logout", "revoked",
// "reuse_detected", "rekeyed", "limit_evicted", "lane_evicted", "expired", ...). It wraps
// ErrNotFound.
type GoneError struct{ Reason string }

func (e *GoneError) Error() string { return "server: session gone (" + e.Reason + ")" }

// Unwrap returns ErrNotFound.
func (e *GoneError) Unwrap() error { return ErrNotFound }

// ReplayWindowSize is the number of nonces a replay window remembers below the highest seen.
const ReplayWindowSize = 1024

// ReplayWindow is the per-lane anti-replay state (RFC 4303 section 3.4.3 style): the highest
// nonce seen and a bitmap of the ReplayWindowSize nonces below and including it. O(1) per check,
// 136 bytes per lane. The zero value has seen nothing. Not safe for concurrent use: stores guard
// it (a mutex, a bolt transaction, a Redis script).
type ReplayWindow struct {
	Top  uint64
	Bits [ReplayWindowSize / 64]uint64
}

// Check records seq and reports whether it was fresh. seq 0 is never fresh.
func (w *ReplayWindow) Check(seq uint64) bool {
	if seq == 0 {
		return false
	}
	if seq > w.Top {
		shift := seq - w.Top
		if shift >= ReplayWindowSize {
			clear(w.Bits[:])
		} else {
			w.shift(uint(shift))
		}
		w.Top = seq
		w.Bits[0] |= 1
		return true
	}
	d := w.Top - seq
	if d >= ReplayWindowSize {
		return false
	}
	word, bit := d/64, d%64
	if w.Bits[word]&(1<<bit) != 0 {
		return false
	}
	w.Bits[word] |= 1 << bit
	return true
}

// shift moves the window up by n (< ReplayWindowSize): bit i (distance i below Top) becomes
// bit i+n.
func (w *ReplayWindow) shift(n uint) {
	words, bits := int(n/64), n%64
	for i := len(w.Bits) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = w.Bits[j] << bits
			if bits != 0 && j-1 >= 0 {
				v |= w.Bits[j-1] >> (64 - bits)
			}
		}
		w.Bits[i] = v
	}
}
