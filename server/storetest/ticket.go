package storetest

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/server"
)

// testTicket: a ticket is taken once; a second take is ErrTicketUsed; unknown tickets, tickets
// of another session and duplicate puts are refused; a take of another session's ticket does not
// use it up.
func testTicket(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, _ := create(t, st, "ticket")
	other, _ := create(t, st, "ticket")
	h := randBytes(32)
	exp := time.Now().Add(time.Minute)
	if err := st.PutTicket(ctx, s.ID, h, exp); err != nil {
		t.Fatalf("PutTicket: %v", err)
	}
	wantErr(t, "PutTicket of a live hash", st.PutTicket(ctx, s.ID, h, exp), server.ErrExists)
	wantNotFound(t, "TakeTicket of an unknown ticket", st.TakeTicket(ctx, s.ID, randBytes(32)))
	wantNotFound(t, "TakeTicket by another session", st.TakeTicket(ctx, other.ID, h))
	if err := st.TakeTicket(ctx, s.ID, h); err != nil {
		t.Fatalf("first TakeTicket: %v", err)
	}
	wantErr(t, "TakeTicket again", st.TakeTicket(ctx, s.ID, h), server.ErrTicketUsed)
	wantErr(t, "TakeTicket a third time", st.TakeTicket(ctx, s.ID, h), server.ErrTicketUsed)
	wantNotFound(t, "TakeTicket of a used ticket by another session", st.TakeTicket(ctx, other.ID, h))

	// Tickets do not depend on the session record: a ticket put for a session that is deleted
	// afterwards is the Manager's to refuse (at AddLane).
	h2 := randBytes(32)
	if err := st.PutTicket(ctx, other.ID, h2, exp); err != nil {
		t.Fatalf("PutTicket: %v", err)
	}
	if err := st.TakeTicket(ctx, other.ID, h2); err != nil {
		t.Fatalf("TakeTicket of a second ticket: %v", err)
	}
}

// testTicketConcurrentTake: of many concurrent takes of one ticket exactly one wins; every other
// gets ErrTicketUsed.
func testTicketConcurrentTake(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, _ := create(t, st, "ticket")
	for round := range 5 {
		h := randBytes(32)
		if err := st.PutTicket(ctx, s.ID, h, time.Now().Add(time.Minute)); err != nil {
			t.Fatalf("PutTicket: %v", err)
		}
		const n = 32
		var wins, used atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				switch err := st.TakeTicket(ctx, s.ID, h); {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, server.ErrTicketUsed):
					used.Add(1)
				default:
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: TakeTicket: %v", round, err)
		}
		if wins.Load() != 1 || used.Load() != n-1 {
			t.Fatalf("round %d: %d takes won and %d were told used, want 1 and %d", round, wins.Load(), used.Load(), n-1)
		}
	}
}

// testTicketExpiry: a ticket is unusable from its expiry on, used or not.
func testTicketExpiry(t *testing.T, st server.Store) {
	ctx := t.Context()
	s, _ := create(t, st, "ticket")
	fresh, used := randBytes(32), randBytes(32)
	exp := time.Now().Add(2 * time.Second) // the Put and Take below, on a loaded machine, stay well within it
	for _, h := range [][]byte{fresh, used} {
		if err := st.PutTicket(ctx, s.ID, h, exp); err != nil {
			t.Fatalf("PutTicket: %v", err)
		}
	}
	if err := st.TakeTicket(ctx, s.ID, used); err != nil {
		t.Fatalf("TakeTicket: %v", err)
	}
	past := randBytes(32)
	if err := st.PutTicket(ctx, s.ID, past, time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("PutTicket of an expired ticket: %v", err)
	}
	wantNotFound(t, "TakeTicket of a ticket put expired", st.TakeTicket(ctx, s.ID, past))
	time.Sleep(time.Until(exp) + 100*time.Millisecond)
	wantNotFound(t, "TakeTicket after expiry", st.TakeTicket(ctx, s.ID, fresh))
	wantNotFound(t, "TakeTicket of a used ticket after expiry", st.TakeTicket(ctx, s.ID, used))
	// An expired hash may be put again.
	if err := st.PutTicket(ctx, s.ID, fresh, time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("PutTicket of an expired hash: %v", err)
	}
}
