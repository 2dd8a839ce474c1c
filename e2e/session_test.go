package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto"
	"github.com/chromedp/cdproto/audits"
	"github.com/chromedp/cdproto/cdp"
	jsonv2 "github.com/chromedp/cdproto/cdp/jsonv2"
	"github.com/chromedp/cdproto/heapprofiler"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// Session is one DevTools session the harness watches: a tab's page, or a
// target auto-attached under it (the vault's dedicated worker, an
// out-of-process iframe, a worker started by a worker). It satisfies
// cdp.Session, so the typed commands of cdproto work on it:
//
//	res, err := cdp.Call(ctx, s, runtime.Evaluate, runtime.EvaluateParams{Expression: "self.name"})
//
// Every method is safe for concurrent use.
type Session struct {
	ID     target.SessionID
	Target target.ID
	Type   string // "page", "worker", "iframe", ...
	URL    string // at attach time

	tab   *Tab
	tap   *tap
	child bool // auto-attached: chromedp does not know this session

	ready    chan struct{} // closed when its domains are on and it runs
	detached chan struct{} // closed when the target is gone

	mu     sync.Mutex
	subs   map[string]map[*subscription]struct{}
	chunks *bytes.Buffer // heap snapshot being taken
	gone   bool
}

var _ cdp.Session = (*Session)(nil)

func newSession(tab *Tab, id target.SessionID, tid target.ID, typ, url string, child bool) *Session {
	return &Session{
		ID: id, Target: tid, Type: typ, URL: url,
		tab: tab, tap: tab.tap, child: child,
		ready:    make(chan struct{}),
		detached: make(chan struct{}),
		subs:     make(map[string]map[*subscription]struct{}),
	}
}

// String names the session in log lines: "page" or "worker /sv/worker.js".
func (s *Session) String() string {
	if s.Type == "page" {
		return "page"
	}
	u := s.URL
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.IndexByte(u[i+3:], '/'); j >= 0 {
			u = u[i+3+j:]
		}
	}
	return s.Type + " " + u
}

// Call sends a command on the session and decodes its result into res. It
// satisfies cdp.Session.
func (s *Session) Call(ctx context.Context, method string, params, res any) error {
	ch, err := s.tap.send(ctx, s.ID, method, params)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return s.tap.wait(ctx, method, ch, res)
}

// Subscribe satisfies cdp.Session: events of the method, in order, until
// cancel or the end of the session.
func (s *Session) Subscribe(method string) (<-chan jsonv2.Value, func()) {
	sub := newSubscription()
	s.mu.Lock()
	if s.gone {
		sub.end()
	} else {
		if s.subs[method] == nil {
			s.subs[method] = make(map[*subscription]struct{})
		}
		s.subs[method][sub] = struct{}{}
	}
	s.mu.Unlock()
	return sub.out, func() {
		s.mu.Lock()
		delete(s.subs[method], sub)
		s.mu.Unlock()
		sub.stop()
	}
}

// Ready is closed once the session's domains are enabled and its target runs.
func (s *Session) Ready() <-chan struct{} { return s.ready }

// Detached is closed when the target has gone (a terminated worker, a closed tab).
func (s *Session) Detached() <-chan struct{} { return s.detached }

// Eval evaluates a JavaScript expression in the session's default context,
// awaits a promise it returns, and decodes the result (by value, as JSON)
// into out, which may be nil. A thrown exception or a rejected promise is an
// error carrying the exception's description.
//
// The expression itself runs whatever the CSP says (and reports no
// violation), but the code it runs is held to the CSP like the page's own
// script: eval and new Function inside it are refused and reported, as they
// would be for injected script.
func (s *Session) Eval(ctx context.Context, expr string, out any) error {
	res, err := cdp.Call(ctx, s, runtime.Evaluate, runtime.EvaluateParams{
		Expression:                  expr,
		ReturnByValue:               new(true),
		AwaitPromise:                new(true),
		AllowUnsafeEvalBlockedByCSP: new(false),
	})
	if err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return &JSError{Details: res.ExceptionDetails}
	}
	if out == nil || res.Result == nil {
		return nil
	}
	v := res.Result.Value
	if len(v) == 0 {
		v = jsonv2.Value("null")
	}
	return json.Unmarshal(v, out)
}

// JSError is an exception thrown (or a promise rejected) by evaluated code.
type JSError struct {
	Details *runtime.ExceptionDetails
}

func (e *JSError) Error() string {
	d := e.Details
	if d.Exception != nil && d.Exception.Description != "" {
		return "javascript: " + d.Exception.Description
	}
	if d.Exception != nil && len(d.Exception.Value) > 0 {
		return "javascript: " + d.Text + " " + string(d.Exception.Value)
	}
	return "javascript: " + d.Text
}

