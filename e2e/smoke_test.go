package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSmoke boots the real page client, worker and wasm under the strict CSP
// and checks what the harness sees: the state, the worker target, both
// sides' traffic, and no CSP violation or console error.
func TestSmoke(t *testing.T) {
	requireWasm(t)
	tb := newTab(t)
	tb.Open("/t/smoke.html", `document.body.dataset.state !== "loading"`)
	if got := Eval[string](tb, `document.body.dataset.state`); got != "empty" {
		t.Fatalf("vault state = %q (error %q), want empty", got, Eval[string](tb, `document.body.dataset.error || ""`))
	}

	w := tb.Worker("/sv/worker.js")
	if got := EvalIn[string](tb, w, `self.constructor.name`); got != "DedicatedWorkerGlobalScope" {
		t.Errorf("worker global = %q, want DedicatedWorkerGlobalScope", got)
	}
	if got := EvalIn[string](tb, w, `self.name`); got != "sessionvault" {
		t.Errorf("worker name = %q, want sessionvault", got)
	}

	tr := tb.Traffic()
	want := map[string]string{"/t/smoke.html": "page", "/sv/client.js": "page", "/sv/worker.js": "", "/sv/vault.wasm": "worker"}
	for path, session := range want {
		xs := tr.Find(path)
		if len(xs) == 0 {
			t.Errorf("traffic has no request for %s\n%s", path, tr)
			continue
		}
		if session != "" && !strings.HasPrefix(xs[0].Session, session) {
			t.Errorf("%s was fetched by %q, want %s", path, xs[0].Session, session)
		}
		if xs[0].Status != 200 {
			t.Errorf("%s: status %d", path, xs[0].Status)
		}
	}
	if xs := tr.Find("/sv/vault.wasm"); len(xs) > 0 {
		fi, err := os.Stat(wasmPath)
		if err != nil {
			t.Fatal(err)
		}
		if x := xs[0]; len(x.Body) != int(fi.Size()) {
			t.Errorf("worker's vault.wasm body: %d bytes (%s), want %d", len(x.Body), x.BodyErr, fi.Size())
		}
	}

	// Violations are reported asynchronously; a round trip to the page and
	// the worker lets them arrive.
	Eval[bool](tb, `true`)
	EvalIn[bool](tb, w, `true`)
	if v := tb.CSPViolations(); len(v) > 0 {
		t.Errorf("CSP violations:\n%s", strings.Join(v, "\n"))
	}
	if e := tb.ConsoleErrors(); len(e) > 0 {
		t.Errorf("console errors: %v", e)
	}

	// The one-call checks the security tests use, with a value that was
	// never anywhere: they must pass (and their controls must hold).
	never := randomSecret(32)
	AssertHeapClean(tb, tb.Page(), never)
	AssertHeapClean(tb, w, never)
	AssertTrafficClean(tb, never)
	AssertNoSecrets(t, []Haystack{tb.WorkerMessages()}, never)
}

// TestCSPViolationsAreSeen is the positive control of the CSP check: a
// violation in the page and one in the worker must both be reported.
func TestCSPViolationsAreSeen(t *testing.T) {
	requireWasm(t)
	tb := newTab(t)
	tb.Open("/t/smoke.html", `document.body.dataset.state !== "loading"`)
	w := tb.Worker("/sv/worker.js")
	// What injected script might try: an inline script element and eval in
	// the page, a connection to another origin from the worker.
	Eval[bool](tb, `(() => { const s = document.createElement("script"); s.textContent = "1"; document.head.append(s); return true })()`)
	if err := tb.EvalErr(tb.Page(), `eval("1")`); err == nil || !strings.Contains(err.Error(), "EvalError") {
		t.Errorf("eval in evaluated code: %v, want an EvalError (the CSP holds for it)", err)
	}
	EvalIn[bool](tb, w, `(fetch("http://127.0.0.2:9/x").catch(() => {}), true)`)
	if err := tb.page.WaitFor(tb.ctx, `true`, waitTimeout); err != nil {
		t.Fatal(err)
	}
	var page, worker bool
	for range 50 {
		page, worker = false, false
		for _, v := range tb.CSPViolations() {
			page = page || strings.HasPrefix(v, "page ")
			worker = worker || strings.HasPrefix(v, "worker ")
		}
		if page && worker {
			break
		}
		Eval[bool](tb, `new Promise((r) => setTimeout(() => r(true), 20))`)
	}
	if !page || !worker {
		t.Errorf("violations seen in page %v, in worker %v; all:\n%s", page, worker, strings.Join(tb.CSPViolations(), "\n"))
	}
}

