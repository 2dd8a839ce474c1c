package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/runtime"
	"github.com/sessionvault/sessionvault/internal/demo"
)

// The security tests of SECURITY.md in a real browser, against the demo app: no key
// material in the page's or the worker's JavaScript heap or on the network, hostile page
// script refused, replay from outside refused, and a wiped worker after logout.

// keySecrets reads the server's current lane keys of user into ss (K, sign key and event key of
// every live lane epoch, and the raw session IDs) and returns the lane keys.
func keySecrets(t *testing.T, d *Demo, user string, ss *Secrets) []LaneKey {
	t.Helper()
	keys, sids := d.LaneKeys(t, user)
	for i := range keys {
		ss.Add(keys[i].Secrets()...)
	}
	for _, id := range sids {
		ss.Add(Secret{"session ID of " + user, id})
	}
	return keys
}

// requireKeysAreReal fails the test unless the newest signed /api/ request the server received
// verifies under keys: the proof that the secrets searched for are the real ones (a search for
// wrongly derived keys would pass whatever the browser holds).
func requireKeysAreReal(t *testing.T, keys []LaneKey) {
	t.Helper()
	reqs := srv.Requests("/api/")
	if len(reqs) == 0 {
		t.Fatal("no /api/ request to check the keys with")
	}
	var lastErr error
	for i := len(reqs) - 1; i >= 0 && i >= len(reqs)-5; i-- {
		if _, err := VerifyCaptured(reqs[i], keys); err == nil {
			return
		} else {
			lastErr = err
		}
	}
	t.Fatalf("the keys read from the store do not verify the browser's signatures (%v): the search would prove nothing", lastErr)
}

// logFindings names the secrets when a search found one.
func logFindings(t *testing.T, ss Secrets) {
	if t.Failed() {
		t.Logf("secrets searched for:%s", ss.Names())
	}
}

// TestHeapHasNoKeyMaterial logs in through the demo's UI, makes signed calls across a key
// rotation, and then searches for every key the server holds for the session (K of each epoch,
// the sign and event keys derived from it) and the raw session ID: in heap snapshots of the
// page and of the worker (each with its positive control), in everything reachable from the
// worker's global, in every message the page read from the worker, and in all network traffic
// of the tab (with its control). The keys are read from the store and unsealed with the store
// key, and proven real by verifying a captured signature with them.
func TestHeapHasNoKeyMaterial(t *testing.T) {
	d := newDemo(t, demo.Options{RotateEvery: time.Second})
	tb := newTab(t)
	openDemo(tb)
	loginUI(tb, "alice", "alice-password")
	var ss Secrets
	defer func() { logFindings(t, ss) }()
	keySecrets(t, d, "alice", &ss)
	for _, b := range []string{"call-api", "post-note"} {
		if st, body := clickAPI(tb, b); st != "200" {
			t.Fatalf("%s: %s %s", b, st, body)
		}
	}
	// Past RotateEvery the next response asks the worker to rotate: the heap then has seen a
	// rotation's handshake too.
	time.Sleep(1100 * time.Millisecond)
	if st, _ := clickAPI(tb, "call-api"); st != "200" {
		t.Fatalf("call-api: %s", st)
	}
	tb.WaitFor(`document.body.dataset.lastEvent === "rotated"`)
	if st, _ := clickAPI(tb, "call-api"); st != "200" {
		t.Fatalf("call-api after rotation: %s", st)
	}
	keys := keySecrets(t, d, "alice", &ss)
	requireKeysAreReal(t, keys)
	if len(ss) < 7 { // 2 epochs x 3 keys + the session ID
		t.Fatalf("only %d secrets to search for:%s", len(ss), ss.Names())
	}

	w := tb.Worker("/sv/worker.js")
	secrets := ss.Bytes()
	page := AssertHeapClean(tb, tb.Page(), secrets...)
	worker := AssertHeapClean(tb, w, secrets...)
	t.Logf("heap snapshots: page %d strings, worker %d strings; %d secrets searched in %d encodings each",
		page.Strings, worker.Strings, len(secrets), len(Encodings(secrets[0])))

	ctx, cancel := context.WithTimeout(tb.Ctx(), callTimeout)
	defer cancel()
	g, err := w.GlobalsDump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	AssertNoSecrets(t, []Haystack{{"worker globals", g}, tb.WorkerMessages()}, secrets...)
	tr := AssertTrafficClean(tb, secrets...)
	if n := len(tr.Find("/api/")); n < 4 {
		t.Errorf("traffic holds %d /api/ exchanges, want at least 4:\n%s", n, tr)
	}
	if len(tr.Find("/sv/rotate")) == 0 {
		t.Errorf("traffic has no rotation:\n%s", tr)
	}
}

