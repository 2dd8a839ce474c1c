package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
)

// clock is a fake clock. It starts at the real time (memstore keeps tombstones by the wall
// clock) rounded to a second.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// events returns the audit records with the given event attribute.
func (s *syncBuffer) events(event string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(s.String(), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

const (
	testHost     = "app.example"
	testOrigin   = "http://" + testHost
	testPassword = "correct horse battery staple"
)

var testStoreKey = bytes.Repeat([]byte{0x5a}, 32)

// env is a server under test: a Manager on a store, a fake clock, captured audit logs, and a mux
// with the session endpoints and protected handlers that record what they saw.
type env struct {
	t      *testing.T
	clock  *clock
	store  server.Store
	mgr    *server.Manager
	logs   *syncBuffer
	mux    *http.ServeMux
	calls  atomic.Int64 // protected handler invocations
	mu     sync.Mutex
	seen   []server.Info
	bodies [][]byte
}

type envOpt func(*server.Config)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	e := &env{t: t, clock: newClock(), logs: &syncBuffer{}}
	cfg := server.Config{
		Store:    memstore.New(),
		StoreKey: testStoreKey,
		Authenticator: server.AuthenticatorFunc(func(ctx context.Context, r *http.Request, cred json.RawMessage) (string, map[string]string, error) {
			var c struct{ User, Password string }
			if err := json.Unmarshal(cred, &c); err != nil || c.User == "" {
				return "", nil, server.ErrBadCredentials
			}
			switch c.Password {
			case testPassword:
				return c.User, map[string]string{"role": "user"}, nil
			case "panic":
				panic("authenticator bug")
			case "down":
				return "", nil, errors.New("user database unreachable")
			}
			return "", nil, server.ErrBadCredentials
		}),
		Logger: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    e.clock.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	e.store = cfg.Store
	m, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	e.mgr = m
	e.mux = http.NewServeMux()
	e.mux.Handle("/sv/", m.Handler())
	e.mux.Handle("/api/", m.Require(http.HandlerFunc(e.api)))
	e.mux.Handle("/api/elevate", m.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.calls.Add(1)
		if err := m.RequireRekey(w, r, map[string]string{"role": "admin"}); err != nil {
			t.Errorf("RequireRekey: %v", err)
		}
		w.Write([]byte("elevated"))
	})))
	return e
}

// api is the protected handler: it records the session and the body, and echoes the body.
func (e *env) api(w http.ResponseWriter, r *http.Request) {
	e.calls.Add(1)
	info, ok := server.FromContext(r.Context())
	if !ok {
		e.t.Error("protected handler without session info")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		e.t.Errorf("reading verified body: %v", err)
	}
	e.mu.Lock()
	e.seen = append(e.seen, info)
	e.bodies = append(e.bodies, body)
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(body)
}

func (e *env) lastInfo() server.Info {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) == 0 {
		e.t.Fatal("handler never ran")
	}
	return e.seen[len(e.seen)-1]
}

// serve runs r through the mux and returns the recorded response. A panic fails the test.
func (e *env) serve(r *http.Request) *httptest.ResponseRecorder {
	e.t.Helper()
	w := httptest.NewRecorder()
	e.mux.ServeHTTP(w, r)
	if w.Code >= 500 && w.Code != 503 {
		e.t.Errorf("%s %s: status %d", r.Method, r.URL, w.Code)
	}
	return w
}

// client is a native worker: the real vault state machine, talking JSON to the endpoints.
type client struct {
	e      *env
	v      *vault.Vault
	remote string // RemoteAddr
	ua     string
	reply  loginReply
	do     func(*http.Request) *httptest.ResponseRecorder // transport; e.serve by default
	cookie *http.Cookie                                   // the last join cookie set (jar of one)
}

type loginReply struct {
	Lane        string `json:"lane"`
	Pub         string `json:"pub"`
	Confirm     string `json:"confirm"`
	Epoch       uint32 `json:"epoch"`
	ServerTime  int64  `json:"serverTime"`
	Expires     int64  `json:"expires"`
	IdleTimeout int64  `json:"idleTimeout"`
	RotateEvery int64  `json:"rotateEvery"`
}

func (e *env) newVault() *vault.Vault {
	v := vault.New(rand.Reader, e.clock.Now)
	if err := v.BindPolicy(vault.Policy{Self: testOrigin}); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) newClient() *client {
	return &client{e: e, v: e.newVault(), remote: "192.0.2.10:40000", ua: "TestBrowser/1.0", do: e.serve}
}