// TestHeapSnapshotPositiveControl proves the heap search finds a value that
// exists only inside the isolate, in every form PlantSecret keeps, in the
// page and in the worker; and that it does not find a value never planted.
// It plants several values: a binary string is cut by V8's NUL and surrogate
// mapping in ways a single random value might not exercise.
func TestHeapSnapshotPositiveControl(t *testing.T) {
	requireWasm(t)
	tb := newTab(t)
	tb.Open("/t/smoke.html", `document.body.dataset.state === "empty"`)
	w := tb.Worker("/sv/worker.js")
	ctx, cancel := context.WithTimeout(tb.Ctx(), 2*callTimeout)
	defer cancel()

	for _, s := range []*Session{tb.Page(), w} {
		var planted [][]byte
		for range 8 {
			p, err := s.PlantSecret(ctx)
			if err != nil {
				t.Fatalf("%s: planting: %v", s, err)
			}
			planted = append(planted, p)
		}
		never := randomSecret(32)
		snap, err := s.HeapSnapshot(ctx)
		if err != nil {
			t.Fatalf("%s: heap snapshot: %v", s, err)
		}
		t.Logf("%s: heap snapshot %d bytes, %d strings", s, len(snap.Raw), snap.Strings)
		for _, p := range planted {
			if missing := snap.CheckPlanted(s.String(), p); len(missing) > 0 {
				t.Errorf("positive control: planted %x not found as: %v", p, missing)
			}
		}
		if f := snap.Find(s.String(), never); len(f) > 0 {
			t.Errorf("negative control: a value never planted was found: %v", f)
		}
		g, err := s.GlobalsDump(ctx)
		if err != nil {
			t.Fatalf("%s: globals: %v", s, err)
		}
		if f := Find("globals", g, planted...); len(f) > 0 {
			t.Errorf("the planted values are kept in closures, yet reachable from the global: %v", f)
		}
	}
}

// TestGlobalsAndMessagesPositiveControl: bytes put on the worker's global are
// found by GlobalsDump, and bytes a worker posts to the page are found in
// WorkerMessages (typed arrays included, which heap snapshots cannot show).
func TestGlobalsAndMessagesPositiveControl(t *testing.T) {
	requireWasm(t)
	tb := newTab(t)
	tb.Open("/t/smoke.html", `document.body.dataset.state === "empty"`)
	w := tb.Worker("/sv/worker.js")
	ctx, cancel := context.WithTimeout(tb.Ctx(), callTimeout)
	defer cancel()

	onGlobal := randomSecret(32)
	EvalIn[bool](tb, w, `(self.__svE2EControl = {deep: {bytes: new Uint8Array([`+byteList(onGlobal)+`])}}, true)`)
	g, err := w.GlobalsDump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(Find("globals", g, onGlobal)) == 0 {
		t.Errorf("positive control: bytes on the worker's global not found by GlobalsDump")
	}

	// The vault's own replies went through the tap.
	if m := tb.WorkerMessages(); !bytes.Contains(m.Bytes, []byte(`"state":"empty"`)) {
		t.Errorf("the vault's status reply is not in %s: %q", m.Name, shorten(string(m.Bytes), 2000))
	}
	// A second worker (the echo worker of testdata/pages) posts bytes and a
	// binary string back to the page.
	inBytes, inString := randomSecret(32), randomSecret(32)
	n := Eval[int](tb, `new Promise((resolve) => {
	  const w = new Worker("/t/echo-worker.js");
	  const bin = String.fromCharCode(`+byteList(inString)+`);
	  w.onmessage = (e) => { resolve(e.data.bytes.byteLength + e.data.bin.length); w.terminate(); };
	  w.postMessage({bytes: new Uint8Array([`+byteList(inBytes)+`]).buffer, bin});
	})`)
	if n != 64 {
		t.Fatalf("echo worker: %d", n)
	}
	m := tb.WorkerMessages()
	for name, secret := range map[string][]byte{"ArrayBuffer": inBytes, "binary string": inString} {
		if len(Find(m.Name, m.Bytes, secret)) == 0 {
			t.Errorf("positive control: the echoed %s is not in %s", name, m.Name)
		}
	}
}