// hostileJS runs in the page as injected script would. It starts its own vault worker from our
// URL (the client keeps its Worker private), sends it hostile messages one at a time and
// returns the outcome of each: "ok" or the error code of the reply.
const hostileJS = `(async () => {
  const w = new Worker("/sv/worker.js", {type: "module"});
  const waiters = [], stray = [], events = [];
  let ready;
  const isReady = new Promise((r) => (ready = r));
  w.onmessage = (e) => {
    const m = e.data;
    if (m && typeof m.event === "string") { events.push(m.event); if (m.event === "ready") ready(); return; }
    const r = waiters.shift();
    if (r) r(m); else stray.push(m);
  };
  await isReady;
  const send = (msg, transfer) => new Promise((resolve) => {
    waiters.push((m) => resolve(m && m.ok ? "ok" : (m && m.error && typeof m.error.code === "string" ? m.error.code : "untyped:" + JSON.stringify(m))));
    w.postMessage(msg, transfer || []);
  });
  const big = new Uint8Array((4 << 20) + 1);
  const out = {};
  const cases = [
    ["string message", "hello"],
    ["null message", null],
    ["array message", [1, 2, 3]],
    ["no id", {op: "status"}],
    ["negative id", {id: -1, op: "status"}],
    ["fractional id", {id: 1.5, op: "status"}],
    ["string id", {id: "1", op: "status"}],
    ["unknown op", {id: 1, op: "explode"}],
    ["op __proto__", {id: 2, op: "__proto__"}],
    ["op constructor", {id: 3, op: "constructor"}],
    ["numeric op", {id: 4, op: 42}],
    ["internal op wipe", {id: 5, op: "wipe"}],
    ["internal op sign", {id: 6, op: "sign"}],
    ["login before init", {id: 7, op: "login", credentials: {user: "alice", password: "x"}}],
    ["fetch without session", {id: 8, op: "fetch", url: "/api/profile", method: "GET"}],
    ["policy not an object", {id: 9, op: "init", policy: "all"}],
    ["policy unknown field", {id: 10, op: "init", policy: {allowAll: true}}],
    ["policy wildcard origin", {id: 11, op: "init", policy: {origins: ["*"]}}],
    ["policy origins not strings", {id: 12, op: "init", policy: {origins: [1, 2]}}],
    ["policy dot-dot prefix", {id: 13, op: "init", policy: {prefixes: ["/api/../"]}}],
    ["policy too many prefixes", {id: 14, op: "init", policy: {prefixes: Array.from({length: 100}, (_, i) => "/p" + i + "/")}}],
    ["prefix traversal", {id: 15, op: "init", prefix: "/../"}],
    ["first init", {id: 16, op: "init", policy: {prefixes: ["/api/"]}}],
    ["re-bind origins", {id: 17, op: "init", policy: {origins: ["https://evil.example"]}}],
    ["re-bind prefixes", {id: 18, op: "init", policy: {prefixes: ["/"]}}],
    ["re-bind endpoint prefix", {id: 19, op: "init", prefix: "/evil/"}],
    ["url not a string", {id: 20, op: "fetch", url: {href: "/api/profile"}}],
    ["url too long", {id: 21, op: "fetch", url: "/api/" + "x".repeat(9000)}],
    ["method TRACE", {id: 22, op: "fetch", url: "/api/profile", method: "TRACE"}],
    ["method lower case", {id: 23, op: "fetch", url: "/api/profile", method: "get"}],
    ["headers not an array", {id: 24, op: "fetch", url: "/api/profile", headers: "x: y"}],
    ["reserved header", {id: 25, op: "fetch", url: "/api/profile", headers: [["Signature", "sv=:AAAA:"]]}],
    ["cookie header", {id: 26, op: "fetch", url: "/api/profile", headers: [["Cookie", "a=b"]]}],
    ["too many headers", {id: 27, op: "fetch", url: "/api/profile", headers: Array.from({length: 100}, (_, i) => ["x-h" + i, "v"])}],
    ["body an object", {id: 28, op: "fetch", url: "/api/notes", method: "POST", body: {text: "x"}}],
    ["huge body bytes", {id: 29, op: "fetch", url: "/api/notes", method: "POST", body: big.buffer}, [big.buffer]],
    ["huge body string", {id: 30, op: "fetch", url: "/api/notes", method: "POST", body: "x".repeat((4 << 20) + 1)}],
    ["huge credentials", {id: 31, op: "login", credentials: {user: "alice", password: "x".repeat(20000)}}],
    ["credentials missing", {id: 32, op: "login"}],
    ["GET with body", {id: 33, op: "fetch", url: "/api/profile", method: "GET", body: "x"}],
    ["other origin", {id: 34, op: "fetch", url: "https://evil.example/api/profile", method: "GET"}],
    ["status still works", {id: 35, op: "status"}],
  ];
  for (const [name, msg, transfer] of cases) out[name] = await send(msg, transfer);
  // Too many operations per second: a burst past the limit is refused, not queued.
  const flood = await Promise.all(Array.from({length: 150}, (_, i) => send({id: 1000 + i, op: "status"})));
  out["flood of 150"] = flood.filter((x) => x === "rate_limited").length + " rate_limited, " + flood.filter((x) => x === "ok").length + " ok";
  out.events = events.join(",");
  out.stray = String(stray.length);
  w.terminate();
  return out;
})()`