// keepCookie remembers the join cookie a login or re-key reply sets, as a browser would.
func (c *client) keepCookie(w *httptest.ResponseRecorder) {
	for _, ck := range w.Result().Cookies() {
		if ck.Name == server.DefaultCookieName && ck.Value != "" && ck.MaxAge >= 0 {
			c.cookie = ck
		}
	}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustB64u(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64url %q: %v", s, err)
	}
	return b
}

func (c *client) newRequest(method, target string, body []byte) *http.Request {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	r.Host = testHost
	r.RemoteAddr = c.remote
	r.Header.Set("User-Agent", c.ua)
	if c.cookie != nil && r.URL.Path == "/sv/rekey" {
		// The worker sends the join cookie with its re-key (credentials: "same-origin").
		r.AddCookie(&http.Cookie{Name: c.cookie.Name, Value: c.cookie.Value})
	}
	return r
}

// loginRaw posts a login with pub and the user's password.
func (c *client) loginRaw(pub [32]byte, user, password string) *httptest.ResponseRecorder {
	body, _ := json.Marshal(map[string]any{
		"pub":         b64u(pub[:]),
		"credentials": map[string]string{"user": user, "password": password},
	})
	r := c.newRequest("POST", "/sv/login", body)
	r.Header.Set("Content-Type", "application/json")
	w := c.do(r)
	c.keepCookie(w)
	return w
}

