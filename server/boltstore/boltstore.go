package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/internal/record"
	"github.com/sessionvault/sessionvault/server/internal/tickets"
)

var (
	_ server.Store       = (*Store)(nil)
	_ server.Sweeper     = (*Store)(nil)
	_ server.ReplayFloor = (*Store)(nil)
)

// Bucket names. See the package documentation for the layout.
var (
	bucketMeta       = []byte("meta")
	bucketSessions   = []byte("sessions")
	bucketLanes      = []byte("lanes")
	bucketUsers      = []byte("users")
	bucketTombstones = []byte("tombstones")
	bucketExpiry     = []byte("expiry")
	keyFormat        = []byte("format")
	// bucketReplay holds the replay windows saved by a clean Close (lane ID -> window), and
	// keyClean in bucketMeta says they are complete. Open loads and removes both in its first
	// transaction, so after a crash (no keyClean) the replay floor applies instead.
	bucketReplay = []byte("replay")
	keyClean     = []byte("clean")
	// keyFloor in bucketMeta is the replay floor of the store that closed cleanly, if it had
	// one (Unix ns, u64be): the windows it saved hold only what was seen since that floor, so
	// the next Open keeps it. Taken (and removed) with keyClean.
	keyFloor = []byte("floor")
)

// fileFormat is the layout version in meta/format; Open refuses any other.
const fileFormat = 1

const (
	tombLane    = 'l'
	tombSession = 's'
)

// Options configures [Open]. The zero value (or nil) is the safe default.
type Options struct {
	// LockTimeout is how long Open waits for another process to release the file (bbolt holds an
	// exclusive lock while open). If zero, 1 s.
	LockTimeout time.Duration
}

// Store is the bbolt-backed [server.Store]. It is safe for concurrent use. Its zero value is not
// usable; call [Open].
type Store struct {
	db    *bolt.DB
	floor time.Time

	mu     sync.Mutex
	closed bool
	// live holds every live lane's replay window, nil until the lane's first Seen. It is the
	// authority on which lanes exist for Seen (see the package documentation, Concurrency).
	live map[protocol.LaneID]*server.ReplayWindow

	tickets tickets.Table // join tickets, in memory (ticket.go)
}

var errClosed = errors.New("boltstore: store is closed")

// Open opens (creating if needed) the store at path, a file readable only by its owner. Only one
// process may have a file open; Open waits opts.LockTimeout for it and then fails.
func Open(path string, opts *Options) (*Store, error) {
	timeout := time.Second
	if opts != nil && opts.LockTimeout > 0 {
		timeout = opts.LockTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("boltstore: open %s: %w: another process has it open (a second server, or one still shutting down); one process at a time may use a bolt file, several nodes need redisstore", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	// The floor is read once the file is ours: a process that had it until now (Open waited
	// for its lock) accepted requests until then.
	floor := time.Now().Round(0)
	s := &Store{db: db, floor: floor, live: make(map[protocol.LaneID]*server.ReplayWindow)}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	var (
		saved      map[protocol.LaneID]*server.ReplayWindow
		savedFloor time.Time
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if saved, savedFloor, err = takeWindows(tx, meta); err != nil {
			return err
		}
		switch v := meta.Get(keyFormat); {
		case v == nil:
			if err := meta.Put(keyFormat, []byte{fileFormat}); err != nil {
				return err
			}
		case len(v) != 1 || v[0] != fileFormat:
			return fmt.Errorf("boltstore: unsupported file format %x", v)
		}
		for _, name := range [][]byte{bucketSessions, bucketLanes, bucketUsers, bucketTombstones, bucketExpiry} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltstore: init: %w", err)
	}
	if saved != nil {
		// A clean Close saved every window: they hold all that was accepted since the floor
		// of the store that saved them (zero unless it started after a crash), which stays.
		s.floor = savedFloor
	}
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLanes).ForEach(func(k, _ []byte) error {
			if len(k) != protocol.LaneIDSize {
				return corrupt("lane", "bad key size")
			}
			s.live[protocol.LaneID(k)] = saved[protocol.LaneID(k)]
			return nil
		})
	})
}

