package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/redistest"
	"github.com/sessionvault/sessionvault/internal/vault"
)

// TestSmoke starts the devserver (bolt store, real wasm module) and uses it as the browser
// would: the pages and assets with their headers, then a login and signed requests made by the
// worker's own state machine, then a restart on the same data directory.
func TestSmoke(t *testing.T) {
	wasm := os.Getenv("SV_WASM")
	if wasm == "" {
		wasm = filepath.Join("..", "..", "build", "vault.wasm")
	}
	if _, err := os.Stat(wasm); err != nil {
		t.Fatalf("no wasm module at %s: run make wasm (or set SV_WASM)", wasm)
	}
	data := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // one port for both runs: the policy binds the origin
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	base, stop := start(t, options{addr: addr, data: data, store: "bolt", wasm: wasm, rotateEvery: time.Minute, idle: time.Minute})

	for _, c := range []struct{ path, ctype, cache string }{
		{"/", "text/html; charset=utf-8", "no-store"},
		{"/admin", "text/html; charset=utf-8", "no-store"},
		{"/sv/worker.js", "text/javascript; charset=utf-8", "no-store"},
		{"/sv/client.js", "text/javascript; charset=utf-8", "no-cache"},
		{"/sv/vault.wasm", "application/wasm", "no-cache"},
		{"/static/app.js", "text/javascript; charset=utf-8", ""},
	} {
		res, err := http.Get(base + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("%s: %d (%d bytes)", c.path, res.StatusCode, len(body))
		}
		if got := res.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("%s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if c.cache != "" && res.Header.Get("Cache-Control") != c.cache {
			t.Errorf("%s: Cache-Control %q, want %q", c.path, res.Header.Get("Cache-Control"), c.cache)
		}
		csp := res.Header.Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self' 'wasm-unsafe-eval'", "worker-src 'self'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", c.path, csp, want)
			}
		}
	}

	// The boot script asks for the module by content hash, and that URL is cached as immutable.
	res, err := http.Get(base + "/sv/worker.js")
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := regexp.MustCompile(`new URL\("(vault\.wasm\?v=[A-Za-z0-9_-]{22})", import\.meta\.url\)`).FindSubmatch(boot)
	if m == nil {
		t.Fatalf("the boot script names no versioned module:\n%s", boot)
	}
	if res, err = http.Get(base + "/sv/" + string(m[1])); err != nil {
		t.Fatal(err)
	}
	module, _ := io.ReadAll(res.Body) // the client undoes the gzip
	res.Body.Close()
	want, _ := os.ReadFile(wasm)
	if res.StatusCode != 200 || !bytes.Equal(module, want) || res.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Fatalf("%s: %d, %d bytes (want the %d of %s), Cache-Control %q", m[1], res.StatusCode, len(module), len(want), wasm, res.Header.Get("Cache-Control"))
	}

	v := login(t, base, "alice")
	res = signed(t, v, base, "GET", "/api/profile", nil)
	var prof struct{ User string }
	json.NewDecoder(res.Body).Decode(&prof)
	res.Body.Close()
	if res.StatusCode != 200 || prof.User != "alice" {
		t.Fatalf("profile: %d %+v", res.StatusCode, prof)
	}
	if res := signed(t, v, base, "POST", "/api/notes", []byte(`{"text":"hi"}`)); res.StatusCode != 200 {
		t.Fatalf("notes: %d", res.StatusCode)
	}
	if res := signed(t, v, base, "GET", "/admin/api/sessions", nil); res.StatusCode != 403 {
		t.Fatalf("a user reached the admin API: %d", res.StatusCode)
	}
	bad, _ := http.Post(base+"/sv/login", "application/json", strings.NewReader(`{"pub":"AAAA","credentials":{"user":"alice","password":"nope"}}`))
	if bad.StatusCode/100 != 4 {
		t.Fatalf("bad login: %d", bad.StatusCode)
	}

	// A request accepted before the restart, kept by an observer.
	pre := signedRequest(t, v, base, base, "GET", "/api/profile", nil)
	if res, err := http.DefaultClient.Do(pre); err != nil || res.StatusCode != 200 {
		t.Fatalf("before restart: %v %v", res, err)
	}

	// Restart on the same data directory: the bolt store and the store key persist.
	stop()
	base, stop = start(t, options{addr: addr, data: data, store: "bolt", wasm: wasm, rotateEvery: time.Minute, idle: time.Minute})
	defer stop()
	// The session goes on at once (a clean shutdown saved the replay windows), and a request
	// accepted before the restart, replayed after it, is refused.
	if res := signed(t, v, base, "GET", "/api/profile", nil); res.StatusCode != 200 {
		t.Fatalf("right after restart: %d %s", res.StatusCode, res.Header.Get("Sv-Error"))
	}
	again, _ := http.NewRequest("GET", base+"/api/profile", nil)
	again.Header = pre.Header.Clone()
	res, err = http.DefaultClient.Do(again)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 || res.Header.Get("Sv-Error") != "replay" {
		t.Fatalf("replay across the restart: %d %s", res.StatusCode, res.Header.Get("Sv-Error"))
	}
	if v.Status().State != vault.StateActive {
		t.Fatal("a refused replay must not end the session")
	}
}

func start(t *testing.T, o options) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- run(ctx, o, logger, ready) }()
	select {
	case addr := <-ready:
		return "http://" + addr, func() { cancel(); <-done }
	case err := <-done:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("devserver did not start")
	}
	return "", nil
}

