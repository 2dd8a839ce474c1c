package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/demo"
)

// TestRekeyInTheBrowser: a privilege change (the demo's POST /api/elevate calls RequireRekey)
// re-keys the session in a real worker with its event socket connected. The server ends the old
// lane (a sealed revoked "rekeyed" event, usually before the HTTP reply) and a request signed
// under the old lane while the re-key is in flight is refused "rekeyed"; neither may wipe the
// worker, whose re-key completes: the page sees "rekeyed" and no "revoked", the new session
// carries the elevated claims, the old one is gone, and a new tab joins the new one.
func TestRekeyInTheBrowser(t *testing.T) {
	for _, concurrent := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "with a request in flight"}[concurrent], func(t *testing.T) {
			d := newDemo(t, demo.Options{})
			tb := newTab(t)
			if st := openVault(tb); st != "empty" {
				t.Fatal(st)
			}
			if st := loginAPI(tb, "alice"); st != "active" {
				t.Fatal(st)
			}
			waitEventConns(t, d.App.Manager(), 1)
			if concurrent {
				got := Eval[string](tb, `Promise.all([
				  vault.fetch("/api/elevate", {method: "POST"}).then((r) => r.status),
				  vault.fetch("/api/notes").then((r) => r.status, (e) => e.code),
				]).then((x) => x.join(" "))`)
				t.Logf("elevate, concurrent fetch: %s", got)
			} else if got := vaultFetch(tb, "/api/elevate", `{method: "POST"}`); !strings.HasPrefix(got, "200 ") {
				t.Fatalf("elevate: %s", got)
			}
			deadline := time.Now().Add(5 * time.Second)
			for Eval[string](tb, `JSON.stringify(window.vaultEvents)`); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if strings.Contains(Eval[string](tb, `JSON.stringify(window.vaultEvents)`), "rekeyed") {
					break
				}
			}
			events := Eval[string](tb, `JSON.stringify(window.vaultEvents)`)
			if !strings.Contains(events, `rekeyed`) || strings.Contains(events, `revoked`) {
				t.Fatalf("page events %s: want rekeyed and no revoked", events)
			}
			if st := Eval[map[string]any](tb, `vault.status()`); st["state"] != "active" {
				t.Fatalf("after the re-key the vault is %v, want active", st)
			}
			if got := vaultFetch(tb, "/api/profile", ""); !strings.Contains(got, `"elevated":"true"`) {
				t.Fatalf("profile after the re-key: %s (want the elevated claims)", got)
			}
			if n := d.CountEvents("rekeyed"); n != 1 {
				t.Errorf("%d rekeyed audit events, want 1", n)
			}
			if n := lanes(t, d, "alice"); n != 1 {
				t.Errorf("alice has %d lanes, want 1 (the new session's)", n)
			}
			tb2 := tb.Sibling()
			if st := openVault(tb2); st != "active" {
				t.Errorf("a new tab after the re-key: %s, want active (joined the new session)", st)
			}
		})
	}
}

// TestLogoutDuringRekey: logout called while a re-key is in flight waits for it and ends the
// session that results, so no session (elevated or not) outlives the logout: no lane is left
// and a new tab starts logged out.
func TestLogoutDuringRekey(t *testing.T) {
	d := newDemo(t, demo.Options{})
	tb := newTab(t)
	openVault(tb)
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatal(st)
	}
	got := Eval[string](tb, `vault.fetch("/api/elevate", {method: "POST"}).then(() => vault.logout()).then((s) => s.state + " " + s.reason)`)
	if got != "wiped logout" {
		t.Fatalf("logout: %s", got)
	}
	deadline := time.Now().Add(3 * time.Second)
	for lanes(t, d, "alice") != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := lanes(t, d, "alice"); n != 0 {
		t.Errorf("alice has %d lanes after logout, want 0 (audit %v)", n, d.AuditEvents())
	}
	tb2 := tb.Sibling()
	if st := openVault(tb2); st != "empty" {
		t.Errorf("a new tab after logout: %s, want empty", st)
	}
}

// A logout waits for a login in flight only 5 s; then it aborts it. The server, seeing the client
// gone, makes no session; a reply would have set the join cookie of a session nobody logged out,
// which a reload would join.
func TestLogoutAbortsALoginThatHangs(t *testing.T) {
	d := newDemo(t, demo.Options{})
	held := make(chan struct{})
	hold := func(r *http.Request) {
		if r.URL.Path == "/sv/login" {
			close(held)
			time.Sleep(7 * time.Second) // past the logout's 5 s wait
		}
	}
	d.before.Store(&hold)
	tb := newTab(t)
	openVault(tb)
	Eval[bool](tb, `window.hungLogin = vault.login({user: "alice", password: "alice-password"}).then(() => "active", (e) => e.code); true`)
	select {
	case <-held:
	case <-time.After(2 * waitTimeout):
		t.Fatal("the login did not reach the server")
	}
	t0 := time.Now()
	got := Eval[string](tb, `vault.logout().then((s) => s.state + " " + s.reason)`)
	waited := time.Since(t0)
	if got != "wiped logout" {
		t.Fatalf("logout: %s", got)
	}
	if code := Eval[string](tb, `window.hungLogin`); code != "aborted" {
		t.Errorf("the login ended with %q, want aborted", code)
	}
	t.Logf("logout answered after %v", waited.Round(time.Millisecond))
	// Let the held login handler finish: it finds its client gone.
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(d.AuditEvents(), "login_failed") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := lanes(t, d, "alice"); n != 0 {
		t.Errorf("alice has %d lanes after the aborted login, want 0 (audit %v)", n, d.AuditEvents())
	}
	if ev := d.AuditEvents(); !slices.Contains(ev, "login_failed") || slices.Contains(ev, "created") {
		t.Errorf("audit %v, want login_failed and no created", ev)
	}
	if st := openVault(tb.Sibling()); st != "empty" {
		t.Errorf("a new tab after logout: %s, want empty", st)
	}
}
