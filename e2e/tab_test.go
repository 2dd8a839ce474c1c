package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// Timeouts of the helpers. The whole package must stay well under a minute.
const (
	callTimeout = 15 * time.Second // one helper call (navigate, evaluate, snapshot)
	waitTimeout = 10 * time.Second // WaitFor and Worker
)

// Tab is a browser tab of one test, in a fresh browser context (its own
// cookies, storage and cache, like an incognito window) or in another tab's
// (Sibling), with everything the harness records about it: console and log lines of the page and of its workers
// (also sent to t.Log), CSP violations, and all network traffic.
//
// Methods that take no context fail the test on error (t.Fatal), so call them
// from the test's goroutine. The recorders are safe for concurrent use.
type Tab struct {
	t      *testing.T
	label  string          // "" for a test's first tab, "[tab 2] " for the next
	ctx    context.Context // chromedp context of the tab
	cancel context.CancelFunc
	tap    *tap
	page   *Session

	traffic *trafficLog

	mu       sync.Mutex
	sessions []*Session    // page first, then auto-attached targets in order
	changed  chan struct{} // closed and replaced when sessions change
	console  []ConsoleEntry
	csp      []string
	messages [][]byte // what the page read from its workers, see WorkerMessages
	closed   bool     // after cleanup: no more t.Log

	cspReportsBefore int // server CSP reports that came before this tab
}

// ConsoleEntry is one console call, uncaught exception or browser log entry.
type ConsoleEntry struct {
	Source string // "page", "worker /sv/worker.js", ...
	Level  string // "log", "error", "warning", "exception", "log.security.error", ...
	Text   string
}

func (e ConsoleEntry) String() string { return "[" + e.Source + " " + e.Level + "] " + e.Text }

// IsError reports whether the entry is an error, a failed assertion or an
// uncaught exception.
func (e ConsoleEntry) IsError() bool {
	return e.Level == "error" || e.Level == "assert" || e.Level == "exception" || strings.HasSuffix(e.Level, ".error")
}

// cspBinding is the name of the binding through which the injected listener
// reports securitypolicyviolation events.
const cspBinding = "__svE2ECSPViolation"

// cspListener runs in every document of the tab before its own scripts.
const cspListener = `addEventListener("securitypolicyviolation", (e) => {
  try {
    globalThis.` + cspBinding + `(JSON.stringify({directive: e.effectiveDirective || e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber, sample: e.sample, disposition: e.disposition}));
  } catch {}
}, true);`

// tabCount numbers the tabs of each test, for log lines.
var tabCount sync.Map // *testing.T -> *atomic.Int32

// messageBinding is the name of the binding through which the injected
// script reports every message the page reads from a worker.
const messageBinding = "__svE2EWorkerMessage"

