// Package tickets is the in-process table of join tickets shared by the stores that keep them in
// memory (memstore, boltstore): single-use, expiring, bounded.
//
// A Table is safe for concurrent use; its zero value is ready.
package tickets

import (
	"bytes"
	"errors"
	"sync"
	"time"

	"github.com/sessionvault/sessionvault/server"
)

// MaxTickets bounds a table. Tickets live seconds, so only a flood of boot-script requests with a
// live cookie fills it; past the bound, Put fails (no ticket: the worker falls back to a login).
const MaxTickets = 1 << 18

// ErrFull is returned by Put when the table holds MaxTickets live tickets.
var ErrFull = errors.New("tickets: too many live join tickets")

type entry struct {
	session []byte
	expires time.Time
	used    bool
}

// Table maps ticket hashes to their session and expiry.
type Table struct {
	mu   sync.Mutex
	m    map[string]*entry
	puts int
	// Now is the clock; if nil, time.Now.
	Now func() time.Time
}

func (t *Table) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Put stores a ticket: server.ErrExists if hash is live already, ErrFull when the table is full.
func (t *Table) Put(sessionID, hash []byte, expires time.Time) error {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*entry)
	}
	t.puts++
	if t.puts%256 == 0 || len(t.m) >= MaxTickets {
		t.sweepLocked(now)
	}
	if e := t.m[string(hash)]; e != nil && now.Before(e.expires) {
		return server.ErrExists
	}
	if len(t.m) >= MaxTickets {
		return ErrFull
	}
	t.m[string(hash)] = &entry{session: bytes.Clone(sessionID), expires: expires}
	return nil
}

// Take uses up a ticket: nil once, server.ErrTicketUsed afterwards until it expires,
// server.ErrNotFound if unknown, of another session, or expired.
func (t *Table) Take(sessionID, hash []byte) error {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[string(hash)]
	switch {
	case e == nil || !bytes.Equal(e.session, sessionID):
		return server.ErrNotFound
	case !now.Before(e.expires):
		delete(t.m, string(hash))
		return server.ErrNotFound
	case e.used:
		return server.ErrTicketUsed
	}
	e.used = true
	return nil
}

// Sweep drops the expired tickets.
func (t *Table) Sweep() {
	now := t.now()
	t.mu.Lock()
	t.sweepLocked(now)
	t.mu.Unlock()
}

func (t *Table) sweepLocked(now time.Time) {
	for k, e := range t.m {
		if !now.Before(e.expires) {
			delete(t.m, k)
		}
	}
}
