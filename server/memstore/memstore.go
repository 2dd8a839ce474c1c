// Package memstore is a [server.Store] that keeps everything in process memory: for tests, for
// examples and for a single process that may lose its sessions on restart.
//
// Records are deep-copied in and out, so a caller never shares memory with the store. Times are
// stored in UTC without a monotonic clock reading, like every durable store returns them.
//
// A Store is safe for concurrent use. Its zero value is not usable; call [New].
package memstore

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/internal/tickets"
)

var (
	_ server.Store   = (*Store)(nil)
	_ server.Sweeper = (*Store)(nil)
)

// Store is an in-memory [server.Store] and [server.Sweeper].
//
// One RWMutex guards the maps; lookups and Seen take it shared, so requests on different lanes
// run in parallel, and each lane's replay window has its own mutex. Tombstones are visible until
// their deadline by the wall clock and are removed by [Store.Sweep].
type Store struct {
	mu        sync.RWMutex
	sessions  map[string]*session // by session ID
	lanes     map[protocol.LaneID]*lane
	users     map[string]map[string]*session // user ID -> session ID -> session
	goneSess  map[string]*sessionTomb
	goneLanes map[protocol.LaneID]*sessionTomb // shares the session's tombstone
	tickets   tickets.Table                    // join tickets (ticket.go)
}

type session struct {
	s       server.Session
	lanes   []protocol.LaneID
	evicted []protocol.LaneID // lanes deleted alone with a tombstone, oldest first (at most server.LaneTombstones)
}

type lane struct {
	l    server.Lane
	sess *session

	mu  sync.Mutex // guards win
	win server.ReplayWindow
}

type sessionTomb struct {
	reason string
	until  time.Time
}

// New returns an empty Store.
func New() *Store {
	return &Store{
		sessions:  make(map[string]*session),
		lanes:     make(map[protocol.LaneID]*lane),
		users:     make(map[string]map[string]*session),
		goneSess:  make(map[string]*sessionTomb),
		goneLanes: make(map[protocol.LaneID]*sessionTomb),
	}
}

var (
	errEmptyID      = errors.New("memstore: empty session ID")
	errSessionMatch = errors.New("memstore: lane's SessionID does not match the session")
)

// gone returns the error for a missing record: a *GoneError while tomb is live, else ErrNotFound.
func gone(tomb *sessionTomb) error {
	if tomb != nil && time.Now().Before(tomb.until) {
		return &server.GoneError{Reason: tomb.reason}
	}
	return server.ErrNotFound
}

// Create implements [server.Store].
func (m *Store) Create(ctx context.Context, s *server.Session, l *server.Lane) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(s.ID) == 0 {
		return errEmptyID
	}
	if !bytes.Equal(s.ID, l.SessionID) {
		return errSessionMatch
	}
	sess := &session{s: copySession(s), lanes: []protocol.LaneID{l.ID}}
	ln := &lane{l: copyLane(l), sess: sess}

	m.mu.Lock()
	defer m.mu.Unlock()
	id := string(s.ID)
	if m.sessions[id] != nil || m.goneSess[id] != nil || m.laneTaken(l.ID) {
		return server.ErrExists
	}
	m.sessions[id] = sess
	m.lanes[l.ID] = ln
	u := m.users[s.UserID]
	if u == nil {
		u = make(map[string]*session)
		m.users[s.UserID] = u
	}
	u[id] = sess
	return nil
}

func (m *Store) laneTaken(id protocol.LaneID) bool {
	return m.lanes[id] != nil || m.goneLanes[id] != nil
}

// AddLane implements [server.Store].
func (m *Store) AddLane(ctx context.Context, l *server.Lane) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ln := &lane{l: copyLane(l)}

	m.mu.Lock()
	defer m.mu.Unlock()
	id := string(l.SessionID)
	sess := m.sessions[id]
	if sess == nil {
		return gone(m.goneSess[id])
	}
	if m.laneTaken(l.ID) {
		return server.ErrExists
	}
	ln.sess = sess
	sess.lanes = append(sess.lanes, l.ID)
	m.lanes[l.ID] = ln
	return nil
}