// windowSize is a saved window's encoding: Top u64be || Bits as u64be words.
const windowSize = 8 + 8*len(server.ReplayWindow{}.Bits)

// takeWindows loads and removes the windows a clean Close saved, with the replay floor of the
// store that saved them (zero if it had none). It returns nil (and removes any partial save)
// when the last Close was not clean.
func takeWindows(tx *bolt.Tx, meta *bolt.Bucket) (map[protocol.LaneID]*server.ReplayWindow, time.Time, error) {
	clean := meta.Get(keyClean) != nil
	b := tx.Bucket(bucketReplay)
	var (
		out   map[protocol.LaneID]*server.ReplayWindow
		floor time.Time
	)
	if v := meta.Get(keyFloor); v != nil {
		if len(v) != 8 {
			return nil, time.Time{}, corrupt("replay floor", "bad size")
		}
		floor = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
		if err := meta.Delete(keyFloor); err != nil {
			return nil, time.Time{}, err
		}
	}
	if clean {
		out = make(map[protocol.LaneID]*server.ReplayWindow)
		if b != nil {
			err := b.ForEach(func(k, v []byte) error {
				if len(k) != protocol.LaneIDSize || len(v) != windowSize {
					return corrupt("replay window", "bad size")
				}
				w := &server.ReplayWindow{Top: binary.BigEndian.Uint64(v)}
				for i := range w.Bits {
					w.Bits[i] = binary.BigEndian.Uint64(v[8+8*i:])
				}
				out[protocol.LaneID(k)] = w
				return nil
			})
			if err != nil {
				return nil, time.Time{}, err
			}
		}
		if err := meta.Delete(keyClean); err != nil {
			return nil, time.Time{}, err
		}
	} else {
		floor = time.Time{} // a crash since: the floor is this Open's
	}
	if b != nil {
		if err := tx.DeleteBucket(bucketReplay); err != nil {
			return nil, time.Time{}, err
		}
	}
	return out, floor, nil
}

// Close saves the replay windows, marks the file closed cleanly and closes it. The Store must
// not be used afterwards (methods return an error). A restart after a clean Close needs no new
// replay floor: the next Open restores every window, and keeps this Store's floor (zero unless
// this Store started after a crash: its windows hold nothing from before it). If saving fails, the file is closed all
// the same and the next Open applies the floor, as after a crash.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	live := s.live
	s.live = nil
	s.mu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketReplay)
		if err != nil {
			return err
		}
		v := make([]byte, windowSize)
		for id, w := range live {
			if w == nil {
				continue
			}
			binary.BigEndian.PutUint64(v, w.Top)
			for i, x := range w.Bits {
				binary.BigEndian.PutUint64(v[8+8*i:], x)
			}
			if err := b.Put(id[:], v); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if !s.floor.IsZero() {
			if err := meta.Put(keyFloor, binary.BigEndian.AppendUint64(nil, uint64(s.floor.UnixNano()))); err != nil {
				return err
			}
		}
		return meta.Put(keyClean, []byte{1})
	})
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReplayFloor implements [server.ReplayFloor]. Replay windows live in process memory; a clean
// Close saves them and the next Open restores them, with the floor of the Store that saved them
// (the zero time if it had none). After a crash they start empty, and the floor is the time
// Open got the file (after waiting for its lock): a request signed before then must be refused,
// and still after any number of clean restarts, since no window holds what the crashed process
// accepted.
func (s *Store) ReplayFloor() time.Time { return s.floor }

// update runs fn in a write transaction, durable (fsync) when it returns nil. It gives up if ctx
// is done before fn runs, so a canceled call changes nothing.
func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(tx)
	})
}

func (s *Store) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

// reserve marks lane id live before the transaction that creates it commits, so that a Delete
// committed after that transaction always finds it to remove. It reports false if id is
// already live. undo must run if the transaction fails.
func (s *Store) reserve(id protocol.LaneID) (ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, errClosed
	}
	if _, taken := s.live[id]; taken {
		return false, nil
	}
	s.live[id] = nil
	return true, nil
}

