package throttle

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestThreshold(t *testing.T) {
	l := New(3, time.Minute, 100)
	now := time.Unix(1000, 0)
	if l.Blocked("a", now) {
		t.Fatal("blocked before any event")
	}
	for i := 1; i <= 5; i++ {
		crossed, n := l.Add("a", now)
		if crossed != (i == 3) || n != i {
			t.Fatalf("event %d: crossed %v count %d", i, crossed, n)
		}
		if l.Blocked("a", now) != (i >= 3) {
			t.Fatalf("event %d: blocked %v", i, l.Blocked("a", now))
		}
	}
	if l.Blocked("b", now) {
		t.Fatal("b blocked")
	}
	later := now.Add(time.Minute)
	if l.Blocked("a", later) {
		t.Fatal("still blocked after the window")
	}
	if crossed, n := l.Add("a", later); crossed || n != 1 {
		t.Fatalf("new window: %v %d", crossed, n)
	}
}

func TestIPv6Prefix(t *testing.T) {
	if Key("2001:db8::1") != Key("2001:db8::ffff:1") || Key("2001:db8::1") == Key("2001:db8:0:1::1") {
		t.Fatal("IPv6 addresses are not grouped by /64")
	}
	if Key("192.0.2.1") != "192.0.2.1" || Key("::ffff:192.0.2.1") != "::ffff:192.0.2.1" || Key("not an ip") != "not an ip" {
		t.Fatal("non-IPv6 keys changed")
	}
}

func TestBoundedAndBlockedSurviveEviction(t *testing.T) {
	l := New(2, time.Minute, 10)
	now := time.Unix(1000, 0)
	l.Add("attacker", now)
	l.Add("attacker", now)
	for i := range 1000 {
		l.Add("flood"+strconv.Itoa(i), now)
		if l.Len() > 10 {
			t.Fatalf("table grew to %d", l.Len())
		}
	}
	if !l.Blocked("attacker", now) {
		t.Fatal("a flood of new addresses evicted a blocked one")
	}
	// Expired windows are dropped first.
	later := now.Add(2 * time.Minute)
	l.Add("new", later)
	if l.Len() > 10 {
		t.Fatal("not bounded")
	}
}

func TestDisabledAndConcurrent(t *testing.T) {
	off := New(0, time.Minute, 10)
	for range 100 {
		off.Add("a", time.Now())
	}
	if off.Blocked("a", time.Now()) {
		t.Fatal("disabled limiter blocks")
	}
	l := New(1000, time.Minute, 100)
	var wg sync.WaitGroup
	crossings := make(chan bool, 2000)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c, _ := l.Add("k", time.Unix(5, 0))
				crossings <- c
			}
		}()
	}
	wg.Wait()
	close(crossings)
	n := 0
	for c := range crossings {
		if c {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d crossings, want exactly 1", n)
	}
}

func TestEvery(t *testing.T) {
	var e Every
	t0 := time.Unix(1_000_000, 0)
	if !e.Allow(t0, time.Minute) || e.Allow(t0.Add(59*time.Second), time.Minute) || !e.Allow(t0.Add(time.Minute), time.Minute) {
		t.Fatal("want one event per minute")
	}
}