// Lane implements [server.Store].
func (m *Store) Lane(ctx context.Context, id protocol.LaneID) (*server.Lane, *server.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	ln := m.lanes[id]
	if ln == nil {
		return nil, nil, gone(m.goneLanes[id])
	}
	// One allocation for both records and one for all their byte slices.
	p := new(struct {
		l server.Lane
		s server.Session
	})
	buf := make([]byte, 0, laneBytes(&ln.l)+sessionBytes(&ln.sess.s))
	buf = copyLaneInto(&p.l, &ln.l, buf)
	copySessionInto(&p.s, &ln.sess.s, buf)
	return &p.l, &p.s, nil
}

// UpdateLane implements [server.Store].
func (m *Store) UpdateLane(ctx context.Context, l *server.Lane, prevEpoch uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	nl := copyLane(l)

	m.mu.Lock()
	defer m.mu.Unlock()
	ln := m.lanes[l.ID]
	if ln == nil {
		return gone(m.goneLanes[l.ID])
	}
	if !bytes.Equal(ln.l.SessionID, l.SessionID) {
		return errSessionMatch
	}
	if ln.l.Epoch != prevEpoch {
		return server.ErrConflict
	}
	ln.l = nl
	return nil
}

// Touch implements [server.Store].
func (m *Store) Touch(ctx context.Context, sessionID []byte, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if sess := m.sessions[string(sessionID)]; sess != nil && t.After(sess.s.LastSeen) {
		sess.s.LastSeen = normTime(t)
	}
	return nil
}

// Delete implements [server.Store]. Deleting a session that is already deleted keeps the first
// reason.
func (m *Store) Delete(ctx context.Context, sessionID []byte, reason string) ([]protocol.LaneID, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sess := m.sessions[string(sessionID)]
	if sess == nil {
		return nil, nil
	}
	m.remove(sess)
	tomb := &sessionTomb{reason: reason, until: sess.s.Expires}
	m.goneSess[string(sessionID)] = tomb
	for _, id := range sess.lanes {
		m.goneLanes[id] = tomb
	}
	return slices.Clone(sess.lanes), nil
}

// DeleteLane implements [server.Store]. The lane's tombstone is its own (a later Delete of the
// session keeps its reason) and lives until the session's Expires, or until
// [server.LaneTombstones] later ones of its session.
func (m *Store) DeleteLane(ctx context.Context, id protocol.LaneID, reason string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ln := m.lanes[id]
	if ln == nil {
		return gone(m.goneLanes[id])
	}
	sess := ln.sess
	sess.lanes = slices.DeleteFunc(slices.Clone(sess.lanes), func(l protocol.LaneID) bool { return l == id })
	delete(m.lanes, id)
	m.goneLanes[id] = &sessionTomb{reason: reason, until: sess.s.Expires}
	sess.evicted = append(sess.evicted, id)
	if len(sess.evicted) > server.LaneTombstones {
		delete(m.goneLanes, sess.evicted[0])
		sess.evicted = slices.Delete(sess.evicted, 0, 1)
	}
	return nil
}

// remove drops a live session, its lanes (with their replay windows) and its index entry.
func (m *Store) remove(sess *session) {
	id := string(sess.s.ID)
	delete(m.sessions, id)
	for _, l := range sess.lanes {
		delete(m.lanes, l)
	}
	if u := m.users[sess.s.UserID]; u != nil {
		delete(u, id)
		if len(u) == 0 {
			delete(m.users, sess.s.UserID)
		}
	}
}

// Session implements [server.Store].
func (m *Store) Session(ctx context.Context, sessionID []byte) (*server.Session, []protocol.LaneID, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	sess := m.sessions[string(sessionID)]
	if sess == nil {
		return nil, nil, gone(m.goneSess[string(sessionID)])
	}
	s := copySession(&sess.s)
	return &s, slices.Clone(sess.lanes), nil
}

