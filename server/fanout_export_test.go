package server

import (
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// Hooks for the external tests of the fan-out (redis_test.go).

// FanoutReady reports whether m would serve signed requests: its store is not a Notifier, or
// its subscription is up and resynced.
func FanoutReady(m *Manager) bool { return m.Ready() == nil }

// HasVerifier reports whether m caches verifiers of lane.
func HasVerifier(m *Manager, lane protocol.LaneID) bool {
	_, ok := m.verifiers.m.Load(lane)
	return ok
}

// WatchCount is the number of SessionContext watches registered on m.
func WatchCount(m *Manager) int {
	m.watches.mu.Lock()
	defer m.watches.mu.Unlock()
	n := 0
	for _, set := range m.watches.m {
		n += len(set)
	}
	return n
}

// LiveDue is when the event timer of lane fires on m (zero if m holds no event connection of it).
func LiveDue(m *Manager, lane protocol.LaneID) time.Time {
	ll := m.live.get(lane)
	if ll == nil {
		return time.Time{}
	}
	ll.mu.Lock()
	defer ll.mu.Unlock()
	return ll.due
}