// legitHostileJS attacks the page's own, logged-in vault: through its API with bad input, and
// by capturing its private Worker (patching Worker.prototype.postMessage, as injected script can)
// to post raw messages to it. It returns the outcome of each attempt.
const legitHostileJS = `(async () => {
  const out = {};
  const code = (p) => p.then((r) => "ok " + r.status, (e) => (e instanceof VaultError ? "" : "untyped ") + e.code);
  out["api: other origin"] = await code(vault.fetch("https://evil.example/steal"));
  out["api: same server, other origin"] = await code(vault.fetch(OTHER + "/api/profile"));
  out["api: path outside policy"] = await code(vault.fetch("/outside/x"));
  out["api: dot-dot out of policy"] = await code(vault.fetch("/api/../outside/x"));
  out["api: encoded dot-dot"] = await code(vault.fetch("/api/%2e%2e/outside/x"));
  out["api: userinfo"] = await code(vault.fetch("http://user:pw@" + location.host + "/api/profile"));
  out["api: method TRACE"] = await code(vault.fetch("/api/profile", {method: "TRACE"}));
  out["api: method not in policy"] = await code(vault.fetch("/api/profile", {method: "OPTIONS"}));
  out["api: reserved header"] = await code(vault.fetch("/api/profile", {headers: {"Signature-Input": "sv=()"}}));
  out["api: huge body"] = await code(vault.fetch("/api/notes", {method: "POST", body: new Uint8Array((4 << 20) + 1)}));
  out["api: GET with body"] = await code(vault.fetch("/api/profile", {body: "x"}));
  // The vault's own endpoints, which the policy's "/sv/" prefix covers: a rekey or rotate request
  // carrying a public key of the page's own (PROTOCOL.md 3.4), by any spelling.
  const pub = JSON.stringify({pub: "3p7bfXt9wbTTW2Ls7DU3X4NDyFt4Z03a_H4Ub4grK08"});
  const post = (url) => code(vault.fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: pub}));
  out["api: own rekey"] = await post("/sv/rekey");
  out["api: own rotate"] = await post("/sv/rotate");
  out["api: own rekey, encoded"] = await post("/s%76/rekey");
  out["api: own logout"] = await post("/sv/logout");

  const orig = Worker.prototype.postMessage;
  let w = null;
  Worker.prototype.postMessage = function (...a) { w = this; return orig.apply(this, a); };
  await vault.status();
  Worker.prototype.postMessage = orig;
  if (!w) return {error: "could not capture the worker"};
  const raw = (msg) => new Promise((resolve) => {
    const on = (e) => {
      if (!e.data || e.data.id !== msg.id) return;
      w.removeEventListener("message", on);
      resolve(e.data.ok ? "ok" : e.data.error.code);
    };
    w.addEventListener("message", on);
    orig.call(w, msg);
  });
  let id = 1e9;
  out["raw: re-bind origins"] = await raw({id: id++, op: "init", policy: {origins: ["https://evil.example"], prefixes: ["/"]}});
  out["raw: re-bind endpoint prefix"] = await raw({id: id++, op: "init", prefix: "/evil/"});
  out["raw: re-bind empty policy"] = await raw({id: id++, op: "init"});
  out["raw: unknown op"] = await raw({id: id++, op: "export_key"});
  out["raw: internal op wipe"] = await raw({id: id++, op: "wipe"});
  out["raw: other origin"] = await raw({id: id++, op: "fetch", url: "https://evil.example/", method: "GET"});
  out["raw: path outside policy"] = await raw({id: id++, op: "fetch", url: "/outside/x", method: "GET"});
  out["raw: huge body"] = await raw({id: id++, op: "fetch", url: "/api/notes", method: "POST", body: "x".repeat((4 << 20) + 1)});
  out["raw: login over the session"] = await raw({id: id++, op: "login", credentials: {user: "bob", password: "wrong"}});
  return out;
})()`