func (s *Store) undo(id protocol.LaneID) {
	s.mu.Lock()
	delete(s.live, id)
	s.mu.Unlock()
}

// forget drops the windows of removed lanes; it runs after the removing transaction commits.
func (s *Store) forget(ids []protocol.LaneID) {
	s.mu.Lock()
	for _, id := range ids {
		delete(s.live, id)
	}
	s.mu.Unlock()
}

func tombKey(kind byte, id []byte) []byte {
	return append([]byte{kind}, id...)
}

// userPrefix is the users-index key prefix of userID: uvarint(len) || userID, which no other
// user's prefix extends.
func userPrefix(userID string) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 10+len(userID)+record.TimeSize+32), uint64(len(userID)))
	return append(b, userID...)
}

func userKey(sess *server.Session) []byte {
	return append(record.AppendSortableTime(userPrefix(sess.UserID), sess.Created), sess.ID...)
}

func expiryKey(sess *server.Session) []byte {
	return append(record.AppendSortableTime(make([]byte, 0, record.TimeSize+len(sess.ID)), sess.Expires), sess.ID...)
}

// gone returns the error for a missing record whose tombstone key is key: a *GoneError while the
// tombstone lives, else ErrNotFound.
func gone(tx *bolt.Tx, key []byte) error {
	v := tx.Bucket(bucketTombstones).Get(key)
	if v == nil {
		return server.ErrNotFound
	}
	t, err := decodeTombstone(v)
	if err != nil {
		return err
	}
	if !time.Now().Before(t.until) {
		return server.ErrNotFound
	}
	return &server.GoneError{Reason: t.reason}
}

func (s *Store) goneLane(ctx context.Context, id protocol.LaneID) error {
	err := s.view(ctx, func(tx *bolt.Tx) error { return gone(tx, tombKey(tombLane, id[:])) })
	if err == nil {
		return server.ErrNotFound
	}
	return err
}

var (
	errEmptyID      = errors.New("boltstore: empty session ID")
	errSessionMatch = errors.New("boltstore: lane's SessionID does not match the session")
)

// laneTaken reports whether a lane record or tombstone holds id.
func laneTaken(tx *bolt.Tx, id protocol.LaneID) bool {
	return tx.Bucket(bucketLanes).Get(id[:]) != nil || tx.Bucket(bucketTombstones).Get(tombKey(tombLane, id[:])) != nil
}

// Create implements [server.Store]. It returns once the session is on disk.
func (s *Store) Create(ctx context.Context, sess *server.Session, l *server.Lane) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(sess.ID) == 0 {
		return errEmptyID
	}
	if !bytes.Equal(sess.ID, l.SessionID) {
		return errSessionMatch
	}
	ok, err := s.reserve(l.ID)
	if err != nil {
		return err
	}
	if !ok {
		return server.ErrExists
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		if sessions.Get(sess.ID) != nil || tx.Bucket(bucketTombstones).Get(tombKey(tombSession, sess.ID)) != nil {
			return server.ErrExists
		}
		if laneTaken(tx, l.ID) {
			return server.ErrExists
		}
		if err := sessions.Put(sess.ID, encodeSession(sess, []protocol.LaneID{l.ID})); err != nil {
			return err
		}
		if err := tx.Bucket(bucketLanes).Put(l.ID[:], encodeLane(l)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsers).Put(userKey(sess), nil); err != nil {
			return err
		}
		return tx.Bucket(bucketExpiry).Put(expiryKey(sess), nil)
	})
	if err != nil {
		s.undo(l.ID)
	}
	return err
}

