package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/chromedp/cdproto/cdp/jsonv2"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Exchange is one HTTP request and its response, or one WebSocket, as
// DevTools saw it from the page or from a worker.
type Exchange struct {
	Session   string // where the request was reported: "page", "worker /sv/worker.js"
	RequestID string
	Type      string // DevTools resource type: "Document", "Script", "Fetch", "XHR", "WebSocket", ...

	Method         string
	URL            string
	RequestHeaders map[string]string // as sent: the ExtraInfo headers (cookies included) over the renderer's view
	PostData       []byte

	Status          int
	ResponseHeaders map[string]string // as received, Set-Cookie included when DevTools has it
	Body            []byte            // decoded; fetched with Network.getResponseBody after loadingFinished
	BodyErr         string            // why Body is missing, if it is

	Frames []WSFrame // WebSocket frames, in order

	Done   bool   // loadingFinished or loadingFailed seen (or the socket closed)
	Failed string // loadingFailed's errorText

	session *Session
}

// WSFrame is one WebSocket frame.
type WSFrame struct {
	Sent   bool // by the browser
	Opcode int  // 1 text, 2 binary
	Data   []byte
}

// Traffic is a snapshot of a tab's network traffic: every request and
// response (headers, bodies) and WebSocket frame, of the page and of its
// workers.
type Traffic struct {
	Exchanges []*Exchange
	events    [][]byte // raw DevTools events, "== session method\n{params}"
}

