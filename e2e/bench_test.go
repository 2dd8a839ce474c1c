package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
	"github.com/sessionvault/sessionvault/internal/demo"
)

// TestBrowserBench measures, in real Chromium against the demo's session server, what the vault
// costs a page (the budgets in README.md, "What it costs", issue 4 item 6). It reports figures; it asserts no timing.
// It runs only with SV_BENCH=1 (make bench-browser), for about 40 seconds:
//
//   - the extra latency of a signed fetch (page -> worker -> sign in wasm -> network -> verify
//     -> handler -> back) over a plain page fetch() of the same handler without verification,
//     median and p99 over SV_BENCH_N (default 1000) rounds, split into what the worker
//     architecture costs (the same fetch made by a plain worker, no signing, that hands the page
//     the same Response the vault does: status, statusText, headers and body) and what the vault
//     adds. Each round makes one request of each kind in an order that rotates, so each kind
//     comes first after the pause (the slowest place) equally often. Measured twice: paced
//     (21 ms between rounds, under the worker's rate limit of 50 operations per second: every
//     request starts from an idle worker) and warm (bursts of back-to-back rounds);
//   - the time from new Worker to the vault's "ready" event with the module cached, median of 20.
//
// The page is cross-origin isolated (COOP + COEP), so performance.now() has 5 us resolution
// rather than 100 us. The tab is a bare one: none of the harness's recording (network capture,
// message tap, paused worker start) is on, since each would slow one side more than the other.
func TestBrowserBench(t *testing.T) {
	if os.Getenv("SV_BENCH") != "1" {
		t.Skip("browser benchmarks run with SV_BENCH=1 (make bench-browser)")
	}
	d := newDemo(t, demo.Options{Quiet: true})
	n := 1000
	if v := os.Getenv("SV_BENCH_N"); v != "" {
		fmt.Sscan(v, &n)
	}

	// The same handler twice: behind the verifying middleware, and open.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte(`{"ok":true,"user":"alice","n":42}` + "\n"))
	})
	var mu sync.Mutex
	serverTimes := map[string][]float64{}
	timed := func(name string, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t0 := time.Now()
			next.ServeHTTP(w, r)
			d := time.Since(t0)
			mu.Lock()
			serverTimes[name] = append(serverTimes[name], float64(d.Microseconds()))
			mu.Unlock()
		})
	}
	srv.Handle(t, "/bench/signed", timed("signed", d.App.Manager().Require(h)))
	srv.Handle(t, "/bench/plain", timed("plain", h))
	// Cross-origin isolation: COOP + COEP on the page, and COEP on the worker's scripts (a
	// worker of an isolated page must be isolated too).
	isolate := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cross-Origin-Opener-Policy", "same-origin")
			w.Header().Set("Cross-Origin-Embedder-Policy", "require-corp")
			w.Header().Set("Cross-Origin-Resource-Policy", "same-origin")
			next.ServeHTTP(w, r)
		})
	}
	pages := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setHarnessHeaders(w)
		http.ServeFile(w, r, filepath.Join("testdata", "pages", filepath.Base(r.URL.Path)))
	})
	srv.Handle(t, "/t/bench.html", isolate(pages))
	srv.Handle(t, "/t/bench.js", isolate(pages))
	srv.Handle(t, "/t/fetch-worker.js", isolate(pages))
	srv.Handle(t, "/t/echo-worker.js", isolate(pages))
	srv.Handle(t, "/sv/", isolate(apps))

	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	page := chromedp.FromContext(ctx).Target
	// chromedp enables Network on the page and attaches workers: turn both off.
	if _, err := cdp.Call(ctx, page, network.Disable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cdp.Call(ctx, page, target.SetAutoAttach, target.SetAutoAttachParams{AutoAttach: false}); err != nil {
		t.Fatal(err)
	}
	eval := func(expr string, timeout time.Duration, out any) {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, timeout)
		defer ccancel()
		res, err := cdp.Call(cctx, page, runtime.Evaluate, runtime.EvaluateParams{Expression: expr, AwaitPromise: new(true), ReturnByValue: new(true)})
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if res.ExceptionDetails != nil {
			t.Fatalf("%s: %v", expr, &JSError{Details: res.ExceptionDetails})
		}
		if out != nil {
			if err := json.Unmarshal(res.Result.Value, out); err != nil {
				t.Fatalf("%s: %v", expr, err)
			}
		}
	}
	nctx, ncancel := context.WithTimeout(ctx, callTimeout)
	err := chromedp.Do(nctx, chromedp.Navigate(URL("/t/bench.html")))
	ncancel()
	if err != nil {
		t.Fatal(err)
	}
	var state string
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(20 * time.Millisecond) {
		eval(`document.body.dataset.state`, time.Second, &state)
		if state != "loading" || time.Now().After(deadline) {
			break
		}
	}
	var isolated, pageErr string
	eval(`document.body.dataset.isolated || ""`, time.Second, &isolated)
	eval(`document.body.dataset.error || ""`, time.Second, &pageErr)
	if state != "active" {
		t.Fatalf("bench page: state %q %s", state, pageErr)
	}

	load0 := loadAvg()
	var paced, warm fetchTimes
	eval(fmt.Sprintf(`benchFetch(%d, 50)`, n), time.Duration(n)*60*time.Millisecond+time.Minute, &paced)
	eval(fmt.Sprintf(`benchFetch(%d, 10, 0, 5)`, max(n/2, 1)), time.Duration(n)*60*time.Millisecond+time.Minute, &warm)
	load1 := loadAvg()
	var st []float64
	eval(`benchDenied(300)`, time.Minute, &st)
	var hops struct{ Hop, Status []float64 }
	eval(`benchHops(300)`, time.Minute, &hops)
	var wk struct{ Cold, Times []float64 }
	eval(`benchWorker(20, 2)`, time.Minute, &wk)

	t.Logf("cross-origin isolated: %s (performance.now resolution %s)", isolated, map[bool]string{true: "5 us", false: "100 us"}[isolated == "true"])
	t.Logf("machine load (1-minute average) before and after the fetches: %s, %s (the figures scale with it)", load0, load1)
	paced.report(t, fmt.Sprintf("paced (one request of each kind per round, order rotating, %d ms apart: each request starts from an idle worker)", 21))
	warm.report(t, "warm (bursts of 5 rounds back to back, the first round of each burst left out: an app making several calls at once)")
	mu.Lock()
	t.Logf("server side (handler time, verification included): signed median %.0f us, plain median %.0f us",
		quantile(serverTimes["signed"], 0.5), quantile(serverTimes["plain"], 0.5))
	mu.Unlock()
	t.Logf("vault round trip without network (a fetch the policy refuses in wasm), paced, %d calls: median %.3f ms, p99 %.3f ms",
		len(st), quantile(st, 0.5), quantile(st, 0.99))
	t.Logf("paced round trips, 300 each: bare worker echo median %.3f ms (p90 %.3f); vault.status() (hop + router + one wasm call) median %.3f ms (p90 %.3f)",
		quantile(hops.Hop, 0.5), quantile(hops.Hop, 0.9), quantile(hops.Status, 0.5), quantile(hops.Status, 0.9))
	t.Logf("worker ready, module cached, %d starts: median %.2f ms, min %.2f, max %.2f (first starts: %.2f ms)  [budget <= 100 ms]",
		len(wk.Times), quantile(wk.Times, 0.5), slices.Min(wk.Times), slices.Max(wk.Times), wk.Cold)
	if m := d.CountEvents("bad_signature") + d.CountEvents("replay_refused"); m > 0 {
		t.Errorf("the server refused %d of the benchmark's signed requests", m)
	}
}

