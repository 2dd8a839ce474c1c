package e2e

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"

	"github.com/sessionvault/sessionvault/internal/demo"
	"github.com/sessionvault/sessionvault/server"
)

// Reload and new tabs (issue 7, PROTOCOL.md section 3.2) in Chromium: the worker of a reloaded
// page or a second tab joins the session with the boot script's single-use ticket; logout in one
// tab ends the others; and page script that loads the boot script any other way gets no ticket
// and no lane.

// ticketRe finds a filled-in ticket line of the boot script.
var ticketRe = regexp.MustCompile(`let ticket = "([A-Za-z0-9_-]+)";`)

// bootTap sits in front of the application's boot script ({prefix}worker.js) and records every
// ticket it hands out, so that the tests know exactly which bytes must never reach the page.
type bootTap struct {
	mu      sync.Mutex
	tickets [][]byte // raw 32-byte tickets
	hits    int      // boot script requests
}

func tapBoot(t *testing.T) *bootTap {
	bt := &bootTap{}
	srv.Handle(t, "/sv/worker.js", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		srv.app.ServeHTTP(rec, r)
		bt.mu.Lock()
		bt.hits++
		if m := ticketRe.FindSubmatch(rec.Body.Bytes()); m != nil {
			raw, err := base64.RawURLEncoding.DecodeString(string(m[1]))
			if err != nil || len(raw) != 32 {
				t.Errorf("boot script ticket %q is not 32 bytes of base64url", m[1])
			}
			bt.tickets = append(bt.tickets, raw)
		}
		bt.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	return bt
}

// issued returns the tickets handed out so far, and the number of boot script requests.
func (bt *bootTap) issued() ([][]byte, int) {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	return slices.Clone(bt.tickets), bt.hits
}

// openVault opens the harness's vault page and returns its state once the vault is created
// ("empty", or "active" when its worker joined the session).
func openVault(tb *Tab) string {
	tb.t.Helper()
	tb.Open("/t/vault.html", `document.body.dataset.state !== "loading"`)
	st := Eval[string](tb, `document.body.dataset.state`)
	if st == "error" {
		tb.t.Fatalf("vault page: %s", Eval[string](tb, `document.body.dataset.error || ""`))
	}
	return st
}

// profileLane returns the lane the server saw on a signed GET /api/profile.
func profileLane(tb *Tab) string {
	tb.t.Helper()
	r := vaultFetch(tb, "/api/profile", "")
	if !strings.HasPrefix(r, "200 ") {
		tb.t.Fatalf("GET /api/profile through the vault: %s", shorten(r, 200))
	}
	m := regexp.MustCompile(`"lane":"([A-Za-z0-9_-]+)"`).FindStringSubmatch(r)
	if m == nil {
		tb.t.Fatalf("profile has no lane: %s", shorten(r, 200))
	}
	return m[1]
}

// lanes returns the number of lanes of the user's only live session (0 if none).
func lanes(t *testing.T, d *Demo, user string) int {
	t.Helper()
	list, err := d.App.Manager().Sessions(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	switch len(list) {
	case 0:
		return 0
	case 1:
		return list[0].Lanes
	}
	t.Fatalf("%d sessions of %s, want at most one", len(list), user)
	return 0
}

// loggedIn opens a tab on the vault page and logs in as alice.
func loggedIn(t *testing.T) (*Demo, *Tab, *bootTap) {
	t.Helper()
	d := newDemo(t, demo.Options{})
	bt := tapBoot(t)
	tb := newTab(t)
	if st := openVault(tb); st != "empty" {
		t.Fatalf("fresh browser: vault state %q, want empty", st)
	}
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: state %q", st)
	}
	return d, tb, bt
}

// assertPageHasNoTicket takes a heap snapshot of the page (with AssertHeapClean's planted
// control) and fails on any ticket the boot script handed out, or any filled-in ticket line.
func assertPageHasNoTicket(tb *Tab, bt *bootTap) {
	tb.t.Helper()
	tickets, _ := bt.issued()
	snap := AssertHeapClean(tb, tb.Page(), tickets...)
	for _, h := range snap.Haystacks("page") {
		if m := ticketRe.Find(h.Bytes); m != nil {
			tb.t.Errorf("LEAK: a filled-in ticket line in the page heap (%s): %q", h.Name, m)
		}
	}
}

// TestJoinReloadKeepsSession: a reload of a logged-in page is active again without a login: its
// new worker joined the session with its own lane, and the old one is gone with the old page.
func TestJoinReloadKeepsSession(t *testing.T) {
	d, tb, bt := loggedIn(t)
	first := profileLane(tb)
	if st := openVault(tb); st != "active" {
		t.Fatalf("after reload: vault state %q, want active (joined)", st)
	}
	second := profileLane(tb)
	if second == first {
		t.Fatal("the reloaded page signs with the old lane")
	}
	if d.CountEvents("joined") != 1 || d.CountEvents("created") != 1 {
		t.Fatalf("audit: %d joined, %d created; want 1 and 1 (no second login)", d.CountEvents("joined"), d.CountEvents("created"))
	}
	if n := lanes(t, d, "alice"); n != 2 {
		t.Fatalf("%d lanes, want 2 (login and join)", n)
	}
	tickets, _ := bt.issued()
	if len(tickets) != 1 {
		t.Fatalf("%d tickets issued, want 1", len(tickets))
	}
	// No ticket, cookie value or session ID in the audit log, or in what the worker told the page.
	secrets := append([][]byte{}, tickets...)
	for _, c := range browserCookies(tb) {
		if c.Name == server.DefaultCookieName {
			secrets = append(secrets, []byte(c.Value))
		}
	}
	_, ids := d.LaneKeys(t, "alice")
	secrets = append(secrets, ids...)
	if len(secrets) != 3 {
		t.Fatalf("%d secrets to look for (ticket, cookie, session ID), want 3", len(secrets))
	}
	AssertNoSecrets(t, []Haystack{{"audit log", []byte(strings.Join(d.App.Events(), "\n"))}, tb.WorkerMessages()}, secrets...)
	assertPageHasNoTicket(tb, bt)
	assertNoConsoleErrors(tb)
}

// TestJoinSecondTab: a second tab of the same browser joins the session; both tabs sign with
// their own lanes, side by side.
func TestJoinSecondTab(t *testing.T) {
	d, tb, bt := loggedIn(t)
	tb2 := tb.Sibling()
	if st := openVault(tb2); st != "active" {
		t.Fatalf("second tab: vault state %q, want active (joined)", st)
	}
	l1, l2 := profileLane(tb), profileLane(tb2)
	if l1 == l2 {
		t.Fatal("two tabs share one lane")
	}
	if l1b := profileLane(tb); l1b != l1 {
		t.Fatalf("the first tab's lane changed: %s -> %s", l1, l1b)
	}
	if n := lanes(t, d, "alice"); n != 2 {
		t.Fatalf("%d lanes, want 2", n)
	}
	assertPageHasNoTicket(tb2, bt)
	assertNoConsoleErrors(tb2)
}

// TestJoinLogoutEndsOtherTabs: logout in one tab ends the lane of the other tab at once, through
// the event channel (no request from the other page), and a reload then needs a login.
func TestJoinLogoutEndsOtherTabs(t *testing.T) {
	d, tb, _ := loggedIn(t)
	if !eventsServed(t) {
		t.Fatal("the demo does not serve the event channel")
	}
	tb2 := tb.Sibling()
	if st := openVault(tb2); st != "active" {
		t.Fatalf("second tab: vault state %q, want active", st)
	}
	waitEventConns(t, d.App.Manager(), 2)
	Eval[string](tb, `vault.logout().then((s) => s.state)`)
	tb2.WaitFor(`window.vaultEvents.some((e) => e.name === "revoked")`)
	st := Eval[map[string]any](tb2, `vault.status()`)
	if st["state"] != "wiped" || st["reason"] != "logout" {
		t.Fatalf("other tab after logout: %v, want wiped (logout)", st)
	}
	if r := vaultFetch(tb2, "/api/profile", ""); !strings.HasPrefix(r, "error ") {
		t.Fatalf("other tab still signs after logout: %s", shorten(r, 100))
	}
	if st := openVault(tb2); st != "empty" {
		t.Fatalf("reload after logout: state %q, want empty (login needed)", st)
	}
	if n := lanes(t, d, "alice"); n != 0 {
		t.Fatalf("%d lanes left", n)
	}
}

// pageAttempt is one way page script can load the boot script. script runs in the attack page
// and resolves once the request was made and answered; reason is the refusal the server counts.
type pageAttempt struct {
	name, script, reason string
}

// The attack page: same origin, no CSP at all (the worst case: blob workers, inline script and
// anything else allowed), in the logged-in tab's browser context (it holds the cookie).
const attackPath = "/__e2e/attack/page.html"

var pageAttempts = []pageAttempt{
	{"fetch", `fetch("/sv/worker.js").then((r) => r.text()).then((s) => (window.got = s, "done"))`, server.RefusedDest},
	{"fetch forged Sec-Fetch headers", `fetch("/sv/worker.js", {headers: {"Sec-Fetch-Dest": "worker", "Sec-Fetch-Mode": "same-origin", "Sec-Fetch-Site": "same-origin"}, mode: "same-origin", credentials: "include"}).then((r) => r.text()).then((s) => (window.got = s, "done"))`, server.RefusedDest},
	{"fetch forged headers no-cors", `fetch("/sv/worker.js", {headers: {"Sec-Fetch-Dest": "worker"}, mode: "no-cors"}).then(() => "done")`, server.RefusedDest},
	{"import", `import("/sv/worker.js").then((m) => (window.got = m, "done"), (e) => (window.got = e, "done"))`, server.RefusedDest},
	{"script tag", `new Promise((res) => { const s = document.createElement("script"); s.src = "/sv/worker.js?tag"; s.onload = s.onerror = () => res("done"); document.head.append(s); })`, server.RefusedDest},
	{"iframe", `new Promise((res) => { const f = document.createElement("iframe"); f.src = "/sv/worker.js?frame"; f.onload = () => { try { window.got = f.contentDocument.body.textContent } catch {} res("done") }; document.body.append(f); })`, server.RefusedDest},
	{"importScripts in a blob worker", `new Promise((res) => {
	  const src = 'try { importScripts(' + JSON.stringify(location.origin + "/sv/worker.js?is") + ') } catch (e) {} postMessage(typeof ticket === "string" ? ticket : "none")';
	  const w = new Worker(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
	  w.onmessage = (e) => { window.got = e.data; res("done") }; w.onerror = () => res("done");
	})`, server.RefusedDest},
	{"static import in a blob module worker", `new Promise((res) => {
	  const src = 'import ' + JSON.stringify(location.origin + "/sv/worker.js?mod") + '; postMessage("imported")';
	  const w = new Worker(URL.createObjectURL(new Blob([src], {type: "text/javascript"})), {type: "module"});
	  w.onmessage = (e) => { window.got = e.data; res("done") }; w.onerror = (e) => { e.preventDefault(); res("done") };
	  setTimeout(() => res("done"), 3000);
	})`, server.RefusedMode},
	{"modulepreload", `new Promise((res) => { const l = document.createElement("link"); l.rel = "modulepreload"; l.href = "/sv/worker.js?preload"; l.onload = l.onerror = () => res("done"); document.head.append(l); })`, server.RefusedDest},
}

// TestJoinPageScriptGetsNoTicket runs every way page script can load the boot script, each as
// its own subtest, from a logged-in tab: none gets a ticket (the server counts the refusal with
// the expected reason and issues nothing), none adds a lane, and a heap snapshot of the page
// afterwards holds no ticket. The positive control: the same scan finds the ticket that a
// legitimately joined worker's heap keeps in its module source.
func TestJoinPageScriptGetsNoTicket(t *testing.T) {
	d, tb, bt := loggedIn(t)
	srv.Handle(t, attackPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte("<!doctype html><title>attacker</title><body>same origin, no CSP</body>"))
	}))
	tb.Open(attackPath, `document.readyState === "complete"`)
	mgr := d.App.Manager()
	for _, a := range pageAttempts {
		t.Run(strings.ReplaceAll(a.name, " ", "_"), func(t *testing.T) {
			ticketsBefore, hitsBefore := bt.issued()
			refusedBefore := mgr.TicketRefusals()
			issuedBefore := d.CountEvents("ticket_issued")
			if got := Eval[string](tb, a.script); got != "done" {
				t.Fatalf("attempt did not finish: %q", got)
			}
			tickets, hits := bt.issued()
			if hits == hitsBefore {
				t.Fatalf("the attempt made no request for the boot script (a cached response?)")
			}
			if len(tickets) != len(ticketsBefore) || d.CountEvents("ticket_issued") != issuedBefore {
				t.Fatalf("LEAK: page script got a ticket")
			}
			refused := mgr.TicketRefusals()
			if refused[a.reason] <= refusedBefore[a.reason] {
				t.Errorf("no %q refusal counted: before %v, after %v", a.reason, refusedBefore, refused)
			}
			t.Logf("refusals: %v", diffCounts(refusedBefore, refused))
			if n := lanes(t, d, "alice"); n != 1 {
				t.Errorf("%d lanes after the attempt, want 1", n)
			}
			tb.t = t
			assertPageHasNoTicket(tb, bt)
		})
	}
	if d.CountEvents("joined") != 0 {
		t.Fatal("a lane joined during the attempts")
	}

	// Positive control for the ticket scan: a worker that did get a ticket keeps it in its
	// module source; the same scan of its heap finds it.
	tb.t = t
	if st := openVault(tb); st != "active" {
		t.Fatalf("legitimate reload: state %q", st)
	}
	tickets, _ := bt.issued()
	if len(tickets) != 1 {
		t.Fatalf("%d tickets issued, want exactly the reload's", len(tickets))
	}
	w := tb.Worker("/sv/worker.js")
	ctx, cancel := context.WithTimeout(tb.Ctx(), 2*callTimeout)
	defer cancel()
	snap, err := w.HeapSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Find("worker", tickets[0])) == 0 {
		t.Fatal("positive control: the joined worker's heap does not show its (used) ticket: the scan cannot be trusted")
	}
	assertPageHasNoTicket(tb, bt)
}

