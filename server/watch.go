package server

import (
	"context"
	"errors"
	"log/slog"
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
// or any other that shares the store (at once through the store's notices; if this node's
// subscription was down, when it resyncs), or reaches its absolute or idle timeout; and by
// [Manager.EndStreams] or Close (cause [ErrShutdown]). When the session ended, the cause is an
// [*EndedError] with the reason. The idle timeout is checked against the store at the
// session's deadline: a stream is not activity, the user's other requests are.
//
// Require checks a request once, at its start; a handler that
// streams for long (server-sent events, a long download, a model's tokens) uses this context to
// stop when the session is gone, as the worker stops signing:
//
//	ctx, stop, err := mgr.SessionContext(r)
//	if err != nil { ... }
//	defer stop()
//	for { select { case <-ctx.Done(): return; case ev := <-events: ... } }
//
// stop releases the watch; call it when the handler returns (the watch goes by itself when the
// request ends, but a handler that stops streaming early should not wait for that). It costs a store read and a small
// registration; ordinary handlers, which answer at once, need none of it. ErrNoSession if r did
// not come through Require.
func (m *Manager) SessionContext(r *http.Request) (context.Context, context.CancelFunc, error) {
	st, ok := r.Context().Value(ctxKey{}).(*reqState)
	if !ok {
		return nil, nil, ErrNoSession
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	id := st.lane.ID
	// At the session's deadline (idle or absolute), the store says whether a request since has
	// moved it; armed once registered.
	var t *time.Timer
	sid := st.sess.ID
	t = time.AfterFunc(time.Hour, func() { m.checkDeadline(ctx, cancel, sid, t) })
	t.Stop()
	w := &watch{cancel: cancel, timer: t}
	m.watches.add(id, w)
	t.Reset(max(m.deadline(st.sess).Sub(m.now()), 0))
	stop := func() {
		m.watches.remove(id, w)
		t.Stop()
		cancel(context.Canceled)
	}
	// A handler that returns without calling stop leaves nothing behind: the request's context
	// ends when its ServeHTTP returns.
	context.AfterFunc(r.Context(), stop)
	// Ended between Require's check (which may use this node's cached records) and the
	// registration: the notice has passed, the store knows.
	// (The store down: the watch stays; notices still cancel it.)
	if reason := m.laneEnded(ctx, id); reason != "" {
		cancel(&EndedError{Reason: reason})
	}
	return ctx, stop, nil
}

// laneEnded reads lane id from the store: the reason it ended with (a refusal reason), or ""
// while it stands or if the store fails.
func (m *Manager) laneEnded(ctx context.Context, id LaneID) string {
	_, _, err := m.store.Lane(ctx, id)
	var g *GoneError
	switch {
	case errors.As(err, &g):
		return refusalOf(g.Reason)
	case errors.Is(err, ErrNotFound):
		return reasonUnknownSession
	}
	return ""
}

// checkDeadline runs at a watched session's deadline: it ends the watch (cause expired) if the
// session is past its idle or absolute timeout by the store's records (or gone), or waits for
// the new deadline that a request since has set. A failing store is asked again in 30 s.
func (m *Manager) checkDeadline(ctx context.Context, cancel context.CancelCauseFunc, sid []byte, t *time.Timer) {
	defer func() {
		if p := recover(); p != nil {
			m.audit(context.Background(), slog.LevelError, auditRec{event: evInternal, reason: "watch deadline check panicked"})
		}
	}()
	if ctx.Err() != nil {
		return // stopped or ended meanwhile
	}
	rctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	sess, _, err := m.store.Session(rctx, sid)
	now := m.now()
	var gone *GoneError
	switch {
	case errors.As(err, &gone):
		cancel(&EndedError{Reason: refusalOf(gone.Reason)}) // ended meanwhile, its notice missed
	case errors.Is(err, ErrNotFound):
		cancel(&EndedError{Reason: reasonExpired}) // swept: a revocation would have said so
	case err != nil:
		t.Reset(30 * time.Second)
	case !m.liveAt(sess, now):
		cancel(&EndedError{Reason: reasonExpired})
	default:
		t.Reset(max(m.deadline(sess).Sub(now), 0))
	}
}

// ErrShutdown is the cause of a [Manager.SessionContext] context ended by [Manager.EndStreams]
// or [Manager.Close]: the server is going away, the session goes on (the page may open its
// stream again, on another node or after the restart).
var ErrShutdown = errors.New("server: shutting down")

// EndStreams ends every [Manager.SessionContext] context of this node with cause [ErrShutdown],
// so that http.Server.Shutdown, which waits for handlers, is not held up by streams that would
// run until their sessions end:
//
//	hs.RegisterOnShutdown(mgr.EndStreams)
//
// Close does it too. A SessionContext taken afterwards is not ended by it.
func (m *Manager) EndStreams() {
	m.watches.end(m.watches.lanes(), ErrShutdown)
}

// recheckWatches ends the watches of lanes that the store says are gone: after this node missed
// notices (its subscription was down), as resyncLive does for event connections.
func (m *Manager) recheckWatches() {
	defer func() {
		if p := recover(); p != nil {
			m.audit(context.Background(), slog.LevelError, auditRec{event: evInternal, reason: "watch re-check panicked"})
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// (Event connections and cached verifiers are resyncLive's own.)
	for _, id := range m.watches.lanes() {
		if reason := m.laneEnded(ctx, id); reason != "" {
			m.watches.end([]LaneID{id}, &EndedError{Reason: reason})
		}
	}
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

// lanes returns the lanes watched now.
func (ws *watches) lanes() []LaneID {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	out := make([]LaneID, 0, len(ws.m))
	for id := range ws.m {
		out = append(out, id)
	}
	return out
}

// end cancels the watches of lanes with cause.
func (ws *watches) end(lanes []LaneID, cause error) {
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
		w.timer.Stop()
		w.cancel(cause)
	}
}