// TestHostileMessages: script in the page talks to the vault as an attacker would. On a worker
// of its own (new Worker on our URL): malformed messages, unknown and internal ops, wrong
// types, huge payloads, a bad and a re-bound policy, a flood. On the page's logged-in vault:
// through its API, requests to other origins, paths outside the policy, bad methods and
// headers, huge bodies; and through its captured Worker, raw re-binds of the policy and unknown
// ops. Every one is refused with a typed error and changes nothing: the session stays active
// on the same epoch, a signed fetch still works, and nothing reached another origin or path.
func TestHostileMessages(t *testing.T) {
	d := newDemo(t, demo.Options{})
	tb := newTab(t)
	openVaultPage(tb, "")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: state %s", st)
	}
	if got := vaultFetch(tb, "/api/profile", ""); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("signed fetch before the attack: %s", got)
	}
	epoch := Eval[int](tb, `vault.status().then((s) => s.epoch)`)
	start := len(srv.Requests(""))

	var own map[string]string
	if err := json.Unmarshal([]byte(Eval[string](tb, `(`+hostileJS+`).then((o) => JSON.stringify(o))`)), &own); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"string message": "bad_message", "null message": "bad_message", "array message": "bad_message",
		"no id": "bad_message", "negative id": "bad_message", "fractional id": "bad_message", "string id": "bad_message",
		"unknown op": "unknown_op", "op __proto__": "unknown_op", "op constructor": "unknown_op", "numeric op": "unknown_op",
		"internal op wipe": "unknown_op", "internal op sign": "unknown_op",
		"login before init":     "bad_state",
		"fetch without session": "no_session",
		"policy not an object":  "bad_input", "policy unknown field": "bad_input", "policy wildcard origin": "bad_input",
		"policy origins not strings": "bad_input", "policy dot-dot prefix": "bad_input", "policy too many prefixes": "bad_input",
		"prefix traversal": "bad_input",
		"first init":       "ok",
		"re-bind origins":  "policy_bound", "re-bind prefixes": "policy_bound", "re-bind endpoint prefix": "policy_bound",
		"url not a string": "bad_input", "url too long": "bad_input", "method TRACE": "bad_input", "method lower case": "bad_input",
		"headers not an array": "bad_input", "reserved header": "bad_input", "cookie header": "bad_input", "too many headers": "bad_input",
		"body an object": "bad_input", "huge body bytes": "too_large", "huge body string": "too_large",
		"huge credentials": "bad_input", "credentials missing": "bad_input", "GET with body": "bad_input",
		// The page is logged in, so the worker the injected script started is a fresh worker of
		// a live session: it joined (PROTOCOL.md 3.2) and refuses the other origin by policy.
		// The script got a worker to ask, never a key or ticket (SECURITY.md, session riding).
		"other origin":       "policy_denied",
		"status still works": "ok",
	}
	for name, code := range want {
		if own[name] != code {
			t.Errorf("own worker, %s: got %q, want %q", name, own[name], code)
		}
	}
	if !strings.Contains(own["flood of 150"], " rate_limited") || strings.HasPrefix(own["flood of 150"], "0 ") {
		t.Errorf("own worker, flood: %s, want some rate_limited", own["flood of 150"])
	}
	// (channel: its event socket came up, which it may or may not have by now.)
	if ev := strings.Replace(own["events"], ",channel", "", 1); ev != "ready,active" || own["stray"] != "0" {
		t.Errorf("own worker: events %q, %s replies without a request", own["events"], own["stray"])
	}
	t.Logf("own worker: flood of 150 -> %s", own["flood of 150"])

	// The page's own vault. OTHER is this server under another host name: another origin.
	other := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	var legit map[string]string
	if err := json.Unmarshal([]byte(Eval[string](tb, `((OTHER) => `+legitHostileJS+`)(`+jsString(other)+`).then((o) => JSON.stringify(o))`)), &legit); err != nil {
		t.Fatal(err)
	}
	wantLegit := map[string]string{
		"api: other origin": "policy_denied", "api: same server, other origin": "policy_denied",
		"api: path outside policy": "policy_denied", "api: dot-dot out of policy": "policy_denied",
		"api: encoded dot-dot": "policy_denied", "api: userinfo": "policy_denied",
		"api: method TRACE": "bad_input", "api: method not in policy": "policy_denied",
		"api: reserved header": "bad_input", "api: huge body": "too_large", "api: GET with body": "bad_input",
		"api: own rekey": "policy_denied", "api: own rotate": "policy_denied", "api: own rekey, encoded": "policy_denied",
		"api: own logout":      "policy_denied",
		"raw: re-bind origins": "policy_bound", "raw: re-bind endpoint prefix": "policy_bound", "raw: re-bind empty policy": "policy_bound",
		"raw: unknown op": "unknown_op", "raw: internal op wipe": "unknown_op",
		"raw: other origin": "policy_denied", "raw: path outside policy": "policy_denied", "raw: huge body": "too_large",
		"raw: login over the session": "bad_state",
	}
	if e, ok := legit["error"]; ok {
		t.Fatalf("legit vault attack: %s", e)
	}
	for name, code := range wantLegit {
		if legit[name] != code {
			t.Errorf("page's vault, %s: got %q, want %q", name, legit[name], code)
		}
	}

	// Nothing changed: same session, same epoch, signed fetches work.
	st := Eval[map[string]any](tb, `vault.status()`)
	if st["state"] != "active" || int(st["epoch"].(float64)) != epoch {
		t.Errorf("after the attack the vault is %v, want active on epoch %d", st, epoch)
	}
	if got := vaultFetch(tb, "/api/profile", ""); !strings.HasPrefix(got, "200 ") || !strings.Contains(got, `"user":"alice"`) {
		t.Errorf("signed fetch after the attack: %s", got)
	}
	if got := vaultFetch(tb, "/api/notes", `{method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({text: "still here"})}`); !strings.HasPrefix(got, "200 ") {
		t.Errorf("signed POST after the attack: %s", got)
	}
	// No refused request reached the server: only the two legitimate calls since.
	var api int
	for _, r := range srv.Requests("")[start:] {
		p := strings.TrimPrefix(r.URL, srv.URL)
		switch {
		case strings.HasPrefix(p, "/api/"):
			api++
		case strings.HasPrefix(p, "/sv/") || strings.HasPrefix(p, "/__e2e/"):
		default:
			t.Errorf("a refused request reached the server: %s %s", r.Method, r.URL)
		}
	}
	if api != 2 {
		t.Errorf("%d /api/ requests reached the server during and after the attack, want 2 (the legitimate ones)", api)
	}
	tr := tb.Traffic()
	for _, x := range tr.Exchanges {
		if strings.Contains(x.URL, "evil.example") || strings.HasPrefix(x.URL, other) {
			t.Errorf("the browser sent a request to another origin: %s %s (%s)", x.Method, x.URL, x.Session)
		}
	}
	for _, bad := range []string{"bad_signature", "unknown_session", "reuse_detected", "revoked"} {
		if n := d.CountEvents(bad); n > 0 {
			t.Errorf("audit log has %d %s events", n, bad)
		}
	}
}

