package server

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// SessionInfo describes a live session for admin views. It names the session by its handle: the
// session ID never leaves the server.
type SessionInfo struct {
	Handle   string // protocol.SessionHandle of the session ID; pass it to [Manager.Revoke]
	UserID   string
	Created  time.Time // login
	Expires  time.Time // absolute deadline
	LastSeen time.Time // last verified request (written at most every IdleTimeout/20)
	Lanes    int       // workers (tabs) holding a key of the session
	Claims   map[string]string
}

// Sessions returns the user's live sessions, oldest first, through the store's per-user index.
func (m *Manager) Sessions(ctx context.Context, userID string) ([]SessionInfo, error) {
	list, err := m.store.UserSessions(ctx, userID)
	if err != nil {
		return nil, err
	}
	now := m.now()
	out := make([]SessionInfo, 0, len(list))
	for _, s := range list {
		if !now.Before(s.Expires) || now.Sub(s.LastSeen) >= m.idle {
			continue
		}
		_, lanes, err := m.store.Session(ctx, s.ID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, SessionInfo{
			Handle: protocol.SessionHandle(s.ID), UserID: s.UserID, Created: s.Created, Expires: s.Expires,
			LastSeen: s.LastSeen, Lanes: len(lanes), Claims: maps.Clone(s.Claims),
		})
	}
	return out, nil
}

// Revoke ends the user's session named by handle (from [Manager.Sessions] or [Info]), with reason
// revoked: every lane of it is refused from then on. It returns [ErrNotFound] if the user has
// no such session.
func (m *Manager) Revoke(ctx context.Context, userID, handle string) error {
	list, err := m.store.UserSessions(ctx, userID)
	if err != nil {
		return err
	}
	for _, s := range list {
		if protocol.SessionHandle(s.ID) == handle {
			return m.end(ctx, s, goneRevoked, evRevoked, auditRec{reason: "admin"})
		}
	}
	return ErrNotFound
}

// RevokeUser ends all of the user's sessions (log out everywhere, password change), touching
// only that user's sessions through the per-user index. It returns how many it ended.
//
// A re-key that runs between reading the index and ending the session it replaces leaves a
// successor the first read did not see: the index is read again until a read finds nothing new
// (a re-key creates its successor before it deletes the old session, so a successor either
// shows up in the next read or finds its old session already gone and deletes itself).
func (m *Manager) RevokeUser(ctx context.Context, userID string) (int, error) {
	n := 0
	ended := map[string]bool{}
	for round := 0; round < 8; round++ {
		list, err := m.store.UserSessions(ctx, userID)
		if err != nil {
			return n, err
		}
		fresh := 0
		for _, s := range list {
			if ended[string(s.ID)] {
				continue
			}
			ended[string(s.ID)] = true
			fresh++
			if err := m.end(ctx, s, goneRevoked, evRevoked, auditRec{reason: "admin: all sessions of the user"}); err != nil {
				return n, err
			}
			n++
		}
		if fresh == 0 {
			break
		}
	}
	if n > 0 {
		m.log.LogAttrs(ctx, slog.LevelInfo, "sessionvault", slog.String("event", evRevoked), slog.String("user", userID), slog.Int("sessions", n), slog.String("reason", "revoke_user"))
	}
	return n, nil
}