// Blob returns all of the traffic as one byte string to search for secrets:
// the raw JSON of every Network event (every header, URL and cookie
// DevTools reported, JSON-escaped), then each decoded request body, response
// body and WebSocket payload as raw bytes.
func (tr *Traffic) Blob() []byte {
	var b bytes.Buffer
	for _, e := range tr.events {
		b.Write(e)
		b.WriteByte('\n')
	}
	for _, x := range tr.Exchanges {
		fmt.Fprintf(&b, "== %s %s %s %s\n", x.Session, x.Method, x.URL, x.RequestID)
		if len(x.PostData) > 0 {
			b.WriteString("-- request body\n")
			b.Write(x.PostData)
			b.WriteByte('\n')
		}
		if len(x.Body) > 0 {
			b.WriteString("-- response body\n")
			b.Write(x.Body)
			b.WriteByte('\n')
		}
		for _, f := range x.Frames {
			fmt.Fprintf(&b, "-- frame sent=%v opcode=%d\n", f.Sent, f.Opcode)
			b.Write(f.Data)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// Find returns the exchanges whose URL contains urlPart.
func (tr *Traffic) Find(urlPart string) []*Exchange {
	var out []*Exchange
	for _, x := range tr.Exchanges {
		if strings.Contains(x.URL, urlPart) {
			out = append(out, x)
		}
	}
	return out
}

// String lists the exchanges, one a line, for failure messages.
func (tr *Traffic) String() string {
	var b strings.Builder
	for _, x := range tr.Exchanges {
		fmt.Fprintf(&b, "%s: %s %s %s -> %d (%d bytes", x.Session, x.Type, x.Method, x.URL, x.Status, len(x.Body))
		if x.BodyErr != "" {
			fmt.Fprintf(&b, ", body: %s", x.BodyErr)
		}
		if len(x.Frames) > 0 {
			fmt.Fprintf(&b, ", %d frames", len(x.Frames))
		}
		if x.Failed != "" {
			fmt.Fprintf(&b, ", failed: %s", x.Failed)
		}
		b.WriteString(")\n")
	}
	return b.String()
}

// trafficLog records the Network events of a tab's sessions. event runs on
// the reader goroutine; bodies are fetched on goroutines of their own.
type trafficLog struct {
	tab *Tab

	mu     sync.Mutex
	events [][]byte
	order  []*Exchange
	byKey  map[network.RequestID]*Exchange
	bodies sync.WaitGroup
}

func newTrafficLog(tb *Tab) *trafficLog {
	return &trafficLog{tab: tb, byKey: make(map[network.RequestID]*Exchange)}
}

// exchange returns the exchange for a request ID, creating it if needed (an
// ExtraInfo event can come before requestWillBeSent). Call with mu held.
//
// The events of one request can arrive on different sessions: for the
// worker's main script, requestWillBeSent comes on the page and the response
// on the worker; the ExtraInfo events of a worker's requests come on the page.
// Request IDs are unique across the tab's sessions, so they alone are the key.
func (l *trafficLog) exchange(s *Session, id network.RequestID) *Exchange {
	x := l.byKey[id]
	if x == nil {
		x = &Exchange{Session: s.String(), RequestID: string(id), session: s,
			RequestHeaders: map[string]string{}, ResponseHeaders: map[string]string{}}
		l.byKey[id] = x
		l.order = append(l.order, x)
	}
	return x
}

func (l *trafficLog) event(s *Session, method string, params jsonv2.Value) {
	l.mu.Lock()
	defer l.mu.Unlock()
	raw := make([]byte, 0, len(params)+len(method)+32)
	raw = fmt.Appendf(raw, "== %s %s\n", s, method)
	l.events = append(l.events, append(raw, params...))

	dec := func(v any) bool {
		if err := jsonv2.Unmarshal(params, v, chromedp.DefaultUnmarshalOptions); err != nil {
			l.tab.logf("[harness] %s: decoding %s: %v", s, method, err)
			return false
		}
		return true
	}
	switch method {
	case "Network.requestWillBeSent":
		var ev network.EventRequestWillBeSent
		if !dec(&ev) || ev.Request == nil {
			return
		}
		x := l.exchange(s, ev.RequestID)
		if ev.RedirectResponse != nil && x.Method != "" {
			// The same ID continues after a redirect: keep the hop as an
			// exchange of its own and start a new one.
			setHeaders(x.ResponseHeaders, ev.RedirectResponse.Headers)
			x.Status = int(ev.RedirectResponse.Status)
			x.Done = true
			delete(l.byKey, ev.RequestID)
			x = l.exchange(s, ev.RequestID)
		}
		if x.Method == "" {
			x.Session, x.session = s.String(), s // created by an ExtraInfo event
		}
		x.Type = string(ev.Type)
		x.Method = ev.Request.Method
		x.URL = ev.Request.URL + ev.Request.URLFragment
		for k, v := range ev.Request.Headers {
			if _, ok := x.RequestHeaders[k]; !ok {
				x.RequestHeaders[k] = fmt.Sprint(v)
			}
		}
		for _, e := range ev.Request.PostDataEntries {
			x.PostData = append(x.PostData, e.Bytes...)
		}
		if ev.Request.HasPostData && len(ev.Request.PostDataEntries) == 0 {
			l.fetchPostData(s, x, ev.RequestID)
		}
	case "Network.requestWillBeSentExtraInfo":
		var ev network.EventRequestWillBeSentExtraInfo
		if dec(&ev) {
			setHeaders(l.exchange(s, ev.RequestID).RequestHeaders, ev.Headers)
		}
	case "Network.responseReceived":
		var ev network.EventResponseReceived
		if dec(&ev) && ev.Response != nil {
			x := l.exchange(s, ev.RequestID)
			if x.Type == "" {
				x.Type = string(ev.Type)
			}
			x.Status = int(ev.Response.Status)
			for k, v := range ev.Response.Headers {
				if _, ok := x.ResponseHeaders[k]; !ok {
					x.ResponseHeaders[k] = fmt.Sprint(v)
				}
			}
		}
	case "Network.responseReceivedExtraInfo":
		var ev network.EventResponseReceivedExtraInfo
		if dec(&ev) {
			x := l.exchange(s, ev.RequestID)
			setHeaders(x.ResponseHeaders, ev.Headers)
			if x.Status == 0 {
				x.Status = int(ev.StatusCode)
			}
		}
	case "Network.loadingFinished":
		var ev network.EventLoadingFinished
		if dec(&ev) {
			x := l.exchange(s, ev.RequestID)
			l.fetchBody(s, x, ev.RequestID)
		}
	case "Network.loadingFailed":
		var ev network.EventLoadingFailed
		if dec(&ev) {
			x := l.exchange(s, ev.RequestID)
			x.Done = true
			x.Failed = ev.ErrorText
			if ev.BlockedReason != "" {
				x.Failed += " (blocked: " + string(ev.BlockedReason) + ")"
			}
		}
	case "Network.webSocketCreated":
		var ev network.EventWebSocketCreated
		if dec(&ev) {
			x := l.exchange(s, ev.RequestID)
			x.Type, x.Method, x.URL = "WebSocket", "GET", ev.URL
		}
	case "Network.webSocketWillSendHandshakeRequest":
		var ev network.EventWebSocketWillSendHandshakeRequest
		if dec(&ev) && ev.Request != nil {
			setHeaders(l.exchange(s, ev.RequestID).RequestHeaders, ev.Request.Headers)
		}
	case "Network.webSocketHandshakeResponseReceived":
		var ev network.EventWebSocketHandshakeResponseReceived
		if dec(&ev) && ev.Response != nil {
			x := l.exchange(s, ev.RequestID)
			x.Status = int(ev.Response.Status)
			setHeaders(x.ResponseHeaders, ev.Response.Headers)
			setHeaders(x.RequestHeaders, ev.Response.RequestHeaders)
		}
	case "Network.webSocketFrameSent", "Network.webSocketFrameReceived":
		var ev network.EventWebSocketFrameSent // the two events have the same shape
		if dec(&ev) && ev.Response != nil {
			x := l.exchange(s, ev.RequestID)
			x.Frames = append(x.Frames, WSFrame{Sent: method == "Network.webSocketFrameSent", Opcode: int(ev.Response.Opcode), Data: ev.Response.PayloadData})
		}
	case "Network.webSocketClosed":
		var ev network.EventWebSocketClosed
		if dec(&ev) {
			l.exchange(s, ev.RequestID).Done = true
		}
	}
}

func setHeaders(dst map[string]string, h network.Headers) {
	for k, v := range h {
		dst[k] = fmt.Sprint(v)
	}
}

// fetchBody asks for a finished response's body, on the session that saw it
// finish. Call with mu held.
func (l *trafficLog) fetchBody(s *Session, x *Exchange, id network.RequestID) {
	l.bodies.Add(1)
	go func() {
		defer l.bodies.Done()
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		var res network.GetResponseBodyResult
		err := s.Call(ctx, network.CommandGetResponseBody, network.GetResponseBodyParams{RequestID: id}, &res)
		l.mu.Lock()
		defer l.mu.Unlock()
		x.Done = true
		if err != nil {
			x.BodyErr = trimErr(err)
			return
		}
		x.Body = res.Body
	}()
}

// fetchPostData asks for a request body DevTools left out of the event. Call
// with mu held.
func (l *trafficLog) fetchPostData(s *Session, x *Exchange, id network.RequestID) {
	l.bodies.Add(1)
	go func() {
		defer l.bodies.Done()
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		var res network.GetRequestPostDataResult
		err := s.Call(ctx, network.CommandGetRequestPostData, network.GetRequestPostDataParams{RequestID: id}, &res)
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil {
			l.tab.logf("[harness] %s: request body of %s: %v", s, x.URL, err)
			return
		}
		x.PostData = res.PostData
	}()
}

// Traffic waits (up to a few seconds) until no HTTP request of the tab is in
// flight and every body has been fetched, and returns a snapshot of all
// traffic so far. Open WebSockets do not count as in flight.
func (tb *Tab) Traffic() *Traffic {
	l := tb.traffic
	deadline := time.Now().Add(3 * time.Second)
	for {
		l.mu.Lock()
		var busy []string
		for _, x := range l.order {
			if !x.Done && x.Type != "WebSocket" && x.Method != "" && !x.session.isGone() {
				busy = append(busy, x.Session+" "+x.Method+" "+x.URL)
			}
		}
		l.mu.Unlock()
		if len(busy) == 0 {
			break
		}
		if time.Now().After(deadline) {
			tb.logf("[harness] traffic: still in flight: %v", busy)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { l.bodies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(callTimeout):
		tb.logf("[harness] response bodies still being fetched after %v", callTimeout)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tr := &Traffic{events: append([][]byte(nil), l.events...)}
	for _, x := range l.order {
		if x.Method == "" && x.URL == "" {
			continue // ExtraInfo of a request DevTools never reported
		}
		c := *x
		c.RequestHeaders = maps.Clone(x.RequestHeaders)
		c.ResponseHeaders = maps.Clone(x.ResponseHeaders)
		c.Frames = append([]WSFrame(nil), x.Frames...)
		tr.Exchanges = append(tr.Exchanges, &c)
	}
	return tr
}

// AssertTrafficClean is the whole traffic check with its control: the page
// sends a random value to /__e2e/echo (in a header and the body; it comes
// back in the response), the captured traffic must hold it, and every
// finding of secrets in the traffic is reported as a LEAK error. It returns
// the traffic.
func AssertTrafficClean(tb *Tab, secrets ...[]byte) *Traffic {
	tb.t.Helper()
	planted := randomSecret(32)
	h := hex.EncodeToString(planted)
	Eval[int](tb, `fetch("/__e2e/echo", {method: "POST", headers: {"X-Echo": "`+h+`"}, body: "`+h+`"}).then((r) => r.text()).then((t) => t.length)`)
	tr := tb.Traffic()
	blob := tr.Blob()
	if len(Find("traffic", blob, planted)) < 1 || len(tr.Find("/__e2e/echo")) == 0 {
		tb.t.Fatalf("positive control failed, the capture cannot be trusted: the echoed value is not in the traffic\n%s", tr)
	}
	for _, f := range Find("traffic", blob, secrets...) {
		tb.t.Errorf("LEAK: %s", f)
	}
	return tr
}