// TestReplayFromOutsideRefused captures signed requests (a GET and a POST with a body) as the
// server received them, and as DevTools saw them leave the browser (a HAR file's view), and
// sends them again from Go's HTTP client: each is refused with 401 replay, the POST's handler
// did not run again, the audit log says replay_refused, and the session goes on. A captured
// signature moved to another path is refused as bad_signature.
func TestReplayFromOutsideRefused(t *testing.T) {
	d := newDemo(t, demo.Options{})
	tb := newTab(t)
	openVaultPage(tb, "")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: state %s", st)
	}
	start := len(srv.Requests(""))
	if got := vaultFetch(tb, "/api/profile?x=1", ""); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("signed GET: %s", got)
	}
	if got := vaultFetch(tb, "/api/notes", `{method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({text: "once"})}`); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("signed POST: %s", got)
	}
	var get, post []*CapturedRequest
	for _, r := range srv.Requests("")[start:] {
		switch strings.TrimPrefix(r.URL, srv.URL) {
		case "/api/profile?x=1":
			get = append(get, r)
		case "/api/notes":
			post = append(post, r)
		}
	}
	if len(get) != 1 || len(post) != 1 {
		t.Fatalf("captured %d GETs and %d POSTs, want 1 and 1", len(get), len(post))
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()

	refused := func(what string, r *CapturedRequest, reason string) {
		t.Helper()
		res, body, err := srv.Replay(ctx, r)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Sv-Error") != reason || !strings.Contains(string(body), `"error":"`+reason+`"`) {
			t.Errorf("%s: %d Sv-Error %q %q, want 401 %s", what, res.StatusCode, res.Header.Get("Sv-Error"), body, reason)
		}
	}
	refused("replayed GET", get[0], "replay")
	refused("replayed POST", post[0], "replay")
	refused("replayed POST, again", post[0], "replay")

	// The HAR view: the request as DevTools saw the worker send it.
	var x *Exchange
	for _, e := range tb.Traffic().Find("/api/profile?x=1") {
		if e.Method == http.MethodGet && headerValue(e.RequestHeaders, "Signature") != "" {
			x = e
		}
	}
	if x == nil {
		t.Fatalf("DevTools did not capture the signed GET with its headers")
	}
	h := http.Header{}
	for k, v := range x.RequestHeaders {
		if !strings.HasPrefix(k, ":") && !strings.EqualFold(k, "Host") && !strings.EqualFold(k, "Connection") && !strings.EqualFold(k, "Content-Length") {
			h.Set(k, v)
		}
	}
	refused("replayed from DevTools' capture", &CapturedRequest{Method: x.Method, URL: x.URL, Header: h, Body: x.PostData}, "replay")

	// Moved to another path, the signature no longer verifies.
	moved := *get[0]
	moved.URL = strings.Replace(moved.URL, "/api/profile?x=1", "/api/notes", 1)
	refused("signature moved to another path", &moved, "bad_signature")

	if n := d.CountEvents("replay_refused"); n < 4 {
		t.Errorf("audit log has %d replay_refused events, want 4: %v", n, d.AuditEvents())
	}
	if got := vaultFetch(tb, "/api/notes", ""); !strings.HasPrefix(got, "200 ") || strings.Count(got, "once") != 1 {
		t.Errorf("notes after the replays: %s, want the one note once (a replayed POST must not run its handler)", got)
	}
	if st := Eval[string](tb, `vault.status().then((s) => s.state)`); st != "active" {
		t.Errorf("after the replays the vault is %s, want active", st)
	}
}