// UserSessions implements [server.Store].
func (m *Store) UserSessions(ctx context.Context, userID string) ([]*server.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	out := make([]*server.Session, 0, len(m.users[userID]))
	for _, sess := range m.users[userID] {
		s := copySession(&sess.s)
		out = append(out, &s)
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b *server.Session) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return bytes.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Seen implements [server.Store].
func (m *Store) Seen(ctx context.Context, id protocol.LaneID, seq uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	ln := m.lanes[id]
	if ln == nil {
		return gone(m.goneLanes[id])
	}
	ln.mu.Lock()
	fresh := ln.win.Check(seq)
	ln.mu.Unlock()
	if !fresh {
		return server.ErrReplay
	}
	return nil
}

// Sweep implements [server.Sweeper]: it removes the sessions whose Expires is at or before now
// (with their lanes, index entries and replay windows; they leave no tombstone, as a tombstone
// lives only until Expires) and the tombstones whose lifetime ended at or before now. It returns
// the number of sessions removed. The idle timeout is the Manager's: the store does not know it.
func (m *Store) Sweep(ctx context.Context, now time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, sess := range m.sessions {
		if !now.Before(sess.s.Expires) {
			m.remove(sess)
			n++
		}
	}
	for id, tomb := range m.goneSess {
		if !now.Before(tomb.until) {
			delete(m.goneSess, id)
		}
	}
	for id, tomb := range m.goneLanes { // a deleted session's lanes and lanes deleted alone
		if !now.Before(tomb.until) {
			delete(m.goneLanes, id)
		}
	}
	return n, nil
}

// normTime drops the monotonic reading and the location, as a durable store would.
func normTime(t time.Time) time.Time { return t.Round(0).UTC() }

func laneBytes(l *server.Lane) int {
	return len(l.SessionID) + len(l.Key) + len(l.PrevKey) + len(l.RotateClientPub) + len(l.RotateReply)
}

func sessionBytes(s *server.Session) int { return len(s.ID) + len(s.UserAgent) }

// take appends b to buf and returns a capped slice of the copy (nil stays nil), so that appending
// to one returned field cannot overwrite the next.
func take(buf []byte, b []byte) ([]byte, []byte) {
	if b == nil {
		return buf, nil
	}
	n := len(buf)
	buf = append(buf, b...)
	return buf, buf[n:len(buf):len(buf)]
}

func copyLane(src *server.Lane) server.Lane {
	var l server.Lane
	copyLaneInto(&l, src, make([]byte, 0, laneBytes(src)))
	return l
}

// copyLaneInto deep-copies src to dst, placing byte slices in buf (which must have room).
func copyLaneInto(dst, src *server.Lane, buf []byte) []byte {
	*dst = *src
	buf, dst.SessionID = take(buf, src.SessionID)
	buf, dst.Key = take(buf, src.Key)
	buf, dst.PrevKey = take(buf, src.PrevKey)
	buf, dst.RotateClientPub = take(buf, src.RotateClientPub)
	buf, dst.RotateReply = take(buf, src.RotateReply)
	dst.PrevUntil = normTime(src.PrevUntil)
	dst.RotatedAt = normTime(src.RotatedAt)
	return buf
}

func copySession(src *server.Session) server.Session {
	var s server.Session
	copySessionInto(&s, src, make([]byte, 0, sessionBytes(src)))
	return s
}

func copySessionInto(dst, src *server.Session, buf []byte) []byte {
	*dst = *src
	buf, dst.ID = take(buf, src.ID)
	buf, dst.UserAgent = take(buf, src.UserAgent)
	dst.Claims = maps.Clone(src.Claims) // strings are immutable: sharing them is safe
	dst.Created = normTime(src.Created)
	dst.Expires = normTime(src.Expires)
	dst.LastSeen = normTime(src.LastSeen)
	return buf
}
