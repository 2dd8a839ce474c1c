package redisstore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/storetest"
)

// notices subscribes st and returns the channel the notices arrive on.
func notices(t *testing.T, st *Store) (<-chan Notice, func()) {
	t.Helper()
	ch := make(chan Notice, 64)
	stop, err := st.Subscribe(t.Context(), func(n Notice) { ch <- n })
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(stop)
	return ch, stop
}

func next(t *testing.T, ch <-chan Notice, within time.Duration) Notice {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(within):
		t.Fatalf("no notice within %v", within)
		return Notice{}
	}
}

func quiet(t *testing.T, ch <-chan Notice, d time.Duration) {
	t.Helper()
	select {
	case n := <-ch:
		t.Fatalf("unexpected notice %+v", n)
	case <-time.After(d):
	}
}

func sameLaneSet(a, b []protocol.LaneID) bool {
	key := func(ls []protocol.LaneID) []string {
		out := make([]string, len(ls))
		for i, l := range ls {
			out[i] = string(l[:])
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

// TestNotify: a Delete on node A reaches node B's subscription with the lanes and the reason;
// Publish carries any notice; an unreadable message becomes a resync; stop ends delivery.
func TestNotify(t *testing.T) {
	ctx := t.Context()
	a, b := twoNodes(t, sharedAddr(t))
	ch, stop := notices(t, b)

	s, l := create(t, a, "alice")
	l2 := storetest.NewLane(s)
	if err := a.AddLane(ctx, l2); err != nil {
		t.Fatal(err)
	}
	lanes, err := a.Delete(ctx, s.ID, "revoked")
	if err != nil {
		t.Fatal(err)
	}
	n := next(t, ch, 2*time.Second)
	if n.Resync || n.Reason != "revoked" || !sameLaneSet(n.Lanes, []protocol.LaneID{l.ID, l2.ID}) || !sameLaneSet(n.Lanes, lanes) {
		t.Errorf("notice of the Delete = %+v, want lanes %v, reason revoked", n, []protocol.LaneID{l.ID, l2.ID})
	}
	// Deleting again deletes nothing and tells nobody.
	if _, err := a.Delete(ctx, s.ID, "logout"); err != nil {
		t.Fatal(err)
	}

	want := Notice{Lanes: []protocol.LaneID{{1, 2, 3}}, Reason: "custom ✓"}
	if err := a.Publish(ctx, want); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 2*time.Second); n.Resync || n.Reason != want.Reason || !slices.Equal(n.Lanes, want.Lanes) {
		t.Errorf("published %+v, received %+v", want, n)
	}
	if err := a.Publish(ctx, Notice{Resync: true}); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 2*time.Second); !n.Resync || n.Lanes != nil || n.Reason != "" {
		t.Errorf("published a resync, received %+v", n)
	}
	// Someone else's message on the channel: it may have been a deletion we cannot read.
	if err := a.c.Publish(ctx, a.channel, "\x09garbage").Err(); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 2*time.Second); !n.Resync {
		t.Errorf("an unreadable message gave %+v, want a resync", n)
	}
	// The publisher's own subscription gets its notices too; other prefixes do not.
	chA, _ := notices(t, a)
	chOther, _ := notices(t, newStore(t))
	if err := b.Publish(ctx, want); err != nil {
		t.Fatal(err)
	}
	next(t, ch, 2*time.Second)
	next(t, chA, 2*time.Second)
	quiet(t, chOther, 200*time.Millisecond)

	stop()
	stop()
	if err := a.Publish(ctx, want); err != nil {
		t.Fatal(err)
	}
	quiet(t, ch, 200*time.Millisecond)
}

// TestNotifyDeleteLane: DeleteLane publishes a notice of the one lane, with its reason; deleting
// it again tells nobody, and the session's later Delete tells only of the lanes it had left.
func TestNotifyDeleteLane(t *testing.T) {
	ctx := t.Context()
	a, b := twoNodes(t, sharedAddr(t))
	ch, _ := notices(t, b)

	s, l := create(t, a, "alice")
	l2 := storetest.NewLane(s)
	if err := a.AddLane(ctx, l2); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteLane(ctx, l.ID, "lane_evicted"); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 2*time.Second); n.Resync || n.Reason != "lane_evicted" || !slices.Equal(n.Lanes, []protocol.LaneID{l.ID}) {
		t.Errorf("notice of DeleteLane = %+v, want lane %v, reason lane_evicted", n, l.ID)
	}
	var g *server.GoneError
	if err := b.DeleteLane(ctx, l.ID, "revoked"); !errors.As(err, &g) || g.Reason != "lane_evicted" {
		t.Errorf("second DeleteLane (node B) = %v, want GoneError(lane_evicted)", err)
	}
	if _, err := a.Delete(ctx, s.ID, "logout"); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 2*time.Second); n.Reason != "logout" || !slices.Equal(n.Lanes, []protocol.LaneID{l2.ID}) {
		t.Errorf("next notice = %+v, want the Delete's of lane %v only (none of the second DeleteLane)", n, l2.ID)
	}
}

