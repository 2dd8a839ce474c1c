package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Notice is a message from one node to every node sharing a [Notifier] store: the lanes of a
// deleted session (or one lane deleted alone), a resync, or (locally) the loss of the
// subscription.
//
// Notices are hints, never authority: a node re-reads the store before it accepts anything, and
// before it ends a lane a notice names (Manager.noticedGone), so a lost notice costs latency and
// a forged one a store read per lane it names, on every node, and one more within a second on a
// node that holds the lane's event connections (never later than that lane's timer was due) (unless that read fails or gets no answer within
// 2 s: the node then ends the lane, failing closed).
type Notice struct {
	// Lanes are the lanes the notice is about: every lane of a deleted session, or the one lane
	// of [Store.DeleteLane].
	Lanes []LaneID
	// Reason is the deletion reason (the [GoneError]'s), or what the publisher chose.
	Reason string
	// Resync reports that notices may have been missed and the subscription is back: drop every
	// cache a notice would have invalidated and re-check every lane held (event connections)
	// against the store. Lanes and Reason are empty in a resync that a subscription makes.
	Resync bool
	// Lost reports that the subscription is down: notices published from now on may be missed,
	// until a notice with Resync set says it is back. It is never sent between nodes; a
	// subscription makes it for its own subscriber.
	Lost bool
}

// Notifier is an optional Store ability of stores shared by several server nodes
// (server/redisstore): Subscribe delivers the [Notice] of every session (and every lane
// deleted alone) on any node.
//
// Subscribe returns once the subscription is confirmed, or an error if it could not be made.
// Then fn is called for each notice, in order, from one goroutine, until ctx is done or stop is
// called; stop waits for that goroutine. A subscription that loses its connection calls fn with
// Lost set, heals itself, and calls fn with Resync set once it is subscribed again.
//
// The [Manager] of a Notifier store subscribes in [New] (in the background) and unsubscribes in
// [Manager.Close]. Until its subscription is confirmed, and from a Lost notice until the resync
// that follows, it answers signed requests 503 store_unavailable: a revocation made on another
// node meanwhile would not reach its caches and event connections.
type Notifier interface {
	Subscribe(ctx context.Context, fn func(Notice)) (stop func(), err error)
}

// fanout is a Manager's subscription to its store's notices. The zero value is "no notifier":
// always ready.
type fanout struct {
	on     bool // the store is a Notifier
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	ready atomic.Bool   // subscribed, and resynced since the last loss
	downs atomic.Uint64 // losses seen; a resync of an older subscription does not count
}

// Backoff of the first subscription, when the store cannot be reached at start.
var (
	fanoutBackoffMin = 20 * time.Millisecond
	fanoutBackoffMax = 2 * time.Second
	fanoutFirstWait  = 5 * time.Second // how long New waits for the first attempt
)

func fanoutSignal(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// startFanout subscribes to the notices of a Notifier store, in a goroutine of its own, and
// waits for the first attempt (at most fanoutFirstWait), so that a Manager made while the store
// is up is ready when New returns.
func (m *Manager) startFanout() {
	n, ok := m.store.(Notifier)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.fan.on, m.fan.cancel, m.fan.done = true, cancel, make(chan struct{})
	first := make(chan struct{})
	go func() {
		defer close(m.fan.done)
		m.subscribeLoop(ctx, n, first)
	}()
	t := time.NewTimer(fanoutFirstWait)
	defer t.Stop()
	select {
	case <-first:
	case <-t.C:
	}
}

// subscribeLoop makes the first subscription, retrying with backoff, and keeps it until ctx
// ends. It closes first after the first attempt.
func (m *Manager) subscribeLoop(ctx context.Context, n Notifier, first chan struct{}) {
	wait := fanoutBackoffMin
	logged := false
	defer fanoutSignal(first)
	for {
		downs := m.fan.downs.Load()
		stop, err := n.Subscribe(ctx, m.notice)
		if err == nil {
			m.resyncLive()
			m.fan.mu.Lock()
			if m.fan.downs.Load() == downs { // no loss since: else the resync that follows says so
				m.fan.ready.Store(true)
			}
			m.fan.mu.Unlock()
			if logged {
				m.log.LogAttrs(ctx, slog.LevelInfo, "sessionvault", slog.String("event", "notices_resynced"))
			}
			fanoutSignal(first)
			<-ctx.Done()
			stop()
			return
		}
		if ctx.Err() != nil {
			return
		}
		if !logged {
			logged = true
			m.audit(ctx, slog.LevelError, auditRec{event: evStoreError, reason: "subscribe", cause: err})
		}
		fanoutSignal(first)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, fanoutBackoffMax)
	}
}

