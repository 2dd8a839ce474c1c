package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/demo"
)

// TestVaultFetchTakesWhatFetchTakes: vault.fetch has fetch's signature in Chromium. A Request,
// a URL object and every body kind fetch takes arrive at a verifying handler as fetch would send
// them (method, headers, body, and the Content-Type fetch gives each body), and init.signal
// aborts the request: the page gets the signal's AbortError and the server sees its request
// cancelled.
func TestVaultFetchTakesWhatFetchTakes(t *testing.T) {
	d := newDemo(t, demo.Options{})
	var hits, slowGone atomic.Int64
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/echo/redir" {
			http.Redirect(w, r, "/echo/a", http.StatusFound)
			return
		}
		if r.URL.Path == "/echo/slow" {
			select {
			case <-r.Context().Done():
				slowGone.Add(1)
			case <-time.After(10 * time.Second):
			}
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"method": r.Method, "path": r.URL.RequestURI(), "ct": r.Header.Get("Content-Type"),
			"x": r.Header.Get("X-Test"), "body": string(body),
		})
	})
	srv.Handle(t, "/echo/", d.App.Manager().Require(echo))
	tb := newTab(t)
	openVaultPage(tb, "?prefixes=/echo/,/sv/")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatal(st)
	}
	type seen struct{ Method, Path, Ct, X, Body string }
	call := func(expr string) seen {
		t.Helper()
		out := Eval[string](tb, `(async () => { try { const r = await `+expr+`; return r.status + " " + await r.text(); } catch (e) { return "error " + (e.code || e.name); } })()`)
		status, body, _ := strings.Cut(out, " ")
		if status != "200" {
			t.Fatalf("%s: %s", expr, out)
		}
		var s seen
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("%s: %s", expr, out)
		}
		return s
	}
	cases := []struct {
		expr string
		want seen
	}{
		{`vault.fetch(new Request("/echo/a?q=1", {method: "POST", body: "hi", headers: {"X-Test": "1"}}))`,
			seen{"POST", "/echo/a?q=1", "text/plain;charset=UTF-8", "1", "hi"}},
		{`vault.fetch("/echo/b", {method: "POST", body: "plain string"})`,
			seen{"POST", "/echo/b", "text/plain;charset=UTF-8", "", "plain string"}},
		{`vault.fetch("/echo/c", {method: "PUT", body: "{}", headers: {"Content-Type": "application/json"}})`,
			seen{"PUT", "/echo/c", "application/json", "", "{}"}},
		{`vault.fetch("/echo/d", {method: "POST", body: new URLSearchParams({a: "1", b: "x y"})})`,
			seen{"POST", "/echo/d", "application/x-www-form-urlencoded;charset=UTF-8", "", "a=1&b=x+y"}},
		{`vault.fetch("/echo/e", {method: "POST", body: new Blob(["[1]"], {type: "application/json"})})`,
			seen{"POST", "/echo/e", "application/json", "", "[1]"}},
		{`vault.fetch("/echo/f", {method: "PATCH", body: new TextEncoder().encode("bytes")})`,
			seen{"PATCH", "/echo/f", "", "", "bytes"}},
		{`vault.fetch(new URL("/echo/g", location.href), {method: "delete"})`,
			seen{"DELETE", "/echo/g", "", "", ""}},
		{`(() => { const detached = vault.fetch; return detached("/echo/detached"); })()`,
			seen{"GET", "/echo/detached", "", "", ""}},
		{`vault.fetch("../echo/rel?x=1")`, // resolved against the page's URL (/t/vault.html), as fetch does
			seen{"GET", "/echo/rel?x=1", "", "", ""}},
		{`vault.fetch(new Request(new Request("/echo/h", {method: "POST", body: "inner"}), {headers: {"X-Test": "outer"}}))`,
			seen{"POST", "/echo/h", "", "outer", "inner"}}, // init.headers replaces the Request's, as in fetch
	}
	for _, c := range cases {
		if got := call(c.expr); got != c.want {
			t.Errorf("%s\n got  %+v\n want %+v", c.expr, got, c.want)
		}
	}
	form := call(`(() => { const f = new FormData(); f.append("field", "value"); return vault.fetch("/echo/form", {method: "POST", body: f}); })()`)
	if !strings.HasPrefix(form.Ct, "multipart/form-data; boundary=") || !strings.Contains(form.Body, "value") {
		t.Errorf("FormData: %+v", form)
	}

	// Abort: in flight, and before sending.
	before := hits.Load()
	got := Eval[string](tb, `(async () => {
	  const c = new AbortController();
	  const p = vault.fetch("/echo/slow", {signal: c.signal});
	  setTimeout(() => c.abort(), 500);
	  try { await p; return "resolved"; } catch (e) { return e.name; }
	})()`)
	if got != "AbortError" {
		t.Errorf("aborted in flight: %s, want AbortError", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for slowGone.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if slowGone.Load() != 1 || hits.Load() != before+1 {
		t.Errorf("the server saw %d requests and %d cancelled, want 1 and 1", hits.Load()-before, slowGone.Load())
	}
	got = Eval[string](tb, `vault.fetch("/echo/never", {signal: AbortSignal.abort()}).then(() => "resolved", (e) => e.name)`)
	if got != "AbortError" || hits.Load() != before+1 {
		t.Errorf("pre-aborted: %s with %d requests, want AbortError and none", got, hits.Load()-before-1)
	}
	got = Eval[string](tb, `vault.fetch("/echo/x", {method: "GET", body: "no"}).then(() => "resolved", (e) => e.code)`)
	if got != "bad_input" {
		t.Errorf("GET with a body: %s, want bad_input", got)
	}
	got = Eval[string](tb, `vault.fetch("/echo/redir").then(() => "resolved", (e) => e.code)`)
	if got != "redirected" {
		t.Errorf("a redirect: %s, want redirected", got)
	}
	// The session is as it was.
	if s := call(`vault.fetch("/echo/after")`); s.Path != "/echo/after" {
		t.Errorf("after: %+v", s)
	}
}
