// Command wsload measures the event hub (package hub, its parent directory) against its budget
// (README.md, "What it costs"): 10,000 authenticated event connections on one node at no more
// than 30 KB each, and the time to deliver one event to all of them.
//
// The hub runs in a child process (this program, started again with SV_WSLOAD_HUB=1) on
// 127.0.0.1, so that its memory is measured alone: the client connections and their goroutines
// live in the parent and cost the child nothing. The child's Authenticate checks each tag with
// protocol.SocketAuth under a test key derived from the lane, as the Manager does with the
// lane's sign key. The parent opens -n connections (at most -dialers at a time), each answering
// its challenge, and asks the child to measure: runtime.GC and debug.FreeOSMemory, then
// HeapInuse+StackInuse from runtime.MemStats and VmRSS from /proc/self/status, minus the same
// figures taken before the first connection, divided by -n. HeapInuse+StackInuse is what the
// connections hold; RSS adds the runtime's own overhead (and kernel socket buffers count in
// neither). Then, -rounds times, the child sends one sealed event to every lane (hub.Send per
// lane, events sealed beforehand) and the parent measures from the command to the moment the
// last client has read its event.
//
//	go run ./server/internal/hub/wsload -n 10000
//
// It lives under server/internal because it imports the internal hub package directly.
//
// It only listens on and connects to the loopback interface, opens at most 50,000
// connections and stops by itself after -timeout (at most 10 minutes), killing the child.
package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server/internal/hub"
)

const (
	childEnv = "SV_WSLOAD_HUB"
	maxConns = 50_000
	maxTime  = 10 * time.Minute
)

func main() {
	if os.Getenv(childEnv) == "1" {
		os.Exit(hubMain(os.Stdin, os.Stdout))
	}
	n := flag.Int("n", 10_000, "connections (at most 50000)")
	dialers := flag.Int("dialers", 64, "connections opened at a time (at most 512)")
	rounds := flag.Int("rounds", 5, "broadcasts (at most 100)")
	timeout := flag.Duration("timeout", 3*time.Minute, "stop after this long (at most 10m)")
	flag.Parse()
	if *n < 1 || *n > maxConns || *dialers < 1 || *dialers > 512 || *rounds < 1 || *rounds > 100 || *timeout <= 0 || *timeout > maxTime {
		flag.Usage()
		os.Exit(2)
	}
	log.SetFlags(0)
	res, err := run(options{n: *n, dialers: *dialers, rounds: *rounds, timeout: *timeout}, os.Stderr)
	if err != nil {
		log.Fatalf("wsload: %v", err)
	}
	res.print(os.Stdout)
}

type options struct {
	n, dialers, rounds int
	timeout            time.Duration
}

// result holds the figures of one run.
type result struct {
	n          int
	connect    time.Duration // all n connections authenticated
	base, full memStats      // child, before the first connection and with n
	rounds     []round
	shutdown   time.Duration
}

type round struct {
	all     time.Duration // command to the last client's receipt
	median  time.Duration // command to the median client's receipt
	sendAll time.Duration // the child's loop of n hub.Send calls
}

type memStats struct {
	heap, stack, rss, hwm int64 // bytes
	goroutines, count     int64
}

func (r *result) perConn() (heapStack, rss float64) {
	n := float64(r.n)
	return float64(r.full.heap+r.full.stack-r.base.heap-r.base.stack) / n, float64(r.full.rss-r.base.rss) / n
}

func (r *result) print(w io.Writer) {
	hs, rss := r.perConn()
	fmt.Fprintf(w, "connections:          %d authenticated in %v (%.0f/s)\n", r.n, r.connect.Round(time.Millisecond), float64(r.n)/r.connect.Seconds())
	fmt.Fprintf(w, "hub process before:   heap %s, stacks %s, RSS %s, %d goroutines\n", kb(r.base.heap), kb(r.base.stack), kb(r.base.rss), r.base.goroutines)
	fmt.Fprintf(w, "hub process with %d: heap %s, stacks %s, RSS %s (peak %s), %d goroutines\n", r.n, kb(r.full.heap), kb(r.full.stack), kb(r.full.rss), kb(r.full.hwm), r.full.goroutines)
	fmt.Fprintf(w, "per connection:       %.1f KB heap+stack, %.1f KB RSS (budget 30 KB)\n", hs/1000, rss/1000)
	var all, med, send []time.Duration
	for _, rd := range r.rounds {
		all, med, send = append(all, rd.all), append(med, rd.median), append(send, rd.sendAll)
	}
	fmt.Fprintf(w, "broadcast to all %d (%d rounds): last receipt median %v (min %v, max %v); median receipt %v; hub.Send loop %v\n",
		r.n, len(r.rounds), median(all), slices.Min(all), slices.Max(all), median(med), median(send))
	fmt.Fprintf(w, "shutdown:             %v\n", r.shutdown.Round(time.Millisecond))
}

