package demo

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
)

// auditLog is the slog handler of the demo's audit events: JSON lines to standard error and a
// ring of recent lines for the admin view. The server never logs key material, tickets or raw
// session IDs, so showing the lines is safe.
type auditLog struct {
	mu    *sync.Mutex
	ring  *[]auditEvent
	seq   *uint64
	max   int
	json  slog.Handler
	buf   *bytes.Buffer
	lines slog.Handler
}

type auditEvent struct {
	Seq  uint64 `json:"seq"`
	Line string `json:"line"`
}

func newAuditLog(max int, quiet bool) *auditLog {
	buf := &bytes.Buffer{}
	ring := []auditEvent{}
	var seq uint64
	var out io.Writer = os.Stderr
	if quiet {
		out = io.Discard
	}
	return &auditLog{
		mu: &sync.Mutex{}, ring: &ring, seq: &seq, max: max, buf: buf,
		json:  slog.NewJSONHandler(out, nil),
		lines: slog.NewJSONHandler(buf, nil),
	}
}

// Events returns the audit lines recorded so far (tests read them).
func (a *app) Events() []string {
	var out []string
	for _, e := range a.audit.since(0) {
		out = append(out, e.Line)
	}
	return out
}

func (a *auditLog) Enabled(ctx context.Context, l slog.Level) bool { return a.json.Enabled(ctx, l) }

func (a *auditLog) Handle(ctx context.Context, r slog.Record) error {
	a.json.Handle(ctx, r)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf.Reset()
	a.lines.Handle(ctx, r)
	*a.seq++
	*a.ring = append(*a.ring, auditEvent{Seq: *a.seq, Line: string(bytes.TrimSpace(a.buf.Bytes()))})
	if len(*a.ring) > a.max {
		*a.ring = (*a.ring)[len(*a.ring)-a.max:]
	}
	return nil
}

func (a *auditLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *a
	c.json = a.json.WithAttrs(attrs)
	c.lines = a.lines.WithAttrs(attrs)
	return &c
}

func (a *auditLog) WithGroup(name string) slog.Handler {
	c := *a
	c.json = a.json.WithGroup(name)
	c.lines = a.lines.WithGroup(name)
	return &c
}

// note records a demo event that is not the server's (a CSP violation report).
func (a *auditLog) note(event, detail string) {
	if len(detail) > 512 {
		detail = detail[:512]
	}
	slog.New(a).Warn("demo", "event", event, "detail", detail)
}

func (a *auditLog) since(after uint64) []auditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []auditEvent{}
	for _, e := range *a.ring {
		if e.Seq > after {
			out = append(out, e)
		}
	}
	return out
}
