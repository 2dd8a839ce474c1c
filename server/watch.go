package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
)

// EndedError is the cause ([context.Cause]) of a [Manager.SessionContext] context that ended
// because its session did.
type EndedError struct {
	// Reason is why, as the worker is told: "logout", "revoked", "expired", "reuse_detected",
	// "rekeyed", "limit_evicted", "lane_evicted", "unknown_session".
	Reason string
}

func (e *EndedError) Error() string { return "server: the session ended: " + e.Reason }

// SessionContext returns a context of r (a request verified by [Manager.Require]) that is also
// cancelled when its session ends: revoked, logged out, re-keyed, its lane evicted, on this node
// or any other that shares the store, or its absolute timeout reached. Its cause is then an
// [*EndedError] with the reason. (A session the store's sweep removes for idleness ends no
// watch: the stream itself keeps no session alive, so a handler that streams for longer than
// the idle timeout may want to bound itself.) Require checks a request once, at its start; a handler that
// streams for long (server-sent events, a long download, a model's tokens) uses this context to
// stop when the session is gone, as the worker stops signing:
//
//	ctx, stop, err := mgr.SessionContext(r)
//	if err != nil { ... }
//	defer stop()
//	for { select { case <-ctx.Done(): return; case ev := <-events: ... } }
//
// stop releases the watch; call it when the handler returns. It costs a store read and a small
// registration; ordinary handlers, which answer at once, need none of it. ErrNoSession if r did
// not come through Require.
func (m *Manager) SessionContext(r *http.Request) (context.Context, context.CancelFunc, error) {
	st, ok := r.Context().Value(ctxKey{}).(*reqState)
	if !ok {
		return nil, nil, ErrNoSession
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	id := st.lane.ID
	w := &watch{cancel: cancel}
	m.watches.add(id, w)
	if d := st.sess.Expires.Sub(m.now()); d > 0 {
		w.timer = time.AfterFunc(d, func() { cancel(&EndedError{Reason: reasonExpired}) })
	} else {
		cancel(&EndedError{Reason: reasonExpired})
	}
	stop := func() {
		m.watches.remove(id, w)
		if w.timer != nil {
			w.timer.Stop()
		}
		cancel(context.Canceled)
	}
	// Ended between Require's check (which may use this node's cached records) and the
	// registration: the notice has passed, the store knows.
	if _, _, err := m.store.Lane(ctx, id); err != nil {
		var g *GoneError
		switch {
		case errors.As(err, &g):
			cancel(&EndedError{Reason: refusalOf(g.Reason)})
		case errors.Is(err, ErrNotFound):
			cancel(&EndedError{Reason: reasonUnknownSession})
		}
		// Another error (the store is down): the watch stays; notices still cancel it.
	}
	return ctx, stop, nil
}

type watch struct {
	cancel context.CancelCauseFunc
	timer  *time.Timer
}

// watches are the SessionContext contexts of this node, by lane.
type watches struct {
	mu sync.Mutex
	m  map[LaneID]map[*watch]struct{}
}

func (ws *watches) add(id LaneID, w *watch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m = make(map[LaneID]map[*watch]struct{})
	}
	if ws.m[id] == nil {
		ws.m[id] = make(map[*watch]struct{})
	}
	ws.m[id][w] = struct{}{}
}

func (ws *watches) remove(id LaneID, w *watch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.m[id], w)
	if len(ws.m[id]) == 0 {
		delete(ws.m, id)
	}
}

// end cancels the watches of lanes, which ended for reason (a refusal reason).
func (ws *watches) end(lanes []LaneID, reason string) {
	ws.mu.Lock()
	var ended []*watch
	for _, id := range lanes {
		for w := range ws.m[id] {
			ended = append(ended, w)
		}
		delete(ws.m, id)
	}
	ws.mu.Unlock()
	for _, w := range ended {
		if w.timer != nil {
			w.timer.Stop()
		}
		w.cancel(&EndedError{Reason: reason})
	}
}