// loginForWipe logs in on the vault page, makes a signed call, and returns the session's
// secrets (proven real) and the worker's session.
func loginForWipe(t *testing.T) (*Demo, *Tab, Secrets, *Session) {
	t.Helper()
	d := newDemo(t, demo.Options{})
	tb := newTab(t)
	openVaultPage(tb, "")
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: state %s", st)
	}
	if got := vaultFetch(tb, "/api/profile", ""); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("signed fetch: %s", got)
	}
	var ss Secrets
	keys := keySecrets(t, d, "alice", &ss)
	requireKeysAreReal(t, keys)
	return d, tb, ss, tb.Worker("/sv/worker.js")
}

// logoutVault logs out through the page API and checks what the page sees.
func logoutVault(t *testing.T, tb *Tab) {
	t.Helper()
	if st := Eval[string](tb, `vault.logout().then((s) => s.state + " " + s.reason)`); st != "wiped logout" {
		t.Fatalf("logout: %s", st)
	}
	if got := Eval[string](tb, `document.body.dataset.lastEvent`); got != "revoked" {
		t.Errorf("page event after logout: %q, want revoked", got)
	}
}

// TestLogoutWipesWorker: after logout, nothing reachable from the worker's global holds a key
// or the session ID (checked through the worker's own DevTools target), its JavaScript heap
// holds none (with the positive control), and a signed fetch fails with code no_session.
func TestLogoutWipesWorker(t *testing.T) {
	d, tb, ss, w := loginForWipe(t)
	defer func() { logFindings(t, ss) }()
	logoutVault(t, tb)

	ctx, cancel := context.WithTimeout(tb.Ctx(), callTimeout)
	defer cancel()
	g, err := w.GlobalsDump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(g), "globalThis.") {
		t.Fatalf("globals dump is empty: %q", shorten(string(g), 200))
	}
	// The control: bytes put on the worker's global are found by the same dump and search.
	planted := randomSecret(32)
	EvalIn[bool](tb, w, `(self.__svE2EControl = new Uint8Array([`+byteList(planted)+`]), true)`)
	g2, err := w.GlobalsDump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(Find("globals", g2, planted)) == 0 {
		t.Fatalf("positive control: bytes planted on the worker's global are not found in its dump")
	}
	EvalIn[bool](tb, w, `delete self.__svE2EControl`)
	AssertNoSecrets(t, []Haystack{{"worker globals after logout", g}}, ss.Bytes()...)
	AssertHeapClean(tb, w, ss.Bytes()...)

	if got := vaultFetch(tb, "/api/profile", ""); got != "error no_session" {
		t.Errorf("signed fetch after logout: %q, want error no_session", got)
	}
	if got := Eval[string](tb, `vault.fetch("/api/profile").catch((e) => (e instanceof VaultError) + " " + e.name + " " + e.code + " " + typeof e.message)`); got != "true VaultError no_session string" {
		t.Errorf("the rejection is not a VaultError{code: no_session, message}: %s", got)
	}
	if st := Eval[string](tb, `vault.status().then((s) => s.state + " " + s.epoch)`); st != "wiped 0" {
		t.Errorf("status after logout: %s, want wiped 0", st)
	}
	if n := d.CountEvents("logout"); n != 1 {
		t.Errorf("audit log has %d logout events, want 1", n)
	}
}

// padForms returns the HMAC pads of a 32-byte key (key XOR 0x36, key XOR 0x5c): anyone who
// reads a pad has the key.
func padForms(name string, k []byte) []Secret {
	in, out := make([]byte, len(k)), make([]byte, len(k))
	for i, b := range k {
		in[i], out[i] = b^0x36, b^0x5c
	}
	return []Secret{{name + " XOR 0x36 (HMAC ipad)", in}, {name + " XOR 0x5c (HMAC opad)", out}}
}

