package redisstore

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/server"
)

// Notice is [server.Notice]: the lanes of a session deleted on some node, a resync, or the loss
// of this node's subscription. A Store is a [server.Notifier], so a [server.Manager] on it
// subscribes by itself.
//
// Notices are hints, never authority: a receiver re-reads the store before it acts (Lane returns
// *server.GoneError for a deleted lane), so a lost notice costs latency and a forged one (anyone
// who can PUBLISH on the Redis) costs a Lane read per lane it names on every node, and one more
// within a second on a node that holds the lane's event connections; a forged Resync, each
// node's re-read of every lane it holds. A [server.Manager] whose read fails or gets no answer
// within 2 s ends the lane all the same (it fails closed). Lost is never sent: Publish ignores
// it.
type Notice = server.Notice

var _ server.Notifier = (*Store)(nil)

// Publish sends n to every current subscriber of the Store's channel, on every node (this one
// included). [Store.Delete] and [Store.DeleteLane] publish a notice of the deleted lanes by
// themselves, inside the same script as the deletion; Publish is for anything else.
func (st *Store) Publish(ctx context.Context, n Notice) error {
	if err := ctx.Err(); err != nil {
		return unavailable("publish", err)
	}
	if err := st.c.Publish(ctx, st.channel, encodeNotice(&n)).Err(); err != nil {
		return unavailable("publish", err)
	}
	return nil
}

// Timings of a subscription (variables for the tests).
var (
	notifyIdle       = 3 * time.Second // ping after this long without a message
	notifyConfirm    = 5 * time.Second // wait for Redis to confirm a subscription
	notifyBackoffMin = 20 * time.Millisecond
	notifyBackoffMax = 2 * time.Second
)

// Subscribe subscribes to the notices of every node sharing the Store. It returns once Redis has
// confirmed the subscription, or an error if it could not (Redis down: try again later). Then
// fn is called for each notice, in order, from one goroutine, until ctx is done or stop is
// called; stop waits for that goroutine to end and may be called more than once.
//
// The subscription heals itself: when its connection fails or falls silent (a ping unanswered
// within a few seconds) it calls fn with a Notice whose Lost is true, reconnects with backoff,
// and calls fn with a Notice whose Resync is true once it is subscribed again, since notices
// published meanwhile are lost (Redis pub/sub delivers at most once). fn should return quickly: Redis drops a subscriber that falls far
// behind (its client-output-buffer-limit for pubsub), which again ends in a resync.
func (st *Store) Subscribe(ctx context.Context, fn func(Notice)) (stop func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, unavailable("subscribe", err)
	}
	ps, err := st.subscribe(ctx)
	if err != nil {
		return nil, unavailable("subscribe", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	sub := &subscription{ps: ps}
	unhook := context.AfterFunc(ctx, sub.close) // unblocks a Receive at once
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unhook()
		st.listen(ctx, sub, fn)
	}()
	return func() { cancel(); <-done }, nil
}

// subscription holds the current PubSub, which close may close from another goroutine.
type subscription struct {
	mu     sync.Mutex
	ps     *redis.PubSub
	closed bool
}

func (s *subscription) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.ps != nil {
		s.ps.Close()
	}
}

// swap closes the current PubSub and installs ps (nil: none). It reports false, closing ps,
// if the subscription is closed.
func (s *subscription) swap(ps *redis.PubSub) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ps != nil {
		s.ps.Close()
	}
	s.ps = nil
	if s.closed {
		if ps != nil {
			ps.Close()
		}
		return false
	}
	s.ps = ps
	return true
}

func (s *subscription) current() *redis.PubSub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ps
}

// subscribe opens a PubSub on the channel and waits for the confirmation.
func (st *Store) subscribe(ctx context.Context) (*redis.PubSub, error) {
	ps := st.c.Subscribe(ctx, st.channel)
	for {
		msg, err := ps.ReceiveTimeout(ctx, notifyConfirm)
		if err != nil {
			ps.Close()
			return nil, err
		}
		if m, ok := msg.(*redis.Subscription); ok && m.Kind == "subscribe" {
			return ps, nil
		}
	}
}

func (st *Store) listen(ctx context.Context, sub *subscription, fn func(Notice)) {
	pinged := false
	for {
		ps := sub.current()
		if ps == nil {
			return
		}
		msg, err := ps.ReceiveTimeout(ctx, notifyIdle)
		if ctx.Err() != nil {
			sub.swap(nil)
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				// Quiet: ask for a pong. If none comes within notifyIdle either, start over.
				pinged = true
				if ps.Ping(ctx) == nil {
					continue
				}
			}
			fn(Notice{Lost: true})
			if !st.resubscribe(ctx, sub) {
				return
			}
			pinged = false
			fn(Notice{Resync: true})
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Message:
			n, err := decodeNotice(m.Payload)
			if err != nil {
				n = Notice{Resync: true} // unreadable: it may have been a deletion
			}
			fn(n)
		case *redis.Subscription:
			// go-redis reconnected by itself and subscribed again on a new connection.
			if m.Kind == "subscribe" {
				fn(Notice{Lost: true})
				fn(Notice{Resync: true})
			}
		}
	}
}

// resubscribe replaces the subscription's PubSub by a new one, retrying with backoff until it
// is confirmed. It reports false when ctx ended first.
func (st *Store) resubscribe(ctx context.Context, sub *subscription) bool {
	if !sub.swap(nil) {
		return false
	}
	wait := notifyBackoffMin
	for {
		ps, err := st.subscribe(ctx)
		if err == nil {
			return sub.swap(ps)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(2*wait, notifyBackoffMax)
	}
}
