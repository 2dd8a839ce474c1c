package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/gorilla/websocket"

	"github.com/sessionvault/sessionvault/internal/demo"
	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
)

// Live events in Chromium (issue 5): the server pushes revocation over the worker's event
// socket, the worker verifies the sealed event inside wasm and wipes its key at once, without a
// request from the page.

// waitEventConns waits until m holds n authenticated event connections (the worker connects
// right after login, asynchronously).
func waitEventConns(t testing.TB, m *server.Manager, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.EventConnections() != n {
		if time.Now().After(deadline) {
			t.Fatalf("event connections: %d, want %d", m.EventConnections(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sessionHandle returns the handle of the user's only session.
func sessionHandle(t testing.TB, m *server.Manager, user string) string {
	t.Helper()
	list, err := m.Sessions(context.Background(), user)
	if err != nil || len(list) != 1 {
		t.Fatalf("sessions of %s: %v %v", user, list, err)
	}
	return list[0].Handle
}

// pageEvents returns the names of the vault events the vault page has seen.
func pageEvents(tb *Tab) []string {
	return Eval[[]string](tb, `window.vaultEvents.map((e) => e.name)`)
}

// TestAdminRevokeWipesWorker: Manager.Revoke reaches the page as a revoked event with no request
// from the page, the worker's wasm memory no longer holds the lane's keys (scanned through the
// worker's DevTools target, with the positive control before), and the page's next fetch fails
// with no_session.
func TestAdminRevokeWipesWorker(t *testing.T) {
	d, tb, ss, w := loginForWipe(t)
	defer func() { logFindings(t, ss) }()
	m := d.App.Manager()
	waitEventConns(t, m, 1)
	revokeWipes(t, tb, w, ss, m, func(ctx context.Context) error {
		return m.Revoke(ctx, "alice", sessionHandle(t, m, "alice"))
	})
	if got := Eval[string](tb, `JSON.stringify(window.vaultEvents.findLast((e) => e.name === "revoked").detail)`); !strings.Contains(got, `"revoked"`) {
		t.Errorf("revoked event detail %s, want reason revoked", got)
	}
}

// revokeWipes runs revoke against the session of the worker w (connected to conns) and checks
// that it is wiped: the lane keys ss are in its wasm memory before (the positive control), the
// page gets the revoked event with no request of its own, status is wiped, the keys are gone
// from wasm memory, the next fetch fails with no_session, the socket closes and nothing logged
// an error.
func revokeWipes(t *testing.T, tb *Tab, w *Session, ss Secrets, conns *server.Manager, revoke func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.Ctx(), 2*callTimeout)
	defer cancel()
	before, err := w.ScanWasmMemory(ctx, ss.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Hits) == 0 {
		t.Fatal("positive control: the active keys are not in the worker's wasm memory")
	}
	if err := revoke(ctx); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(`document.body.dataset.lastEvent === "revoked"`)
	if got := Eval[string](tb, `vault.status().then((s) => s.state)`); got != "wiped" {
		t.Errorf("status after the revocation: %s", got)
	}
	after, err := w.ScanWasmMemory(ctx, ss.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range after.Hits {
		t.Errorf("after the revoked event the worker's wasm memory still holds %s", ss[h.Secret].Name)
	}
	if got := vaultFetch(tb, "/api/profile", ""); got != "error no_session" {
		t.Errorf("fetch after the revocation: %s", got)
	}
	waitEventConns(t, conns, 0)
	assertNoConsoleErrors(tb)
}

// TestRevokeUserReachesEveryTab: two tabs of one user, each logged in (two sessions): RevokeUser
// wipes both.
func TestRevokeUserReachesEveryTab(t *testing.T) {
	d := newDemo(t, demo.Options{})
	m := d.App.Manager()
	var tabs []*Tab
	for range 2 {
		tb := newTab(t)
		openVaultPage(tb, "")
		if st := loginAPI(tb, "bob"); st != "active" {
			t.Fatalf("login: %s", st)
		}
		tabs = append(tabs, tb)
	}
	waitEventConns(t, m, 2)
	if n, err := m.RevokeUser(context.Background(), "bob"); err != nil || n != 2 {
		t.Fatalf("RevokeUser = %d, %v", n, err)
	}
	for i, tb := range tabs {
		tb.WaitFor(`document.body.dataset.lastEvent === "revoked"`)
		if got := vaultFetch(tb, "/api/profile", ""); got != "error no_session" {
			t.Errorf("tab %d fetch after RevokeUser: %s", i, got)
		}
	}
}

// TestWorkerReconnectsAfterServerRestart: the server restarts on its durable store; the worker's
// socket is closed (1001), it reconnects with backoff and its session goes on. Then a
// revocation made while the worker is disconnected (the node that revokes is not the one the
// worker was connected to) is applied when it reconnects: it is refused with the reason and
// wipes.
func TestWorkerReconnectsAfterServerRestart(t *testing.T) {
	requireWasm(t)
	dir := t.TempDir()
	open := func() *Demo { return openBoltDemo(t, dir) }
	install := installApp
	d1 := open()
	install(d1)
	var cur *Demo = d1
	t.Cleanup(func() {
		install(nil)
		cur.App.Close()
	})

	tb := newTab(t)
	openVaultPage(tb, "")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: %s", st)
	}
	waitEventConns(t, d1.App.Manager(), 1)

	// Restart: close the first node, open a second on the same bolt file.
	d1.App.Close()
	d2 := open()
	install(d2)
	cur = d2
	waitEventConns(t, d2.App.Manager(), 1)
	if got := vaultFetch(tb, "/api/profile", ""); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("fetch after the restart: %s", got)
	}
	if got := Eval[string](tb, `vault.status().then((s) => s.state)`); got != "active" {
		t.Fatalf("state after the restart: %s", got)
	}
	// The page saw the socket go down with the first node and come back with the second.
	tb.WaitFor(`window.vaultChannel.join() === "true,false,true"`)

	// Revoked while the worker is disconnected: stop the node, revoke from a node the worker is
	// not connected to, then serve that node.
	d2.App.Close()
	d3 := open()
	cur = d3
	if err := d3.App.Manager().Revoke(context.Background(), "alice", sessionHandle(t, d3.App.Manager(), "alice")); err != nil {
		t.Fatal(err)
	}
	install(d3)
	tb.WaitFor(`document.body.dataset.lastEvent === "revoked"`)
	if got := Eval[string](tb, `vault.status().then((s) => s.state)`); got != "wiped" {
		t.Errorf("state after the missed revocation: %s", got)
	}
	if got := vaultFetch(tb, "/api/profile", ""); got != "error no_session" {
		t.Errorf("fetch after the missed revocation: %s", got)
	}
}

// TestSignedFetchAcrossACrash: the node dies without a clean shutdown (its bolt file as the
// process left it, without the replay windows a clean Close saves) and a new process opens the
// file. For a few seconds it cannot tell a replay of an old signature from a first use, and
// refuses requests of sessions from before it with 503 restarted and Retry-After; the worker
// signs the page's GET again after that wait and resends it, so the page's call succeeds, late,
// and its session is untouched; a POST gets the 503 at once. (Before, every call failed 401 expired_signature for about
// 6 s, which applications take for "logged out".)
func TestSignedFetchAcrossACrash(t *testing.T) {
	requireWasm(t)
	dir1 := t.TempDir()
	open := func(dir string) *Demo { return openBoltDemo(t, dir) }
	install := installApp
	d1 := open(dir1)
	install(d1)
	t.Cleanup(func() { install(nil) })
	t.Cleanup(func() { d1.App.Close() })

	tb := newTab(t)
	openVaultPage(tb, "")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: %s", st)
	}
	if got := vaultFetch(tb, "/api/profile", ""); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("fetch before the crash: %s", got)
	}

	// The crash: the files as they are now (no write is in flight between requests), opened by
	// a new process; the old one never gets to save its windows there.
	dir2 := t.TempDir()
	for _, name := range dirNames(t, dir1) {
		b, err := os.ReadFile(filepath.Join(dir1, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir2, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d2 := open(dir2)
	t.Cleanup(func() { d2.App.Close() })
	install(d2)

	// A POST may have run on the crashed node (a proxy may send it again): not resent, the page
	// gets the 503 at once, to retry itself.
	post := time.Now()
	if got := vaultFetch(tb, "/api/notes", `{method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({text: "x"})}`); !strings.HasPrefix(got, `503 {"error":"restarted"}`) {
		t.Errorf("a POST right after the crash: %s, want 503 restarted", got)
	}
	if took := time.Since(post); took > 3*time.Second {
		t.Errorf("the POST's 503 took %v: it waited to resend", took)
	}
	start := time.Now()
	got := vaultFetch(tb, "/api/profile", `{method: "GET"}`)
	took := time.Since(start)
	if !strings.HasPrefix(got, "200 ") {
		t.Fatalf("fetch right after the crash: %s, want 200 (signed again after Retry-After)", got)
	}
	t.Logf("the first call after the crash took %v (the replay floor's wait)", took.Round(time.Millisecond))
	if took < 500*time.Millisecond {
		t.Errorf("the first call after the crash took %v: it did not meet the replay floor (the test restarted nothing?)", took)
	}
	if got := vaultFetch(tb, "/api/profile", ""); !strings.HasPrefix(got, "200 ") {
		t.Errorf("the next call: %s", got)
	}
	if got := Eval[string](tb, `vault.status().then((s) => s.state)`); got != "active" {
		t.Errorf("state after the crash: %s", got)
	}
	if n := d2.CountEvents("bad_signature") + d2.CountEvents("replay_refused") + d2.CountEvents("revoked"); n > 0 {
		t.Errorf("the new node refused or ended something: %v", d2.AuditEvents())
	}
}

// openBoltDemo opens the demo app on the bolt store in dir (not installed; see installApp).
func openBoltDemo(t *testing.T, dir string) *Demo {
	t.Helper()
	app, err := demo.New(demo.Options{Data: dir, Store: "bolt", WasmPath: wasmPath, Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "store.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &Demo{App: app, StoreKey: key, dir: dir}
}

// installApp makes d the application the test server serves (nil: none).
func installApp(d *Demo) {
	apps.mu.Lock()
	apps.cur = d
	apps.mu.Unlock()
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	if len(names) < 2 {
		t.Fatalf("data directory %s has %v, want the bolt file and the store key", dir, names)
	}
	return names
}

// eventProxy sits between the worker and the real event endpoint, passes every frame both ways
// and lets the test inject frames into the socket, as an attacker on the path (or a bug in the
// server) could.
type eventProxy struct {
	upstream string // ws:// URL of the real endpoint

	mu    sync.Mutex
	down  *websocket.Conn // to the browser
	ready chan struct{}
}

func (p *eventProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{"sessionvault.v1"}, CheckOrigin: func(*http.Request) bool { return true }}
	down, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	d := websocket.Dialer{Subprotocols: []string{"sessionvault.v1"}}
	upc, _, err := d.Dial(p.upstream, nil)
	if err != nil {
		down.Close()
		return
	}
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	var once sync.Once
	go func() {
		defer upc.Close()
		for {
			typ, b, err := down.ReadMessage()
			if err != nil {
				return
			}
			upc.WriteMessage(typ, b)
		}
	}()
	for {
		typ, b, err := upc.ReadMessage()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				p.write(websocket.CloseMessage, websocket.FormatCloseMessage(ce.Code, ce.Text))
			}
			down.Close()
			return
		}
		p.write(typ, b)
		if typ == websocket.TextMessage && strings.Contains(string(b), `"ready"`) {
			once.Do(func() { close(p.ready) })
		}
	}
}

func (p *eventProxy) write(typ int, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down != nil {
		p.down.WriteMessage(typ, b)
	}
}

// TestForgedEventsAreIgnored injects into the worker's live event socket: a revoked event with
// a forged tag, garbage, a genuine-key event for another lane and for an epoch the worker does
// not hold. None changes anything. A genuine expiring event (sealed under the lane's real event
// key: the positive control that injected frames reach the wasm) is shown once; the same bytes
// replayed are dropped. The real revocation still gets through.
func TestForgedEventsAreIgnored(t *testing.T) {
	d := newDemo(t, demo.Options{})
	m := d.App.Manager()
	real := httptest.NewServer(d.App)
	defer real.Close()
	p := &eventProxy{upstream: "ws" + strings.TrimPrefix(real.URL, "http") + "/sv/events", ready: make(chan struct{})}
	srv.Handle(t, "/sv/events", p)

	tb := newTab(t)
	openVaultPage(tb, "")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: %s", st)
	}
	select {
	case <-p.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker's event socket did not get through the proxy")
	}
	keys, _ := d.LaneKeys(t, "alice")
	if len(keys) != 1 {
		t.Fatalf("lane keys: %d", len(keys))
	}
	lk := keys[0]
	ek := lk.EventKey()
	seal := func(key *protocol.Key, e protocol.Event) []byte {
		b, err := protocol.SealEvent(key, &e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	now := time.Now()
	var otherLane protocol.LaneID
	rand.Read(otherLane[:])
	var forgedKey protocol.Key
	rand.Read(forgedKey[:])
	base := protocol.Event{Type: protocol.EventRevoked, Lane: lk.Lane, Epoch: lk.Epoch, Seq: uint64(now.UnixMicro()), Time: now.UnixMilli(), Reason: "revoked"}
	forged := []struct {
		name  string
		frame []byte
	}{
		{"forged tag", seal(&forgedKey, base)},
		{"garbage", []byte("\x01\x01not an event")},
		{"truncated genuine", seal(&ek, base)[:40]},
		{"another lane", seal(&ek, func() protocol.Event { e := base; e.Lane = otherLane; return e }())},
		{"unknown epoch", seal(&ek, func() protocol.Event { e := base; e.Epoch = lk.Epoch + 7; return e }())},
	}
	for _, f := range forged {
		p.write(websocket.BinaryMessage, f.frame)
	}
	// A genuine expiring event, then the same bytes again.
	exp := base
	exp.Type, exp.Reason, exp.Deadline = protocol.EventExpiring, "", now.Add(time.Hour).UnixMilli()
	genuine := seal(&ek, exp)
	p.write(websocket.BinaryMessage, genuine)
	tb.WaitFor(`window.vaultEvents.some((e) => e.name === "expiring")`)
	p.write(websocket.BinaryMessage, genuine)
	// A signed request goes through the worker after every injected frame was handled (one
	// worker thread, frames in order): the session is intact.
	if got := vaultFetch(tb, "/api/profile", ""); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("fetch after the forged events: %s", got)
	}
	evs := pageEvents(tb)
	if slices.Contains(evs, "revoked") || slices.Contains(evs, "expired") || slices.Contains(evs, "fatal") {
		t.Fatalf("page events after forged frames: %v", evs)
	}
	if n := countOf(evs, "expiring"); n != 1 {
		t.Errorf("expiring events: %d (a replayed event was shown again?), events %v", n, evs)
	}
	if got := Eval[string](tb, `vault.status().then((s) => s.state)`); got != "active" {
		t.Fatalf("state after the forged events: %s", got)
	}
	// The real revocation arrives through the same proxy.
	if err := m.Revoke(context.Background(), "alice", sessionHandle(t, m, "alice")); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(`document.body.dataset.lastEvent === "revoked"`)
	// Each dropped frame was logged in the worker's console (with a code, not its bytes).
	refused := 0
	for _, e := range tb.Console() {
		if strings.Contains(e.Text, "[vault events] event refused") {
			refused++
		}
	}
	if refused < len(forged)+1 {
		t.Errorf("worker logged %d refused events, want >= %d (the forged frames and the replay)", refused, len(forged)+1)
	}
}

func countOf(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

// TestRevocationLatency measures, in Chromium, the time from Manager.Revoke to the page's
// revoked event (the budgets in README.md, "What it costs": p99 <= 50 ms), over SV_BENCH_N trials (default 200), each
// a fresh login. It reports; it asserts nothing about time. The page reports the event through a
// DevTools binding, so each figure includes the DevTools hop back to this process: an upper
// bound. TestTwoNodesRevocationLatency (redis_test.go) is the same across two nodes.
func TestRevocationLatency(t *testing.T) {
	if os.Getenv("SV_BENCH") != "1" {
		t.Skip("browser benchmarks run with SV_BENCH=1 (make bench-browser)")
	}
	d := newDemo(t, demo.Options{Quiet: true})
	ms := measureRevocation(t, d.App.Manager(), d.App.Manager())
	t.Logf("revocation latency, Manager.Revoke -> page event, %d trials: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (budget p99 <= 50 ms)",
		len(ms), quantile(ms, 0.5), quantile(ms, 0.9), quantile(ms, 0.99), ms[len(ms)-1])
}

// measureRevocation logs alice in on the vault page SV_BENCH_N times (default 200); each time,
// once her worker's event socket is up on conns, it times revoker.Revoke to the page's revoked
// event. It returns the times in ms, sorted.
func measureRevocation(t *testing.T, revoker, conns *server.Manager) []float64 {
	n := 200
	if v := os.Getenv("SV_BENCH_N"); v != "" {
		fmt.Sscan(v, &n)
	}
	tb := newTab(t)
	openVaultPage(tb, "")
	page := tb.Page()
	ctx := tb.Ctx()
	if err := page.Call(ctx, "Runtime.addBinding", runtime.AddBindingParams{Name: "svRevoked"}, nil); err != nil {
		t.Fatal(err)
	}
	calls, stop := page.Subscribe("Runtime.bindingCalled")
	defer stop()
	Eval[bool](tb, `(vault.addEventListener("revoked", () => svRevoked("x")), true)`)
	var ms []float64
	for i := range n {
		if st := loginAPI(tb, "alice"); st != "active" {
			t.Fatalf("trial %d: login: %s", i, st)
		}
		waitEventConns(t, conns, 1)
		h := sessionHandle(t, revoker, "alice")
		t0 := time.Now()
		if err := revoker.Revoke(context.Background(), "alice", h); err != nil {
			t.Fatal(err)
		}
	wait:
		for {
			select {
			case v := <-calls:
				var ev runtime.EventBindingCalled
				if json.Unmarshal(v, &ev) == nil && ev.Name == "svRevoked" {
					ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
					break wait
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("trial %d: no revoked event", i)
			}
		}
		waitEventConns(t, conns, 0)
	}
	slices.Sort(ms)
	return ms
}
