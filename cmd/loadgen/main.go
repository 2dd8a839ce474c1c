// Command loadgen measures loopback HTTP throughput through the verifying middleware against the
// same handler unauthenticated (the budgets in README.md, "What it costs": at least 85%).
//
// It starts an HTTP server on 127.0.0.1 in its own process with a [server.Manager] on a memstore,
// logs in one worker lane per connection (the real vault state machine, as in the browser), and
// then, for each round, drives the plain handler and the signed one in turn (alternating which goes
// first) over -conns keep-alive HTTP/1.1 connections for -duration each (or -max requests,
// whichever comes first). The default client (-client raw) is a minimal HTTP/1.1 writer and reader,
// so that the server's cost dominates; -client net uses net/http's client instead. Signed requests are signed by each connection's vault before the round, in
// nonce order (signing is the worker's work, done in the browser, not on the server's cores);
// both modes then do the same client work per request.
// It reports requests per second per mode and round, the medians, and the median of the per-round
// ratios (robust against a machine whose load changes during the measurement). It also reports
// requests per second of this process's CPU time (user + system, client and server together) and
// their ratio: on a machine shared with other work, wall-clock rates measure the share of the
// cores the process got as much as its own cost, while the CPU-time ratio tracks the cost per
// request of each mode.
//
//	go run ./cmd/loadgen -duration 2s -rounds 7
//
// It only ever listens on and connects to the loopback interface.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
)