// TestWipeZeroesWasmMemory: after logout the worker's wasm linear memory holds no byte of the
// lane's keys (K, sign key, event key) nor their HMAC pads (our design rule: "key bytes in
// wasm memory are zeroed on wipe, including HMAC pads and copies"; section 1: a memory dump of
// an old device yields no key). The scan's positive control: before logout it finds the active
// keys where the vault keeps them.
func TestWipeZeroesWasmMemory(t *testing.T) {
	_, tb, ss, w := loginForWipe(t)
	var all Secrets
	for _, s := range ss {
		all.Add(s)
		if len(s.Bytes) == 32 && !strings.HasPrefix(s.Name, "session ID") {
			all.Add(padForms(s.Name, s.Bytes)...)
		}
	}
	defer func() { logFindings(t, all) }()
	ctx, cancel := context.WithTimeout(tb.Ctx(), 2*callTimeout)
	defer cancel()
	before, err := w.ScanWasmMemory(ctx, all.Bytes())
	if err != nil {
		t.Fatalf("scanning wasm memory: %v", err)
	}
	t.Logf("before logout: %d wasm memory, %d bytes; found %s", before.Memories, before.Bytes, before.Names(all))
	if before.Memories != 1 || len(before.Hits) == 0 {
		t.Fatalf("positive control: the active vault's keys were not found in its wasm memory (%d memories): the scan cannot be trusted", before.Memories)
	}
	logoutVault(t, tb)
	after, err := w.ScanWasmMemory(ctx, all.Bytes())
	if err != nil {
		t.Fatalf("scanning wasm memory: %v", err)
	}
	for _, h := range after.Hits {
		t.Errorf("after logout the worker's wasm memory still holds %s at offset %d", all[h.Secret].Name, h.Offset)
	}
}