func kb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Round(10 * time.Microsecond)
}

// testSignKey is lane's sign key in this program (both processes derive it).
func testSignKey(lane protocol.LaneID) protocol.Key {
	var k protocol.Key
	copy(k[:], "wsload sign key ")
	copy(k[16:], lane[:])
	return k
}

var b64 = base64.RawURLEncoding

func laneOf(i int) protocol.LaneID {
	var l protocol.LaneID
	copy(l[:], fmt.Sprintf("wsload%010d", i))
	return l
}

// raiseNoFile makes room for n more descriptors.
func raiseNoFile(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	need := uint64(n) + 256
	if lim.Cur >= need {
		return nil
	}
	lim.Cur = need
	if lim.Max < need {
		lim.Max = need // only root may
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE to %d: %w (raise the hard limit, or lower -n)", need, err)
	}
	return nil
}

// run starts the child, drives it and the clients, and always kills the child before returning.
func run(o options, progress io.Writer) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := raiseNoFile(o.n); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"=1", "SV_WSLOAD_N="+strconv.Itoa(o.n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	}()
	child := &childConn{w: stdin, r: bufio.NewScanner(stdout)}

	line, err := child.reply("addr")
	if err != nil {
		return nil, err
	}
	addr := strings.TrimPrefix(line, "addr ")
	res := &result{n: o.n}
	if res.base, err = child.mem(); err != nil {
		return nil, err
	}

	fmt.Fprintf(progress, "wsload: hub on %s (pid %d); opening %d connections\n", addr, cmd.Process.Pid, o.n)
	c := newClients(o.n, o.rounds)
	start := time.Now()
	if err := c.open(ctx, "ws://"+addr+"/events", o.dialers); err != nil {
		c.closeAll()
		return nil, err
	}
	res.connect = time.Since(start)
	if res.full, err = child.mem(); err != nil {
		return nil, err
	}
	if res.full.count != int64(o.n) {
		return nil, fmt.Errorf("hub counts %d connections, want %d", res.full.count, o.n)
	}
	hs, _ := res.perConn()
	fmt.Fprintf(progress, "wsload: %d connections in %v; %.1f KB each (heap+stack); broadcasting\n", o.n, res.connect.Round(time.Millisecond), hs/1000)

	if _, err := child.send("prepare"); err != nil {
		return nil, err
	}
	for r := range o.rounds {
		t0 := time.Now()
		line, err := child.send("broadcast")
		if err != nil {
			return nil, err
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != strconv.Itoa(o.n) {
			return nil, fmt.Errorf("child: %q", line)
		}
		ns, _ := strconv.ParseInt(f[2], 10, 64)
		select {
		case <-c.done[r]:
		case <-ctx.Done():
			return nil, fmt.Errorf("round %d: %d of %d clients got the event: %w", r, c.got[r].Load(), o.n, ctx.Err())
		}
		times := c.receipts(r, t0)
		res.rounds = append(res.rounds, round{all: slices.Max(times), median: median(times), sendAll: time.Duration(ns)})
		time.Sleep(50 * time.Millisecond)
	}

	t0 := time.Now()
	if _, err := child.send("quit"); err != nil {
		return nil, err
	}
	res.shutdown = time.Since(t0)
	c.wait(ctx)
	return res, nil
}

// childConn is the line protocol on the child's stdin and stdout.
type childConn struct {
	w io.Writer
	r *bufio.Scanner
}

