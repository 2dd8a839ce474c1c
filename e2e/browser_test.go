package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chromedp/cdproto"
	jsonv2 "github.com/chromedp/cdproto/cdp/jsonv2"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// This file starts Chromium and owns the connection to it.
//
// Why our own allocator and transport: chromedp routes a message by its session
// ID to the targets it attached itself, and drops the rest. The sessions that
// Target.setAutoAttach creates for a page's dedicated workers are such "rest",
// so chromedp alone cannot see a worker's console, its network traffic, or
// evaluate in it from its first instruction. tap sits between chromedp and the
// pipe: it passes chromedp's traffic through untouched, and handles the sessions
// the harness watches (a tab's page and every target auto-attached under it)
// with command IDs of its own (>= tapIDBase), so chromedp never sees our replies.

// chromiumFlags are the command line flags of the test browser (besides
// --remote-debugging-pipe and --user-data-dir, which the allocator adds).
var chromiumFlags = []string{
	"--headless=new",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--no-default-browser-check",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
	"--disable-extensions",
	"--disable-default-apps",
	"--disable-breakpad",
	"--disable-dev-shm-usage",
	"--disable-features=Translate,OptimizationHints,MediaRouter",
	"--disable-background-timer-throttling",
	"--disable-renderer-backgrounding",
	"--disable-backgrounding-occluded-windows",
	"--password-store=basic",
	"--use-mock-keychain",
	"--metrics-recording-only",
	// Long strings are cut at 1024 characters in heap snapshots by default; a
	// key hidden in a long string must not escape the search.
	"--js-flags=--heap-snapshot-string-limit=10000000",
}

// findChromium returns the browser binary: $SV_CHROMIUM, /usr/bin/chromium, or
// the first of the usual names on $PATH.
func findChromium() (string, error) {
	if p := os.Getenv("SV_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("SV_CHROMIUM=%s: %w", p, err)
		}
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium binary: install Debian's chromium package (make deps), or set SV_CHROMIUM")
}

// pipeAllocator is a chromedp.Allocator that starts one Chromium with
// --remote-debugging-pipe and connects chromedp to it through a tap.
type pipeAllocator struct {
	path    string
	dataDir string
	debug   bool // log every protocol message to stderr (SV_CDP_DEBUG=1)

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	output bytes.Buffer  // the browser's stdout and stderr, for error messages
	tap    *tap
}

var _ chromedp.Allocator = (*pipeAllocator)(nil)

func (a *pipeAllocator) Allocate(ctx context.Context, opts ...chromedp.BrowserOption) (*chromedp.Browser, error) {
	// The browser reads commands from fd 3 and writes replies and events to fd 4.
	childR, parentW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	parentR, childW, err := os.Pipe()
	if err != nil {
		childR.Close()
		parentW.Close()
		return nil, err
	}
	args := append(append([]string(nil), chromiumFlags...),
		"--remote-debugging-pipe", "--user-data-dir="+a.dataDir, "about:blank")
	cmd := exec.Command(a.path, args...)
	cmd.ExtraFiles = []*os.File{childR, childW}
	cmd.Stdout = &lockedWriter{mu: &a.mu, w: &a.output}
	cmd.Stderr = cmd.Stdout
	// Kill the browser if this process dies without cleaning up. Pdeathsig
	// fires when the starting OS thread exits, so start from a locked thread
	// that lives as long as the browser (as chromedp's ExecAllocator does).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	a.done = make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(a.done)
	}()
	err = <-started
	childR.Close()
	childW.Close()
	if err != nil {
		parentR.Close()
		parentW.Close()
		return nil, fmt.Errorf("starting %s: %w", a.path, err)
	}
	a.cmd = cmd
	var popts []chromedp.PipeOption
	if a.debug {
		popts = append(popts, chromedp.WithPipeDebugf(func(f string, v ...any) {
			s := fmt.Sprintf(f, v...)
			if len(s) > 2000 {
				s = s[:2000] + "..."
			}
			fmt.Fprintln(os.Stderr, "cdp", s)
		}))
	}
	a.tap = newTap(chromedp.NewPipeConn(parentR, parentW, popts...))
	return chromedp.NewBrowserTransport(ctx, a.tap, opts...)
}

// Wait satisfies chromedp.Allocator; stop does the real work.
func (a *pipeAllocator) Wait() {}

// stop ends the browser (it exits when its pipe closes; it is killed after a
// grace period), kills any of its children left running, and removes the
// profile directory.
func (a *pipeAllocator) stop() {
	if a.cmd != nil {
		select {
		case <-a.done:
		case <-time.After(3 * time.Second):
			a.cmd.Process.Kill()
			<-a.done
		}
		killProfileProcesses(a.dataDir)
	}
	os.RemoveAll(a.dataDir)
}