func diffCounts(a, b map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range b {
		if v != a[k] {
			out[k] = v - a[k]
		}
	}
	return out
}

// TestJoinTicketReuseRefused: page script that learned a ticket its own worker already traded
// (here the test hands it over, as if it had leaked) cannot trade it again, even with the cookie
// the browser adds: the server refuses it as ticket_reuse and logs it, and no lane is added.
func TestJoinTicketReuseRefused(t *testing.T) {
	d, tb, bt := loggedIn(t)
	if st := openVault(tb); st != "active" {
		t.Fatalf("reload: state %q", st)
	}
	tickets, _ := bt.issued()
	if len(tickets) != 1 {
		t.Fatalf("%d tickets", len(tickets))
	}
	used := base64.RawURLEncoding.EncodeToString(tickets[0])
	r := Eval[string](tb, `fetch("/sv/join", {method: "POST", headers: {"Content-Type": "application/json"},
	  body: JSON.stringify({pub: "CQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ticket: `+jsString(used)+`})}).then((r) => r.status + " " + r.headers.get("Sv-Error"))`)
	if r != "401 ticket_reuse" {
		t.Fatalf("second use of the worker's ticket: %s, want 401 ticket_reuse", r)
	}
	if d.CountEvents("ticket_reuse") != 1 {
		t.Fatal("no ticket_reuse audit event")
	}
	if n := lanes(t, d, "alice"); n != 2 {
		t.Fatalf("%d lanes, want 2", n)
	}
}