func (c *childConn) reply(prefix string) (string, error) {
	if !c.r.Scan() {
		return "", fmt.Errorf("child ended: %v", c.r.Err())
	}
	line := c.r.Text()
	if !strings.HasPrefix(line, prefix+" ") && line != prefix {
		return "", fmt.Errorf("child: %q", line)
	}
	return line, nil
}

func (c *childConn) send(cmd string) (string, error) {
	if _, err := io.WriteString(c.w, cmd+"\n"); err != nil {
		return "", err
	}
	return c.reply(cmd)
}

func (c *childConn) mem() (memStats, error) {
	line, err := c.send("mem")
	if err != nil {
		return memStats{}, err
	}
	var m memStats
	_, err = fmt.Sscanf(line, "mem %d %d %d %d %d %d", &m.heap, &m.stack, &m.rss, &m.hwm, &m.goroutines, &m.count)
	return m, err
}

// clients are the parent's connections; each records when it read the event of each round.
type clients struct {
	n     int
	conns []*websocket.Conn
	at    [][]atomic.Int64 // [round][client] Unix ns of receipt
	got   []atomic.Int64   // [round] clients that got it
	done  []chan struct{}  // [round] closed when all have
	wg    sync.WaitGroup
}

func newClients(n, rounds int) *clients {
	c := &clients{n: n, conns: make([]*websocket.Conn, n), at: make([][]atomic.Int64, rounds), got: make([]atomic.Int64, rounds), done: make([]chan struct{}, rounds)}
	for r := range rounds {
		c.at[r] = make([]atomic.Int64, n)
		c.done[r] = make(chan struct{})
	}
	return c
}

func (c *clients) open(ctx context.Context, url string, dialers int) error {
	d := websocket.Dialer{
		Subprotocols:     []string{hub.Subprotocol},
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   512,
		WriteBufferSize:  512,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
				return nil, errors.New("wsload dials 127.0.0.1 only")
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	var next atomic.Int64
	errs := make(chan error, dialers)
	var wg sync.WaitGroup
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= c.n || ctx.Err() != nil {
					return
				}
				ws, err := connect(ctx, &d, url, laneOf(i))
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					next.Store(int64(c.n))
					return
				}
				c.conns[i] = ws
				c.wg.Add(1)
				go c.read(i, ws)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// connect dials and answers the challenge as a worker does.
func connect(ctx context.Context, d *websocket.Dialer, url string, lane protocol.LaneID) (*websocket.Conn, error) {
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*websocket.Conn, error) { ws.Close(); return nil, err }
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ch struct{ Type, Challenge string }
	if err := ws.ReadJSON(&ch); err != nil || ch.Type != "challenge" {
		return fail(fmt.Errorf("challenge: %v %q", err, ch.Type))
	}
	challenge, err := b64.DecodeString(ch.Challenge)
	if err != nil {
		return fail(err)
	}
	k := testSignKey(lane)
	tag := protocol.SocketAuth(&k, lane, 1, challenge)
	msg := fmt.Sprintf(`{"type":"auth","keyid":%q,"tag":%q,"since":0}`, protocol.KeyID{Lane: lane, Epoch: 1}.String(), b64.EncodeToString(tag[:]))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return fail(err)
	}
	var ready struct{ Type, Reason string }
	if err := ws.ReadJSON(&ready); err != nil || ready.Type != "ready" {
		return fail(fmt.Errorf("auth: %v %q %q", err, ready.Type, ready.Reason))
	}
	ws.SetReadDeadline(time.Time{})
	return ws, nil
}

// read counts the client's events until the connection ends; gorilla answers pings and the
// close while it reads.
func (c *clients) read(i int, ws *websocket.Conn) {
	defer c.wg.Done()
	r := 0
	for {
		mt, _, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return
		}
		if mt != websocket.BinaryMessage || r >= len(c.at) {
			continue
		}
		c.at[r][i].Store(time.Now().UnixNano())
		if c.got[r].Add(1) == int64(c.n) {
			close(c.done[r])
		}
		r++
	}
}

func (c *clients) receipts(r int, t0 time.Time) []time.Duration {
	d := make([]time.Duration, c.n)
	for i := range d {
		d[i] = time.Duration(c.at[r][i].Load() - t0.UnixNano())
	}
	return d
}