// login logs in as user and installs the key in the vault.
func (c *client) login(user string) {
	c.e.t.Helper()
	pub, err := c.v.Begin(protocol.HandshakeLogin)
	if err != nil {
		c.e.t.Fatal(err)
	}
	w := c.loginRaw(pub, user, testPassword)
	if w.Code != 200 {
		c.e.t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	c.finish(c.v, w.Body.Bytes())
}

// finish applies a login or rekey reply to v.
func (c *client) finish(v *vault.Vault, body []byte) {
	c.e.t.Helper()
	var rep loginReply
	if err := json.Unmarshal(body, &rep); err != nil {
		c.e.t.Fatalf("reply %s: %v", body, err)
	}
	var lane protocol.LaneID
	copy(lane[:], mustB64u(c.e.t, rep.Lane))
	var spub [32]byte
	copy(spub[:], mustB64u(c.e.t, rep.Pub))
	err := v.Finish(vault.Handshake{Lane: lane, ServerPub: spub, Confirm: mustB64u(c.e.t, rep.Confirm), ServerTime: rep.ServerTime, Expires: rep.Expires})
	if err != nil {
		c.e.t.Fatalf("finish: %v", err)
	}
	c.reply = rep
}

// sign returns a request signed by the vault.
func (c *client) sign(method, target string, body []byte) *http.Request {
	c.e.t.Helper()
	return c.signWith(c.v, method, target, body)
}

func (c *client) signWith(v *vault.Vault, method, target string, body []byte) *http.Request {
	c.e.t.Helper()
	path, query, _ := strings.Cut(target, "?")
	s, err := v.Sign(vault.SignRequest{Method: method, Origin: testOrigin, Path: path, Query: query, Body: body, HasBody: body != nil})
	if err != nil {
		c.e.t.Fatalf("sign: %v", err)
	}
	r := c.newRequest(method, target, body)
	r.Header.Set("Signature-Input", s.SignatureInput)
	r.Header.Set("Signature", s.Signature)
	if s.ContentDigest != "" {
		r.Header.Set("Content-Digest", s.ContentDigest)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	return r
}

// get sends a signed GET and returns the response.
func (c *client) get(target string) *httptest.ResponseRecorder {
	c.e.t.Helper()
	return c.do(c.sign("GET", target, nil))
}

// rotate runs the rotation protocol through the vault.
func (c *client) rotate() *httptest.ResponseRecorder {
	c.e.t.Helper()
	pub, err := c.v.BeginRotate()
	if err != nil {
		c.e.t.Fatal(err)
	}
	w := c.do(c.sign("POST", "/sv/rotate", pubBody(pub)))
	if w.Code != 200 {
		return w
	}
	var rep struct {
		Pub     string
		Epoch   uint32
		Confirm string
	}
	if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
		c.e.t.Fatal(err)
	}
	var spub [32]byte
	copy(spub[:], mustB64u(c.e.t, rep.Pub))
	if err := c.v.FinishRotate(spub, rep.Epoch, mustB64u(c.e.t, rep.Confirm)); err != nil {
		c.e.t.Fatalf("finish rotate: %v", err)
	}
	return w
}

// rekey runs the re-key handshake through the vault: it keeps signing under the current key
// (the rekey request itself is signed) until the reply is applied.
func (c *client) rekey() *httptest.ResponseRecorder {
	c.e.t.Helper()
	pub, err := c.v.Begin(protocol.HandshakeRekey)
	if err != nil {
		c.e.t.Fatal(err)
	}
	w := c.do(c.sign("POST", "/sv/rekey", pubBody(pub)))
	if w.Code != 200 {
		return w
	}
	c.keepCookie(w)
	c.finish(c.v, w.Body.Bytes())
	return w
}

func pubBody(pub [32]byte) []byte {
	b, _ := json.Marshal(map[string]string{"pub": b64u(pub[:])})
	return b
}

// wantRefused checks a refusal: status, reason in header and body.
func wantRefused(t *testing.T, w *httptest.ResponseRecorder, status int, reason string) {
	t.Helper()
	if w.Code != status || w.Header().Get("Sv-Error") != reason {
		t.Fatalf("got %d %q (body %s), want %d %q", w.Code, w.Header().Get("Sv-Error"), strings.TrimSpace(w.Body.String()), status, reason)
	}
	var body struct{ Error string }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != reason {
		t.Fatalf("body %q, want {\"error\":%q}", w.Body, reason)
	}
}

func wantOK(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != 200 {
		t.Fatalf("got %d %q %s, want 200", w.Code, w.Header().Get("Sv-Error"), strings.TrimSpace(w.Body.String()))
	}
}

// rawLane is a protocol-level worker that holds its key in the open, so that tests can copy it
// (a thief) or check that it never reaches the store or the logs.
type rawLane struct {
	lane  protocol.LaneID
	epoch uint32
	key   protocol.Key
	seq   uint64
	// offset is added to the clock for created.
	offset time.Duration
}

// rawLogin logs in at the protocol level and returns the lane with its key.
func (c *client) rawLogin(user string) *rawLane {
	c.e.t.Helper()
	eph, err := protocol.NewEphemeral(rand.Reader)
	if err != nil {
		c.e.t.Fatal(err)
	}
	w := c.loginRaw(eph.Public(), user, testPassword)
	if w.Code != 200 {
		c.e.t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	var rep loginReply
	json.Unmarshal(w.Body.Bytes(), &rep)
	l := &rawLane{}
	copy(l.lane[:], mustB64u(c.e.t, rep.Lane))
	var spub [32]byte
	copy(spub[:], mustB64u(c.e.t, rep.Pub))
	tr := protocol.HandshakeTranscript(protocol.HandshakeLogin, eph.Public(), spub, l.lane, nil)
	if l.key, err = protocol.Handshake(eph, spub, tr, l.lane); err != nil {
		c.e.t.Fatal(err)
	}
	if err := protocol.CheckConfirm(&l.key, tr, mustB64u(c.e.t, rep.Confirm)); err != nil {
		c.e.t.Fatal(err)
	}
	return l
}

// copy returns a thief's copy of the lane.
func (l *rawLane) copy() *rawLane { c := *l; return &c }

// signRaw signs a request with the raw lane's key.
func (c *client) signRaw(l *rawLane, method, target string, body []byte) *http.Request {
	c.e.t.Helper()
	path, query, _ := strings.Cut(target, "?")
	req := protocol.Request{Method: method, Authority: testHost, Path: path, Query: query}
	if body != nil {
		req.ContentDigest = protocol.ContentDigest(body)
	}
	l.seq++
	p := protocol.Params{Created: c.e.clock.Now().Add(l.offset).Unix(), KeyID: protocol.KeyID{Lane: l.lane, Epoch: l.epoch}, Nonce: l.seq}
	sk := protocol.SignKey(&l.key)
	in, sig, err := protocol.NewSigner(&sk).Sign(&req, &p)
	if err != nil {
		c.e.t.Fatal(err)
	}
	r := c.newRequest(method, target, body)
	r.Header.Set("Signature-Input", in)
	r.Header.Set("Signature", sig)
	if body != nil {
		r.Header.Set("Content-Digest", req.ContentDigest)
	}
	return r
}

// rotateRaw rotates the raw lane; it returns the response and, on success, the new key is
// installed. pub fixes the client's key pair when non-nil (for retries).
func (c *client) rotateRaw(l *rawLane, eph *protocol.Ephemeral) *httptest.ResponseRecorder {
	c.e.t.Helper()
	cpub := eph.Public()
	w := c.do(c.signRaw(l, "POST", "/sv/rotate", pubBody(cpub)))
	if w.Code != 200 {
		return w
	}
	var rep struct {
		Pub     string
		Epoch   uint32
		Confirm string
	}
	json.Unmarshal(w.Body.Bytes(), &rep)
	var spub [32]byte
	copy(spub[:], mustB64u(c.e.t, rep.Pub))
	tr := protocol.RotateTranscript(l.lane, rep.Epoch, cpub, spub)
	k, err := protocol.Ratchet(&l.key, eph, spub, tr, l.lane, rep.Epoch)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if err := protocol.CheckConfirm(&k, tr, mustB64u(c.e.t, rep.Confirm)); err != nil {
		c.e.t.Fatal(err)
	}
	l.key, l.epoch = k, rep.Epoch
	return w
}

// spyStore records what the Manager hands the store.
type spyStore struct {
	server.Store
	mu       sync.Mutex
	sessions []*server.Session
	lanes    []*server.Lane
	calls    []string
}

func (s *spyStore) record(call string) {
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
}

func (s *spyStore) Create(ctx context.Context, sess *server.Session, l *server.Lane) error {
	s.mu.Lock()
	cs, cl := *sess, *l
	cs.ID = bytes.Clone(sess.ID)
	cl.Key = bytes.Clone(l.Key)
	s.sessions = append(s.sessions, &cs)
	s.lanes = append(s.lanes, &cl)
	s.calls = append(s.calls, "Create")
	s.mu.Unlock()
	return s.Store.Create(ctx, sess, l)
}

func (s *spyStore) AddLane(ctx context.Context, l *server.Lane) error {
	s.mu.Lock()
	cl := *l
	s.lanes = append(s.lanes, &cl)
	s.calls = append(s.calls, "AddLane")
	s.mu.Unlock()
	return s.Store.AddLane(ctx, l)
}

func (s *spyStore) UpdateLane(ctx context.Context, l *server.Lane, prev uint32) error {
	s.mu.Lock()
	cl := *l
	cl.Key, cl.PrevKey = bytes.Clone(l.Key), bytes.Clone(l.PrevKey)
	s.lanes = append(s.lanes, &cl)
	s.calls = append(s.calls, "UpdateLane")
	s.mu.Unlock()
	return s.Store.UpdateLane(ctx, l, prev)
}

func (s *spyStore) UserSessions(ctx context.Context, user string) ([]*server.Session, error) {
	s.record("UserSessions:" + user)
	return s.Store.UserSessions(ctx, user)
}

func (s *spyStore) Delete(ctx context.Context, id []byte, reason string) ([]protocol.LaneID, error) {
	s.record("Delete:" + protocol.SessionHandle(id) + ":" + reason)
	return s.Store.Delete(ctx, id, reason)
}

func (s *spyStore) Session(ctx context.Context, id []byte) (*server.Session, []protocol.LaneID, error) {
	s.record("Session")
	return s.Store.Session(ctx, id)
}

func (s *spyStore) ids() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]byte
	for _, x := range s.sessions {
		out = append(out, x.ID)
	}
	return out
}

