// Package demo is the Sessionvault demo application served by cmd/devserver and driven by the
// e2e tests: a single-page app whose every API call is signed by the vault worker, an admin view
// with live sessions and audit events, the session endpoints and the worker assets, all under a
// strict CSP.
package demo

import (
	"bytes"
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/boltstore"
	"github.com/sessionvault/sessionvault/server/memstore"
)

//go:embed static
var static embed.FS

// CSP is the policy of every response: no inline script, wasm allowed, workers from our origin
// only (no blob: workers), and violations reported to /csp-report.
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; " +
	"style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; " +
	"report-uri /csp-report"

// Options configure the demo.
type Options struct {
	// Data is the data directory: the bolt store and the store key. Required for "bolt". If zero
	// with "mem", the store key is random and lives only in this process.
	Data string
	// Store is "bolt" (durable, in Data), "mem", or a Redis URL as go-redis's ParseURL reads it
	// (redis://host:port/db, rediss:// for TLS): demo nodes on one Redis share sessions, replay
	// windows and revocations. If zero, "bolt".
	Store string
	// StoreKeyFile holds the 32-byte key that seals lane keys at rest, made (mode 0600) if
	// missing. Nodes on one Redis must share it. If zero, Data/store.key.
	StoreKeyFile string
	// WasmPath is the vault module to serve. Required.
	WasmPath string
	// RotateEvery, IdleTimeout and AbsoluteTimeout pass through to server.Config (zero: defaults).
	RotateEvery, IdleTimeout, AbsoluteTimeout time.Duration
	// RotateGrace passes through to server.Config.
	RotateGrace time.Duration
	// MaxLanesPerSession passes through to server.Config (zero: the default).
	MaxLanesPerSession int
	// Logger, if set, also receives every audit event (tests use it); they always go to the
	// admin view's ring and to standard error unless Quiet.
	Quiet bool
}

// App is the demo handler. Close releases the store.
type App = app

// New builds the demo.
func New(o Options) (*App, error) {
	if o.Store == "" {
		o.Store = "bolt"
	}
	return newApp(o, o.WasmPath)
}

// Manager returns the session manager (tests revoke through it).
func (a *app) Manager() *server.Manager { return a.mgr }

// Store returns the session store. The e2e tests read the sealed lane keys through it (with the
// store key from Data) to know what must never appear in the browser.
func (a *app) Store() server.Store { return a.store }

// CSPReports returns how many CSP violation reports the demo received.
func (a *app) CSPReports() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cspReports
}

// app is the demo: the session manager, the demo API, the admin API and the assets.
type app struct {
	mux     *http.ServeMux
	mgr     *server.Manager
	store   server.Store
	closers []func() error
	audit   *auditLog
	wasm    []byte
	users   map[string]demoUser

	mu         sync.Mutex
	notes      map[string][]string
	cspReports int
}

func newApp(o Options, wasmPath string) (*app, error) {
	a := &app{mux: http.NewServeMux(), audit: newAuditLog(2000, o.Quiet), notes: map[string][]string{}, users: demoUsers()}
	var err error
	if a.wasm, err = os.ReadFile(wasmPath); err != nil {
		return nil, err
	}

	// A mem store without a data directory gets a random key for this process (the manager makes
	// one when StoreKey is nil): nothing outlives the process, so there is nothing to keep.
	var key []byte
	keyFile := o.StoreKeyFile
	if keyFile == "" && (o.Store != "mem" || o.Data != "") {
		keyFile = filepath.Join(o.Data, "store.key")
	}
	if keyFile != "" {
		if key, err = storeKey(keyFile); err != nil {
			return nil, err
		}
	}
	switch o.Store {
	case "bolt":
		bs, err := boltstore.Open(filepath.Join(o.Data, "sessions.bolt"), nil)
		if err != nil {
			return nil, err
		}
		a.store = bs
		a.closers = append(a.closers, bs.Close)
	case "mem":
		a.store = memstore.New()
	default:
		rs, err := openRedis(o.Store, o.IdleTimeout)
		if err != nil {
			return nil, err
		}
		a.store = rs
		a.closers = append(a.closers, rs.Close)
	}
	a.mgr, err = server.New(server.Config{
		Store:              a.store,
		StoreKey:           key,
		Authenticator:      server.AuthenticatorFunc(a.authenticate),
		RotateEvery:        o.RotateEvery,
		RotateGrace:        o.RotateGrace,
		MaxLanesPerSession: o.MaxLanesPerSession,
		IdleTimeout:        o.IdleTimeout,
		AbsoluteTimeout:    o.AbsoluteTimeout,
		Logger:             slog.New(a.audit),
		Module:             a.wasm, // served at /sv/vault.wasm with /sv/client.js and /sv/worker.js
	})
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.mgr.Close)
	a.routes()
	return a, nil
}

// Close releases the manager and then the store.
func (a *app) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