func (c *clients) closeAll() {
	for _, ws := range c.conns {
		if ws != nil {
			ws.Close()
		}
	}
}

// wait waits for the readers to see their connections end (the child shut down).
func (c *clients) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		c.closeAll()
	}
}

// hubMain is the child: the hub alone on 127.0.0.1, driven by lines on stdin.
func hubMain(in io.Reader, out io.Writer) int {
	logger := log.New(os.Stderr, "wsload hub: ", 0)
	n, err := strconv.Atoi(os.Getenv("SV_WSLOAD_N"))
	if err != nil || n < 1 || n > maxConns {
		logger.Print("bad SV_WSLOAD_N")
		return 2
	}
	if err := raiseNoFile(n); err != nil {
		logger.Print(err)
		return 1
	}
	// Never outlive the parent's bound.
	time.AfterFunc(maxTime+time.Minute, func() { logger.Print("time is up"); os.Exit(1) })

	var mu sync.Mutex
	lanes := make([]protocol.LaneID, 0, n)
	h := hub.New(hub.Config{
		MaxConns: n + 16,
		// Every client here is 127.0.0.1: let all the dialers be mid-handshake at once.
		MaxUnsettled: 512,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Authenticate: func(ctx context.Context, keyid string, challenge, tag []byte) (protocol.LaneID, error) {
			id, err := protocol.ParseKeyID(keyid)
			if err != nil {
				return protocol.LaneID{}, &hub.RefusedError{Reason: "bad_request", Err: err}
			}
			k := testSignKey(id.Lane)
			want := protocol.SocketAuth(&k, id.Lane, id.Epoch, challenge)
			if !hmac.Equal(want[:], tag) {
				return protocol.LaneID{}, &hub.RefusedError{Reason: "bad_signature"}
			}
			mu.Lock()
			lanes = append(lanes, id.Lane)
			mu.Unlock()
			return id.Lane, nil
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/events", h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		logger.Print(err)
		return 1
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)

	var targets []protocol.LaneID // the lanes to broadcast to, with their sealed events
	var sealed [][]byte
	sc := bufio.NewScanner(in)
	fmt.Fprintf(out, "addr %s\n", ln.Addr())
	for sc.Scan() {
		switch sc.Text() {
		case "mem":
			m := measure()
			fmt.Fprintf(out, "mem %d %d %d %d %d %d\n", m.heap, m.stack, m.rss, m.hwm, m.goroutines, h.Count())
		case "prepare":
			mu.Lock()
			ls := slices.Clone(lanes)
			mu.Unlock()
			var key protocol.Key
			copy(key[:], "wsload event key")
			sealed = make([][]byte, len(ls))
			for i, l := range ls {
				sealed[i], _ = protocol.SealEvent(&key, &protocol.Event{Type: protocol.EventExpiring, Lane: l, Epoch: 1, Seq: 1, Time: time.Now().UnixMilli(), Deadline: time.Now().Add(time.Minute).UnixMilli(), Reason: "idle"})
			}
			targets = ls
			fmt.Fprintln(out, "prepare")
		case "broadcast":
			t0 := time.Now()
			sent := 0
			for i, l := range targets {
				sent += h.Send(l, sealed[i])
			}
			fmt.Fprintf(out, "broadcast %d %d\n", sent, time.Since(t0).Nanoseconds())
		case "quit":
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := h.Shutdown(ctx)
			cancel()
			srv.Close()
			if err != nil {
				logger.Print(err)
			}
			fmt.Fprintln(out, "quit")
			return 0
		default:
			logger.Printf("unknown command %q", sc.Text())
			return 2
		}
	}
	return 0 // the parent went away
}

// measure returns the process's live memory after a full collection.
func measure() memStats {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memStats{heap: int64(ms.HeapInuse), stack: int64(ms.StackInuse), goroutines: int64(runtime.NumGoroutine())}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[2] == "kB" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				switch f[0] {
				case "VmRSS:":
					m.rss = v * 1024
				case "VmHWM:":
					m.hwm = v * 1024
				}
			}
		}
	}
	return m
}