func main() {
	duration := flag.Duration("duration", 2*time.Second, "length of one measured run per mode (at most 60s)")
	conns := flag.Int("conns", 32, "keep-alive connections (at most 256)")
	rounds := flag.Int("rounds", 7, "rounds of one plain and one signed run (at most 25)")
	maxReq := flag.Int64("max", 5_000_000, "at most this many requests per run")
	bodySize := flag.Int("body", 0, "POST a body of this many bytes (0: GET without a body; at most 65536)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	client := flag.String("client", "raw", "raw (a minimal HTTP/1.1 client, so that the server's cost dominates) or net (net/http's client)")
	flag.Parse()
	if *duration <= 0 || *duration > time.Minute || *conns < 1 || *conns > 256 || *rounds < 1 || *rounds > 25 ||
		*maxReq < 1 || *bodySize < 0 || *bodySize > 1<<16 || *client != "raw" && *client != "net" {
		log.Fatal("loadgen: flag out of range (see -h)")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := run(*duration, *conns, *rounds, *maxReq, *bodySize, *client == "net", os.Stdout)
	if err != nil {
		pprof.StopCPUProfile()
		log.Fatal(err)
	}
	fmt.Printf("median: plain %.0f req/s, signed %.0f req/s; median per-round ratio %.1f%% (budget >= 85%%)\n", res.plain, res.signed, 100*res.ratio)
	if res.cpuRatio > 0 {
		fmt.Printf("median per-round ratio of requests per CPU second: %.1f%%\n", 100*res.cpuRatio)
	}
}

// result holds the medians over the rounds of each mode's rate and of the per-round ratio
// (signed / plain), the figure to hold against the budget, and the median per-round ratio of
// requests per CPU second (0 where the process's CPU time is not available).
type result struct{ plain, signed, ratio, cpuRatio float64 }

// run starts the server, logs in the lanes and measures.
func run(duration time.Duration, conns, rounds int, maxReq int64, bodySize int, netClient bool, out io.Writer) (result, error) {
	m, err := server.New(server.Config{
		Store: memstore.New(),
		Authenticator: server.AuthenticatorFunc(func(ctx context.Context, r *http.Request, cred json.RawMessage) (string, map[string]string, error) {
			return "load", map[string]string{"role": "user"}, nil
		}),
		MaxSessionsPerUser: -1,
		Logger:             slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return result{}, err
	}
	defer m.Close()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			io.Copy(io.Discard, r.Body)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	})
	mux := http.NewServeMux()
	mux.Handle("/sv/", m.Handler())
	mux.Handle("/plain/", app)
	mux.Handle("/api/", m.Require(app))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	origin := "http://" + addr

	vaults := make([]*vault.Vault, conns)
	for i := range vaults {
		if vaults[i], err = login(origin); err != nil {
			return result{}, fmt.Errorf("loadgen: login: %w", err)
		}
	}
	var body []byte
	if bodySize > 0 {
		body = bytes.Repeat([]byte("x"), bodySize)
	}
	clientName := "raw"
	if netClient {
		clientName = "net/http"
	}
	fmt.Fprintf(out, "loadgen: %d connections (%s client), %v per run, %d rounds, body %d bytes, GOMAXPROCS %d\n",
		conns, clientName, duration, rounds, bodySize, runtime.GOMAXPROCS(0))
	gen := &generator{addr: addr, origin: origin, body: body, vaults: vaults, netClient: netClient}
	// A short plain run sizes the batches of pre-signed requests.
	rate, _, err := gen.measure(false, duration/4+time.Millisecond, maxReq)
	if err != nil {
		return result{}, err
	}
	var plain, signed, ratios, cpuRatios []float64
	for r := range rounds {
		// Pre-sign this round's requests (the worker's work, done in the browser, not here).
		perConn := int64(1.5*rate*duration.Seconds())/int64(conns) + 64
		perConn = min(perConn, maxReq/int64(conns)+1)
		if err := gen.presign(int(perConn)); err != nil {
			return result{}, err
		}
		runtime.GC() // the signing's garbage is not the measured runs' to collect
		// Alternate which mode goes first, so that a drift of the machine's load between the
		// two runs of a round does not favour one mode.
		var p, s, pc, sc float64
		for _, signedMode := range []bool{r%2 == 1, r%2 == 0} {
			x, xc, err := gen.measure(signedMode, duration, maxReq)
			if err != nil {
				return result{}, err
			}
			if signedMode {
				s, sc = x, xc
			} else {
				p, pc = x, xc
			}
		}
		rate = max(rate, p)
		fmt.Fprintf(out, "round %d: plain %.0f req/s, signed %.0f req/s (%.1f%%)", r+1, p, s, 100*s/p)
		if pc > 0 && sc > 0 {
			fmt.Fprintf(out, "; per CPU second: plain %.0f, signed %.0f (%.1f%%)", pc, sc, 100*sc/pc)
			cpuRatios = append(cpuRatios, sc/pc)
		}
		fmt.Fprintln(out)
		plain, signed, ratios = append(plain, p), append(signed, s), append(ratios, s/p)
	}
	if gen.onTheFly.Load() > 0 {
		fmt.Fprintf(out, "note: %d requests were signed during a run (batches ran out)\n", gen.onTheFly.Load())
	}
	res := result{plain: median(plain), signed: median(signed), ratio: median(ratios)}
	if len(cpuRatios) == len(ratios) {
		res.cpuRatio = median(cpuRatios)
	}
	return res, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// login runs the login handshake of one lane with a fresh vault.
func login(origin string) (*vault.Vault, error) {
	v := vault.New(rand.Reader, time.Now)
	if err := v.BindPolicy(vault.Policy{Self: origin}); err != nil {
		return nil, err
	}
	pub, err := v.Begin(protocol.HandshakeLogin)
	if err != nil {
		return nil, err
	}
	req, _ := json.Marshal(map[string]any{"pub": base64.RawURLEncoding.EncodeToString(pub[:]), "credentials": nil})
	resp, err := http.Post(origin+"/sv/login", "application/json", bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rep struct {
		Lane, Pub, Confirm  string
		ServerTime, Expires int64
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return nil, err
	}
	var h vault.Handshake
	dec := base64.RawURLEncoding
	lane, err1 := dec.DecodeString(rep.Lane)
	spub, err2 := dec.DecodeString(rep.Pub)
	confirm, err3 := dec.DecodeString(rep.Confirm)
	if err := errors.Join(err1, err2, err3); err != nil || len(lane) != 16 || len(spub) != 32 {
		return nil, fmt.Errorf("bad login reply")
	}
	copy(h.Lane[:], lane)
	copy(h.ServerPub[:], spub)
	h.Confirm, h.ServerTime, h.Expires = confirm, rep.ServerTime, rep.Expires
	return v, v.Finish(h)
}

// generator holds the connections' lanes and their pre-signed requests.
type generator struct {
	addr, origin string
	body         []byte
	vaults       []*vault.Vault
	netClient    bool                // use net/http's client instead of the minimal one
	signed       [][]vault.Signature // per connection, signatures ready to send, in nonce order
	onTheFly     atomic.Int64
}

const apiPath, plainPath = "/api/items", "/plain/items"

func (g *generator) method() string {
	if g.body != nil {
		return "POST"
	}
	return "GET"
}

// sign signs the next request of lane v.
func (g *generator) sign(v *vault.Vault) (vault.Signature, error) {
	return v.Sign(vault.SignRequest{Method: g.method(), Origin: g.origin, Path: apiPath, Body: g.body, HasBody: g.body != nil})
}

// appendRequest appends the bytes of one request, signed with sig when it is not nil.
func (g *generator) appendRequest(b []byte, sig *vault.Signature) []byte {
	path := plainPath
	if sig != nil {
		path = apiPath
	}
	b = append(b, g.method()...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, g.addr...)
	b = append(b, "\r\n"...)
	if sig != nil {
		b = append(b, "Signature-Input: "...)
		b = append(b, sig.SignatureInput...)
		b = append(b, "\r\nSignature: "...)
		b = append(b, sig.Signature...)
		b = append(b, "\r\n"...)
		if sig.ContentDigest != "" {
			b = append(b, "Content-Digest: "...)
			b = append(b, sig.ContentDigest...)
			b = append(b, "\r\n"...)
		}
	}
	if g.body != nil {
		b = append(b, "Content-Type: application/octet-stream\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(g.body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, g.body...)
}

// presign signs n requests per connection, in nonce order.
func (g *generator) presign(n int) error {
	g.signed = make([][]vault.Signature, len(g.vaults))
	for i, v := range g.vaults {
		g.signed[i] = make([]vault.Signature, n)
		for j := range n {
			var err error
			if g.signed[i][j], err = g.sign(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// sender sends one request and reads its response.
type sender interface {
	send(sig *vault.Signature) error
	close()
}

// rawSender is a minimal HTTP/1.1 client on one keep-alive connection.
type rawSender struct {
	g    *generator
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
}

func (s *rawSender) send(sig *vault.Signature) error {
	s.buf = s.g.appendRequest(s.buf[:0], sig)
	if _, err := s.conn.Write(s.buf); err != nil {
		return err
	}
	return readResponse(s.br)
}

func (s *rawSender) close() { s.conn.Close() }

// netSender uses net/http's client (one shared keep-alive pool of len(vaults) connections).
type netSender struct {
	g      *generator
	client *http.Client
}

func (s *netSender) send(sig *vault.Signature) error {
	path := plainPath
	if sig != nil {
		path = apiPath
	}
	var body io.Reader
	if s.g.body != nil {
		body = bytes.NewReader(s.g.body)
	}
	req, err := http.NewRequest(s.g.method(), "http://"+s.g.addr+path, body)
	if err != nil {
		return err
	}
	if sig != nil {
		req.Header["Signature-Input"] = []string{sig.SignatureInput}
		req.Header["Signature"] = []string{sig.Signature}
		if sig.ContentDigest != "" {
			req.Header["Content-Digest"] = []string{sig.ContentDigest}
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d %s", resp.StatusCode, resp.Header.Get("Sv-Error"))
	}
	return nil
}

func (s *netSender) close() {}

// measure drives one mode with one sender per lane for duration (or maxReq requests) and returns
// requests per second, and per second of the process's CPU time (0 if unknown). Signed requests
// use the pre-signed batches, in order, and are signed on the spot only if a batch runs out.
func (g *generator) measure(signedMode bool, duration time.Duration, maxReq int64) (rate, cpuRate float64, err error) {
	var count atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	senders := make([]sender, len(g.vaults))
	var tr *http.Transport
	if g.netClient {
		tr = &http.Transport{MaxIdleConnsPerHost: len(g.vaults), MaxConnsPerHost: len(g.vaults)}
		defer tr.CloseIdleConnections()
	}
	cpu0 := processCPU()
	start := time.Now()
	deadline := start.Add(duration)
	for i := range senders {
		if g.netClient {
			senders[i] = &netSender{g: g, client: &http.Client{Transport: tr, Timeout: duration + 10*time.Second}}
			continue
		}
		conn, err := net.Dial("tcp", g.addr)
		if err != nil {
			return 0, 0, err
		}
		conn.SetDeadline(deadline.Add(10 * time.Second))
		senders[i] = &rawSender{g: g, conn: conn, br: bufio.NewReaderSize(conn, 4096), buf: make([]byte, 0, 1024+len(g.body))}
	}
	for i, snd := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer snd.close()
			var batch []vault.Signature
			if signedMode && g.signed != nil {
				batch = g.signed[i]
			}
			for time.Now().Before(deadline) && count.Load() < maxReq {
				var sig *vault.Signature
				if signedMode {
					if len(batch) > 0 {
						sig, batch = &batch[0], batch[1:]
					} else {
						s, err := g.sign(g.vaults[i])
						if err != nil {
							errOnce.Do(func() { firstErr = err })
							return
						}
						sig = &s
						g.onTheFly.Add(1)
					}
				}
				if err := snd.send(sig); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				count.Add(1)
			}
			if signedMode && g.signed != nil {
				g.signed[i] = batch // the rest stays usable, in nonce order
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	if firstErr != nil {
		return 0, 0, fmt.Errorf("loadgen: signed %v: %w", signedMode, firstErr)
	}
	n := float64(count.Load())
	if cpu > 0 {
		cpuRate = n / cpu.Seconds()
	}
	return n / elapsed.Seconds(), cpuRate, nil
}

// readResponse reads one HTTP/1.1 response with a Content-Length body and requires 200.
func readResponse(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("response %q", bytes.TrimSpace(line))
	}
	n := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			n, err = strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return err
			}
		}
	}
	if n < 0 {
		return errors.New("response without Content-Length")
	}
	_, err = br.Discard(n)
	return err
}
