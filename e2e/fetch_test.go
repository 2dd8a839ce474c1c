package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/demo"
	"github.com/sessionvault/sessionvault/server"
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
	Eval[bool](tb, `(() => {
	  const c = new AbortController();
	  window.abortSlow = () => c.abort();
	  window.slowResult = vault.fetch("/echo/slow", {signal: c.signal}).then(() => "resolved", (e) => e.name);
	  return true;
	})()`)
	// Aborted once the server has the request (not after a fixed wait, which a loaded machine
	// may spend before the request leaves).
	for deadline := time.Now().Add(10 * time.Second); hits.Load() == before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	got := Eval[string](tb, `(window.abortSlow(), window.slowResult)`)
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

// TestVaultFetchStreamsResponses: a response of unknown length (chunked: server-sent events,
// NDJSON, a model's token stream) reaches the page as it arrives, not when it ends; the page's
// signal aborts it mid-stream and the server sees its request cancelled; a download over 1 MiB
// arrives intact. Before, the worker read every body whole before the page saw a byte.
func TestVaultFetchStreamsResponses(t *testing.T) {
	d := newDemo(t, demo.Options{})
	next := make(chan struct{})
	var held, heldGone atomic.Int64
	big := make([]byte, 3<<20)
	rand.Read(big)
	sum := sha256.Sum256(big)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := w.(http.Flusher)
		switch r.URL.Path {
		case "/stream/ndjson":
			w.Header().Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, `{"n":0}`+"\n")
			f.Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, `{"n":1}`+"\n")
		case "/stream/hold":
			held.Add(1)
			io.WriteString(w, "first\n")
			f.Flush()
			select {
			case <-r.Context().Done():
				heldGone.Add(1)
			case <-time.After(20 * time.Second):
			}
		case "/stream/big":
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			w.Write(big)
		}
	})
	srv.Handle(t, "/stream/", d.App.Manager().Require(h))
	tb := newTab(t)
	openVaultPage(tb, "?prefixes=/stream/,/sv/")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatal(st)
	}

	// The first line is read while the server still holds the second.
	Eval[string](tb, `(window.lines = [], (async () => {
	  const r = await vault.fetch("/stream/ndjson");
	  window.streamed = r.body instanceof ReadableStream && r.headers.get("content-type");
	  const rd = r.body.pipeThrough(new TextDecoderStream()).getReader();
	  for (let buf = "";;) {
	    const { value, done } = await rd.read();
	    if (done) break;
	    buf += value;
	    for (let i; (i = buf.indexOf("\n")) >= 0; buf = buf.slice(i + 1)) window.lines.push(JSON.parse(buf.slice(0, i)).n);
	  }
	  window.lines.push("end");
	})().catch((e) => window.lines.push("error " + (e.code || e.name))), "started")`)
	tb.WaitFor(`window.lines.length >= 1`)
	if got := Eval[string](tb, `JSON.stringify(window.lines)`); got != "[0]" {
		t.Fatalf("before the server sent its second line the page had %s, want [0]", got)
	}
	close(next)
	tb.WaitFor(`window.lines.includes("end") || String(window.lines.at(-1)).startsWith("error")`)
	if got := Eval[string](tb, `JSON.stringify(window.lines)`); got != `[0,1,"end"]` {
		t.Fatalf("streamed lines %s, want [0,1,\"end\"]", got)
	}
	if ct := Eval[string](tb, `String(window.streamed)`); ct != "application/x-ndjson" {
		t.Errorf("streamed response: %s", ct)
	}

	// Aborted mid-stream: the page's read rejects with the signal's AbortError, the server's
	// request is cancelled.
	got := Eval[string](tb, `(async () => {
	  const c = new AbortController();
	  const r = await vault.fetch("/stream/hold", {signal: c.signal});
	  const rd = r.body.getReader();
	  const first = new TextDecoder().decode((await rd.read()).value);
	  c.abort();
	  try { await rd.read(); return first + " read after abort"; } catch (e) { return first.trim() + " " + e.name; }
	})()`)
	if got != "first AbortError" {
		t.Fatalf("abort mid-stream: %q, want \"first AbortError\"", got)
	}
	for deadline := time.Now().Add(5 * time.Second); heldGone.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if held.Load() != 1 || heldGone.Load() != 1 {
		t.Fatalf("the server saw %d held requests, %d cancelled; want 1 and 1", held.Load(), heldGone.Load())
	}

	// A 3 MiB download with Content-Length arrives intact.
	digest := Eval[string](tb, `vault.fetch("/stream/big").then(async (r) => {
	  const b = await r.arrayBuffer();
	  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", b));
	  return b.byteLength + " " + Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
	})`)
	if want := strconv.Itoa(len(big)) + " " + hex.EncodeToString(sum[:]); digest != want {
		t.Fatalf("download: %q, want %q", digest, want)
	}
	if m := d.CountEvents("bad_signature") + d.CountEvents("replay_refused"); m > 0 {
		t.Errorf("the server refused %d signed requests", m)
	}
}

// TestRevocationEndsAStream: a page reading a long stream through vault.fetch from a handler that
// watches mgr.SessionContext: an admin revoke wipes the worker (revoked event) and ends the
// stream on the server too, so the page's read ends instead of receiving more.
func TestRevocationEndsAStream(t *testing.T) {
	d := newDemo(t, demo.Options{})
	mgr := d.App.Manager()
	cause := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, stop, err := mgr.SessionContext(r)
		if err != nil {
			t.Errorf("SessionContext: %v", err)
			return
		}
		defer stop()
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				cause <- context.Cause(ctx)
				return
			case <-tick.C:
				fmt.Fprintf(w, "data: %d\n\n", n)
				w.(http.Flusher).Flush()
			}
		}
	})
	srv.Handle(t, "/live/", mgr.Require(h))
	tb := newTab(t)
	openVaultPage(tb, "?prefixes=/live/,/sv/")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatal(st)
	}
	Eval[string](tb, `(window.got = [], (async () => {
	  const r = await vault.fetch("/live/events");
	  const rd = r.body.pipeThrough(new TextDecoderStream()).getReader();
	  for (;;) { const { value, done } = await rd.read(); if (done) break; window.got.push(value); }
	  window.got.push("end");
	})().catch((e) => window.got.push("error " + e.name)), "started")`)
	tb.WaitFor(`window.got.length >= 3`)
	list, err := mgr.Sessions(context.Background(), "alice")
	if err != nil || len(list) != 1 {
		t.Fatalf("sessions: %v %v", list, err)
	}
	if err := mgr.Revoke(context.Background(), "alice", list[0].Handle); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-cause:
		var ended *server.EndedError
		if !errors.As(err, &ended) || ended.Reason != "revoked" {
			t.Fatalf("the handler's context ended with %v, want the session ended: revoked", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream's handler did not stop after the revocation")
	}
	tb.WaitFor(`window.got.at(-1) === "end" || String(window.got.at(-1)).startsWith("error")`)
	tb.WaitFor(`window.vaultEvents.some((e) => e.name === "revoked")`)
	if r := vaultFetch(tb, "/live/again", ""); !strings.HasPrefix(r, "error no_session") {
		t.Fatalf("after the revocation: %s", shorten(r, 100))
	}
}