// messageTap runs in every document of the tab before its own scripts. It
// wraps the MessageEvent.prototype.data getter: the first time page code reads
// the data of a message from a Worker, the data goes to the harness, with
// its typed arrays and ArrayBuffers as bytes (heap snapshots do not hold
// those). It changes nothing the page can observe but the getter's identity.
const messageTap = `(() => {
  const W = globalThis.Worker;
  const d = Object.getOwnPropertyDescriptor(MessageEvent.prototype, "data");
  if (!W || !d || !d.get) return;
  const get = d.get, seen = new WeakSet();
  const hex = (u) => { let s = ""; for (const b of u) s += (b < 16 ? "0" : "") + b.toString(16); return s; };
  const ser = (v) => {
    const bytes = [], strings = [], memo = new Map();
    const walk = (x, depth) => {
      if (typeof x === "string") { strings.push(x); return x; }
      if (x === null || typeof x !== "object") return typeof x === "bigint" ? String(x) : x;
      if (memo.has(x)) return "$seen";
      memo.set(x, true);
      if (x instanceof ArrayBuffer || (typeof SharedArrayBuffer === "function" && x instanceof SharedArrayBuffer)) { bytes.push(hex(new Uint8Array(x))); return "$bytes#" + (bytes.length - 1); }
      if (ArrayBuffer.isView(x)) { bytes.push(hex(new Uint8Array(x.buffer, x.byteOffset, x.byteLength))); return "$bytes#" + (bytes.length - 1); }
      if (depth > 32) return "$deep";
      if (x instanceof Map) return {$map: Array.from(x, ([k, y]) => [walk(k, depth + 1), walk(y, depth + 1)])};
      if (x instanceof Set) return {$set: Array.from(x, (y) => walk(y, depth + 1))};
      if (x instanceof Error) return {$error: walk(String(x.name), depth + 1), message: walk(String(x.message), depth + 1)};
      const out = Array.isArray(x) ? [] : {};
      for (const k of Object.keys(x)) out[k] = walk(x[k], depth + 1);
      return out;
    };
    const tree = walk(v, 0);
    return JSON.stringify({tree, bytes, strings});
  };
  Object.defineProperty(MessageEvent.prototype, "data", {...d, get() {
    const v = get.call(this);
    try {
      if (!seen.has(this) && this.target instanceof W) {
        seen.add(this);
        globalThis.` + messageBinding + `(ser(v));
      }
    } catch {}
    return v;
  }});
})();`

// newTab opens a tab in a fresh browser context. It skips the test (or fails
// it, with SV_STRICT=1) when Chromium is missing. The tab closes, and its
// browser context is disposed of, when the test ends.
func newTab(t *testing.T) *Tab {
	t.Helper()
	requireBrowser(t)
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	return openTab(t, ctx, cancel)
}

// Sibling opens another tab in tb's browser context: it shares cookies,
// storage and cache with tb, like a second tab of the same user (for the
// reload, new-tab and join tests). It closes when the test ends.
func (tb *Tab) Sibling() *Tab {
	tb.t.Helper()
	ctx, cancel := chromedp.NewContext(tb.ctx)
	return openTab(tb.t, ctx, cancel)
}

func openTab(t *testing.T, ctx context.Context, cancel context.CancelFunc) *Tab {
	t.Helper()
	n, _ := tabCount.LoadOrStore(t, new(atomic.Int32))
	label := ""
	if i := n.(*atomic.Int32).Add(1); i > 1 {
		label = fmt.Sprintf("[tab %d] ", i)
	}
	t.Cleanup(func() { tabCount.Delete(t) })
	tb := &Tab{label: label, t: t, ctx: ctx, cancel: cancel, tap: alloc.tap, changed: make(chan struct{}), cspReportsBefore: len(srv.CSPReports())}
	tb.traffic = newTrafficLog(tb)
	t.Cleanup(tb.close)

	// The first Run creates and attaches the target. It binds the target's
	// life to the context it gets, so give it the tab's own context, and
	// bound the wait from outside.
	errc := make(chan error, 1)
	go func() { errc <- chromedp.Do(ctx) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("opening a tab: %v", err)
		}
	case <-time.After(callTimeout):
		t.Fatalf("opening a tab: no answer from the browser in %v", callTimeout)
	}

	c := chromedp.FromContext(ctx)
	tb.page = newSession(tb, c.Target.SessionID, c.Target.TargetID, "page", "about:blank", false)
	tb.sessions = []*Session{tb.page}
	tb.tap.register(tb.page)
	close(tb.page.ready)

	cctx, ccancel := context.WithTimeout(ctx, callTimeout)
	defer ccancel()
	p := tb.page
	steps := []struct {
		method string
		params any
	}{
		// chromedp enabled Runtime, Log and Network; enable Network again to
		// keep request bodies in the events.
		{"Network.enable", networkEnableParams()},
		{"Audits.enable", nil},
		{runtime.CommandAddBinding, runtime.AddBindingParams{Name: cspBinding}},
		{runtime.CommandAddBinding, runtime.AddBindingParams{Name: messageBinding}},
		{page.CommandAddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspListener}},
		{page.CommandAddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: messageTap}},
		// Pause every new worker until its console, log and network
		// domains are on (Session.setup resumes it).
		{target.CommandSetAutoAttach, autoAttachParams()},
	}
	for _, s := range steps {
		if err := p.Call(cctx, s.method, s.params, nil); err != nil {
			t.Fatalf("setting up the tab: %v", err)
		}
	}
	return tb
}