// headerValue looks a header up by name, case-insensitively (DevTools reports names as sent:
// lower case for fetch from a worker).
func headerValue(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// WasmScan is the result of Session.ScanWasmMemory.
type WasmScan struct {
	Memories int // WebAssembly.Memory objects in the isolate
	Bytes    int // their total size
	Hits     []WasmHit
}

// WasmHit is one secret found in a wasm memory.
type WasmHit struct {
	Secret, Memory, Offset int
}

// Names lists the secrets found.
func (s *WasmScan) Names(ss Secrets) string {
	var n []string
	for _, h := range s.Hits {
		n = append(n, ss[h.Secret].Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// ScanWasmMemory searches the linear memory of every WebAssembly.Memory in the session's
// isolate for the raw bytes of each secret (Runtime.queryObjects finds the memories; the
// search runs in the isolate, so the memory never crosses the protocol). The secrets go in
// masked (XORed with random bytes, and unmasked byte by byte as the search compares), so the
// scan itself never puts a key into the heap that later snapshots search.
func (s *Session) ScanWasmMemory(ctx context.Context, secrets [][]byte) (*WasmScan, error) {
	proto, err := cdp.Call(ctx, s, runtime.Evaluate, runtime.EvaluateParams{Expression: "WebAssembly.Memory.prototype", ObjectGroup: "sv-e2e-scan"})
	if err != nil {
		return nil, err
	}
	defer s.Call(context.WithoutCancel(ctx), runtime.CommandReleaseObjectGroup, runtime.ReleaseObjectGroupParams{ObjectGroup: "sv-e2e-scan"}, nil)
	if proto.Result == nil || proto.Result.ObjectID == "" {
		return nil, fmt.Errorf("no WebAssembly.Memory.prototype")
	}
	objs, err := cdp.Call(ctx, s, runtime.QueryObjects, runtime.QueryObjectsParams{PrototypeObjectID: proto.Result.ObjectID, ObjectGroup: "sv-e2e-scan"})
	if err != nil {
		return nil, err
	}
	var masked, masks []string
	for _, sec := range secrets {
		m := randomSecret(len(sec))
		x := make([]byte, len(sec))
		for i := range sec {
			x[i] = sec[i] ^ m[i]
		}
		masked, masks = append(masked, hex.EncodeToString(x)), append(masks, hex.EncodeToString(m))
	}
	a1, _ := json.Marshal(masked)
	a2, _ := json.Marshal(masks)
	res, err := cdp.Call(ctx, s, runtime.CallFunctionOn, runtime.CallFunctionOnParams{
		FunctionDeclaration: scanWasmJS,
		ObjectID:            objs.Objects.ObjectID,
		Arguments:           []*runtime.CallArgument{{Value: a1}, {Value: a2}},
		ReturnByValue:       new(true),
	})
	if err != nil {
		return nil, err
	}
	if res.ExceptionDetails != nil {
		return nil, &JSError{Details: res.ExceptionDetails}
	}
	var out struct {
		Memories, Bytes int
		Hits            [][3]int
	}
	if err := json.Unmarshal(res.Result.Value, &out); err != nil {
		return nil, err
	}
	scan := &WasmScan{Memories: out.Memories, Bytes: out.Bytes}
	for _, h := range out.Hits {
		scan.Hits = append(scan.Hits, WasmHit{Secret: h[0], Memory: h[1], Offset: h[2]})
	}
	return scan, nil
}

const scanWasmJS = `function (masked, masks) {
  const hex = (h) => Uint8Array.from(h.match(/../g), (x) => parseInt(x, 16));
  const out = {memories: this.length, bytes: 0, hits: []};
  const ns = masked.map(hex), ms = masks.map(hex);
  for (let mi = 0; mi < this.length; mi++) {
    const u8 = new Uint8Array(this[mi].buffer);
    out.bytes += u8.length;
    for (let k = 0; k < ns.length; k++) {
      const n = ns[k], m = ms[k], first = n[0] ^ m[0];
      let found = 0;
      for (let i = u8.indexOf(first); i >= 0 && i + n.length <= u8.length && found < 16; i = u8.indexOf(first, i + 1)) {
        let j = 1;
        while (j < n.length && (u8[i + j] ^ m[j]) === n[j]) j++;
        if (j === n.length) { out.hits.push([k, mi, i]); found++; }
      }
    }
  }
  return out;
}`

// TestWorkerCSPKeepsSignaturesHome: script in a page with no CSP of its own starts our worker,
// which joins or logs in, binds a policy that names another origin (this server under another
// host name, which would accept a replay of what it is sent: the signature covers @authority,
// which a replaying host names freely in its Host header) and asks for a signed request there.
// The boot script's Content-Security-Policy (connect-src: its own origin and Config.APIOrigins,
// here none) stops the request in the browser: not even a CORS preflight reaches the other
// origin, while the same worker's requests to its own origin go through. The vault's handler is
// mounted bare, without the demo's own CSP, as an application that sets none would.
func TestWorkerCSPKeepsSignaturesHome(t *testing.T) {
	d := newDemo(t, demo.Options{Quiet: true})
	srv.Handle(t, "/sv/", d.App.Manager().Handler())
	srv.Handle(t, "/nocsp/page.html", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "<!doctype html><title>no CSP</title>")
	}))
	other := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	tb := newTab(t)
	tb.Navigate("/nocsp/page.html")
	before := len(srv.Requests("/api/profile")) // the harness keeps every test's requests
	got := Eval[string](tb, `((OTHER) => (async () => {
  const w = new Worker("/sv/worker.js", {type: "module"});
  let id = 0;
  const call = (msg) => new Promise((resolve) => {
    msg.id = ++id;
    const on = (e) => { if (e.data && e.data.id === msg.id) { w.removeEventListener("message", on); resolve(e.data); } };
    w.addEventListener("message", on);
    w.postMessage(msg);
  });
  const out = (r) => (r.ok ? "ok " + (r.result.status ?? r.result.state) : r.error.code);
  const init = await call({op: "init", policy: {origins: [location.origin, OTHER], prefixes: ["/api/", "/sv/"]}});
  if (!init.ok) return "init " + init.error.code;
  const login = await call({op: "login", credentials: {user: "alice", password: "alice-password"}});
  const own = await call({op: "fetch", url: "/api/profile"});
  const away = await call({op: "fetch", url: OTHER + "/api/profile"});
  w.terminate();
  return [out(login), out(own), out(away)].join(", ");
})())(`+jsString(other)+`)`)
	parts := strings.Split(got, ", ")
	if len(parts) != 3 || parts[0] != "ok active" || parts[1] != "ok 200" || strings.HasPrefix(parts[2], "ok") {
		t.Fatalf("login, own-origin fetch, other-origin fetch: %s (want ok active, ok 200, an error)", got)
	}
	t.Logf("login, own-origin fetch, other-origin fetch: %s", got)
	// The harness records every host's requests under one URL: tell them apart by what the
	// browser says of them (a preflight, or a request from another site).
	own := 0
	for _, r := range srv.Requests("/api/profile")[before:] {
		if r.Method == http.MethodOptions || r.Header.Get("Sec-Fetch-Site") != "same-origin" {
			t.Errorf("the worker reached the other origin: %s %s (Sec-Fetch-Site %q)", r.Method, r.URL, r.Header.Get("Sec-Fetch-Site"))
		} else {
			own++
		}
	}
	if own != 1 {
		t.Errorf("%d same-origin requests for /api/profile, want 1", own)
	}
}
