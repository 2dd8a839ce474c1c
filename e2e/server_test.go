package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// StrictCSP is the Content-Security-Policy of the demo's pages (SECURITY.md,
// issue 4). The harness serves every response with it.
const StrictCSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// cspReportPath is where the browser POSTs violation reports of harness
// responses (report-uri; the devserver's own pages do not report here).
const cspReportPath = "/__e2e/csp-report"

// Env is what an application handler needs to know about the checkout.
type Env struct {
	Root     string // module root
	JSDir    string // js/
	WasmPath string // the vault.wasm the tests use (fresh: see findWasm)
}

// newAppHandler builds the application the tests run against: everything
// but the harness's own routes (/t/ pages, /__e2e/). harnessApp serves
// js/*.js at /sv/ and the wasm at /sv/vault.wasm, which is enough for the
// page client and the worker to boot (there is no session server behind it);
// demo_test.go sets it to the real demo app (internal/demo) instead.
//
// The returned func, if not nil, runs when the tests end.
var newAppHandler = harnessApp

// Server is the HTTP server of the tests, started once in TestMain. It
// routes /t/ to the pages in testdata/pages, /__e2e/ to the harness (the CSP
// report endpoint; /__e2e/echo, which answers with the request's body and its
// X-Echo header; /__e2e/ws, a WebSocket that answers each message with
// "echo:" + it), paths a test registered with Handle to the test, and
// everything else to the application. It records every request it gets.
// Safe for concurrent use.
type Server struct {
	URL string

	srv     *httptest.Server
	app     http.Handler
	stopApp func()
	pages   http.Handler

	mu         sync.Mutex
	routes     map[string]http.Handler
	requests   []*CapturedRequest
	cspReports []string
}

// CapturedRequest is a request as the server received it, body included,
// for assertions and for replay from outside the browser.
type CapturedRequest struct {
	Time   time.Time
	Method string
	URL    string // absolute
	Header http.Header
	Body   []byte
}

// startServer starts the test server on a loopback port.
func startServer(env Env) (*Server, error) {
	app, stop, err := newAppHandler(env)
	if err != nil {
		return nil, fmt.Errorf("building the application handler: %w", err)
	}
	s := &Server{
		app:     app,
		stopApp: stop,
		pages:   http.StripPrefix("/t/", http.FileServer(http.Dir(filepath.Join("testdata", "pages")))),
		routes:  make(map[string]http.Handler),
	}
	s.srv = httptest.NewServer(s)
	s.URL = s.srv.URL
	return s, nil
}

// Close stops the server and the application.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
	if s.stopApp != nil {
		s.stopApp()
	}
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.mu.Lock()
	s.requests = append(s.requests, &CapturedRequest{
		Time: time.Now(), Method: r.Method, URL: s.URL + r.URL.RequestURI(), Header: r.Header.Clone(), Body: body,
	})
	h := s.route(r.URL.Path)
	s.mu.Unlock()

	switch {
	case r.URL.Path == cspReportPath:
		s.mu.Lock()
		s.cspReports = append(s.cspReports, string(body))
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/__e2e/echo":
		setHarnessHeaders(w)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Echo", r.Header.Get("X-Echo"))
		w.Write(body)
	case r.URL.Path == "/__e2e/ws":
		wsEcho(w, r)
	case h != nil:
		h.ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, "/t/"):
		setHarnessHeaders(w)
		s.pages.ServeHTTP(w, r)
	default:
		s.app.ServeHTTP(w, r)
	}
}

// route returns the test handler for path: an exact pattern, or the longest
// pattern ending in "/" that prefixes it. Call with mu held.
func (s *Server) route(path string) http.Handler {
	if h, ok := s.routes[path]; ok {
		return h
	}
	var best string
	for p := range s.routes {
		if strings.HasSuffix(p, "/") && strings.HasPrefix(path, p) && len(p) > len(best) {
			best = p
		}
	}
	if best == "" {
		return nil
	}
	return s.routes[best]
}

// Handle serves a path (exact, or a prefix when it ends in "/") with h for
// the rest of the test; it wins over the pages and the application.
func (s *Server) Handle(t interface{ Cleanup(func()) }, pattern string, h http.Handler) {
	s.mu.Lock()
	s.routes[pattern] = h
	s.mu.Unlock()
	t.Cleanup(func() {
		s.mu.Lock()
		delete(s.routes, pattern)
		s.mu.Unlock()
	})
}

// Requests returns the requests received so far whose path starts with
// pathPrefix ("" for all).
func (s *Server) Requests(pathPrefix string) []*CapturedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*CapturedRequest
	for _, r := range s.requests {
		if strings.HasPrefix(strings.TrimPrefix(r.URL, s.URL), pathPrefix) {
			out = append(out, r)
		}
	}
	return out
}

// CSPReports returns the bodies of the violation reports the browser posted.
func (s *Server) CSPReports() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cspReports...)
}

// Replay sends a captured request again, byte for byte, from outside the
// browser (as an attacker holding a HAR file would), and returns the
// response with its body read.
func (s *Server) Replay(ctx context.Context, r *CapturedRequest) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		return nil, nil, err
	}
	req.Header = r.Header.Clone()
	req.Header.Del("Content-Length")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res, body, err
}

func setHarnessHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", StrictCSP+"; report-uri "+cspReportPath)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

// harnessApp is the default application: the real js/ files and the real
// wasm, under the strict CSP.
func harnessApp(env Env) (http.Handler, func(), error) {
	if _, err := os.Stat(filepath.Join(env.JSDir, "client.js")); err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	// Without it the browser's automatic request logs a 404 error.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /sv/vault.wasm", func(w http.ResponseWriter, r *http.Request) {
		if env.WasmPath == "" {
			http.Error(w, "no wasm", http.StatusNotFound)
			return
		}
		setHarnessHeaders(w)
		w.Header().Set("Content-Type", "application/wasm")
		http.ServeFile(w, r, env.WasmPath)
	})
	mux.HandleFunc("GET /sv/{file}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if !strings.HasSuffix(name, ".js") || strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		setHarnessHeaders(w)
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFile(w, r, filepath.Join(env.JSDir, name))
	})
	return mux, nil, nil
}

// wsEcho is a minimal RFC 6455 server: it echoes each text or binary
// message, prefixed with "echo:", until the client closes. Enough for the
// harness's WebSocket capture control; the session server has its own.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "websocket only", http.StatusBadRequest)
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(sum[:]))
	rw.Flush()
	for {
		op, msg, err := wsRead(rw.Reader)
		if err != nil || op == 8 {
			return
		}
		if op != 1 && op != 2 {
			continue
		}
		if err := wsWrite(rw.Writer, op, append([]byte("echo:"), msg...)); err != nil {
			return
		}
	}
}

func wsRead(r *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	op = h[0] & 0x0f
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame too large")
	}
	var mask [4]byte
	if h[1]&0x80 != 0 {
		if _, err = io.ReadFull(r, mask[:]); err != nil {
			return
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return op, payload, nil
}

func wsWrite(w *bufio.Writer, op byte, payload []byte) error {
	w.WriteByte(0x80 | op)
	switch n := len(payload); {
	case n < 126:
		w.WriteByte(byte(n))
	case n < 1<<16:
		w.WriteByte(126)
		binary.Write(w, binary.BigEndian, uint16(n))
	default:
		w.WriteByte(127)
		binary.Write(w, binary.BigEndian, uint64(n))
	}
	w.Write(payload)
	return w.Flush()
}