// TestTrafficCapture is the positive control of the network capture: a
// value sent in a header, a request body, a response body and WebSocket
// frames must all show up in the traffic blob.
func TestTrafficCapture(t *testing.T) {
	requireWasm(t)
	tb := newTab(t)
	tb.Open("/t/smoke.html", `document.body.dataset.state === "empty"`)
	inHeader, inBody, inWS := randomSecret(24), randomSecret(24), randomSecret(24)
	got := Eval[string](tb, `(async () => {
	  const res = await fetch("/__e2e/echo", {method: "POST", headers: {"X-Echo": "`+hex.EncodeToString(inHeader)+`"},
	    body: new Uint8Array([`+byteList(inBody)+`])});
	  const body = new Uint8Array(await res.arrayBuffer());
	  const ws = new WebSocket("/__e2e/ws");
	  const echoed = await new Promise((resolve, reject) => {
	    ws.onopen = () => ws.send("`+hex.EncodeToString(inWS)+`");
	    ws.onmessage = (e) => resolve(e.data);
	    ws.onerror = () => reject(new Error("websocket failed"));
	  });
	  ws.close();
	  return res.headers.get("X-Echo") + " " + body.length + " " + echoed;
	})()`)
	if want := hex.EncodeToString(inHeader) + " 24 echo:" + hex.EncodeToString(inWS); got != want {
		t.Fatalf("page saw %q, want %q", got, want)
	}
	tr := tb.Traffic()
	blob := tr.Blob()
	for name, secret := range map[string][]byte{"header": inHeader, "body": inBody, "websocket": inWS} {
		if len(Find("traffic", blob, secret)) == 0 {
			t.Errorf("positive control: the %s value is not in the captured traffic\n%s", name, tr)
		}
	}
	x := tr.Find("/__e2e/echo")
	if len(x) != 1 || string(x[0].PostData) != string(inBody) || string(x[0].Body) != string(inBody) {
		t.Errorf("echo exchange: %+v", x)
	}
	ws := tr.Find("/__e2e/ws")
	if len(ws) != 1 || len(ws[0].Frames) != 2 || !ws[0].Frames[0].Sent || ws[0].Frames[1].Sent {
		t.Errorf("websocket exchange: %+v", ws)
	}
	if !slices.ContainsFunc(srv.Requests("/__e2e/echo"), func(r *CapturedRequest) bool {
		return r.Header.Get("X-Echo") == hex.EncodeToString(inHeader) && bytes.Equal(r.Body, inBody)
	}) {
		t.Errorf("the server did not record the echo request")
	}
	if !slices.ContainsFunc(tr.Exchanges, func(x *Exchange) bool { return strings.HasPrefix(x.Session, "worker") }) {
		t.Errorf("no worker traffic captured\n%s", tr)
	}
}

func byteList(b []byte) string {
	s := make([]string, len(b))
	for i, c := range b {
		s[i] = strconv.Itoa(int(c))
	}
	return strings.Join(s, ",")
}