// TestJoinReloadToActive measures reload-to-active: the time from navigation start to the vault
// page showing an active (joined) session, over 20 reloads with the module cached. Reported, not
// asserted.
func TestJoinReloadToActive(t *testing.T) {
	_, tb, _ := loggedIn(t)
	openVault(tb) // warm: the module is cached after this
	measure := func(want string) []float64 {
		var ms []float64
		for range 20 {
			if st := openVault(tb); st != want {
				t.Fatalf("reload: state %q, want %q", st, want)
			}
			ms = append(ms, Eval[float64](tb, `Number(document.body.dataset.readyAt)`))
		}
		sort.Float64s(ms)
		return ms
	}
	joined := measure("active")
	// The peer in the same run: the same reload without a session (no ticket, no join).
	Eval[string](tb, `vault.logout().then((s) => s.state)`)
	empty := measure("empty")
	t.Logf("reload-to-active (navigation start to a joined, active vault; module cached; n=%d): median %.1f ms (min %.1f, max %.1f); "+
		"the same reload without a session (vault ready, empty): median %.1f ms; join share %.1f ms; ticket lifetime %v",
		len(joined), quantile(joined, 0.5), joined[0], joined[len(joined)-1], quantile(empty, 0.5),
		quantile(joined, 0.5)-quantile(empty, 0.5), server.DefaultTicketLifetime)
}