// AddLane implements [server.Store].
func (s *Store) AddLane(ctx context.Context, l *server.Lane) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ok, err := s.reserve(l.ID)
	if err != nil {
		return err
	}
	if !ok {
		return server.ErrExists
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		v := sessions.Get(l.SessionID)
		if v == nil {
			return gone(tx, tombKey(tombSession, l.SessionID))
		}
		if laneTaken(tx, l.ID) {
			return server.ErrExists
		}
		var sess server.Session
		lanes, err := decodeSession(&sess, l.SessionID, v)
		if err != nil {
			return err
		}
		if err := sessions.Put(l.SessionID, encodeSession(&sess, append(lanes, l.ID))); err != nil {
			return err
		}
		return tx.Bucket(bucketLanes).Put(l.ID[:], encodeLane(l))
	})
	if err != nil {
		s.undo(l.ID)
	}
	return err
}

// Lane implements [server.Store].
func (s *Store) Lane(ctx context.Context, id protocol.LaneID) (*server.Lane, *server.Session, error) {
	// One allocation for both records.
	p := new(struct {
		l server.Lane
		s server.Session
	})
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLanes).Get(id[:])
		if v == nil {
			return gone(tx, tombKey(tombLane, id[:]))
		}
		if err := decodeLane(&p.l, id[:], v); err != nil {
			return err
		}
		sv := tx.Bucket(bucketSessions).Get(p.l.SessionID)
		if sv == nil {
			return corrupt("lane", "session missing")
		}
		_, err := decodeSession(&p.s, p.l.SessionID, sv)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return &p.l, &p.s, nil
}

// UpdateLane implements [server.Store].
func (s *Store) UpdateLane(ctx context.Context, l *server.Lane, prevEpoch uint32) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		lanes := tx.Bucket(bucketLanes)
		v := lanes.Get(l.ID[:])
		if v == nil {
			return gone(tx, tombKey(tombLane, l.ID[:]))
		}
		var cur server.Lane
		if err := decodeLane(&cur, l.ID[:], v); err != nil {
			return err
		}
		if !bytes.Equal(cur.SessionID, l.SessionID) {
			return errSessionMatch
		}
		if cur.Epoch != prevEpoch {
			return server.ErrConflict
		}
		return lanes.Put(l.ID[:], encodeLane(l))
	})
}

// Touch implements [server.Store]. It writes (and syncs) only when t is after the stored
// LastSeen; the Manager should still not call it for every request.
func (s *Store) Touch(ctx context.Context, sessionID []byte, t time.Time) error {
	stale := false
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSessions).Get(sessionID)
		if v == nil {
			return nil
		}
		var sess server.Session
		if _, err := decodeSession(&sess, sessionID, v); err != nil {
			return err
		}
		stale = t.After(sess.LastSeen)
		return nil
	})
	if err != nil || !stale {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		v := sessions.Get(sessionID)
		if v == nil {
			return nil
		}
		var sess server.Session
		lanes, err := decodeSession(&sess, sessionID, v)
		if err != nil || !t.After(sess.LastSeen) {
			return err
		}
		sess.LastSeen = t
		return sessions.Put(sessionID, encodeSession(&sess, lanes))
	})
}

// remove deletes a live session, its lanes and its users-index entry, returning its lanes.
// With a reason it leaves tombstones until the session's Expires (the expiry-index entry stays
// to sweep them; the lanes DeleteLane removed before keep theirs); without, it also removes the
// expiry-index entry and the tombstones of the lanes DeleteLane removed.
func remove(tx *bolt.Tx, sessionID, v []byte, reason *string) ([]protocol.LaneID, error) {
	var sess server.Session
	lanes, err := decodeSession(&sess, sessionID, v)
	if err != nil {
		return nil, err
	}
	lb, tb := tx.Bucket(bucketLanes), tx.Bucket(bucketTombstones)
	// While the session lives, its tombstone key lists the lanes deleted alone (DeleteLane).
	var alone []protocol.LaneID
	if tv := tb.Get(tombKey(tombSession, sessionID)); tv != nil {
		t, err := decodeTombstone(tv)
		if err != nil {
			return nil, err
		}
		alone = t.lanes
	}
	for _, id := range lanes {
		if err := lb.Delete(id[:]); err != nil {
			return nil, err
		}
	}
	if err := tx.Bucket(bucketUsers).Delete(userKey(&sess)); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketSessions).Delete(sessionID); err != nil {
		return nil, err
	}
	if reason == nil {
		for _, id := range alone {
			if err := tb.Delete(tombKey(tombLane, id[:])); err != nil {
				return nil, err
			}
		}
		if err := tb.Delete(tombKey(tombSession, sessionID)); err != nil {
			return nil, err
		}
		return lanes, tx.Bucket(bucketExpiry).Delete(expiryKey(&sess))
	}
	lt := encodeTombstone(&tombstone{until: sess.Expires, reason: *reason})
	for _, id := range lanes {
		if err := tb.Put(tombKey(tombLane, id[:]), lt); err != nil {
			return nil, err
		}
	}
	all := append(slices.Clone(lanes), alone...)
	st := encodeTombstone(&tombstone{until: sess.Expires, reason: *reason, lanes: all})
	return lanes, tb.Put(tombKey(tombSession, sessionID), st)
}

