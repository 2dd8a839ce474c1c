package boltstore

import (
	"context"
	"time"
)

// PutTicket implements [server.Store]. Tickets live in process memory (see the package
// documentation).
func (s *Store) PutTicket(ctx context.Context, sessionID, hash []byte, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	return s.tickets.Put(sessionID, hash, expires)
}

// TakeTicket implements [server.Store].
func (s *Store) TakeTicket(ctx context.Context, sessionID, hash []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	return s.tickets.Take(sessionID, hash)
}

func (s *Store) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	return nil
}