// TestJoinCookieInChromium checks the cookie as Chromium stored it: __Host- prefixed, Secure,
// HttpOnly, SameSite=Strict, a session cookie, invisible to document.cookie; and logout clears
// it.
func TestJoinCookieInChromium(t *testing.T) {
	_, tb, _ := loggedIn(t)
	if c := Eval[string](tb, `document.cookie`); strings.Contains(c, server.DefaultCookieName) {
		t.Fatalf("document.cookie shows the join cookie: %q", c)
	}
	cookies := browserCookies(tb)
	var found bool
	for _, c := range cookies {
		if c.Name != server.DefaultCookieName {
			continue
		}
		found = true
		if !c.Secure || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || !c.Session || c.Path != "/" {
			t.Fatalf("cookie as stored: %+v", c)
		}
	}
	if !found {
		t.Fatalf("Chromium holds no %s cookie: %+v", server.DefaultCookieName, cookies)
	}
	Eval[string](tb, `vault.logout().then((s) => s.state)`)
	for _, c := range browserCookies(tb) {
		if c.Name == server.DefaultCookieName {
			t.Fatalf("logout left the cookie: %+v", c)
		}
	}
}

// browserCookies returns the cookies Chromium holds for the test server's origin.
func browserCookies(tb *Tab) []*network.Cookie {
	tb.t.Helper()
	return Call(tb, tb.Page(), network.GetCookies, network.GetCookiesParams{URLs: []string{srv.URL + "/"}}).Cookies
}