// setup enables the domains of an auto-attached target and lets it run. The
// target waits for us (waitForDebuggerOnStart), so nothing it logs or fetches
// escapes. Commands on one session run in order, so sending them all before
// waiting for any is safe; waiting for Network.enable before resuming can
// deadlock a worker.
func (s *Session) setup() {
	defer close(s.ready)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	type cmd struct {
		method   string
		params   any
		optional bool // not every target type has the domain
	}
	cmds := []cmd{
		{runtime.CommandEnable, nil, false},
		{log.CommandEnable, nil, true},
		{"Network.enable", networkEnableParams(), true},
		{audits.CommandEnable, nil, true},
		// Workers started by this target (nested workers) are watched too.
		{target.CommandSetAutoAttach, autoAttachParams(), true},
		{runtime.CommandRunIfWaitingForDebugger, nil, false},
	}
	chans := make([]<-chan *cdproto.Message, len(cmds))
	for i, c := range cmds {
		ch, err := s.tap.send(ctx, s.ID, c.method, c.params)
		if err != nil {
			s.tab.logf("[harness] %s: %s: %v", s, c.method, err)
			return
		}
		chans[i] = ch
	}
	for i, c := range cmds {
		if err := s.tap.wait(ctx, c.method, chans[i], nil); err != nil && !c.optional {
			s.tab.logf("[harness] %s: %v", s, err)
		}
	}
}

func autoAttachParams() target.SetAutoAttachParams {
	return target.SetAutoAttachParams{AutoAttach: true, WaitForDebuggerOnStart: true, Flatten: new(true)}
}

// handle runs on the reader goroutine for every event of the session: it
// must be quick and never wait for the browser.
func (s *Session) handle(m *cdproto.Message) {
	method := string(m.Method)
	switch {
	case method == "Target.attachedToTarget":
		var ev target.EventAttachedToTarget
		if s.decode(m, &ev) && ev.TargetInfo != nil {
			s.tab.attach(ev.SessionID, ev.TargetInfo)
		}
	case method == "Target.detachedFromTarget":
		var ev target.EventDetachedFromTarget
		if s.decode(m, &ev) {
			s.tab.detach(ev.SessionID)
		}
	case method == "Runtime.consoleAPICalled":
		var ev runtime.EventConsoleAPICalled
		if s.decode(m, &ev) {
			s.tab.addConsole(s, string(ev.Type), formatArgs(ev.Args), ev.StackTrace)
		}
	case method == "Runtime.exceptionThrown":
		var ev runtime.EventExceptionThrown
		if s.decode(m, &ev) && ev.ExceptionDetails != nil {
			s.tab.addConsole(s, "exception", (&JSError{Details: ev.ExceptionDetails}).Error(), ev.ExceptionDetails.StackTrace)
		}
	case method == "Log.entryAdded":
		var ev log.EventEntryAdded
		if s.decode(m, &ev) && ev.Entry != nil {
			e := ev.Entry
			text := e.Text
			if e.URL != "" {
				text += " (" + e.URL + ")"
			}
			s.tab.addConsole(s, "log."+string(e.Source)+"."+string(e.Level), text, nil)
		}
	case method == "Runtime.bindingCalled":
		var ev runtime.EventBindingCalled
		if s.decode(m, &ev) {
			switch ev.Name {
			case cspBinding:
				s.tab.addCSP(s.String() + " securitypolicyviolation " + ev.Payload)
			case messageBinding:
				s.tab.addMessage(ev.Payload)
			}
		}
	case method == "Audits.issueAdded":
		var ev audits.EventIssueAdded
		if s.decode(m, &ev) && ev.Issue != nil && ev.Issue.Details != nil && ev.Issue.Details.ContentSecurityPolicyIssueDetails != nil {
			d := ev.Issue.Details.ContentSecurityPolicyIssueDetails
			s.tab.addCSP(fmt.Sprintf("%s audits issue: %s blocked %q (directive %q, report-only %v)",
				s, d.ContentSecurityPolicyViolationType, d.BlockedURL, d.ViolatedDirective, d.IsReportOnly))
		}
	case method == "HeapProfiler.addHeapSnapshotChunk":
		var ev heapprofiler.EventAddHeapSnapshotChunk
		if s.decode(m, &ev) {
			s.mu.Lock()
			if s.chunks != nil {
				s.chunks.WriteString(ev.Chunk)
			}
			s.mu.Unlock()
		}
	case strings.HasPrefix(method, "Network."):
		s.tab.traffic.event(s, method, m.Params)
	}
	s.mu.Lock()
	for sub := range s.subs[method] {
		sub.push(m.Params)
	}
	s.mu.Unlock()
}

func (s *Session) decode(m *cdproto.Message, v any) bool {
	if err := jsonv2.Unmarshal(m.Params, v, chromedp.DefaultUnmarshalOptions); err != nil {
		s.tab.logf("[harness] %s: decoding %s: %v", s, m.Method, err)
		return false
	}
	return true
}

func (s *Session) isGone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone
}

// end marks the session gone and ends its subscriptions.
func (s *Session) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return
	}
	s.gone = true
	close(s.detached)
	for _, m := range s.subs {
		for sub := range m {
			sub.end()
		}
	}
	s.subs = nil
}

// formatArgs renders console arguments roughly as DevTools does.
func formatArgs(args []*runtime.RemoteObject) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		switch {
		case a == nil:
		case a.Type == "string" && len(a.Value) > 0:
			var s string
			if json.Unmarshal(a.Value, &s) == nil {
				parts = append(parts, s)
				continue
			}
			parts = append(parts, string(a.Value))
		case a.UnserializableValue != "":
			parts = append(parts, string(a.UnserializableValue))
		case a.Description != "":
			parts = append(parts, a.Description)
		case len(a.Value) > 0:
			parts = append(parts, string(a.Value))
		default:
			parts = append(parts, string(a.Type))
		}
	}
	return strings.Join(parts, " ")
}
