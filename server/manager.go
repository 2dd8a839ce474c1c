package server

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server/internal/hub"
	"github.com/sessionvault/sessionvault/server/internal/throttle"
)

// Manager issues, verifies, rotates, re-keys and revokes sessions. Make one with [New]; it is
// safe for concurrent use. Mount [Manager.Handler] under Config.Prefix and wrap the protected
// handlers in [Manager.Require].
type Manager struct {
	watches    watches // SessionContext's contexts, by lane
	store      Store
	floor      ReplayFloor // nil if the store has none
	sweeper    Sweeper     // nil if the store has none
	auth       Authenticator
	seal       *sealer
	log        *slog.Logger
	now        func() time.Time
	rand       io.Reader
	clientAddr func(*http.Request) string
	authority  func(*http.Request) string // Config.Authority; nil: r.Host
	misMounted sync.Once                  // the warning that Handler serves outside its prefix
	noModule   sync.Once                  // the warning that vault.wasm or client.js was asked for without Config.Module
	plainHTTP  throttle.Every             // the warning that the join cookie will not be kept (cookie.go)

	prefix                                    string
	idle, absolute, rotateEvery, grace, touch time.Duration
	maxSessions, maxLanes                     int
	window                                    protocol.Window
	maxBody                                   int64
	bindUA                                    bool
	throttleWindow                            time.Duration
	limiter                                   *throttle.Limiter
	verifiers                                 verifierCache
	pending                                   pendingRekeys
	grants                                    *grantSealer // rekey grants (rekey.go)
	sweepEvery                                time.Duration
	lastSweep                                 atomic.Int64 // Unix ns of the last sweep start
	sweepWG                                   sync.WaitGroup
	closed                                    atomic.Bool

	// The event socket (events.go).
	hub            *hub.Hub
	live           liveLanes
	seqs           eventSeqs
	expiringBefore time.Duration

	fan fanout // the store's notices, if it is a Notifier (fanout.go)

	join      joinState // reload and new tabs (join.go)
	assets    *assets   // the wasm module and client.js, when Config.Module is set (assets.go)
	workerCSP string    // the boot script's Content-Security-Policy (Config.APIOrigins)
}

// maxThrottleEntries bounds the table of per-address refusal counters.
const maxThrottleEntries = 10_000

