package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Config configures a [Manager]. Every field's zero value is the safe default; only Store is
// required (and Authenticator to serve login). A Config is copied by [New]; changing it afterwards
// has no effect.
type Config struct {
	// Store keeps sessions, lanes and replay windows. Required.
	Store Store

	// StoreKey is the 32-byte server key that seals lane keys at rest (AES-256-GCM, bound to the
	// lane ID and epoch), so that a copy of the store alone yields no usable key. Keep it out of
	// the store's backups. If nil, a random key is made for this process: sealed keys then die
	// with the process, which is right for an in-memory store and wrong for a durable one (after a
	// restart every session would be refused with unknown_session): give a durable store a
	// configured key.
	StoreKey []byte

	// Authenticator checks login credentials. If nil, the login endpoint is not served (404): a
	// node that only verifies requests needs none.
	Authenticator Authenticator

	// Prefix is the path under which [Manager.Handler] serves its endpoints: one or more
	// segments of letters, digits and ._~- between slashes, none . or .., at most 66 bytes (the
	// form the worker accepts). If zero, "/sv/".
	Prefix string

	// IdleTimeout ends a session after this long without a verified request. If zero, 30
	// minutes. The last-seen time is written at most every IdleTimeout/20, so a session may end
	// up to 5% early; it never ends late.
	IdleTimeout time.Duration
	// AbsoluteTimeout ends a session this long after login, whatever happens in between:
	// rotation and re-key never extend it. If zero, 12 hours.
	AbsoluteTimeout time.Duration
	// RotateEvery is the age of a lane's key after which responses ask the worker to rotate
	// (header Sv-Action: rotate). If zero, 10 minutes.
	RotateEvery time.Duration
	// RotateGrace is how long the previous epoch's key stays valid after a rotation, for requests
	// in flight. A later use of it revokes the session (reuse_detected). If zero, 30 seconds, or
	// half of RotateEvery if that is shorter; it must be shorter than RotateEvery.
	RotateGrace time.Duration

	// MaxSessionsPerUser bounds a user's concurrent sessions; a login past the bound ends the
	// user's oldest sessions (reason limit_evicted). If zero, 10; if negative, no bound.
	MaxSessionsPerUser int
	// MaxLanesPerSession bounds a session's lanes (one per worker: the login's, and one per
	// reload or new tab that joins). A join past the bound first ends the session's stalest
	// lanes, those with the oldest key (a closed tab's lane stops rotating), with reason
	// lane_evicted; the session and its other lanes go on. If zero, 16; if negative, no bound.
	MaxLanesPerSession int

	// Window is the accepted age and future skew of a signature's created time. If zero,
	// [DefaultMaxAge] (60 s) and [DefaultSkew] (5 s).
	Window Window

	// MaxBody bounds the body of a signed request (it is read in full and digested before the
	// handler runs) and of a login request. If zero, 1 MiB.
	MaxBody int64

	// BindUserAgent, if true, binds a session to a hash of the User-Agent it logged in with: a
	// validly signed request from another User-Agent is refused (user_agent_mismatch) and ends
	// the session, since the key is then used outside its browser. If false (zero), no binding.
	BindUserAgent bool

	// Logger receives the audit events (see the package documentation). If nil, slog.Default():
	// audit events are security records and are not dropped by default. Pass
	// slog.New(slog.DiscardHandler) to drop them.
	Logger *slog.Logger

	// ThrottleThreshold is how many refused requests (bad or malformed signatures, unknown
	// sessions, replays, failed logins) one client address may cause within ThrottleWindow before
	// every request from it is answered 429 for the rest of the window, except signed requests
	// for lanes this node has verified a request of (and still caches the verifiers of: no store
	// read; a lane a request merely named does not count), so that users sharing the address
	// keep working. If zero, 30; if negative, no throttling.
	ThrottleThreshold int
	// ThrottleWindow is the counting window of ThrottleThreshold. If zero, one minute.
	ThrottleWindow time.Duration

	// ClientAddr names the client of a request for throttling and audit. If nil, the host part of
	// r.RemoteAddr. Behind a reverse proxy or load balancer, set it (see [ForwardedFor]): else
	// every client is the proxy, and a few failed logins from anyone throttle everyone. IPv6
	// addresses are counted per /64.
	ClientAddr func(r *http.Request) string
	// Authority returns the host (with its port, if not the default one) that the client sent
	// the request to: what its signature covers as @authority. If nil, r.Host. Behind a reverse
	// proxy that rewrites Host (nginx's default proxy_set_header, httputil's SetURL), return
	// the original host from a header that proxy sets, such as X-Forwarded-Host, and make sure
	// only the proxy can set it. The value is lowercased and a :443 or :80 suffix removed. The
	// event socket's default Origin check compares against it too.
	Authority func(r *http.Request) string

	// EventOrigin reports whether an event socket's upgrade request may come from its Origin
	// (cross-site WebSocket hijacking); refused requests get 403. If nil, the Origin's host must
	// equal the request's Host (or Authority's answer, when set); requests without Origin (not from a browser) are admitted, since
	// they must still answer the lane's challenge.
	EventOrigin func(r *http.Request) bool
	// MaxEventConns bounds this node's event connections, authenticated or not. If zero, 20,000.
	MaxEventConns int
	// MaxPendingEventConns bounds, per client address (ClientAddr; an IPv6 address by its
	// /64), the event connections that hold a slot of MaxEventConns without serving a worker:
	// upgrading or not yet authenticated, or closing (replaced by a newer one of their lane, or
	// their lane ended) until the client answers the close. Past it the address's upgrades get
	// 429 rate_limited, and its workers retry with backoff. It keeps one address, with or
	// without an account, from taking every slot and so every other worker's revocation push.
	// An honest worker holds one for a round trip and its authentication; when more than this
	// reconnect at once from behind one address (a node restart), the rest are refused and get
	// in on their backoff a few seconds later. Raise it for large NATs. If zero, 64.
	MaxPendingEventConns int
	// ExpiringBefore is how long before a session's idle or absolute deadline its event sockets
	// get an expiring event. If zero, 2 minutes or a quarter of IdleTimeout, whichever is less.
	ExpiringBefore time.Duration

	// Module is the vault's wasm module (build/vault.wasm from make wasm). If set, the handler
	// also serves it at {prefix}vault.wasm and the page's module at {prefix}client.js, so that
	// one mount serves everything a page and its worker load, and the boot script asks for
	// vault.wasm?v=<content hash>, cached by browsers for a year as immutable: a worker start
	// costs no revalidation round trip, and a new build has a new URL. If nil, serve vault.wasm
	// (as application/wasm) and client.js beside the handler yourself.
	Module []byte

	// APIOrigins are the origins (scheme://host[:port]) other than its own that the worker may
	// send signed requests to: those a page's policy names in origins. The boot script is served
	// with a Content-Security-Policy whose connect-src is the worker's own origin and these, so
	// that no worker, not even one that page script starts and binds to a policy of its own, can
	// hand a signature to a host that could replay it here under its name. Empty: same origin
	// only.
	APIOrigins []string

	// Join configures reload and new tabs: the browser-session cookie, the boot script's ticket
	// and {prefix}join. The zero value turns join on with safe defaults (see [JoinConfig]).
	Join JoinConfig

	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// Rand is the source of session IDs, lane IDs, ephemeral keys and nonces. If nil,
	// crypto/rand.Reader. Only tests should set it.
	Rand io.Reader
}