func (a *app) routes() {
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := static.ReadFile("static/" + name)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.Write(b)
		}
	}
	a.mux.HandleFunc("GET /{$}", page("index.html"))
	a.mux.HandleFunc("GET /admin", page("admin.html"))
	// Browsers ask for it on every page; without it each load logs a 404 error in the console.
	a.mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=86400")
		w.WriteHeader(http.StatusNoContent)
	})
	sub, _ := fs.Sub(static, "static")
	a.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(sub)))
	a.mux.HandleFunc("POST /csp-report", a.cspReport)
	a.mux.HandleFunc("GET /csp-report", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		writeJSON(w, map[string]int{"violations": a.cspReports})
	})

	// The session endpoints and the vault's files: worker.js, vault.wasm, client.js.
	a.mux.Handle("/sv/", a.mgr.Handler())

	// The demo API: every route requires a signed request.
	api := http.NewServeMux()
	api.HandleFunc("GET /api/profile", a.profile)
	api.HandleFunc("GET /api/live", a.live)
	api.HandleFunc("POST /api/notes", a.addNote)
	api.HandleFunc("GET /api/notes", a.listNotes)
	api.HandleFunc("POST /api/elevate", a.elevate)
	api.HandleFunc("GET /admin/api/sessions", a.admin(a.adminSessions))
	api.HandleFunc("POST /admin/api/revoke", a.admin(a.adminRevoke))
	api.HandleFunc("POST /admin/api/revoke-user", a.admin(a.adminRevokeUser))
	api.HandleFunc("GET /admin/api/audit", a.admin(a.adminAudit))
	a.mux.Handle("/api/", a.mgr.Require(api))
	a.mux.Handle("/admin/api/", a.mgr.Require(api))
}

// ServeHTTP serves the demo; every response carries the security headers.
func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	a.mux.ServeHTTP(w, r)
}

func (a *app) cspReport(w http.ResponseWriter, r *http.Request) {
	b, _ := readLimited(r, 16<<10)
	a.mu.Lock()
	a.cspReports++
	a.mu.Unlock()
	a.audit.note("csp_violation", string(b))
	w.WriteHeader(http.StatusNoContent)
}

// --- the demo API ---

func (a *app) profile(w http.ResponseWriter, r *http.Request) {
	info, _ := server.FromContext(r.Context())
	writeJSON(w, map[string]any{
		"user":    info.UserID,
		"session": info.Handle,
		"lane":    info.Lane,
		"epoch":   info.Epoch,
		"claims":  info.Claims,
		"signed":  r.Header.Get("Signature-Input"),
		"time":    time.Now().UTC().Format(time.RFC3339),
	})
}

// live streams one NDJSON line a second, as long as the session lives (mgr.SessionContext): the
// demo of a long response through vault.fetch that ends, on both sides, when the session does.
func (a *app) live(w http.ResponseWriter, r *http.Request) {
	ctx, stop, err := a.mgr.SessionContext(r)
	if err != nil {
		http.Error(w, `{"error":"no_session"}`, http.StatusUnauthorized)
		return
	}
	defer stop()
	info, _ := server.FromContext(r.Context())
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		if enc.Encode(map[string]any{"n": n, "user": info.UserID, "time": time.Now().UTC().Format(time.RFC3339)}) != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-ctx.Done():
			var ended *server.EndedError
			if errors.As(context.Cause(ctx), &ended) {
				enc.Encode(map[string]any{"ended": ended.Reason}) // the worker may already have cut the stream
			}
			return
		case <-tick.C:
		}
	}
}

func (a *app) addNote(w http.ResponseWriter, r *http.Request) {
	info, _ := server.FromContext(r.Context())
	var in struct {
		Text string `json:"text"`
	}
	b, err := readLimited(r, 4096)
	if err != nil || json.Unmarshal(b, &in) != nil || in.Text == "" || len(in.Text) > 1000 {
		http.Error(w, `{"error":"bad_request"}`, http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	notes := append(a.notes[info.UserID], in.Text)
	if len(notes) > 50 {
		notes = notes[len(notes)-50:]
	}
	a.notes[info.UserID] = notes
	a.mu.Unlock()
	writeJSON(w, map[string]any{"ok": true, "count": len(notes)})
}

func (a *app) listNotes(w http.ResponseWriter, r *http.Request) {
	info, _ := server.FromContext(r.Context())
	a.mu.Lock()
	notes := append([]string(nil), a.notes[info.UserID]...)
	a.mu.Unlock()
	writeJSON(w, map[string]any{"notes": notes})
}

// elevate shows re-key after a privilege change: the session gets a new ID and fresh keys.
func (a *app) elevate(w http.ResponseWriter, r *http.Request) {
	info, _ := server.FromContext(r.Context())
	claims := map[string]string{}
	for k, v := range info.Claims {
		claims[k] = v
	}
	claims["elevated"] = "true"
	if err := a.mgr.RequireRekey(w, r, claims); err != nil {
		http.Error(w, `{"error":"no_session"}`, http.StatusUnauthorized)
		return
	}
	writeJSON(w, map[string]any{"ok": true})
}

// --- the admin API ---

func (a *app) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		info, _ := server.FromContext(r.Context())
		if info.Claims["role"] != "admin" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":"forbidden"}`))
			return
		}
		h(w, r)
	}
}