// notice applies one notice on this node. It runs in the subscription's goroutine.
func (m *Manager) notice(n Notice) {
	ctx := context.Background()
	switch {
	case n.Lost:
		m.fan.mu.Lock()
		m.fan.downs.Add(1)
		m.fan.ready.Store(false)
		m.fan.mu.Unlock()
		m.audit(ctx, slog.LevelError, auditRec{event: evStoreError, reason: "notices_lost"})
	case n.Resync:
		// Before the node accepts requests again: whatever was missed is re-read.
		m.resyncLive()
		m.noticedGone(n.Lanes, n.Reason)
		if !m.fan.ready.Swap(true) {
			m.log.LogAttrs(ctx, slog.LevelInfo, "sessionvault", slog.String("event", "notices_resynced"))
		}
	default:
		m.noticedGone(n.Lanes, n.Reason)
	}
}

// noticedGone ends on this node the lanes a notice names, each only once the store confirms it
// is gone (with the store's reason), so that a notice forged by whoever may PUBLISH on the
// store's channel cannot end a live lane's event connections, make its worker wipe its key or
// end its streams: it costs a store read per lane it names, and a re-read within a second
// (never postponing its timer) of those this node holds event connections of. A read that fails or gets no answer within
// noticeReadTimeout is taken at the notice's word, and so is a lane the store does not know
// (ErrNotFound): both end with the notice's reason. Failing closed costs the worker a join, a
// missed revocation would cost more.
//
// The lanes are read together (at most noticeReads at a time): a notice names all the lanes of
// a deleted session, and one read after the other made the last of them wait for the sum of the
// reads, and every later notice behind it. It returns once every lane is applied, so notices
// still take effect in order.
func (m *Manager) noticedGone(lanes []LaneID, reason string) {
	if len(lanes) == 1 {
		m.noticedLaneGone(lanes[0], reason)
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, noticeReads)
	for _, id := range lanes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			m.noticedLaneGone(id, reason)
		})
	}
	wg.Wait()
}

// noticedLaneGone is noticedGone of one lane.
func (m *Manager) noticedLaneGone(id LaneID, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), noticeReadTimeout)
	_, _, err := m.store.Lane(ctx, id)
	cancel()
	var gone *GoneError
	switch {
	case err == nil:
		// Live: a forged notice, or a read that reached a replica behind its master. Nothing of
		// the lane ends or is dropped; its event connections' lane is read again within a second
		// (armLiveBy: resent notices cannot postpone the lane's due events).
		if ll := m.live.get(id); ll != nil {
			m.armLiveBy(ll, m.now().Add(time.Second))
		}
	case errors.As(err, &gone):
		m.lanesGone([]LaneID{id}, gone.Reason)
	default: // gone without a tombstone's reason (ErrNotFound), or the store is down
		m.lanesGone([]LaneID{id}, reason)
	}
}

const (
	// noticeReadTimeout bounds noticedGone's store read of one lane.
	noticeReadTimeout = 2 * time.Second
	// noticeReads bounds the store reads one notice makes at once: a session's lanes
	// (DefaultMaxLanesPerSession) in one round.
	noticeReads = 16
)

// fanoutReady reports whether this node receives every other node's revocations; when it does
// not, it answers 503 store_unavailable and reports false. A Manager whose store is not a
// [Notifier] is always ready.
func (m *Manager) fanoutReady(w http.ResponseWriter) bool {
	if m.fanoutUp() {
		return true
	}
	m.refuse(w, reasonStoreDown)
	return false
}

// ErrNotReady is what [Manager.Ready] reports while this node cannot verify requests.
var ErrNotReady = errors.New("server: not ready: closed, or the store's revocation subscription is down (signed requests are answered 503)")

// Ready reports whether this node verifies requests: nil, or [ErrNotReady] after [Manager.Close]
// and while its store's revocation subscription ([Notifier], e.g. redisstore) is down, since it
// may have missed a revocation and answers signed requests 503 meanwhile. For a load balancer's
// health check.
func (m *Manager) Ready() error {
	if m.closed.Load() || !m.fanoutUp() {
		return ErrNotReady
	}
	return nil
}

// fanoutUp reports whether the store is not a [Notifier], or its subscription is up and resynced.
func (m *Manager) fanoutUp() bool { return !m.fan.on || m.fan.ready.Load() }

// stopFanout ends the subscription and waits for its goroutine.
func (m *Manager) stopFanout() {
	if m.fan.on {
		m.fan.cancel()
		<-m.fan.done
	}
}