// Defaults of [Config].
const (
	DefaultPrefix             = "/sv/"
	DefaultIdleTimeout        = 30 * time.Minute
	DefaultAbsoluteTimeout    = 12 * time.Hour
	DefaultRotateEvery        = 10 * time.Minute
	DefaultRotateGrace        = 30 * time.Second
	DefaultMaxSessionsPerUser = 10
	DefaultMaxLanesPerSession = 16
	DefaultMaxBody            = 1 << 20
	DefaultThrottleThreshold  = 30
	DefaultThrottleWindow     = time.Minute
	DefaultExpiringBefore     = 2 * time.Minute
)

// Authenticator checks the credentials of a login. The application implements it; credentials
// is the raw JSON value the worker sent under "credentials" (its shape is the application's).
//
// It returns the user's ID (non-empty) and the claims the session carries (roles and the like;
// [FromContext] hands them to handlers). It returns an error wrapping [ErrBadCredentials] for
// wrong credentials (401 bad_credentials, counted for throttling); any other error answers 503.
// Authenticate must be safe for concurrent use. The server never logs credentials.
type Authenticator interface {
	Authenticate(ctx context.Context, r *http.Request, credentials json.RawMessage) (userID string, claims map[string]string, err error)
}

// AuthenticatorFunc adapts a function to [Authenticator].
type AuthenticatorFunc func(ctx context.Context, r *http.Request, credentials json.RawMessage) (string, map[string]string, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, r *http.Request, credentials json.RawMessage) (string, map[string]string, error) {
	return f(ctx, r, credentials)
}

// Errors of the package (besides the Store errors in store.go).
var (
	// ErrBadCredentials is what an [Authenticator] returns (or wraps) for wrong credentials.
	ErrBadCredentials = errors.New("server: bad credentials")
	// ErrNoSession: [Manager.RequireRekey] was called outside a request verified by
	// [Manager.Require].
	ErrNoSession = errors.New("server: no verified session in the request")
	// ErrConfig is wrapped by every error of [New] about the Config.
	ErrConfig = errors.New("server: bad config")
)

func configError(msg string) error { return &wrapError{msg: "server: config: " + msg, err: ErrConfig} }

type wrapError struct {
	msg string
	err error
}

func (e *wrapError) Error() string { return e.msg }
func (e *wrapError) Unwrap() error { return e.err }

// defaultClientAddr is the host of r.RemoteAddr.
func defaultClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
