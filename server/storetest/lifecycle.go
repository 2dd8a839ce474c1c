package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/server"
)

// testUpdateLaneKeepsWindow: a rotation (UpdateLane) replaces the lane's record, never its
// replay window: a nonce accepted under the old epoch is still refused after it.
func testUpdateLaneKeepsWindow(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "alice")
	for _, seq := range []uint64{1, 2, 5} {
		if err := st.Seen(ctx, l.ID, seq); err != nil {
			t.Fatal(err)
		}
	}
	next := *l
	next.Epoch, next.PrevKey, next.Key = 1, l.Key, randBytes(60)
	if err := st.UpdateLane(ctx, &next, 0); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{1, 2, 5} {
		wantErr(t, fmt.Sprintf("Seen(%d) after UpdateLane", seq), st.Seen(ctx, l.ID, seq), server.ErrReplay)
	}
	if err := st.Seen(ctx, l.ID, 3); err != nil {
		t.Errorf("Seen(3) after UpdateLane = %v, want nil", err)
	}
	// AddLane of another lane leaves the window alone too.
	if err := st.AddLane(ctx, NewLane(s)); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Seen(5) after AddLane", st.Seen(ctx, l.ID, 5), server.ErrReplay)
}

// testTouchDeleted: a Touch of a deleted session (a request verified just before the deletion,
// touching just after it) brings nothing back.
func testTouchDeleted(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, l := create(t, st, "touchgone")
	if _, err := st.Delete(ctx, s.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	if err := st.Touch(ctx, s.ID, time.Now().Add(time.Minute)); err != nil {
		t.Errorf("Touch(deleted) = %v, want nil", err)
	}
	_, _, err := st.Session(ctx, s.ID)
	wantGone(t, "Session after Touch of a deleted session", err, "revoked")
	_, _, err = st.Lane(ctx, l.ID)
	wantGone(t, "Lane after Touch of a deleted session", err, "revoked")
	wantGone(t, "Seen after Touch of a deleted session", st.Seen(ctx, l.ID, 1), "revoked")
	if got, err := st.UserSessions(ctx, "touchgone"); err != nil || len(got) != 0 {
		t.Errorf("UserSessions after Touch of a deleted session = %d sessions, %v; want none", len(got), err)
	}
}

// testDeleteConcurrent races a session's Delete against joins (AddLane), rotations
// (UpdateLane), Touch and Seen of it: whatever the order, once all have returned the session
// and every lane of it, those added by an AddLane that succeeded included, are gone with the
// reason, and the user's index does not list it.
func testDeleteConcurrent(t *testing.T, st server.Store) {
	ctx := t.Context()
	for round := range 5 {
		user := fmt.Sprintf("race%d", round)
		s, l := create(t, st, user)
		const n = 4
		added := make([]*server.Lane, n)
		addErrs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		var lanes []server.LaneID
		var delErr error
		wg.Go(func() {
			<-start
			lanes, delErr = st.Delete(ctx, s.ID, "revoked")
		})
		for i := range n {
			added[i] = NewLane(s)
			wg.Go(func() {
				<-start
				addErrs[i] = st.AddLane(ctx, added[i])
			})
			wg.Go(func() {
				<-start
				next := *l
				next.Epoch, next.Key = 1, randBytes(60)
				st.UpdateLane(ctx, &next, 0)
				st.Touch(ctx, s.ID, time.Now().Add(time.Duration(i)*time.Second))
				st.Seen(ctx, l.ID, uint64(i+1))
			})
		}
		close(start)
		wg.Wait()
		if delErr != nil {
			t.Fatalf("round %d: Delete: %v", round, delErr)
		}
		if len(lanes) == 0 {
			t.Fatalf("round %d: Delete returned no lanes", round)
		}
		check := func(what string, x *server.Lane) {
			t.Helper()
			_, _, err := st.Lane(ctx, x.ID)
			wantGone(t, fmt.Sprintf("round %d: Lane(%s)", round, what), err, "revoked")
			wantGone(t, fmt.Sprintf("round %d: Seen(%s)", round, what), st.Seen(ctx, x.ID, 1000), "revoked")
			next := *x
			next.Epoch, next.Key = 9, randBytes(60)
			if err := st.UpdateLane(ctx, &next, x.Epoch); !errors.Is(err, server.ErrNotFound) {
				t.Errorf("round %d: UpdateLane(%s) after Delete = %v, want gone", round, what, err)
			}
		}
		check("first lane", l)
		for i, x := range added {
			switch {
			case addErrs[i] == nil:
				check("lane added in the race", x)
			case !errors.Is(addErrs[i], server.ErrNotFound):
				t.Errorf("round %d: AddLane racing Delete = %v, want nil or gone", round, addErrs[i])
			}
		}
		_, _, err := st.Session(ctx, s.ID)
		wantGone(t, fmt.Sprintf("round %d: Session", round), err, "revoked")
		if got, err := st.UserSessions(ctx, user); err != nil || len(got) != 0 {
			t.Errorf("round %d: UserSessions after Delete = %d sessions, %v; want none", round, len(got), err)
		}
	}
}

// testTombstoneEnds: a deleted session's tombstone lives until the session's absolute expiry
// and no longer: then its lanes and the session are plain ErrNotFound, by the store's clock,
// without a Sweep.
func testTombstoneEnds(t *testing.T, st server.Store) {
	ctx := t.Context()
	s := NewSession("alice", time.Now())
	s.Expires = time.Now().Add(time.Second)
	l := NewLane(s)
	if err := st.Create(ctx, s, l); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Delete(ctx, s.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	_, _, err := st.Lane(ctx, l.ID)
	wantGone(t, "Lane before the expiry", err, "revoked")
	time.Sleep(time.Until(s.Expires) + 100*time.Millisecond)
	_, _, err = st.Lane(ctx, l.ID)
	wantNotFound(t, "Lane after the expiry", err)
	wantNotFound(t, "Seen after the expiry", st.Seen(ctx, l.ID, 1))
	_, _, err = st.Session(ctx, s.ID)
	wantNotFound(t, "Session after the expiry", err)
}

// testTicketUsedStaysTaken: a used ticket's hash cannot be put again while the ticket lives (a
// second Put must not make a used ticket usable again).
func testTicketUsedStaysTaken(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, _ := create(t, st, "ticket")
	h := randBytes(32)
	exp := time.Now().Add(time.Minute)
	if err := st.PutTicket(ctx, s.ID, h, exp); err != nil {
		t.Fatal(err)
	}
	if err := st.TakeTicket(ctx, s.ID, h); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "PutTicket of a used, live hash", st.PutTicket(ctx, s.ID, h, exp), server.ErrExists)
	wantErr(t, "TakeTicket after a refused Put", st.TakeTicket(ctx, s.ID, h), server.ErrTicketUsed)
}