// New checks cfg, fills in its defaults and returns a Manager. It fails (wrapping [ErrConfig])
// when Store is nil, StoreKey is not 32 bytes, Prefix is not of the form Config.Prefix gives,
// RotateGrace is not shorter than RotateEvery, or a duration is negative. Expired sessions are
// swept (when the Store is a [Sweeper]) from request handling, at most once a minute, and [Manager.Close] waits for a running sweep. When the Store is a
// [Notifier], New starts the goroutine of its subscription and waits (at most 5 s) for the first
// attempt; Close stops it.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, configError("Store is required")
	}
	m := &Manager{
		store:       cfg.Store,
		auth:        cfg.Authenticator,
		log:         cfg.Logger,
		now:         cfg.Now,
		rand:        cfg.Rand,
		clientAddr:  cfg.ClientAddr,
		authority:   cfg.Authority,
		prefix:      cfg.Prefix,
		idle:        cfg.IdleTimeout,
		absolute:    cfg.AbsoluteTimeout,
		rotateEvery: cfg.RotateEvery,
		grace:       cfg.RotateGrace,
		maxSessions: cfg.MaxSessionsPerUser,
		maxLanes:    cfg.MaxLanesPerSession,
		window:      cfg.Window,
		maxBody:     cfg.MaxBody,
		bindUA:      cfg.BindUserAgent,
		sweepEvery:  time.Minute,
	}
	for _, d := range []time.Duration{cfg.IdleTimeout, cfg.AbsoluteTimeout, cfg.RotateEvery, cfg.RotateGrace,
		cfg.ThrottleWindow, cfg.Window.MaxAge, cfg.Window.Skew, cfg.ExpiringBefore} {
		if d < 0 {
			return nil, configError("durations must not be negative")
		}
	}
	if cfg.MaxBody < 0 {
		return nil, configError("MaxBody must not be negative")
	}
	setDefault(&m.prefix, DefaultPrefix)
	if !validPrefix(m.prefix) {
		return nil, configError("Prefix must be one or more path segments of letters, digits and ._~- between slashes, none . or .., at most 66 bytes (like /sv/ or /auth/v1/): the worker accepts no other")
	}
	setDefault(&m.idle, DefaultIdleTimeout)
	if b, ok := cfg.Store.(IdleBound); ok && b.IdleTimeout() > 0 && b.IdleTimeout() < m.idle {
		return nil, configError("the Store drops sessions after " + b.IdleTimeout().String() + " unused, before IdleTimeout " + m.idle.String() +
			": give the store the same idle timeout as Config.IdleTimeout (redisstore.Options.IdleTimeout)")
	}
	setDefault(&m.absolute, DefaultAbsoluteTimeout)
	setDefault(&m.rotateEvery, DefaultRotateEvery)
	if m.grace >= m.rotateEvery {
		return nil, configError("RotateGrace must be shorter than RotateEvery: a lane keeps one previous key")
	}
	setDefault(&m.grace, min(DefaultRotateGrace, m.rotateEvery/2))
	setDefault(&m.maxSessions, DefaultMaxSessionsPerUser)
	setDefault(&m.maxLanes, DefaultMaxLanesPerSession)
	setDefault(&m.maxBody, DefaultMaxBody)
	m.expiringBefore = cfg.ExpiringBefore
	setDefault(&m.expiringBefore, min(DefaultExpiringBefore, m.idle/4))
	m.touch = m.idle / 20
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.rand == nil {
		m.rand = rand.Reader
	}
	if m.clientAddr == nil {
		m.clientAddr = defaultClientAddr
	}
	threshold, tw := cfg.ThrottleThreshold, cfg.ThrottleWindow
	setDefault(&threshold, DefaultThrottleThreshold)
	setDefault(&tw, DefaultThrottleWindow)
	m.throttleWindow = tw
	m.limiter = throttle.New(threshold, tw, maxThrottleEntries)

	key := cfg.StoreKey
	switch len(key) {
	case 0:
		key = make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, key); err != nil {
			return nil, err
		}
		defer clear(key)
	case 32:
	default:
		return nil, configError("StoreKey must be 32 bytes")
	}
	var err error
	if m.seal, err = newSealer(key, m.rand); err != nil {
		return nil, err
	}
	if m.grants, err = newGrantSealer(key, m.rand); err != nil {
		return nil, err
	}
	if cfg.Module != nil {
		var err error
		if m.assets, err = newAssets(cfg.Module); err != nil {
			return nil, err
		}
	}
	if m.workerCSP, err = workerCSP(cfg.APIOrigins); err != nil {
		return nil, err
	}
	if err := m.initJoin(&cfg.Join, key); err != nil {
		return nil, err
	}
	m.floor, _ = cfg.Store.(ReplayFloor)
	m.sweeper, _ = cfg.Store.(Sweeper)
	m.newHub(&cfg)
	m.startFanout()
	return m, nil
}

// firstSegment is a path's first segment, at most 64 bytes: enough to see where a handler is
// mounted, and no room for a token that a longer path might carry.
func firstSegment(p string) string {
	if i := strings.IndexByte(p[min(1, len(p)):], '/'); i >= 0 {
		p = p[:i+2]
	}
	if len(p) > 64 {
		p = p[:64]
	}
	return p
}