// TestLoginReachesOpenTabs: a tab open on the login form follows a login in another tab of the
// same origin (a BroadcastChannel notice; a fresh worker joins, as a reload would) and fires
// "active" with joined. A notice page script posts with no session changes nothing.
func TestLoginReachesOpenTabs(t *testing.T) {
	d := newDemo(t, demo.Options{})
	tb := newTab(t)
	if st := openVault(tb); st != "empty" {
		t.Fatalf("first tab: %s", st)
	}
	tb2 := tb.Sibling()
	if st := openVault(tb2); st != "empty" {
		t.Fatalf("second tab: %s", st)
	}
	state := func(tb *Tab) string { return Eval[string](tb, `vault.status().then((s) => s.state)`) }
	// Anyone on the origin can post the notice: with no session, nothing happens.
	Eval[bool](tb, `new BroadcastChannel("sessionvault " + new URL("/sv/worker.js", location.href).href).postMessage({type: "login"}), true`)
	time.Sleep(700 * time.Millisecond)
	if st := state(tb2); st != "empty" {
		t.Fatalf("after a notice with no session: %s", st)
	}
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatal(st)
	}
	deadline := time.Now().Add(8 * time.Second) // the forged notice above delays the next attempt by 2 s
	for state(tb2) != "active" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if st := state(tb2); st != "active" {
		t.Fatalf("the open tab did not follow the login: %s", st)
	}
	if !Eval[bool](tb2, `vaultEvents.some((e) => e.name === "active" && e.detail.joined === true) && vault.joined`) {
		t.Errorf("no active {joined} event: %s", Eval[string](tb2, `JSON.stringify(vaultEvents)`))
	}
	if l1, l2 := profileLane(tb), profileLane(tb2); l1 == l2 {
		t.Fatal("two tabs share one lane")
	}
	if n := lanes(t, d, "alice"); n != 2 {
		t.Fatalf("%d lanes, want 2", n)
	}
	assertNoConsoleErrors(tb2)
}