// DeleteLane implements [server.Store]. It returns once the deletion is on disk. The lane's
// tombstone lives until the session's Expires (or until [server.LaneTombstones] later ones of
// its session); the session's tombstone key lists the lane (with no reason while the session
// lives), so that Sweep and a later Delete find the tombstone.
func (s *Store) DeleteLane(ctx context.Context, id protocol.LaneID, reason string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		lb, tb, sessions := tx.Bucket(bucketLanes), tx.Bucket(bucketTombstones), tx.Bucket(bucketSessions)
		v := lb.Get(id[:])
		if v == nil {
			return gone(tx, tombKey(tombLane, id[:]))
		}
		var l server.Lane
		if err := decodeLane(&l, id[:], v); err != nil {
			return err
		}
		sv := sessions.Get(l.SessionID)
		if sv == nil {
			return corrupt("lane", "session missing")
		}
		var sess server.Session
		lanes, err := decodeSession(&sess, l.SessionID, sv)
		if err != nil {
			return err
		}
		lanes = slices.DeleteFunc(lanes, func(x protocol.LaneID) bool { return x == id })
		if err := sessions.Put(l.SessionID, encodeSession(&sess, lanes)); err != nil {
			return err
		}
		if err := lb.Delete(id[:]); err != nil {
			return err
		}
		if err := tb.Put(tombKey(tombLane, id[:]), encodeTombstone(&tombstone{until: sess.Expires, reason: reason})); err != nil {
			return err
		}
		sk := tombKey(tombSession, l.SessionID)
		t := &tombstone{until: sess.Expires}
		if tv := tb.Get(sk); tv != nil {
			if t, err = decodeTombstone(tv); err != nil {
				return err
			}
		}
		t.lanes = append(t.lanes, id)
		if len(t.lanes) > server.LaneTombstones {
			if err := tb.Delete(tombKey(tombLane, t.lanes[0][:])); err != nil {
				return err
			}
			t.lanes = slices.Delete(t.lanes, 0, 1)
		}
		if err := tb.Put(sk, encodeTombstone(t)); err != nil {
			return err
		}
		tx.OnCommit(func() { s.forget([]protocol.LaneID{id}) })
		return nil
	})
}

// Delete implements [server.Store]. It returns once the deletion is on disk. Deleting a session
// that is already deleted keeps the first reason.
func (s *Store) Delete(ctx context.Context, sessionID []byte, reason string) ([]protocol.LaneID, error) {
	var lanes []protocol.LaneID
	err := s.update(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSessions).Get(sessionID)
		if v == nil {
			return nil
		}
		var err error
		if lanes, err = remove(tx, sessionID, v, &reason); err != nil {
			return err
		}
		tx.OnCommit(func() { s.forget(lanes) })
		return nil
	})
	if err != nil {
		return nil, err
	}
	return lanes, nil
}