// TestNotifySubscribeCanceled: a subscription ends with its context.
func TestNotifySubscribeCanceled(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan Notice, 1)
	stop, err := st.Subscribe(ctx, func(n Notice) { ch <- n })
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return after the context ended")
	}
	dead, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if _, err := st.Subscribe(dead, func(Notice) {}); err == nil {
		t.Error("Subscribe with a canceled context succeeded")
	}
}

// TestNotifyResync: a subscriber whose Redis goes away and comes back is told to resync, and
// receives notices again; a deletion made while it was away reaches it only as that resync,
// after which the store (not the notice) says the lane is gone.
func TestNotifyResync(t *testing.T) {
	p := ownRedis(t, true)
	ctx := t.Context()
	a, b := twoNodes(t, p.addr())
	ch, _ := notices(t, b)
	s, l := create(t, a, "alice")

	p.kill()
	p.restart(t)
	// Before b's subscription is back, a deletes: b misses the notice.
	waitUp(t, a)
	if _, err := a.Delete(ctx, s.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	for {
		n := next(t, ch, 15*time.Second)
		if n.Resync {
			break
		}
		// The loss, and the notice of the Delete if b was back in time: fine too.
		if !n.Lost && n.Reason != "revoked" {
			t.Fatalf("unexpected notice %+v", n)
		}
	}
	var g *server.GoneError
	if _, _, err := b.Lane(ctx, l.ID); !errors.As(err, &g) || g.Reason != "revoked" {
		t.Errorf("B: Lane after the resync = %v, want gone (revoked)", err)
	}
	want := Notice{Reason: "after"}
	// The subscription is live again: a publish arrives (retry: the resync may precede the
	// SUBSCRIBE's completion on some paths by a hair).
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := a.Publish(ctx, want); err != nil {
			t.Fatal(err)
		}
	wait:
		select {
		case n := <-ch:
			switch {
			case n.Reason == "after":
				return
			case n.Reason == "revoked" || n.Resync: // the Delete's notice, if b was back before it
				goto wait
			}
			t.Fatalf("after the resync: %+v", n)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no notice after the resync")
		}
	}
}

// TestNotifyConnectionKilled: Redis drops the subscriber's connection (as it does to a
// subscriber past its output buffer limit): the subscription comes back with a resync.
func TestNotifyConnectionKilled(t *testing.T) {
	p := ownRedis(t, false)
	ctx := t.Context()
	a, b := twoNodes(t, p.addr())
	ch, _ := notices(t, b)
	if err := a.c.Do(ctx, "client", "kill", "type", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 5*time.Second); !n.Lost {
		t.Fatalf("after the kill: %+v, want the loss", n)
	}
	if n := next(t, ch, 5*time.Second); !n.Resync {
		t.Fatalf("after the kill and the loss: %+v, want a resync", n)
	}
	if err := a.Publish(ctx, Notice{Reason: "after"}); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 2*time.Second); n.Reason != "after" {
		t.Fatalf("after the resync: %+v", n)
	}
}

// TestNotifySilent: a connection that stays open but stops answering (here: Redis paused) is
// noticed by the unanswered ping and replaced, with a resync.
func TestNotifySilent(t *testing.T) {
	p := ownRedis(t, false)
	idle, confirm := notifyIdle, notifyConfirm
	t.Cleanup(func() { notifyIdle, notifyConfirm = idle, confirm }) // after the subscription's stop
	notifyIdle, notifyConfirm = 100*time.Millisecond, 200*time.Millisecond
	ctx := t.Context()
	a, b := twoNodes(t, p.addr())
	ch, _ := notices(t, b)
	if err := a.c.Do(ctx, "client", "pause", 1500, "all").Err(); err != nil {
		t.Fatal(err)
	}
	if n := next(t, ch, 5*time.Second); !n.Lost {
		t.Fatalf("after the pause: %+v, want the loss", n)
	}
	if n := next(t, ch, 5*time.Second); !n.Resync {
		t.Fatalf("after the pause and the loss: %+v, want a resync", n)
	}
	if err := a.Publish(ctx, Notice{Reason: "after"}); err != nil {
		t.Fatal(err)
	}
	for {
		n := next(t, ch, 2*time.Second)
		if n.Reason == "after" {
			break
		}
		if !n.Resync && !n.Lost {
			t.Fatalf("after the resync: %+v", n)
		}
	}
}