func (a *app) adminSessions(w http.ResponseWriter, r *http.Request) {
	type row struct {
		User     string    `json:"user"`
		Handle   string    `json:"handle"`
		Created  time.Time `json:"created"`
		LastSeen time.Time `json:"lastSeen"`
		Expires  time.Time `json:"expires"`
		Lanes    int       `json:"lanes"`
	}
	rows := []row{}
	for _, u := range demoUserNames {
		ss, err := a.mgr.Sessions(r.Context(), u)
		if err != nil {
			http.Error(w, `{"error":"store_unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		for _, s := range ss {
			rows = append(rows, row{User: s.UserID, Handle: s.Handle, Created: s.Created, LastSeen: s.LastSeen, Expires: s.Expires, Lanes: s.Lanes})
		}
	}
	writeJSON(w, map[string]any{"sessions": rows})
}

func (a *app) adminRevoke(w http.ResponseWriter, r *http.Request) {
	var in struct{ User, Handle string }
	b, err := readLimited(r, 1024)
	if err != nil || json.Unmarshal(b, &in) != nil {
		http.Error(w, `{"error":"bad_request"}`, http.StatusBadRequest)
		return
	}
	if err := a.mgr.Revoke(r.Context(), in.User, in.Handle); err != nil {
		// Not found is the admin's mistake (or a session that just ended); anything else is the
		// store's, and says so rather than pretending the session is gone.
		status, code := http.StatusNotFound, "not_found"
		if !errors.Is(err, server.ErrNotFound) {
			status, code = http.StatusServiceUnavailable, "store_unavailable"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(`{"error":"` + code + `"}`))
		return
	}
	writeJSON(w, map[string]any{"ok": true})
}

func (a *app) adminRevokeUser(w http.ResponseWriter, r *http.Request) {
	var in struct{ User string }
	b, err := readLimited(r, 1024)
	if err != nil || json.Unmarshal(b, &in) != nil {
		http.Error(w, `{"error":"bad_request"}`, http.StatusBadRequest)
		return
	}
	n, err := a.mgr.RevokeUser(r.Context(), in.User)
	if err != nil {
		http.Error(w, `{"error":"store_unavailable"}`, http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, map[string]any{"ok": true, "revoked": n})
}

func (a *app) adminAudit(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	writeJSON(w, map[string]any{"events": a.audit.since(after)})
}

// --- demo users ---

type demoUser struct {
	salt, hash []byte
	claims     map[string]string
}

var demoUserNames = []string{"alice", "bob", "admin"}

// demoUsers hashes each demo password with PBKDF2-SHA256 at start-up; only hashes are kept.
func demoUsers() map[string]demoUser {
	m := map[string]demoUser{}
	for _, u := range demoUserNames {
		salt := make([]byte, 16)
		rand.Read(salt)
		h, _ := pbkdf2.Key(sha256.New, u+"-password", salt, pbkdf2Iter, 32)
		role := "user"
		if u == "admin" {
			role = "admin"
		}
		m[u] = demoUser{salt: salt, hash: h, claims: map[string]string{"role": role}}
	}
	return m
}

const pbkdf2Iter = 100_000

func (a *app) authenticate(ctx context.Context, r *http.Request, creds json.RawMessage) (string, map[string]string, error) {
	var c struct{ User, Password string }
	if json.Unmarshal(creds, &c) != nil {
		return "", nil, server.ErrBadCredentials
	}
	u, ok := a.users[c.User]
	if !ok {
		u = a.users["alice"] // same work for unknown users: no user enumeration by timing
	}
	h, _ := pbkdf2.Key(sha256.New, c.Password, u.salt, pbkdf2Iter, 32)
	if subtle.ConstantTimeCompare(h, u.hash) != 1 || !ok {
		return "", nil, server.ErrBadCredentials
	}
	return c.User, u.claims, nil
}

// --- helpers ---

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

func readLimited(r *http.Request, n int64) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(http.MaxBytesReader(nil, r.Body, n))
	return buf.Bytes(), err
}

// storeKey loads the 32-byte store key from path, making it (mode 0600) on first run.
func storeKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != 32 {
			return nil, errors.New("devserver: " + path + " must hold 32 bytes")
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// Made under a temporary name and linked into place, which fails if another node made it
	// meanwhile: two nodes started at once on a shared key file agree on one key.
	b = make([]byte, 32)
	rand.Read(b)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".store.key-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return storeKey(path)
		}
		return nil, err
	}
	return b, nil
}

// BuildWasm builds the vault module into out with the Go toolchain (cached by the go command),
// from the module this command runs in.
func BuildWasm(out string, logger *slog.Logger) (string, error) {
	abs, err := filepath.Abs(out)
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", abs, "./wasm/worker")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", errors.New("devserver: building the wasm module failed (run from the repository root, or pass -wasm): " + err.Error())
	}
	logger.Info("wasm module built", "path", abs, "took", time.Since(start).Round(time.Millisecond))
	return abs, nil
}
