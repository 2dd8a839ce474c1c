package server

import "github.com/sessionvault/sessionvault/internal/protocol"

// Hooks for the external tests of the event socket's end of a lane (events_end_test.go).

// HasLiveLane reports whether m keeps a live entry (event key, timer) for lane: it has an
// authenticated event connection of lane that no deletion has ended yet.
func HasLiveLane(m *Manager, lane protocol.LaneID) bool { return m.live.get(lane) != nil }

// HoldLiveLane locks m's live entry of lane, as a slow holder would (a timer sealing an event,
// an authentication storing the key), until release is called; ok is false if m keeps none.
func HoldLiveLane(m *Manager, lane protocol.LaneID) (release func(), ok bool) {
	ll := m.live.get(lane)
	if ll == nil {
		return nil, false
	}
	ll.mu.Lock()
	return ll.mu.Unlock, true
}

// LaneRecheck returns the work of the timer of m's live entry of lane, taken now: re-read the
// lane from the store and apply what it says (the end of the lane, if it is gone), as the
// timer, a resync or the connect's resync does while another path ends the lane. nil if m
// keeps no entry of lane.
func LaneRecheck(m *Manager, lane protocol.LaneID) func() {
	ll := m.live.get(lane)
	if ll == nil {
		return nil
	}
	return func() { m.tickLive(ll) }
}