func login(t *testing.T, base, user string) *vault.Vault {
	t.Helper()
	v := vault.New(rand.Reader, time.Now)
	if err := v.BindPolicy(vault.Policy{Self: base}); err != nil {
		t.Fatal(err)
	}
	pub, err := v.Begin(protocol.HandshakeLogin)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{
		"pub":         base64.RawURLEncoding.EncodeToString(pub[:]),
		"credentials": map[string]string{"user": user, "password": user + "-password"},
	})
	res, err := http.Post(base+"/sv/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var r struct {
		Lane, Pub, Confirm  string
		ServerTime, Expires int64
	}
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil || res.StatusCode != 200 {
		t.Fatalf("login: %d %v", res.StatusCode, err)
	}
	var h vault.Handshake
	dec := func(dst []byte, s string) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) != len(dst) {
			t.Fatalf("login reply field %q", s)
		}
		copy(dst, b)
	}
	dec(h.Lane[:], r.Lane)
	dec(h.ServerPub[:], r.Pub)
	h.Confirm = make([]byte, 32)
	dec(h.Confirm, r.Confirm)
	h.ServerTime, h.Expires = r.ServerTime, r.Expires
	if err := v.Finish(h); err != nil {
		t.Fatal(err)
	}
	return v
}

func signed(t *testing.T, v *vault.Vault, base, method, path string, body []byte) *http.Response {
	t.Helper()
	s, err := v.Sign(vault.SignRequest{Method: method, Origin: base, Path: path, Body: body, HasBody: body != nil})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
	req.Header.Set("Signature-Input", s.SignatureInput)
	req.Header.Set("Signature", s.Signature)
	if s.ContentDigest != "" {
		req.Header.Set("Content-Digest", s.ContentDigest)
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestSmokeRedis runs two devserver nodes on one real redis-server (started by the test) with a
// shared store key file, as README.md's "Two nodes" does, behind a pretend load balancer that
// keeps the Host: a login on node 1 works on node 2, a request accepted by node 1 is refused
// as a replay by node 2, and a logout on node 2 ends the session on node 1.
func TestSmokeRedis(t *testing.T) {
	wasm := os.Getenv("SV_WASM")
	if wasm == "" {
		wasm = filepath.Join("..", "..", "build", "vault.wasm")
	}
	if _, err := os.Stat(wasm); err != nil {
		t.Fatalf("no wasm module at %s: run make wasm (or set SV_WASM)", wasm)
	}
	rs := redistest.Own(t, false)
	keyFile := filepath.Join(t.TempDir(), "shared-store.key")
	o := options{store: rs.URL(), storeKeyFile: keyFile, wasm: wasm, rotateEvery: time.Minute, idle: time.Minute}
	o1, o2 := o, o
	o1.addr, o1.data = "127.0.0.1:0", t.TempDir()
	o2.addr, o2.data = "127.0.0.1:0", t.TempDir()
	base1, stop1 := start(t, o1)
	defer stop1()
	base2, stop2 := start(t, o2)
	defer stop2()
	if _, err := os.Stat(filepath.Join(o1.data, "store.key")); err == nil {
		t.Error("with -store-key-file, a key was made in the data directory")
	}

	v := login(t, base1, "alice")
	if res := signedVia(t, v, base1, base2, "GET", "/api/profile", nil); res.StatusCode != 200 {
		t.Fatalf("node 2, a session of node 1: %d %s", res.StatusCode, res.Header.Get("Sv-Error"))
	}
	req := signedRequest(t, v, base1, base1, "POST", "/api/notes", []byte(`{"text":"once"}`))
	replay := req.Clone(t.Context())
	replay.URL.Host = strings.TrimPrefix(base2, "http://")
	replay.Body = io.NopCloser(strings.NewReader(`{"text":"once"}`))
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("node 1: %v %v", res, err)
	}
	res, err := http.DefaultClient.Do(replay)
	if err != nil || res.StatusCode != 401 || res.Header.Get("Sv-Error") != "replay" {
		t.Fatalf("replay on node 2: %v %v", res, err)
	}
	if res := signedVia(t, v, base1, base2, "POST", "/sv/logout", nil); res.StatusCode != 200 {
		t.Fatalf("logout on node 2: %d %s", res.StatusCode, res.Header.Get("Sv-Error"))
	}
	v2 := login(t, base1, "bob")
	if res := signedVia(t, v2, base1, base1, "GET", "/api/profile", nil); res.StatusCode != 200 {
		t.Fatalf("another session on node 1: %d", res.StatusCode)
	}
	if res := signed(t, v, base1, "GET", "/api/profile", nil); res.StatusCode != 401 || res.Header.Get("Sv-Error") != "logout" {
		t.Fatalf("node 1 after a logout on node 2: %d %s", res.StatusCode, res.Header.Get("Sv-Error"))
	}
}

// signedRequest signs a request for origin and addresses it to node, with the Host of origin
// (what a load balancer in front of the nodes forwards).
func signedRequest(t *testing.T, v *vault.Vault, origin, node, method, path string, body []byte) *http.Request {
	t.Helper()
	s, err := v.Sign(vault.SignRequest{Method: method, Origin: origin, Path: path, Body: body, HasBody: body != nil})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, node+path, bytes.NewReader(body))
	req.Host = strings.TrimPrefix(origin, "http://")
	req.Header.Set("Signature-Input", s.SignatureInput)
	req.Header.Set("Signature", s.Signature)
	if s.ContentDigest != "" {
		req.Header.Set("Content-Digest", s.ContentDigest)
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func signedVia(t *testing.T, v *vault.Vault, origin, node, method, path string, body []byte) *http.Response {
	t.Helper()
	res, err := http.DefaultClient.Do(signedRequest(t, v, origin, node, method, path, body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}