func networkEnableParams() network.EnableParams {
	return network.EnableParams{MaxPostDataSize: new(int64(64 << 20))}
}

// close closes the tab and stops its logging. It runs as a t.Cleanup.
func (tb *Tab) close() {
	// Closing the target detaches its sessions; give the browser a moment to
	// say so, then forget them whatever it said.
	done := make(chan struct{})
	go func() { tb.cancel(); close(done) }()
	select {
	case <-done:
	case <-time.After(callTimeout):
		tb.logf("[harness] closing the tab timed out")
	}
	tb.mu.Lock()
	sessions := tb.sessions
	tb.closed = true
	tb.mu.Unlock()
	for _, s := range sessions {
		tb.tap.unregister(s.ID)
		s.end()
	}
}

func (tb *Tab) logf(format string, args ...any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if !tb.closed {
		tb.t.Logf(tb.label+format, args...)
	}
}

// Ctx returns the tab's chromedp context, for chromedp actions:
//
//	chromedp.Run(tb.Ctx(), chromedp.Text(chromedp.ID("result")))
//
// Give a call a timeout with context.WithTimeout(tb.Ctx(), ...); never cancel
// the tab's context itself.
func (tb *Tab) Ctx() context.Context { return tb.ctx }

// Page returns the page's session.
func (tb *Tab) Page() *Session { return tb.page }

// URL resolves a path against the test server ("/t/smoke.html"); an absolute
// URL is returned as is.
func URL(path string) string {
	if strings.Contains(path, "://") {
		return path
	}
	return srv.URL + path
}

// Navigate loads a page (a path on the test server, or a URL) and waits for
// its load event.
func (tb *Tab) Navigate(path string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, callTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(URL(path))); err != nil {
		tb.t.Fatalf("navigating to %s: %v", path, err)
	}
}

// Open navigates to path and waits until readyExpr is truthy in the page.
func (tb *Tab) Open(path, readyExpr string) {
	tb.t.Helper()
	tb.Navigate(path)
	tb.WaitFor(readyExpr)
}

// WaitFor polls a JavaScript expression in the page until it is truthy,
// failing the test after waitTimeout. It polls from Go with Runtime.evaluate,
// not with chromedp.Poll, whose new Function() the page's CSP forbids (and
// reports as a violation).
func (tb *Tab) WaitFor(expr string) {
	tb.t.Helper()
	if err := tb.page.WaitFor(tb.ctx, expr, waitTimeout); err != nil {
		tb.t.Fatalf("%v\n%s", err, tb.recentConsole(15))
	}
}

