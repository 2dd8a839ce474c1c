package memstore

import (
	"context"
	"time"
)

// PutTicket implements [server.Store].
func (m *Store) PutTicket(ctx context.Context, sessionID, hash []byte, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return m.tickets.Put(sessionID, hash, expires)
}

// TakeTicket implements [server.Store].
func (m *Store) TakeTicket(ctx context.Context, sessionID, hash []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return m.tickets.Take(sessionID, hash)
}