// TestThrottledReloadSaysWhy: failed logins from the browser's address (a neighbour behind the
// same NAT, or a typo storm) throttle it; a reload of a logged-in tab then gets a boot script
// without a ticket. The worker says why (joinError rate_limited, from the script), so the page
// can wait and reload instead of showing a login form that would be refused too. (Before, it
// looked logged out, with joinError null.) No ticket is issued, and the session is untouched.
func TestThrottledReloadSaysWhy(t *testing.T) {
	d, tb, bt := loggedIn(t)
	for i := 0; i < 40; i++ {
		res, err := http.Post(URL("/sv/login"), "application/json", strings.NewReader(`{"pub":"`+strings.Repeat("A", 43)+`","credentials":{"user":"alice","password":"wrong"}}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusTooManyRequests {
			break
		}
	}
	if st := openVault(tb); st != "empty" {
		t.Fatalf("a reload from a throttled address: state %q, want empty", st)
	}
	if got := Eval[string](tb, `String(vault.joined) + " " + vault.joinError`); got != "false rate_limited" {
		t.Errorf("joined, joinError = %s, want false rate_limited", got)
	}
	if tickets, _ := bt.issued(); len(tickets) != 0 {
		t.Errorf("%d tickets issued to a throttled address", len(tickets))
	}
	if n := lanes(t, d, "alice"); n != 1 {
		t.Errorf("%d lanes, want the login's one (the session goes on)", n)
	}
}

// TestLogoutFromAnEvictedTabEndsTheSession: a tab whose lane was evicted (more tabs than the
// session's lanes) has no key to sign its logout with; its unsigned logout carries the join
// cookie, and the server ends the cookie's session, so the user's other tabs are logged out as
// they would be by a logout from any live tab. Before, the evicted tab's logout only cleared the
// cookie and the other tabs stayed logged in until the idle timeout.
func TestLogoutFromAnEvictedTabEndsTheSession(t *testing.T) {
	d := newDemo(t, demo.Options{MaxLanesPerSession: 2})
	if !eventsServed(t) {
		t.Fatal("the demo does not serve the event channel")
	}
	tb := newTab(t)
	if st := openVault(tb); st != "empty" {
		t.Fatalf("fresh browser: vault state %q, want empty", st)
	}
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: state %q", st)
	}
	waitEventConns(t, d.App.Manager(), 1)
	tb2, tb3 := tb.Sibling(), tb.Sibling()
	if st := openVault(tb2); st != "active" {
		t.Fatalf("second tab: %q, want active", st)
	}
	// The third tab's join evicts the oldest lane: the first tab's, which the server tells.
	if st := openVault(tb3); st != "active" {
		t.Fatalf("third tab: %q, want active", st)
	}
	tb.WaitFor(`window.vaultEvents.some((e) => e.name === "revoked" && e.detail.reason === "lane_evicted")`)
	if st := Eval[map[string]any](tb, `vault.status()`); st["state"] != "wiped" {
		t.Fatalf("evicted tab: %v, want wiped", st)
	}
	if n := lanes(t, d, "alice"); n != 2 {
		t.Fatalf("%d lanes before the logout, want 2", n)
	}
	Eval[string](tb, `vault.logout().then((s) => s.state)`)
	for i, other := range []*Tab{tb2, tb3} {
		other.WaitFor(`window.vaultEvents.some((e) => e.name === "revoked" && e.detail.reason === "logout")`)
		if r := vaultFetch(other, "/api/profile", ""); !strings.HasPrefix(r, "error no_session") {
			t.Fatalf("tab %d still signs after the logout: %s", i+2, shorten(r, 100))
		}
	}
	if n := lanes(t, d, "alice"); n != 0 {
		t.Fatalf("%d lanes left after the logout", n)
	}
	if n := d.CountEvents("logout"); n != 1 {
		t.Fatalf("%d logout audit events, want 1", n)
	}
	if st := openVault(tb2); st != "empty" {
		t.Fatalf("reload after the logout: %q, want empty (login needed)", st)
	}
}