// fetchTimes are the page-measured times in ms of the benchmark's three kinds of request to the
// same handler: plain fetch() from the page, the same fetch made by a plain worker (posted there
// and back with its status, headers and body, no signing: what any key-in-a-worker design
// pays), and the vault's signed fetch.
type fetchTimes struct{ Plain, Worker, Signed []float64 }

func (f *fetchTimes) report(t *testing.T, what string) {
	t.Helper()
	paired := func(a, b []float64) []float64 {
		d := make([]float64, len(a))
		for i := range d {
			d[i] = a[i] - b[i]
		}
		return d
	}
	line := func(name string, xs []float64) {
		t.Logf("  %-40s n=%d median %.3f ms, p90 %.3f, p99 %.3f", name, len(xs), quantile(xs, 0.5), quantile(xs, 0.9), quantile(xs, 0.99))
	}
	t.Logf("%s:", what)
	line("plain fetch", f.Plain)
	line("plain worker fetch", f.Worker)
	line("signed vault.fetch", f.Signed)
	extra := paired(f.Signed, f.Plain)
	t.Logf("  extra latency of a signed fetch over a plain fetch: %.3f ms (difference of medians); per round: median %.3f ms, p90 %.3f, p99 %.3f  [budget <= 0.3 ms median]",
		quantile(f.Signed, 0.5)-quantile(f.Plain, 0.5), quantile(extra, 0.5), quantile(extra, 0.9), quantile(extra, 0.99))
	t.Logf("  of which the worker architecture (plain worker over plain): %.3f ms (difference of medians), per round median %.3f ms",
		quantile(f.Worker, 0.5)-quantile(f.Plain, 0.5), quantile(paired(f.Worker, f.Plain), 0.5))
	t.Logf("  and the vault's own work (signed over plain worker): %.3f ms (difference of medians), per round median %.3f ms",
		quantile(f.Signed, 0.5)-quantile(f.Worker, 0.5), quantile(paired(f.Signed, f.Worker), 0.5))
}

// loadAvg returns the machine's 1-minute load average, or "n/a" where /proc is missing.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	s := string(b)
	if i := strings.IndexByte(s, ' '); i > 0 {
		s = s[:i]
	}
	return s
}

// quantile returns the q-quantile of xs (nearest rank).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}
