// Package throttle counts refused requests per client address in a bounded table and says when
// an address has crossed its threshold. It serves the server's 429 throttling and its
// brute_force_suspected audit event.
//
// # Concurrency
//
// A Limiter is safe for concurrent use. While no address has been counted, Blocked costs one
// atomic load.
package throttle

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limiter counts events per key in fixed windows: the first event of a key opens a window of
// length Window; when Threshold events have been counted within it, the key is blocked until the
// window ends. The table holds at most Max keys; when it is full, expired windows are dropped
// first, then an arbitrary key that is not blocked, so that an attacker with many addresses can
// flush counts only at the price of refusals of its own.
type Limiter struct {
	threshold int
	window    time.Duration
	max       int

	n     atomic.Int64 // len(m), read without the lock
	mu    sync.Mutex
	m     map[string]*entry
	swept time.Time // last full sweep of expired windows
}

type entry struct {
	start time.Time
	count int
}

// New returns a Limiter. threshold < 1 means never block.
func New(threshold int, window time.Duration, max int) *Limiter {
	if max < 1 {
		max = 1
	}
	return &Limiter{threshold: threshold, window: window, max: max, m: make(map[string]*entry)}
}

// Key normalizes a client address: an IPv6 address (not IPv4-mapped) becomes its /64 prefix,
// because one host usually holds a whole /64; anything else is returned as is.
func Key(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Is4() || a.Is4In6() {
		return addr
	}
	p, err := a.Prefix(64)
	if err != nil {
		return addr
	}
	return p.String()
}

// Blocked reports whether key has reached the threshold in its current window.
func (l *Limiter) Blocked(key string, now time.Time) bool {
	if l.threshold < 1 || l.n.Load() == 0 {
		return false
	}
	key = Key(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[key]
	return ok && e.count >= l.threshold && now.Sub(e.start) < l.window
}

// Add counts one event for key and reports whether this event made the key reach the threshold
// (true exactly once per window), and the key's count in the window.
func (l *Limiter) Add(key string, now time.Time) (crossed bool, count int) {
	if l.threshold < 1 {
		return false, 0
	}
	key = Key(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[key]
	if ok && now.Sub(e.start) >= l.window {
		e.start, e.count = now, 0
	}
	if !ok {
		if len(l.m) >= l.max {
			l.evict(now)
		}
		e = &entry{start: now}
		l.m[key] = e
		l.n.Store(int64(len(l.m)))
	}
	e.count++
	return e.count == l.threshold, e.count
}

// evict makes room for one key. Called with l.mu held and the table full.
func (l *Limiter) evict(now time.Time) {
	// A full sweep costs O(Max); do it at most once per second so that a flood of new
	// addresses does not make every insert linear.
	if now.Sub(l.swept) >= time.Second || now.Before(l.swept) {
		l.swept = now
		for k, e := range l.m {
			if now.Sub(e.start) >= l.window {
				delete(l.m, k)
			}
		}
		if len(l.m) < l.max {
			return
		}
	}
	var victim string
	found := false
	for k, e := range l.m { // map order is random
		if e.count < l.threshold {
			victim, found = k, true
			break
		}
		if !found {
			victim, found = k, true
		}
	}
	delete(l.m, victim)
}

// Len returns the number of keys in the table.
func (l *Limiter) Len() int { return int(l.n.Load()) }

// Every lets one event through per interval (a warning that every request of a misconfigured
// deployment would repeat); its zero value is ready to use and safe for concurrent use.
type Every struct{ last atomic.Int64 }

// Allow reports whether an event at now is the first one of interval since the last allowed.
func (e *Every) Allow(now time.Time, interval time.Duration) bool {
	t, last := now.UnixNano(), e.last.Load()
	return t-last >= int64(interval) && e.last.CompareAndSwap(last, t)
}