// WaitFor polls a JavaScript expression in the session until it is truthy.
func (s *Session) WaitFor(ctx context.Context, expr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last any
	var lastErr error
	for {
		var ok bool
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		err := s.Eval(cctx, "!!("+expr+")", &ok)
		ccancel()
		if err == nil && ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			_ = s.Eval(context.Background(), expr, &last) // best effort, for the message
			return fmt.Errorf("%s: waiting for %s: not true after %v (value %v, last error %v)", s, expr, timeout, last, lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Eval evaluates an expression in the page (awaiting a promise) and returns
// its value decoded as T; it fails the test on an exception.
func Eval[T any](tb *Tab, expr string) T {
	tb.t.Helper()
	return EvalIn[T](tb, tb.page, expr)
}

// EvalIn is Eval in any session of the tab, such as the worker's:
//
//	keys := EvalIn[[]string](tb, tb.Worker("/sv/worker.js"), "Object.keys(self)")
func EvalIn[T any](tb *Tab, s *Session, expr string) T {
	tb.t.Helper()
	var v T
	ctx, cancel := context.WithTimeout(tb.ctx, callTimeout)
	defer cancel()
	if err := s.Eval(ctx, expr, &v); err != nil {
		tb.t.Fatalf("evaluating %s in %s: %v", shorten(expr, 200), s, err)
	}
	return v
}

// EvalErr evaluates an expression in a session and returns the error, for
// tests that expect the expression to throw.
func (tb *Tab) EvalErr(s *Session, expr string) error {
	ctx, cancel := context.WithTimeout(tb.ctx, callTimeout)
	defer cancel()
	return s.Eval(ctx, expr, nil)
}

// Worker waits for a dedicated worker (or another auto-attached target) whose
// URL contains urlPart, ready for commands, and returns its session.
func (tb *Tab) Worker(urlPart string) *Session {
	tb.t.Helper()
	deadline := time.After(waitTimeout)
	for {
		tb.mu.Lock()
		var found *Session
		for _, s := range tb.sessions[1:] {
			if strings.Contains(s.URL, urlPart) && !s.gone {
				found = s
			}
		}
		changed := tb.changed
		tb.mu.Unlock()
		if found != nil {
			select {
			case <-found.ready:
				return found
			case <-deadline:
				tb.t.Fatalf("worker %s attached but did not become ready in %v", found, waitTimeout)
			}
		}
		select {
		case <-changed:
		case <-deadline:
			tb.t.Fatalf("no worker with a URL containing %q in %v; sessions: %v\n%s", urlPart, waitTimeout, tb.Sessions(), tb.recentConsole(15))
		}
	}
}

// Sessions returns the page's session and those of every target attached
// under it so far (gone ones included).
func (tb *Tab) Sessions() []*Session {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]*Session(nil), tb.sessions...)
}

// attach registers an auto-attached target (reader goroutine).
func (tb *Tab) attach(id target.SessionID, info *target.Info) {
	s := newSession(tb, id, info.TargetID, info.Type, info.URL, true)
	tb.tap.register(s)
	tb.mu.Lock()
	tb.sessions = append(tb.sessions, s)
	close(tb.changed)
	tb.changed = make(chan struct{})
	closed := tb.closed
	tb.mu.Unlock()
	if closed {
		return
	}
	tb.logf("[harness] attached %s", s)
	go s.setup()
}

// detach forgets a target that went away (reader goroutine).
func (tb *Tab) detach(id target.SessionID) {
	tb.mu.Lock()
	var s *Session
	for _, x := range tb.sessions {
		if x.ID == id {
			s = x
		}
	}
	if s != nil {
		close(tb.changed)
		tb.changed = make(chan struct{})
	}
	tb.mu.Unlock()
	if s == nil {
		return
	}
	tb.tap.unregister(id)
	s.end()
	tb.logf("[harness] detached %s", s)
}

func (tb *Tab) addConsole(s *Session, level, text string, st *runtime.StackTrace) {
	e := ConsoleEntry{Source: s.String(), Level: level, Text: text}
	if st != nil && len(st.CallFrames) > 0 && (e.IsError() || level == "warning") {
		f := st.CallFrames[0]
		e.Text += fmt.Sprintf(" (at %s:%d:%d)", f.URL, f.LineNumber+1, f.ColumnNumber+1)
	}
	tb.mu.Lock()
	tb.console = append(tb.console, e)
	tb.mu.Unlock()
	tb.logf("%s", e)
	if strings.Contains(text, "Content Security Policy") {
		tb.addCSP(s.String() + " console: " + text)
	}
}

func (tb *Tab) addCSP(v string) {
	tb.mu.Lock()
	tb.csp = append(tb.csp, v)
	tb.mu.Unlock()
	tb.logf("[CSP violation] %s", v)
}

// Console returns every console call, uncaught exception and log entry of
// the page and its workers so far.
func (tb *Tab) Console() []ConsoleEntry {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]ConsoleEntry(nil), tb.console...)
}