// Output returns what the browser printed so far.
func (a *pipeAllocator) Output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.output.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// killProcessesUsing kills the browser's child processes (zygote, renderers,
// network service) that outlived it: the processes whose command line names
// our own, unique, profile directory. They are processes this test started.
func killProfileProcesses(dir string) {
	want := []byte("--user-data-dir=" + dir)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(cmdline, []byte{0}) {
			if bytes.Equal(arg, want) {
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}

// tapIDBase is the first command ID that tap uses. chromedp counts its own IDs
// up from 1, so the two ranges never meet. Chromium takes IDs as 32-bit
// signed integers and answers a larger one with an error that has no ID.
const tapIDBase = 1 << 30

// tap is a chromedp.Transport that wraps the pipe to the browser. See the top
// of this file.
type tap struct {
	conn chromedp.Transport

	mu       sync.Mutex
	next     int64
	pending  map[int64]*pendingCall
	sessions map[target.SessionID]*Session
	err      error // set when the connection is lost
}

type pendingCall struct {
	session target.SessionID
	reply   chan *cdproto.Message
}

func newTap(conn chromedp.Transport) *tap {
	return &tap{
		conn:     conn,
		next:     tapIDBase,
		pending:  make(map[int64]*pendingCall),
		sessions: make(map[target.SessionID]*Session),
	}
}

// SetDebugf forwards chromedp's protocol logger to the pipe.
func (p *tap) SetDebugf(f func(string, ...any)) {
	if s, ok := p.conn.(interface{ SetDebugf(func(string, ...any)) }); ok && f != nil {
		s.SetDebugf(f)
	}
}

func (p *tap) Write(ctx context.Context, msg *cdproto.Message) error {
	return p.conn.Write(ctx, msg)
}

func (p *tap) Close() error { return p.conn.Close() }

// Read returns the next message that chromedp must see. It handles the
// replies to our own commands and the events of the sessions we watch on the
// way; it runs on chromedp's reader goroutine, so what it does must be quick
// and must never wait for the browser.
func (p *tap) Read(ctx context.Context, msg *cdproto.Message) error {
	for {
		var m cdproto.Message
		if err := p.conn.Read(ctx, &m); err != nil {
			p.fail(err)
			return err
		}
		if m.ID >= tapIDBase {
			p.mu.Lock()
			pc := p.pending[m.ID]
			delete(p.pending, m.ID)
			p.mu.Unlock()
			if pc != nil {
				pc.reply <- &m
			}
			continue
		}
		if m.SessionID != "" && m.Method != "" {
			p.mu.Lock()
			s := p.sessions[m.SessionID]
			p.mu.Unlock()
			if s != nil {
				s.handle(&m)
				if s.child {
					// chromedp does not know this session and would drop it.
					continue
				}
			}
		}
		*msg = m
		return nil
	}
}

func (p *tap) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = fmt.Errorf("connection to the browser lost: %w", err)
	}
	for id, pc := range p.pending {
		close(pc.reply)
		delete(p.pending, id)
	}
}

func (p *tap) register(s *Session) {
	p.mu.Lock()
	p.sessions[s.ID] = s
	p.mu.Unlock()
}

func (p *tap) unregister(id target.SessionID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.sessions, id)
	for cid, pc := range p.pending {
		if pc.session == id {
			close(pc.reply)
			delete(p.pending, cid)
		}
	}
}

// send writes one command on a session and returns the channel its reply
// arrives on (closed without a value when the session or the connection goes
// away first).
func (p *tap) send(ctx context.Context, session target.SessionID, method string, params any) (<-chan *cdproto.Message, error) {
	var buf []byte
	if params != nil {
		var err error
		if buf, err = jsonv2.Marshal(params, chromedp.DefaultMarshalOptions); err != nil {
			return nil, err
		}
	}
	ch := make(chan *cdproto.Message, 1)
	p.mu.Lock()
	if p.err != nil {
		p.mu.Unlock()
		return nil, p.err
	}
	p.next++
	id := p.next
	p.pending[id] = &pendingCall{session: session, reply: ch}
	p.mu.Unlock()
	msg := &cdproto.Message{ID: id, SessionID: session, Method: cdproto.MethodType(method), Params: buf}
	if err := p.conn.Write(ctx, msg); err != nil {
		p.mu.Lock()
		delete(p.pending, id)
		p.mu.Unlock()
		return nil, err
	}
	return ch, nil
}

// wait waits for the reply of send and decodes its result into res.
func (p *tap) wait(ctx context.Context, method string, ch <-chan *cdproto.Message, res any) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	case m, ok := <-ch:
		if !ok {
			p.mu.Lock()
			err := p.err
			p.mu.Unlock()
			if err == nil {
				err = errors.New("the target went away")
			}
			return fmt.Errorf("%s: %w", method, err)
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %w", method, m.Error)
		}
		if res != nil && len(m.Result) > 0 {
			return jsonv2.Unmarshal(m.Result, res, chromedp.DefaultUnmarshalOptions)
		}
		return nil
	}
}

// subscription is one Session.Subscribe: an unbounded queue, so that
// publishing never blocks the reader goroutine, drained into out by its own
// goroutine.
type subscription struct {
	out  chan jsonv2.Value
	wake chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	queue []jsonv2.Value
	ended bool // the session ended: deliver what is queued, then close out
}

func newSubscription() *subscription {
	s := &subscription{out: make(chan jsonv2.Value), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.pump()
	return s
}

func (s *subscription) push(v jsonv2.Value) {
	s.mu.Lock()
	s.queue = append(s.queue, bytes.Clone(v))
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) stop() { s.once.Do(func() { close(s.done) }) }

func (s *subscription) pump() {
	defer close(s.out)
	for {
		s.mu.Lock()
		var v jsonv2.Value
		have := len(s.queue) > 0
		if have {
			v = s.queue[0]
			s.queue = s.queue[1:]
		}
		ended := s.ended
		s.mu.Unlock()
		if !have {
			if ended {
				return
			}
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			}
		}
		select {
		case s.out <- v:
		case <-s.done:
			return
		}
	}
}

// trimErr shortens a protocol error for a log line.
func trimErr(err error) string {
	s := err.Error()
	return strings.TrimSpace(s)
}
