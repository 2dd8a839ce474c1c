// Package storetest is the conformance suite every [server.Store] runs:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) server.Store { return memstore.New() })
//	}
//
// [Run] checks the contract written on [server.Store]: creation and lookup, ErrExists,
// compare-and-swap updates under concurrency, Touch, Delete and its tombstones, DeleteLane (one
// lane of a live session) and its tombstone under concurrency, the per-user
// index, replay windows under concurrency (kept across rotations), single-use join tickets under
// concurrency, a deletion racing joins, rotations, Touch and Seen (nothing comes back), the end
// of tombstones at the session's expiry, exact round trips of every field, copy semantics,
// context cancellation and, when the store implements it, [server.Sweeper].
//
// The suite relies on the store's wall clock only for tombstone lifetimes, which it sets an hour
// away from now (or already past). It is safe to run stores' suites in parallel; each subtest
// gets a fresh store from newStore, which should register its own cleanup with t.Cleanup.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

// Run runs the conformance suite against stores made by newStore, one per subtest.
func Run(t *testing.T, newStore func(t *testing.T) server.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, server.Store)
	}{
		{"CreateGet", testCreateGet},
		{"Exists", testExists},
		{"AddLane", testAddLane},
		{"UpdateLane", testUpdateLane},
		{"UpdateLaneConcurrent", testUpdateLaneConcurrent},
		{"Touch", testTouch},
		{"Delete", testDelete},
		{"DeletePastExpiry", testDeletePastExpiry},
		{"DeleteLane", testDeleteLane},
		{"DeleteLaneThenDelete", testDeleteLaneThenDelete},
		{"DeleteLanePastExpiry", testDeleteLanePastExpiry},
		{"DeleteLaneConcurrent", testDeleteLaneConcurrent},
		{"DeleteLaneSweep", testDeleteLaneSweep},
		{"DeleteLaneTombstoneBound", testDeleteLaneTombstoneBound},
		{"UserSessions", testUserSessions},
		{"Seen", testSeen},
		{"SeenConcurrentSame", testSeenConcurrentSame},
		{"SeenConcurrentDistinct", testSeenConcurrentDistinct},
		{"RoundTrip", testRoundTrip},
		{"Copies", testCopies},
		{"Canceled", testCanceled},
		{"Sweep", testSweep},
		{"Ticket", testTicket},
		{"TicketConcurrentTake", testTicketConcurrentTake},
		{"TicketExpiry", testTicketExpiry},
		{"UpdateLaneKeepsWindow", testUpdateLaneKeepsWindow},
		{"TouchDeleted", testTouchDeleted},
		{"DeleteConcurrent", testDeleteConcurrent},
		{"TombstoneEnds", testTombstoneEnds},
		{"TicketUsedStaysTaken", testTicketUsedStaysTaken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

// Fixtures.

var base = time.Now().Add(-time.Minute).Round(0)

// NewSession returns a session of user with a random ID, created at created and expiring an hour
// after the test binary started (so that its tombstones are live while tests run).
func NewSession(user string, created time.Time) *server.Session {
	return &server.Session{
		ID:        randBytes(32),
		UserID:    user,
		Claims:    map[string]string{"role": "admin", "name": "Ada"},
		Created:   created,
		Expires:   base.Add(time.Hour),
		LastSeen:  created,
		UserAgent: randBytes(32),
	}
}

// NewLane returns an epoch-0 lane of s with a random ID and random (sealed-looking) key bytes.
func NewLane(s *server.Session) *server.Lane {
	l := &server.Lane{
		SessionID: bytes.Clone(s.ID),
		Key:       randBytes(60),
		RotatedAt: s.Created,
	}
	copy(l.ID[:], randBytes(protocol.LaneIDSize))
	return l
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func create(t *testing.T, st server.Store, user string) (*server.Session, *server.Lane) {
	t.Helper()
	s := NewSession(user, base)
	l := NewLane(s)
	if err := st.Create(t.Context(), s, l); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return s, l
}

// Assertions.

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want %v", what, err, target)
	}
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	var g *server.GoneError
	if !errors.Is(err, server.ErrNotFound) || errors.As(err, &g) {
		t.Errorf("%s: error %v, want plain ErrNotFound", what, err)
	}
}

func wantGone(t *testing.T, what string, err error, reason string) {
	t.Helper()
	var g *server.GoneError
	switch {
	case !errors.As(err, &g):
		t.Errorf("%s: error %v, want *GoneError(%q)", what, err, reason)
	case g.Reason != reason:
		t.Errorf("%s: gone reason %q, want %q", what, g.Reason, reason)
	case !errors.Is(err, server.ErrNotFound):
		t.Errorf("%s: %v does not wrap ErrNotFound", what, err)
	}
}

func diffTime(out []string, name string, want, got time.Time) []string {
	if !want.Equal(got) {
		out = append(out, fmt.Sprintf("%s = %v, want %v", name, got, want))
	}
	if strings.Contains(got.String(), " m=") {
		out = append(out, fmt.Sprintf("%s keeps a monotonic clock reading: %v", name, got))
	}
	return out
}

func diffBytes(out []string, name string, want, got []byte) []string {
	if !bytes.Equal(want, got) {
		out = append(out, fmt.Sprintf("%s = %x, want %x", name, got, want))
	}
	return out
}

func diffSession(want, got *server.Session) []string {
	if got == nil {
		return []string{"session is nil"}
	}
	var d []string
	d = diffBytes(d, "ID", want.ID, got.ID)
	if want.UserID != got.UserID {
		d = append(d, fmt.Sprintf("UserID = %q, want %q", got.UserID, want.UserID))
	}
	if !maps.Equal(want.Claims, got.Claims) {
		d = append(d, fmt.Sprintf("Claims = %q, want %q", got.Claims, want.Claims))
	}
	d = diffTime(d, "Created", want.Created, got.Created)
	d = diffTime(d, "Expires", want.Expires, got.Expires)
	d = diffTime(d, "LastSeen", want.LastSeen, got.LastSeen)
	d = diffBytes(d, "UserAgent", want.UserAgent, got.UserAgent)
	return d
}

func diffLane(want, got *server.Lane) []string {
	if got == nil {
		return []string{"lane is nil"}
	}
	var d []string
	if want.ID != got.ID {
		d = append(d, fmt.Sprintf("ID = %v, want %v", got.ID, want.ID))
	}
	d = diffBytes(d, "SessionID", want.SessionID, got.SessionID)
	if want.Epoch != got.Epoch {
		d = append(d, fmt.Sprintf("Epoch = %d, want %d", got.Epoch, want.Epoch))
	}
	d = diffBytes(d, "Key", want.Key, got.Key)
	d = diffBytes(d, "PrevKey", want.PrevKey, got.PrevKey)
	d = diffTime(d, "PrevUntil", want.PrevUntil, got.PrevUntil)
	d = diffTime(d, "RotatedAt", want.RotatedAt, got.RotatedAt)
	d = diffBytes(d, "RotateClientPub", want.RotateClientPub, got.RotateClientPub)
	d = diffBytes(d, "RotateReply", want.RotateReply, got.RotateReply)
	if want.EventSeq != got.EventSeq {
		d = append(d, fmt.Sprintf("EventSeq = %d, want %d", got.EventSeq, want.EventSeq))
	}
	return d
}

func report(t *testing.T, what string, diffs []string) {
	t.Helper()
	for _, d := range diffs {
		t.Errorf("%s: %s", what, d)
	}
}

// wantLane checks that Lane(l.ID) returns l and s.
func wantLane(t *testing.T, st server.Store, l *server.Lane, s *server.Session) {
	t.Helper()
	gl, gs, err := st.Lane(t.Context(), l.ID)
	if err != nil {
		t.Fatalf("Lane: %v", err)
	}
	report(t, "Lane: lane", diffLane(l, gl))
	report(t, "Lane: session", diffSession(s, gs))
}

// wantSession checks that Session(s.ID) returns s and exactly the lanes given (in any order).
func wantSession(t *testing.T, st server.Store, s *server.Session, lanes ...protocol.LaneID) {
	t.Helper()
	gs, gl, err := st.Session(t.Context(), s.ID)
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	report(t, "Session", diffSession(s, gs))
	if !sameLanes(gl, lanes) {
		t.Errorf("Session: lanes %v, want %v", gl, lanes)
	}
}

func sameLanes(a, b []protocol.LaneID) bool {
	cmp := func(x, y protocol.LaneID) int { return bytes.Compare(x[:], y[:]) }
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// The tests.

func testCreateGet(t *testing.T, st server.Store) {
	s, l := create(t, st, "alice")
	wantLane(t, st, l, s)
	wantSession(t, st, s, l.ID)

	var unknown protocol.LaneID
	copy(unknown[:], randBytes(protocol.LaneIDSize))
	_, _, err := st.Lane(t.Context(), unknown)
	wantNotFound(t, "Lane(unknown)", err)
	_, _, err = st.Session(t.Context(), randBytes(32))
	wantNotFound(t, "Session(unknown)", err)
}

func testExists(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")

	// Same session ID, new lane: refused, and the new lane is not stored.
	s2 := NewSession("bob", base)
	s2.ID = bytes.Clone(s.ID)
	l2 := NewLane(s2)
	wantErr(t, "Create(same session ID)", st.Create(ctx, s2, l2), server.ErrExists)
	_, _, err := st.Lane(ctx, l2.ID)
	wantNotFound(t, "Lane after refused Create", err)
	wantSession(t, st, s, l.ID)

	// New session ID, same lane ID: refused atomically (no session without its lane).
	s3 := NewSession("carol", base)
	l3 := NewLane(s3)
	l3.ID = l.ID
	wantErr(t, "Create(same lane ID)", st.Create(ctx, s3, l3), server.ErrExists)
	_, _, err = st.Session(ctx, s3.ID)
	wantNotFound(t, "Session after refused Create", err)
	if got, err := st.UserSessions(ctx, "carol"); err != nil || len(got) != 0 {
		t.Errorf("UserSessions after refused Create = %d sessions, %v; want none", len(got), err)
	}
	wantLane(t, st, l, s)

	// AddLane with a taken lane ID.
	l4 := NewLane(s)
	l4.ID = l.ID
	wantErr(t, "AddLane(same lane ID)", st.AddLane(ctx, l4), server.ErrExists)
	wantLane(t, st, l, s)

	// A lane whose SessionID is not the session's is refused.
	s5 := NewSession("dave", base)
	l5 := NewLane(s)
	if err := st.Create(ctx, s5, l5); err == nil {
		t.Error("Create with lane.SessionID != session.ID succeeded")
	}
	_, _, err = st.Session(ctx, s5.ID)
	wantNotFound(t, "Session after mismatched Create", err)

	// IDs of a deleted session stay taken while their tombstones live.
	if _, err := st.Delete(ctx, s.ID, "logout"); err != nil {
		t.Fatal(err)
	}
	s6 := NewSession("erin", base)
	l6 := NewLane(s6)
	l6.ID = l.ID
	wantErr(t, "Create(tombstoned lane ID)", st.Create(ctx, s6, l6), server.ErrExists)
	s7 := NewSession("erin", base)
	s7.ID = bytes.Clone(s.ID)
	wantErr(t, "Create(tombstoned session ID)", st.Create(ctx, s7, NewLane(s7)), server.ErrExists)
	s8, _ := create(t, st, "frank")
	l8 := NewLane(s8)
	l8.ID = l.ID
	wantErr(t, "AddLane(tombstoned lane ID)", st.AddLane(ctx, l8), server.ErrExists)
}

func testAddLane(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	l2 := NewLane(s)
	if err := st.AddLane(ctx, l2); err != nil {
		t.Fatalf("AddLane: %v", err)
	}
	wantLane(t, st, l2, s)
	wantLane(t, st, l, s)
	wantSession(t, st, s, l.ID, l2.ID)

	// Unknown session: plain ErrNotFound.
	orphan := NewLane(NewSession("alice", base))
	wantNotFound(t, "AddLane(unknown session)", st.AddLane(ctx, orphan))
	_, _, err := st.Lane(ctx, orphan.ID)
	wantNotFound(t, "Lane after refused AddLane", err)

	// Deleted session: GoneError with the reason, and nothing added.
	if _, err := st.Delete(ctx, s.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	l3 := NewLane(s)
	wantGone(t, "AddLane(deleted session)", st.AddLane(ctx, l3), "revoked")
	_, _, err = st.Lane(ctx, l3.ID)
	wantNotFound(t, "Lane after AddLane to a deleted session", err)
}

func testUpdateLane(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")

	next := *l
	next.Epoch = 1
	next.PrevKey, next.Key = l.Key, randBytes(60)
	next.PrevUntil = base.Add(30 * time.Second)
	next.RotatedAt = base.Add(time.Second)
	next.RotateClientPub, next.RotateReply = randBytes(32), randBytes(64)
	if err := st.UpdateLane(ctx, &next, 0); err != nil {
		t.Fatalf("UpdateLane(prevEpoch 0): %v", err)
	}
	wantLane(t, st, &next, s)

	// A second rotation from the same epoch loses.
	other := next
	other.Key = randBytes(60)
	wantErr(t, "UpdateLane(stale prevEpoch)", st.UpdateLane(ctx, &other, 0), server.ErrConflict)
	wantLane(t, st, &next, s)

	// An update within an epoch (prevEpoch == Epoch), e.g. the event sequence.
	next.EventSeq = 7
	if err := st.UpdateLane(ctx, &next, 1); err != nil {
		t.Fatalf("UpdateLane(same epoch): %v", err)
	}
	wantLane(t, st, &next, s)

	// A lane cannot be moved to another session.
	moved := next
	moved.SessionID = randBytes(32)
	if err := st.UpdateLane(ctx, &moved, 1); err == nil {
		t.Error("UpdateLane changing SessionID succeeded")
	}
	wantLane(t, st, &next, s)

	unknown := NewLane(s)
	wantNotFound(t, "UpdateLane(unknown)", st.UpdateLane(ctx, unknown, 0))
	_, _, err := st.Lane(ctx, unknown.ID)
	wantNotFound(t, "Lane after UpdateLane(unknown)", err)

	if _, err := st.Delete(ctx, s.ID, "logout"); err != nil {
		t.Fatal(err)
	}
	wantGone(t, "UpdateLane(deleted)", st.UpdateLane(ctx, &next, 1), "logout")
}

func testUpdateLaneConcurrent(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	for epoch := uint32(0); epoch < 5; epoch++ {
		const n = 8
		cands := make([]server.Lane, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range cands {
			c := *l
			c.Epoch = epoch + 1
			c.Key = randBytes(60)
			c.RotateClientPub = randBytes(32)
			cands[i] = c
			wg.Go(func() {
				<-start
				errs[i] = st.UpdateLane(ctx, &cands[i], epoch)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("epoch %d: UpdateLane won twice (%d and %d)", epoch, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, server.ErrConflict):
				t.Fatalf("epoch %d: UpdateLane: %v, want nil or ErrConflict", epoch, err)
			}
		}
		if winner < 0 {
			t.Fatalf("epoch %d: no UpdateLane won", epoch)
		}
		wantLane(t, st, &cands[winner], s)
		l = &cands[winner]
	}
}

func testTouch(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, _ := create(t, st, "alice")
	check := func(want time.Time) {
		t.Helper()
		got, _, err := st.Session(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.LastSeen.Equal(want) {
			t.Errorf("LastSeen = %v, want %v", got.LastSeen, want)
		}
	}
	later := base.Add(90*time.Second + 123456789)
	if err := st.Touch(ctx, s.ID, later); err != nil {
		t.Fatal(err)
	}
	check(later)
	if err := st.Touch(ctx, s.ID, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	check(later) // never lowered
	if err := st.Touch(ctx, s.ID, later.Add(-1)); err != nil {
		t.Fatal(err)
	}
	check(later)
	latest := time.Now().Add(time.Minute) // with a monotonic reading
	if err := st.Touch(ctx, s.ID, latest); err != nil {
		t.Fatal(err)
	}
	check(latest)
	if err := st.Touch(ctx, randBytes(32), latest); err != nil {
		t.Errorf("Touch(missing session) = %v, want nil", err)
	}
}

func testDelete(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	l2, l3 := NewLane(s), NewLane(s)
	for _, x := range []*server.Lane{l2, l3} {
		if err := st.AddLane(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Seen(ctx, l2.ID, 1); err != nil {
		t.Fatal(err)
	}
	keep, keepLane := create(t, st, "alice")

	lanes, err := st.Delete(ctx, s.ID, "reuse_detected")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if !sameLanes(lanes, []protocol.LaneID{l.ID, l2.ID, l3.ID}) {
		t.Errorf("Delete returned lanes %v, want %v", lanes, []protocol.LaneID{l.ID, l2.ID, l3.ID})
	}
	for _, x := range []*server.Lane{l, l2, l3} {
		_, _, err := st.Lane(ctx, x.ID)
		wantGone(t, "Lane(deleted)", err, "reuse_detected")
		wantGone(t, "Seen(deleted)", st.Seen(ctx, x.ID, 2), "reuse_detected")
	}
	_, _, err = st.Session(ctx, s.ID)
	wantGone(t, "Session(deleted)", err, "reuse_detected")
	wantGone(t, "AddLane(deleted)", st.AddLane(ctx, NewLane(s)), "reuse_detected")
	if err := st.Touch(ctx, s.ID, time.Now()); err != nil {
		t.Errorf("Touch(deleted) = %v, want nil", err)
	}

	// Deleting again: no lanes, no error, the first reason stays.
	lanes, err = st.Delete(ctx, s.ID, "logout")
	if err != nil || len(lanes) != 0 {
		t.Errorf("second Delete = %v, %v; want no lanes, nil", lanes, err)
	}
	_, _, err = st.Lane(ctx, l.ID)
	wantGone(t, "Lane after second Delete", err, "reuse_detected")

	// Other sessions are untouched.
	wantLane(t, st, keepLane, keep)
	if err := st.Seen(ctx, keepLane.ID, 1); err != nil {
		t.Errorf("Seen(other session) = %v", err)
	}

	lanes, err = st.Delete(ctx, randBytes(32), "logout")
	if err != nil || len(lanes) != 0 {
		t.Errorf("Delete(missing) = %v, %v; want no lanes, nil", lanes, err)
	}
}

// A tombstone lives until the session's absolute expiry: deleting an already expired session
// leaves nothing to report but ErrNotFound.
func testDeletePastExpiry(t *testing.T, st server.Store) {
	ctx := t.Context()
	s := NewSession("alice", base.Add(-13*time.Hour))
	s.Expires = base.Add(-time.Hour)
	l := NewLane(s)
	if err := st.Create(ctx, s, l); err != nil {
		t.Fatal(err)
	}
	wantLane(t, st, l, s) // the store does not judge expiry on lookup; the Manager does
	if _, err := st.Delete(ctx, s.ID, "expired"); err != nil {
		t.Fatal(err)
	}
	_, _, err := st.Lane(ctx, l.ID)
	wantNotFound(t, "Lane(deleted past expiry)", err)
	wantNotFound(t, "Seen(deleted past expiry)", st.Seen(ctx, l.ID, 1))
	_, _, err = st.Session(ctx, s.ID)
	wantNotFound(t, "Session(deleted past expiry)", err)
}

// testDeleteLane deletes one lane of two: the other and the session go on; the deleted lane is
// gone with its reason for every method, and its ID stays taken.
func testDeleteLane(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	l2 := NewLane(s)
	if err := st.AddLane(ctx, l2); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*server.Lane{l, l2} {
		if err := st.Seen(ctx, x.ID, 1); err != nil {
			t.Fatal(err)
		}
	}

	if err := st.DeleteLane(ctx, l.ID, "lane_evicted"); err != nil {
		t.Fatalf("DeleteLane: %v", err)
	}
	_, _, err := st.Lane(ctx, l.ID)
	wantGone(t, "Lane(deleted lane)", err, "lane_evicted")
	wantGone(t, "Seen(deleted lane)", st.Seen(ctx, l.ID, 2), "lane_evicted")
	next := *l
	next.Epoch, next.Key = 1, randBytes(60)
	wantGone(t, "UpdateLane(deleted lane)", st.UpdateLane(ctx, &next, 0), "lane_evicted")
	wantSession(t, st, s, l2.ID)

	// The other lane still works, window included.
	wantLane(t, st, l2, s)
	wantErr(t, "Seen(other lane, 1)", st.Seen(ctx, l2.ID, 1), server.ErrReplay)
	if err := st.Seen(ctx, l2.ID, 2); err != nil {
		t.Errorf("Seen(other lane, 2) = %v, want nil", err)
	}
	next2 := *l2
	next2.Epoch, next2.Key, next2.RotatedAt = 1, randBytes(60), base.Add(time.Second)
	if err := st.UpdateLane(ctx, &next2, 0); err != nil {
		t.Errorf("UpdateLane(other lane) = %v", err)
	}
	wantLane(t, st, &next2, s)
	if got, err := st.UserSessions(ctx, "alice"); err != nil || len(got) != 1 {
		t.Errorf("UserSessions after DeleteLane = %d sessions, %v; want 1", len(got), err)
	}

	// Deleting again: gone, with the first reason.
	wantGone(t, "second DeleteLane", st.DeleteLane(ctx, l.ID, "revoked"), "lane_evicted")
	_, _, err = st.Lane(ctx, l.ID)
	wantGone(t, "Lane after second DeleteLane", err, "lane_evicted")

	// The ID stays taken; a new lane joins the session as usual.
	again := NewLane(s)
	again.ID = l.ID
	wantErr(t, "AddLane(deleted lane's ID)", st.AddLane(ctx, again), server.ErrExists)
	_, _, err = st.Lane(ctx, l.ID)
	wantGone(t, "Lane after refused AddLane", err, "lane_evicted")
	l3 := NewLane(s)
	if err := st.AddLane(ctx, l3); err != nil {
		t.Fatalf("AddLane after DeleteLane: %v", err)
	}
	wantSession(t, st, s, l2.ID, l3.ID)

	// The last lane can go too: the session stays, with none.
	for _, x := range []*server.Lane{l2, l3} {
		if err := st.DeleteLane(ctx, x.ID, "lane_evicted"); err != nil {
			t.Fatalf("DeleteLane: %v", err)
		}
	}
	wantSession(t, st, s)

	var unknown protocol.LaneID
	copy(unknown[:], randBytes(protocol.LaneIDSize))
	wantNotFound(t, "DeleteLane(unknown)", st.DeleteLane(ctx, unknown, "lane_evicted"))
	_, _, err = st.Lane(ctx, unknown)
	wantNotFound(t, "Lane after DeleteLane(unknown)", err)
}

// testDeleteLaneThenDelete: a lane deleted alone keeps its reason when its session is deleted
// afterwards, and a deleted session's lanes cannot be deleted alone.
func testDeleteLaneThenDelete(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	l2 := NewLane(s)
	if err := st.AddLane(ctx, l2); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteLane(ctx, l.ID, "lane_evicted"); err != nil {
		t.Fatal(err)
	}
	lanes, err := st.Delete(ctx, s.ID, "logout")
	if err != nil {
		t.Fatal(err)
	}
	if !sameLanes(lanes, []protocol.LaneID{l2.ID}) {
		t.Errorf("Delete returned lanes %v, want only the live one %v", lanes, l2.ID)
	}
	_, _, err = st.Lane(ctx, l.ID)
	wantGone(t, "Lane(deleted alone, then session deleted)", err, "lane_evicted")
	wantGone(t, "Seen(deleted alone, then session deleted)", st.Seen(ctx, l.ID, 1), "lane_evicted")
	_, _, err = st.Lane(ctx, l2.ID)
	wantGone(t, "Lane(session deleted)", err, "logout")
	wantGone(t, "DeleteLane(lane of a deleted session)", st.DeleteLane(ctx, l2.ID, "lane_evicted"), "logout")
	_, _, err = st.Lane(ctx, l2.ID)
	wantGone(t, "Lane after DeleteLane of a deleted session's lane", err, "logout")
}

// testDeleteLanePastExpiry: like a session's, a lane's tombstone lives until the session's
// absolute expiry, so deleting a lane of an expired session leaves none.
func testDeleteLanePastExpiry(t *testing.T, st server.Store) {
	ctx := t.Context()
	s := NewSession("alice", base.Add(-13*time.Hour))
	s.Expires = base.Add(-time.Hour)
	l := NewLane(s)
	if err := st.Create(ctx, s, l); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteLane(ctx, l.ID, "lane_evicted"); err != nil {
		t.Fatal(err)
	}
	_, _, err := st.Lane(ctx, l.ID)
	wantNotFound(t, "Lane(deleted past expiry)", err)
	wantNotFound(t, "Seen(deleted past expiry)", st.Seen(ctx, l.ID, 1))
}

// testDeleteLaneConcurrent races DeleteLane against rotations (UpdateLane) of the same lane and
// against other DeleteLanes: exactly one DeleteLane wins, the rotations either win before it or
// find the lane gone, and the lane ends gone whatever the order.
func testDeleteLaneConcurrent(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	keep := NewLane(s)
	if err := st.AddLane(ctx, keep); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		victim := NewLane(s)
		if err := st.AddLane(ctx, victim); err != nil {
			t.Fatal(err)
		}
		const n = 4
		delErrs, updErrs := make([]error, n), make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			c := *victim
			c.Epoch, c.Key = 1, randBytes(60)
			wg.Go(func() {
				<-start
				updErrs[i] = st.UpdateLane(ctx, &c, 0)
			})
			wg.Go(func() {
				<-start
				delErrs[i] = st.DeleteLane(ctx, victim.ID, fmt.Sprintf("reason%d", i))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range delErrs {
			var g *server.GoneError
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: DeleteLane won twice (%d and %d)", round, winner, i)
			case err == nil:
				winner = i
			case !errors.As(err, &g):
				t.Fatalf("round %d: DeleteLane: %v, want nil or *GoneError", round, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no DeleteLane won", round)
		}
		reason := fmt.Sprintf("reason%d", winner)
		for i, err := range delErrs {
			if i != winner {
				wantGone(t, "losing DeleteLane", err, reason)
			}
		}
		updates := 0
		for _, err := range updErrs {
			var g *server.GoneError
			switch {
			case err == nil:
				updates++
			case errors.As(err, &g):
				if g.Reason != reason {
					t.Errorf("round %d: UpdateLane gone with %q, want %q", round, g.Reason, reason)
				}
			case !errors.Is(err, server.ErrConflict):
				t.Fatalf("round %d: UpdateLane: %v, want nil, ErrConflict or *GoneError", round, err)
			}
		}
		if updates > 1 {
			t.Fatalf("round %d: %d rotations from epoch 0 won", round, updates)
		}
		_, _, err := st.Lane(ctx, victim.ID)
		wantGone(t, "Lane after the race", err, reason)
		wantGone(t, "Seen after the race", st.Seen(ctx, victim.ID, 1), reason)
	}
	wantSession(t, st, s, l.ID, keep.ID)
	wantLane(t, st, keep, s)
}

// testDeleteLaneSweep: Sweep removes the tombstone of a lane deleted alone with its session's
// (the session expired, or was deleted and its tombstone's lifetime ended).
func testDeleteLaneSweep(t *testing.T, st server.Store) {
	sw, ok := st.(server.Sweeper)
	if !ok {
		t.Skip("store does not implement server.Sweeper")
	}
	ctx := t.Context()
	soon, later := base.Add(time.Hour), base.Add(3*time.Hour)
	mk := func(expires time.Time) (*server.Session, *server.Lane, *server.Lane) {
		s := NewSession("alice", base)
		s.Expires = expires
		l := NewLane(s)
		if err := st.Create(ctx, s, l); err != nil {
			t.Fatal(err)
		}
		l2 := NewLane(s)
		if err := st.AddLane(ctx, l2); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteLane(ctx, l.ID, "lane_evicted"); err != nil {
			t.Fatal(err)
		}
		return s, l, l2
	}
	sA, lA, _ := mk(soon)    // expires at the sweep
	sB, lB, _ := mk(soon)    // deleted; tombstones end at the sweep
	sC, lC, lC2 := mk(later) // lives on
	if _, err := st.Delete(ctx, sB.ID, "logout"); err != nil {
		t.Fatal(err)
	}
	if n, err := sw.Sweep(ctx, soon); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want 1, nil", n, err)
	}
	for _, l := range []*server.Lane{lA, lB} {
		_, _, err := st.Lane(ctx, l.ID)
		wantNotFound(t, "Lane(deleted alone, swept)", err)
	}
	_, _, err := st.Session(ctx, sA.ID)
	wantNotFound(t, "Session(swept)", err)
	_, _, err = st.Lane(ctx, lC.ID)
	wantGone(t, "Lane(deleted alone, session live)", err, "lane_evicted")
	wantSession(t, st, sC, lC2.ID)
	wantLane(t, st, lC2, sC)
	if n, err := sw.Sweep(ctx, later); err != nil || n != 1 {
		t.Errorf("last Sweep = %d, %v; want 1, nil", n, err)
	}
	_, _, err = st.Lane(ctx, lC.ID)
	wantNotFound(t, "Lane(deleted alone, swept later)", err)
}

// testDeleteLaneTombstoneBound: a session keeps the tombstones of its last
// server.LaneTombstones lanes deleted alone; older ones go (those lanes are plain ErrNotFound),
// before and after the session's own deletion.
func testDeleteLaneTombstoneBound(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	const over = 2
	var deleted []*server.Lane
	for range server.LaneTombstones + over {
		x := NewLane(s)
		if err := st.AddLane(ctx, x); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteLane(ctx, x.ID, "lane_evicted"); err != nil {
			t.Fatal(err)
		}
		deleted = append(deleted, x)
	}
	check := func(when string) {
		t.Helper()
		for i, x := range deleted {
			_, _, err := st.Lane(ctx, x.ID)
			if i < over {
				wantNotFound(t, when+": Lane(tombstone dropped)", err)
				wantNotFound(t, when+": Seen(tombstone dropped)", st.Seen(ctx, x.ID, 1))
			} else {
				wantGone(t, when+": Lane(tombstone kept)", err, "lane_evicted")
			}
		}
	}
	check("live session")
	wantSession(t, st, s, l.ID)
	if _, err := st.Delete(ctx, s.ID, "logout"); err != nil {
		t.Fatal(err)
	}
	check("deleted session")
}

func testUserSessions(t *testing.T, st server.Store) {
	ctx := t.Context()
	// Users whose IDs are prefixes of each other, or hold separators, must not mix.
	users := []string{"alice", "al", "alice\x00x", "", "ålice ✓"}
	byUser := map[string][]*server.Session{}
	offsets := []time.Duration{3, 1, 4, 2} // created out of order
	for _, u := range users {
		for _, off := range offsets {
			s := NewSession(u, base.Add(off*time.Second+time.Duration(len(u))))
			if err := st.Create(ctx, s, NewLane(s)); err != nil {
				t.Fatal(err)
			}
			byUser[u] = append(byUser[u], s)
		}
	}
	sortByCreated := func(ss []*server.Session) []*server.Session {
		ss = slices.Clone(ss)
		slices.SortFunc(ss, func(a, b *server.Session) int { return a.Created.Compare(b.Created) })
		return ss
	}
	check := func(u string) {
		t.Helper()
		got, err := st.UserSessions(ctx, u)
		if err != nil {
			t.Fatalf("UserSessions(%q): %v", u, err)
		}
		want := sortByCreated(byUser[u])
		if len(got) != len(want) {
			t.Fatalf("UserSessions(%q) returned %d sessions, want %d", u, len(got), len(want))
		}
		for i := range want {
			report(t, fmt.Sprintf("UserSessions(%q)[%d]", u, i), diffSession(want[i], got[i]))
		}
	}
	for _, u := range users {
		check(u)
	}
	if got, err := st.UserSessions(ctx, "nobody"); err != nil || len(got) != 0 {
		t.Errorf("UserSessions(unknown) = %d sessions, %v; want none", len(got), err)
	}

	// Delete removes from the index.
	victim := byUser["alice"][2]
	if _, err := st.Delete(ctx, victim.ID, "logout"); err != nil {
		t.Fatal(err)
	}
	byUser["alice"] = slices.DeleteFunc(byUser["alice"], func(s *server.Session) bool { return s == victim })
	for _, u := range users {
		check(u)
	}
	for _, s := range byUser["al"] {
		if _, err := st.Delete(ctx, s.ID, "logout"); err != nil {
			t.Fatal(err)
		}
	}
	byUser["al"] = nil
	for _, u := range users {
		check(u)
	}
}

func testSeen(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	l2 := NewLane(s)
	if err := st.AddLane(ctx, l2); err != nil {
		t.Fatal(err)
	}
	const W = server.ReplayWindowSize
	steps := []struct {
		seq  uint64
		want error
	}{
		{0, server.ErrReplay}, // never fresh
		{1, nil},
		{1, server.ErrReplay},
		{5, nil},
		{3, nil}, // out of order within the window
		{3, server.ErrReplay},
		{4, nil},
		{2, nil},
		{5, server.ErrReplay},
		{5 + W - 1, nil}, // 5 is now exactly at the window's lower edge
		{6, nil},
		{6, server.ErrReplay},
		{5, server.ErrReplay},
		{5 + W, nil},          // the window is now 6..5+W
		{5, server.ErrReplay}, // just below it
		{6, server.ErrReplay}, // at its edge, seen
		{7, nil},              // inside, not seen
		{1 << 40, nil},        // big jump
		{5 + W, server.ErrReplay},
		{1<<40 - 1, nil},
		{1<<40 - W + 1, nil},
		{1<<40 - W, server.ErrReplay},
		{1 << 40, server.ErrReplay},
		{^uint64(0), nil},
		{^uint64(0), server.ErrReplay},
		{^uint64(0) - 1, nil},
	}
	for _, st2 := range steps {
		err := st.Seen(ctx, l.ID, st2.seq)
		if st2.want == nil && err != nil || st2.want != nil && !errors.Is(err, st2.want) {
			t.Errorf("Seen(%d) = %v, want %v", st2.seq, err, st2.want)
		}
	}
	// Each lane has its own window.
	if err := st.Seen(ctx, l2.ID, 1); err != nil {
		t.Errorf("Seen(other lane, 1) = %v, want nil", err)
	}
	var unknown protocol.LaneID
	copy(unknown[:], randBytes(protocol.LaneIDSize))
	wantNotFound(t, "Seen(unknown lane)", st.Seen(ctx, unknown, 1))
	_, _, err := st.Lane(ctx, unknown)
	wantNotFound(t, "Lane after Seen(unknown)", err)
}

func testSeenConcurrentSame(t *testing.T, st server.Store) {
	ctx := t.Context()
	_, l := create(t, st, "alice")
	for round := range 50 {
		// Sometimes ahead of the window's top, sometimes inside it.
		seq := uint64(1000 + round*3)
		if round%2 == 1 {
			seq -= 500
		}
		const n = 16
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = st.Seen(ctx, l.ID, seq)
			})
		}
		close(start)
		wg.Wait()
		fresh := 0
		for _, err := range errs {
			switch {
			case err == nil:
				fresh++
			case !errors.Is(err, server.ErrReplay):
				t.Fatalf("Seen(%d): %v", seq, err)
			}
		}
		if fresh != 1 {
			t.Fatalf("Seen(%d) from %d goroutines: %d nil results, want exactly 1", seq, n, fresh)
		}
	}

	// Stress: goroutines race for the same nonce over and over; the one that gets it moves all
	// to the next. Each nonce must be accepted exactly once.
	s, _ := create(t, st, "alice")
	l2 := NewLane(s)
	if err := st.AddLane(ctx, l2); err != nil {
		t.Fatal(err)
	}
	const n, seqs = 8, 20000
	var accepted [seqs + 1]atomic.Int32
	var cur atomic.Uint64
	cur.Store(1)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				seq := cur.Load()
				if seq > seqs {
					return
				}
				switch err := st.Seen(ctx, l2.ID, seq); {
				case err == nil:
					accepted[seq].Add(1)
					cur.CompareAndSwap(seq, seq+1)
				case !errors.Is(err, server.ErrReplay):
					t.Errorf("Seen(%d): %v", seq, err)
					cur.Store(seqs + 1)
					return
				}
			}
		})
	}
	wg.Wait()
	for seq := 1; seq <= seqs; seq++ {
		if c := accepted[seq].Load(); c != 1 {
			t.Fatalf("Seen(%d) raced by %d goroutines: accepted %d times, want once", seq, n, c)
		}
	}
}

func testSeenConcurrentDistinct(t *testing.T, st server.Store) {
	ctx := t.Context()
	_, l := create(t, st, "alice")
	const n, per = 16, server.ReplayWindowSize / 16
	var wg sync.WaitGroup
	errs := make(chan error, n*per)
	for g := range n {
		wg.Go(func() {
			// Goroutine g takes g+1, g+1+n, ...: together every seq in 1..ReplayWindowSize, which
			// all fit in one window in any arrival order.
			for i := range per {
				if err := st.Seen(ctx, l.ID, uint64(g+1+i*n)); err != nil {
					errs <- fmt.Errorf("Seen(%d): %w", g+1+i*n, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for seq := uint64(1); seq <= server.ReplayWindowSize; seq++ {
		if err := st.Seen(ctx, l.ID, seq); !errors.Is(err, server.ErrReplay) {
			t.Fatalf("Seen(%d) again = %v, want ErrReplay", seq, err)
		}
	}
}

func testRoundTrip(t *testing.T, st server.Store) {
	ctx := t.Context()
	zone := time.FixedZone("UTC-7", -7*3600)
	now := time.Now() // carries a monotonic reading, which stores drop
	s := &server.Session{
		ID:     randBytes(32),
		UserID: "user-\x00-ü-✓",
		Claims: map[string]string{
			"role":      "admin",
			"":          "empty key",
			"empty":     "",
			"unicode ✓": "välue\x00with nul",
			"long":      strings.Repeat("x", 5000),
		},
		Created:   now,
		Expires:   now.In(zone).Add(12*time.Hour + 1),
		LastSeen:  time.Date(2030, 1, 2, 3, 4, 5, 999999999, zone),
		UserAgent: randBytes(32),
	}
	l := &server.Lane{
		SessionID:       bytes.Clone(s.ID),
		Epoch:           ^uint32(0),
		Key:             randBytes(60),
		PrevKey:         randBytes(61),
		PrevUntil:       time.Date(1969, 12, 31, 23, 59, 59, 1, time.UTC), // before the epoch
		RotatedAt:       time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC),     // past UnixNano's range
		RotateClientPub: randBytes(32),
		RotateReply:     randBytes(64),
		EventSeq:        ^uint64(0),
	}
	copy(l.ID[:], randBytes(protocol.LaneIDSize))
	if err := st.Create(ctx, s, l); err != nil {
		t.Fatal(err)
	}
	wantLane(t, st, l, s)
	wantSession(t, st, s, l.ID)
	us, err := st.UserSessions(ctx, s.UserID)
	if err != nil || len(us) != 1 {
		t.Fatalf("UserSessions = %d sessions, %v", len(us), err)
	}
	report(t, "UserSessions", diffSession(s, us[0]))

	// Zero and empty values.
	s0 := &server.Session{ID: randBytes(32), Expires: base.Add(time.Hour)}
	l0 := &server.Lane{SessionID: s0.ID}
	copy(l0.ID[:], randBytes(protocol.LaneIDSize))
	if err := st.Create(ctx, s0, l0); err != nil {
		t.Fatal(err)
	}
	wantLane(t, st, l0, s0)
	gl, gs, err := st.Lane(ctx, l0.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !gl.PrevUntil.IsZero() || !gl.RotatedAt.IsZero() || !gs.Created.IsZero() || !gs.LastSeen.IsZero() {
		t.Errorf("zero times came back non-zero: %v %v %v %v", gl.PrevUntil, gl.RotatedAt, gs.Created, gs.LastSeen)
	}

	// Every field through UpdateLane.
	l2 := &server.Lane{
		ID:              l.ID,
		SessionID:       bytes.Clone(s.ID),
		Epoch:           0,
		Key:             randBytes(44),
		PrevKey:         nil,
		PrevUntil:       time.Time{},
		RotatedAt:       now.Add(time.Nanosecond),
		RotateClientPub: nil,
		RotateReply:     randBytes(1),
		EventSeq:        1,
	}
	if err := st.UpdateLane(ctx, l2, ^uint32(0)); err != nil {
		t.Fatal(err)
	}
	wantLane(t, st, l2, s)
}

func testCopies(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	want, wantL := *s, *l
	want.ID, want.UserAgent, want.Claims = bytes.Clone(s.ID), bytes.Clone(s.UserAgent), maps.Clone(s.Claims)
	wantL.SessionID, wantL.Key = bytes.Clone(l.SessionID), bytes.Clone(l.Key)

	// Mutating what was passed in does not reach the store.
	s.ID[0] ^= 0xff
	s.UserAgent[0] ^= 0xff
	s.Claims["role"] = "root"
	s.Claims["new"] = "x"
	l.SessionID[0] ^= 0xff
	l.Key[0] ^= 0xff
	wantLane(t, st, &wantL, &want)

	// Mutating what came out does not reach the store, nor another field of the same record.
	gl, gs, err := st.Lane(ctx, wantL.ID)
	if err != nil {
		t.Fatal(err)
	}
	keyBefore := bytes.Clone(gl.Key)
	_ = append(gl.SessionID, 0xee, 0xee, 0xee, 0xee) // must not run into Key
	if !bytes.Equal(gl.Key, keyBefore) {
		t.Error("appending to a returned SessionID overwrote the returned Key")
	}
	gl.Key[0] ^= 0xff
	gl.SessionID[0] ^= 0xff
	gs.ID[0] ^= 0xff
	gs.UserAgent[0] ^= 0xff
	gs.Claims["role"] = "root"
	wantLane(t, st, &wantL, &want)

	gs2, lanes, err := st.Session(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	gs2.ID[0] ^= 0xff
	gs2.Claims["role"] = "root"
	lanes[0][0] ^= 0xff
	wantSession(t, st, &want, wantL.ID)

	us, err := st.UserSessions(ctx, "alice")
	if err != nil || len(us) != 1 {
		t.Fatalf("UserSessions = %d, %v", len(us), err)
	}
	us[0].ID[0] ^= 0xff
	us[0].Claims["role"] = "root"
	wantSession(t, st, &want, wantL.ID)

	// Updating with a lane and then mutating it.
	next := wantL
	next.Epoch = 1
	next.Key = randBytes(60)
	nextWant := next
	nextWant.Key = bytes.Clone(next.Key)
	if err := st.UpdateLane(ctx, &next, 0); err != nil {
		t.Fatal(err)
	}
	next.Key[0] ^= 0xff
	wantLane(t, st, &nextWant, &want)

	// Deleted lanes returned by Delete are the caller's too.
	dl, err := st.Delete(ctx, want.ID, "logout")
	if err != nil || len(dl) != 1 {
		t.Fatalf("Delete = %v, %v", dl, err)
	}
	dl[0][0] ^= 0xff
	_, _, err = st.Lane(ctx, wantL.ID)
	wantGone(t, "Lane after Delete", err, "logout")
}

// testCanceled checks that every method refuses a canceled context with an error wrapping
// context.Canceled and changes nothing.
func testCanceled(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	if err := st.Seen(ctx, l.ID, 1); err != nil {
		t.Fatal(err)
	}
	dead, cancel := context.WithCancel(ctx)
	cancel()
	wantCanceled := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context = %v, want context.Canceled", what, err)
		}
	}

	s2 := NewSession("alice", base.Add(time.Second))
	l2 := NewLane(s2)
	wantCanceled("Create", st.Create(dead, s2, l2))
	_, _, err := st.Session(ctx, s2.ID)
	wantNotFound(t, "Session after canceled Create", err)

	l3 := NewLane(s)
	wantCanceled("AddLane", st.AddLane(dead, l3))
	_, _, err = st.Lane(ctx, l3.ID)
	wantNotFound(t, "Lane after canceled AddLane", err)

	next := *l
	next.Epoch, next.Key = 1, randBytes(60)
	wantCanceled("UpdateLane", st.UpdateLane(dead, &next, 0))

	wantCanceled("Touch", st.Touch(dead, s.ID, base.Add(time.Hour)))

	wantCanceled("Seen", st.Seen(dead, l.ID, 2))
	wantCanceled("DeleteLane", st.DeleteLane(dead, l.ID, "lane_evicted"))
	_, err = st.Delete(dead, s.ID, "logout")
	wantCanceled("Delete", err)
	_, _, err = st.Lane(dead, l.ID)
	wantCanceled("Lane", err)
	_, _, err = st.Session(dead, s.ID)
	wantCanceled("Session", err)
	_, err = st.UserSessions(dead, "alice")
	wantCanceled("UserSessions", err)
	if sw, ok := st.(server.Sweeper); ok {
		_, err = sw.Sweep(dead, base.Add(100*time.Hour))
		wantCanceled("Sweep", err)
	}

	// Nothing changed: the lane, its session and its window are as before.
	wantLane(t, st, l, s)
	wantSession(t, st, s, l.ID)
	if err := st.Seen(ctx, l.ID, 2); err != nil {
		t.Errorf("Seen(2) after a canceled Seen(2) = %v, want nil", err)
	}
	wantErr(t, "Seen(1) after a canceled Seen(2)", st.Seen(ctx, l.ID, 1), server.ErrReplay)
}

// testSweep checks [server.Sweeper]: Sweep(now) removes sessions whose Expires is at or before
// now, leaving no tombstone, and removes tombstones whose lifetime (the deleted session's Expires)
// ended at or before now. Idle timeouts are the Manager's; Sweep does not know them.
func testSweep(t *testing.T, st server.Store) {
	sw, ok := st.(server.Sweeper)
	if !ok {
		t.Skip("store does not implement server.Sweeper")
	}
	ctx := t.Context()
	mk := func(user string, expires time.Time) (*server.Session, *server.Lane) {
		s := NewSession(user, base)
		s.Expires = expires
		l := NewLane(s)
		if err := st.Create(ctx, s, l); err != nil {
			t.Fatal(err)
		}
		return s, l
	}
	soon, later := base.Add(time.Hour), base.Add(3*time.Hour)
	sA, lA := mk("alice", soon)  // expires at the sweep
	sB, lB := mk("alice", later) // lives on
	sC, lC := mk("bob", soon)    // deleted; tombstone ends at the sweep
	sD, lD := mk("bob", later)   // deleted; tombstone outlives the sweep
	sE, lE := mk("carol", soon.Add(-time.Second))
	for _, s := range []*server.Session{sC, sD} {
		if _, err := st.Delete(ctx, s.ID, "revoked"); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Seen(ctx, lA.ID, 1); err != nil {
		t.Fatal(err)
	}

	// Before any deadline: nothing to do.
	if n, err := sw.Sweep(ctx, base); err != nil || n != 0 {
		t.Errorf("Sweep(before deadlines) = %d, %v; want 0, nil", n, err)
	}
	wantLane(t, st, lA, sA)

	n, err := sw.Sweep(ctx, soon)
	if err != nil || n != 2 {
		t.Errorf("Sweep = %d, %v; want 2 (sessions at and before their Expires), nil", n, err)
	}
	for _, x := range []struct {
		s *server.Session
		l *server.Lane
	}{{sA, lA}, {sE, lE}} {
		_, _, err = st.Lane(ctx, x.l.ID)
		wantNotFound(t, "Lane(swept session)", err)
		wantNotFound(t, "Seen(swept session)", st.Seen(ctx, x.l.ID, 2))
		_, _, err = st.Session(ctx, x.s.ID)
		wantNotFound(t, "Session(swept)", err)
		wantNotFound(t, "AddLane(swept session)", st.AddLane(ctx, NewLane(x.s)))
	}
	wantLane(t, st, lB, sB)
	if err := st.Seen(ctx, lB.ID, 1); err != nil {
		t.Errorf("Seen(live lane) after Sweep = %v", err)
	}
	us, err := st.UserSessions(ctx, "alice")
	if err != nil || len(us) != 1 || !bytes.Equal(us[0].ID, sB.ID) {
		t.Errorf("UserSessions(alice) after Sweep = %d sessions, %v; want only the live one", len(us), err)
	}
	if us, err := st.UserSessions(ctx, "carol"); err != nil || len(us) != 0 {
		t.Errorf("UserSessions(carol) after Sweep = %d sessions, %v; want none", len(us), err)
	}

	// C's tombstone is gone, D's is not.
	_, _, err = st.Lane(ctx, lC.ID)
	wantNotFound(t, "Lane(tombstone swept)", err)
	_, _, err = st.Session(ctx, sC.ID)
	wantNotFound(t, "Session(tombstone swept)", err)
	_, _, err = st.Lane(ctx, lD.ID)
	wantGone(t, "Lane(tombstone live)", err, "revoked")

	// Sweeping again finds nothing; sweeping later takes B and D's tombstone.
	if n, err := sw.Sweep(ctx, soon); err != nil || n != 0 {
		t.Errorf("second Sweep = %d, %v; want 0, nil", n, err)
	}
	if n, err := sw.Sweep(ctx, later.Add(time.Second)); err != nil || n != 1 {
		t.Errorf("last Sweep = %d, %v; want 1, nil", n, err)
	}
	_, _, err = st.Lane(ctx, lB.ID)
	wantNotFound(t, "Lane(swept later)", err)
	_, _, err = st.Lane(ctx, lD.ID)
	wantNotFound(t, "Lane(tombstone swept later)", err)
	if us, err := st.UserSessions(ctx, "alice"); err != nil || len(us) != 0 {
		t.Errorf("UserSessions(alice) after last Sweep = %d sessions, %v; want none", len(us), err)
	}
}
