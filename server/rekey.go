package server

import (
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// RequireRekey asks the worker of a verified request to re-key the session: call it from a
// handler behind [Manager.Require] after a privilege change (login step-up, role change,
// password change). The response gets Sv-Action: rekey (call RequireRekey before writing the
// response), and so does every later response of the session until the worker posts
// {prefix}rekey. The re-key gives the session a new session ID, a new lane and a fresh key
// agreement, kills the old ID and all its lanes (reason rekeyed), and keeps the login time and
// absolute deadline (OWASP: renew the session ID after any privilege level change).
//
// claims become the claims of the new session; the old session keeps its claims until the
// re-key, so no privilege reaches the old ID. If claims is nil, the new session keeps the current
// claims (an ID renewal only). It returns [ErrNoSession] when r was not verified by Require.
//
// The new claims take effect only when the worker re-keys, which a client that ignores the hint
// (a stolen key's holder, a client of its own) never does: to take privileges away, end the
// session ([Manager.Revoke]) rather than re-key it.
//
// The pending claims live in this process's memory until the re-key or the session's idle
// timeout: with a store shared by several nodes the worker's re-key must reach this node (a
// re-key elsewhere renews the ID with the old claims).
func (m *Manager) RequireRekey(w http.ResponseWriter, r *http.Request, claims map[string]string) error {
	st, ok := r.Context().Value(ctxKey{}).(*reqState)
	if !ok {
		return ErrNoSession
	}
	c := st.sess.Claims
	if claims != nil {
		c = maps.Clone(claims)
	}
	m.pending.set(st.sess.ID, c, m.now().Add(m.idle))
	w.Header()["Sv-Action"] = []string{"rekey"}
	return nil
}

// pendingRekeys holds the claims of re-keys asked for and not yet done, by session ID. Bounded;
// when full, an arbitrary entry is dropped (its re-key then keeps the old claims: privilege is
// not granted, which is the safe failure).
type pendingRekeys struct {
	n  atomic.Int64
	mu sync.Mutex
	m  map[string]pendingRekey
}

type pendingRekey struct {
	claims map[string]string
	until  time.Time
}

const maxPendingRekeys = 100_000

func (p *pendingRekeys) set(id []byte, claims map[string]string, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]pendingRekey)
	}
	if _, ok := p.m[string(id)]; !ok && len(p.m) >= maxPendingRekeys {
		for k := range p.m {
			delete(p.m, k)
			break
		}
	}
	p.m[string(id)] = pendingRekey{claims: claims, until: until}
	p.n.Store(int64(len(p.m)))
}

func (p *pendingRekeys) has(id []byte) bool {
	if p.n.Load() == 0 {
		return false
	}
	p.mu.Lock()
	_, ok := p.m[string(id)]
	p.mu.Unlock()
	return ok
}

// get returns the pending claims of a session (false if none, or expired).
func (p *pendingRekeys) get(id []byte, now time.Time) (map[string]string, bool) {
	if p.n.Load() == 0 {
		return nil, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.m[string(id)]
	if ok && !now.Before(e.until) {
		delete(p.m, string(id))
		p.n.Store(int64(len(p.m)))
		return nil, false
	}
	return e.claims, ok
}

func (p *pendingRekeys) drop(id []byte) {
	if p.n.Load() == 0 {
		return
	}
	p.mu.Lock()
	delete(p.m, string(id))
	p.n.Store(int64(len(p.m)))
	p.mu.Unlock()
}