func (s *spyStore) resetCalls() {
	s.mu.Lock()
	s.calls = nil
	s.mu.Unlock()
}

func (s *spyStore) callList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func withSpy(sp **spyStore) envOpt {
	return func(c *server.Config) {
		*sp = &spyStore{Store: c.Store}
		c.Store = *sp
	}
}

// encodings returns the forms in which secret bytes could leak into text.
func encodings(b []byte) []string {
	hexs := make([]byte, 0, 2*len(b))
	const hx = "0123456789abcdef"
	for _, c := range b {
		hexs = append(hexs, hx[c>>4], hx[c&15])
	}
	return []string{
		string(b), string(hexs), strings.ToUpper(string(hexs)),
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
	}
}

// leaks reports which of the secrets (by name) appear in text in any encoding.
func leaks(text string, secrets map[string][]byte) []string {
	var out []string
	for name, s := range secrets {
		for _, enc := range encodings(s) {
			if enc != "" && strings.Contains(text, enc) {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// failStore fails every call while fail is set.
type failStore struct {
	server.Store
	fail atomic.Bool
}

var errDown = errors.New("teststore: connection refused")

func (f *failStore) Create(ctx context.Context, s *server.Session, l *server.Lane) error {
	if f.fail.Load() {
		return errDown
	}
	return f.Store.Create(ctx, s, l)
}

func (f *failStore) Lane(ctx context.Context, id protocol.LaneID) (*server.Lane, *server.Session, error) {
	if f.fail.Load() {
		return nil, nil, errDown
	}
	return f.Store.Lane(ctx, id)
}

func (f *failStore) Seen(ctx context.Context, id protocol.LaneID, seq uint64) error {
	if f.fail.Load() {
		return errDown
	}
	return f.Store.Seen(ctx, id, seq)
}

func (f *failStore) UserSessions(ctx context.Context, user string) ([]*server.Session, error) {
	if f.fail.Load() {
		return nil, errDown
	}
	return f.Store.UserSessions(ctx, user)
}

func b64Decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func (f *failStore) Session(ctx context.Context, id []byte) (*server.Session, []server.LaneID, error) {
	if f.fail.Load() {
		return nil, nil, errDown
	}
	return f.Store.Session(ctx, id)
}