// ConsoleErrors returns the console entries that are errors or exceptions.
func (tb *Tab) ConsoleErrors() []ConsoleEntry {
	var out []ConsoleEntry
	for _, e := range tb.Console() {
		if e.IsError() {
			out = append(out, e)
		}
	}
	return out
}

func (tb *Tab) recentConsole(n int) string {
	c := tb.Console()
	if len(c) > n {
		c = c[len(c)-n:]
	}
	var b strings.Builder
	b.WriteString("recent console:")
	for _, e := range c {
		b.WriteString("\n  " + e.String())
	}
	return b.String()
}

// addMessage records one message the page read from a worker (reader
// goroutine): the serialized tree, then each typed array's raw bytes, then
// each string value (as UTF-8, and as latin1 bytes when it fits).
func (tb *Tab) addMessage(payload string) {
	var m struct {
		Tree    json.RawMessage
		Bytes   []string
		Strings []string
	}
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		tb.logf("[harness] worker message: %v", err)
		return
	}
	b := append([]byte(nil), m.Tree...)
	for _, h := range m.Bytes {
		raw, err := hex.DecodeString(h)
		if err != nil {
			tb.logf("[harness] worker message: %v", err)
		}
		b = append(append(b, "\n\x00$bytes\x00"...), raw...)
	}
	for _, s := range m.Strings {
		b = append(append(b, "\n\x00$string\x00"...), s...)
		if l1, ok := latin1(s); ok && l1 != s {
			b = append(append(b, "\n\x00$latin1\x00"...), l1...)
		}
	}
	tb.mu.Lock()
	tb.messages = append(tb.messages, b)
	tb.mu.Unlock()
}

// latin1 returns s with one byte per character, if every character is below
// 0x100.
func latin1(s string) (string, bool) {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return "", false
		}
		b = append(b, byte(r))
	}
	return string(b), true
}

// WorkerMessages returns everything the page has read from its workers so far
// (every reply and event of the vault worker, response bodies included), as
// one haystack: each message's JSON tree, the raw bytes of its typed arrays
// and ArrayBuffers, and its strings as UTF-8 and latin1. This is the page's
// side of the channel, and the bytes a heap snapshot cannot show.
func (tb *Tab) WorkerMessages() Haystack {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var b []byte
	for _, m := range tb.messages {
		b = append(append(b, m...), "\n\x00\x00\n"...)
	}
	return Haystack{Name: fmt.Sprintf("page: %d messages from workers", len(tb.messages)), Bytes: b}
}

// CSPViolations returns every CSP violation seen so far in the tab: reported
// by the securitypolicyviolation listener injected into each document, as a
// DevTools issue (page or worker), as a console message, or POSTed by the
// browser to the harness server's report endpoint (harness pages only). A
// violation can show up in more than one of these.
//
// Violations are reported asynchronously: let the page settle (WaitFor a
// state) before asking.
func (tb *Tab) CSPViolations() []string {
	tb.mu.Lock()
	out := append([]string(nil), tb.csp...)
	tb.mu.Unlock()
	// The server's reports are not tied to a tab: tests that run in
	// parallel see each other's.
	for _, r := range srv.CSPReports()[tb.cspReportsBefore:] {
		out = append(out, "report-uri: "+r)
	}
	return out
}

// Call runs a typed DevTools command on a session of the tab and returns its
// result, failing the test on error:
//
//	res := Call(tb, tb.Page(), network.GetCookies, network.GetCookiesParams{})
func Call[P, R any](tb *Tab, s *Session, c cdp.Command[P, R], params P) R {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, callTimeout)
	defer cancel()
	r, err := cdp.Call(ctx, s, c, params)
	if err != nil {
		tb.t.Fatalf("%s: %v", s, err)
	}
	return r
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
