package server

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
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
// The claims also travel with the hint, sealed under a key derived from Config.StoreKey and
// bound to the session ID (header Sv-Rekey-Grant): the worker sends them back with its re-key,
// so the re-key may reach any node that shares the StoreKey. This node also repeats the hint on
// the session's later responses until the re-key or the session's idle timeout.
func (m *Manager) RequireRekey(w http.ResponseWriter, r *http.Request, claims map[string]string) error {
	st, ok := r.Context().Value(ctxKey{}).(*reqState)
	if !ok {
		return ErrNoSession
	}
	c := st.sess.Claims
	if claims != nil {
		c = maps.Clone(claims)
	}
	now := m.now()
	until := now.Add(m.idle)
	grant, err := m.grants.seal(st.sess.ID, c, now, until)
	if err != nil {
		// Without a grant the re-key must reach this node to take the claims; say so.
		m.audit(r.Context(), slog.LevelWarn, auditRec{event: evInternal, handle: st.info.Handle, reason: "rekey grant", cause: err})
	}
	m.pending.set(st.sess.ID, c, now, until, grant)
	m.rekeyHint(w, grant)
	return nil
}

// rekeyHint asks the worker to re-key, with the sealed claims if there are any.
func (m *Manager) rekeyHint(w http.ResponseWriter, grant string) {
	h := w.Header()
	h["Sv-Action"] = []string{"rekey"}
	if grant != "" {
		h["Sv-Rekey-Grant"] = []string{grant}
	}
}

// A rekey grant (PROTOCOL.md 3.4) carries the claims of [Manager.RequireRekey] to whichever node
// the worker's re-key reaches:
//
//	grant     = b64url(0x01 || nonce [12] || AES-256-GCM(grant key, nonce, until || at || claims, aad))
//	until     = the grant's deadline, Unix seconds, 8 bytes big-endian
//	at        = when RequireRekey ran, Unix nanoseconds, 8 bytes big-endian: of two decisions for
//	            one session (made on two nodes), the later one wins
//	claims    = the claims as a JSON object
//	aad       = "sessionvault/v1 rekey-grant" || session ID
//	grant key = HKDF-SHA256(StoreKey, salt = nil, info = "sessionvault/v1 rekey-grant", 32)
//
// Bound to the session ID, it is good for one re-key at most: the re-key ends that ID.
const (
	grantVersion  = 1
	grantAAD      = "sessionvault/v1 rekey-grant"
	grantKeyInfo  = "sessionvault/v1 rekey-grant"
	grantNonceLen = 12
	// grantMaxLen bounds what is decoded (the claims of a session are small).
	grantMaxLen = 4096
)

type grantSealer struct{ sealBox }

func newGrantSealer(storeKey []byte, rand io.Reader) (*grantSealer, error) {
	b, err := newSealBox(storeKey, grantKeyInfo, rand)
	return &grantSealer{b}, err
}

func grantAD(sessionID []byte) []byte {
	return append([]byte(grantAAD), sessionID...)
}

func (g *grantSealer) seal(sessionID []byte, claims map[string]string, at, until time.Time) (string, error) {
	pt, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	head := binary.BigEndian.AppendUint64(nil, uint64(until.Unix()))
	head = binary.BigEndian.AppendUint64(head, uint64(at.UnixNano()))
	pt = append(head, pt...)
	out := make([]byte, 1+grantNonceLen, 1+grantNonceLen+len(pt)+g.aead.Overhead())
	out[0] = grantVersion
	if _, err := io.ReadFull(g.rand, out[1:]); err != nil {
		return "", err
	}
	out = g.aead.Seal(out, out[1:1+grantNonceLen], pt, grantAD(sessionID))
	if s := b64.EncodeToString(out); len(s) <= grantMaxLen {
		return s, nil
	}
	return "", errGrantTooLarge
}

var errGrantTooLarge = errors.New("server: the claims are too large for a rekey grant")

// open returns the claims of a grant for sessionID that is still good at now, and when
// RequireRekey made it.
func (g *grantSealer) open(sessionID []byte, grant string, now time.Time) (map[string]string, time.Time, bool) {
	if len(grant) > grantMaxLen {
		return nil, time.Time{}, false
	}
	raw, err := b64.Strict().DecodeString(grant)
	if err != nil || len(raw) < 1+grantNonceLen+16+g.aead.Overhead() || raw[0] != grantVersion {
		return nil, time.Time{}, false
	}
	pt, err := g.aead.Open(nil, raw[1:1+grantNonceLen], raw[1+grantNonceLen:], grantAD(sessionID))
	if err != nil || len(pt) < 16 || now.Unix() >= int64(binary.BigEndian.Uint64(pt)) {
		return nil, time.Time{}, false
	}
	var claims map[string]string
	if json.Unmarshal(pt[16:], &claims) != nil {
		return nil, time.Time{}, false
	}
	return claims, time.Unix(0, int64(binary.BigEndian.Uint64(pt[8:]))), true
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
	at     time.Time // when RequireRekey ran
	until  time.Time
	grant  string // the sealed claims sent with the hint ("" if sealing failed)
}

const maxPendingRekeys = 100_000

func (p *pendingRekeys) set(id []byte, claims map[string]string, at, until time.Time, grant string) {
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
	p.m[string(id)] = pendingRekey{claims: claims, at: at, until: until, grant: grant}
	p.n.Store(int64(len(p.m)))
}

// hint reports whether a re-key is pending for the session, and its grant.
func (p *pendingRekeys) hint(id []byte) (grant string, ok bool) {
	if p.n.Load() == 0 {
		return "", false
	}
	p.mu.Lock()
	e, ok := p.m[string(id)]
	p.mu.Unlock()
	return e.grant, ok
}

// get returns the pending claims of a session and when they were asked for (false if none, or
// expired).
func (p *pendingRekeys) get(id []byte, now time.Time) (map[string]string, time.Time, bool) {
	if p.n.Load() == 0 {
		return nil, time.Time{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.m[string(id)]
	if ok && !now.Before(e.until) {
		delete(p.m, string(id))
		p.n.Store(int64(len(p.m)))
		return nil, time.Time{}, false
	}
	return e.claims, e.at, ok
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