// Session implements [server.Store].
func (s *Store) Session(ctx context.Context, sessionID []byte) (*server.Session, []protocol.LaneID, error) {
	sess := new(server.Session)
	var lanes []protocol.LaneID
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSessions).Get(sessionID)
		if v == nil {
			return gone(tx, tombKey(tombSession, sessionID))
		}
		var err error
		lanes, err = decodeSession(sess, sessionID, v)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return sess, lanes, nil
}

// UserSessions implements [server.Store]: one range scan of the users index, whose keys sort by
// Created.
func (s *Store) UserSessions(ctx context.Context, userID string) ([]*server.Session, error) {
	var out []*server.Session
	prefix := userPrefix(userID)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		c := tx.Bucket(bucketUsers).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) <= len(prefix)+record.TimeSize {
				return corrupt("users index", "short key")
			}
			id := k[len(prefix)+record.TimeSize:]
			v := sessions.Get(id)
			if v == nil {
				return corrupt("users index", "session missing")
			}
			sess := new(server.Session)
			if _, err := decodeSession(sess, id, v); err != nil {
				return err
			}
			out = append(out, sess)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Seen implements [server.Store]. The check-and-set runs in process memory under one mutex; only
// a lane that is not live costs a read transaction (to tell a deleted lane from an unknown one).
func (s *Store) Seen(ctx context.Context, id protocol.LaneID, seq uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	w, live := s.live[id]
	if !live {
		s.mu.Unlock()
		return s.goneLane(ctx, id)
	}
	if w == nil {
		w = new(server.ReplayWindow)
		s.live[id] = w
	}
	fresh := w.Check(seq)
	s.mu.Unlock()
	if !fresh {
		return server.ErrReplay
	}
	return nil
}

// sweepBatch bounds the work of one Sweep transaction, so that a large sweep does not hold the
// writer lock for long.
var sweepBatch = 500 // a variable for tests

// Sweep implements [server.Sweeper]: it removes the sessions whose Expires is at or before now
// (with their lanes, index entries and replay windows; they leave no tombstone, as a tombstone
// lives only until Expires) and the tombstones whose lifetime ended at or before now, walking the
// expiry index in order, in transactions of at most 500 sessions. It returns the number of
// sessions removed. The idle timeout is the Manager's: the store does not know it.
func (s *Store) Sweep(ctx context.Context, now time.Time) (int, error) {
	limit := record.AppendSortableTime(nil, now)
	total := 0
	for {
		// Find due entries in a read transaction first: a write transaction costs a sync even
		// when it changes nothing.
		var keys [][]byte
		err := s.view(ctx, func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketExpiry).Cursor()
			for k, _ := c.First(); k != nil && len(keys) < sweepBatch; k, _ = c.Next() {
				if len(k) <= record.TimeSize {
					return corrupt("expiry index", "short key")
				}
				if bytes.Compare(k[:record.TimeSize], limit) > 0 {
					break
				}
				keys = append(keys, bytes.Clone(k))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return total, err
		}
		n := 0
		err = s.update(ctx, func(tx *bolt.Tx) error {
			n = 0
			var swept []protocol.LaneID
			sessions, tb, eb := tx.Bucket(bucketSessions), tx.Bucket(bucketTombstones), tx.Bucket(bucketExpiry)
			for _, k := range keys {
				if eb.Get(k) == nil {
					continue // swept meanwhile
				}
				id := k[record.TimeSize:]
				if v := sessions.Get(id); v != nil {
					lanes, err := remove(tx, id, v, nil)
					if err != nil {
						return err
					}
					swept = append(swept, lanes...)
					n++
					continue
				}
				if v := tb.Get(tombKey(tombSession, id)); v != nil {
					t, err := decodeTombstone(v)
					if err != nil {
						return err
					}
					for _, l := range t.lanes {
						if err := tb.Delete(tombKey(tombLane, l[:])); err != nil {
							return err
						}
					}
					if err := tb.Delete(tombKey(tombSession, id)); err != nil {
						return err
					}
				}
				if err := eb.Delete(k); err != nil {
					return err
				}
			}
			tx.OnCommit(func() { s.forget(swept) })
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if len(keys) < sweepBatch {
			return total, nil
		}
	}
}