// validPrefix is the worker's rule for an endpoint prefix (js/router.js PREFIX): a worker that
// starts from {prefix}worker.js uses its directory, and refuses any other form.
func validPrefix(p string) bool {
	if len(p) < 3 || len(p) > 66 || p[0] != '/' || p[len(p)-1] != '/' {
		return false
	}
	for _, seg := range strings.Split(p[1:len(p)-1], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for _, c := range []byte(seg) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
				return false
			}
		}
	}
	return true
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Close stops background work: it closes every event connection (with close code 1001, so
// that workers reconnect, to another node or after a restart), stops the lanes' event timers
// and waits for a running sweep. Requests served afterwards still work, but no sweep starts
// again and the event endpoint answers 503. It waits at most 5 seconds for connections to end
// and returns the hub's error if they did not.
func (m *Manager) Close() error {
	m.closed.Store(true)
	m.stopFanout()
	m.EndStreams() // no notice reaches them any more
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.closeEvents(ctx)
	m.sweepWG.Wait()
	return err
}

// maybeSweep starts a sweep of expired sessions if the store can sweep and none ran for
// sweepEvery.
func (m *Manager) maybeSweep(now time.Time) {
	if m.sweeper == nil || m.closed.Load() {
		return
	}
	last := m.lastSweep.Load()
	if now.UnixNano()-last < int64(m.sweepEvery) || !m.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	m.sweepWG.Add(1)
	go func() {
		defer m.sweepWG.Done()
		defer func() {
			if p := recover(); p != nil {
				m.audit(context.Background(), slog.LevelError, auditRec{event: evInternal, reason: "sweep panicked"})
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := m.sweeper.Sweep(ctx, now)
		if err != nil {
			m.audit(ctx, slog.LevelError, auditRec{event: evStoreError, reason: "sweep", cause: err})
			return
		}
		if n > 0 {
			m.log.LogAttrs(ctx, slog.LevelDebug, "sessionvault", slog.String("event", "swept"), slog.Int("sessions", n))
		}
	}()
}

// Handler returns the handler of the session endpoints under Config.Prefix (POST unless noted):
//
//	{prefix}login   JSON {"pub", "credentials"}: authenticate, key agreement, new session
//	{prefix}logout  signed: end the session
//	{prefix}rotate  signed, JSON {"pub"}: next epoch of the lane's key
//	{prefix}rekey   signed, JSON {"pub"}: new session ID and lane, after [Manager.RequireRekey]
//	{prefix}events  GET, WebSocket: the lane's event socket (PROTOCOL.md section 6)
//	{prefix}worker.js  GET: the worker's boot script, with a join ticket for a fresh worker of a live session
//	{prefix}join    JSON {"pub", "ticket"} with the join cookie: a new lane of the session (reload, new tab)
//	{prefix}vault.wasm, {prefix}client.js  GET: the wasm module and the page's module, when Config.Module is set
//
// Mount it on the prefix: mux.Handle("/sv/", m.Handler()). Other paths under the prefix answer
// 404 not_found; mounted elsewhere, it answers 404 and logs mounted_elsewhere once.
func (m *Manager) Handler() http.Handler {
	return http.HandlerFunc(m.serveEndpoint)
}

func (m *Manager) serveEndpoint(w http.ResponseWriter, r *http.Request) {
	defer m.recoverTo(w, r)
	name, ok := strings.CutPrefix(r.URL.Path, m.prefix)
	if !ok {
		// Mounted somewhere other than its prefix (or behind a StripPrefix): say so, once.
		m.misMounted.Do(func() {
			m.log.LogAttrs(r.Context(), slog.LevelWarn, "sessionvault: a request outside Config.Prefix reached Handler(); mount it at the prefix, as mux.Handle(prefix, m.Handler())",
				slog.String("event", "mounted_elsewhere"), slog.String("prefix", m.prefix), slog.String("path", firstSegment(r.URL.Path)))
		})
		m.refuse(w, reasonNotFound)
		return
	}
	var h func(http.ResponseWriter, *http.Request)
	method := http.MethodPost
	switch name {
	case "login":
		if m.auth != nil {
			h = m.login
		}
	case "logout":
		h = m.logout
	case "rotate":
		h = m.rotate
	case "rekey":
		h = m.rekey
	case "events":
		h, method = m.serveEvents, http.MethodGet
	case "worker.js":
		h, method = m.serveBoot, http.MethodGet
	case moduleFile:
		if m.assets != nil {
			h, method = m.serveModule, http.MethodGet
		}
	case "client.js":
		if m.assets != nil {
			h, method = m.serveClient, http.MethodGet
		}
	case "join":
		if !m.join.disabled {
			h = m.serveJoin
		}
	}
	if h == nil {
		if m.assets == nil && (name == moduleFile || name == "client.js") {
			// Asked for by the boot script and the page: without Config.Module they are not here.
			m.noModule.Do(func() {
				m.log.LogAttrs(r.Context(), slog.LevelWarn, "sessionvault: "+name+" was requested but Config.Module is nil, so the handler does not serve vault.wasm or client.js; set Config.Module (build/vault.wasm, e.g. embedded with //go:embed) or serve both files yourself",
					slog.String("event", "module_missing"), slog.String("path", name))
			})
		}
		m.refuse(w, reasonNotFound)
		return
	}
	head := method == http.MethodGet && name != "events" // HEAD of what GET serves
	if r.Method != method && !(head && r.Method == http.MethodHead) {
		allow := method
		if head {
			allow += ", HEAD"
		}
		w.Header()["Allow"] = []string{allow}
		m.refuse(w, reasonMethod)
		return
	}
	h(w, r)
}

// recoverTo turns a panic in this package's code (or the Authenticator's) into a logged 503. It
// is deferred around the package's own work only, never around the application's handler.
func (m *Manager) recoverTo(w http.ResponseWriter, r *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler {
		panic(p)
	}
	m.audit(r.Context(), slog.LevelError, auditRec{event: evInternal, client: m.clientAddr(r), reason: "panic"})
	m.refuse(w, reasonUnavailable)
}
