package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/evanw/esbuild/pkg/api"
	"github.com/sessionvault/sessionvault/internal/demo"
)

// TestBundledClient: the page module from a bundler. esbuild (the bundler under Vite and many
// others) bundles and minifies an app that imports "@sessionvault/client" as an npm package
// (resolved through js/package.json's exports, as `npm install ./js` would install it), and the
// bundle, with the worker from the Go handler, logs in, makes a signed fetch, refuses with a
// VaultError the app can test with instanceof, joins on a reload and logs out, under the strict
// CSP, with no console error.
func TestBundledClient(t *testing.T) {
	requireWasm(t)
	newDemo(t, demo.Options{})
	jsDir, err := filepath.Abs(filepath.Join("..", "js"))
	if err != nil {
		t.Fatal(err)
	}
	// An app directory with the package installed as npm would: node_modules/@sessionvault/client.
	app := t.TempDir()
	if err := os.MkdirAll(filepath.Join(app, "node_modules", "@sessionvault"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(jsDir, filepath.Join(app, "node_modules", "@sessionvault", "client")); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join("testdata", "pages", "vault.js"))
	if err != nil {
		t.Fatal(err)
	}
	const from = `from "/sv/client.js"`
	if !strings.Contains(string(page), from) {
		t.Fatalf("vault.js no longer imports %s", from)
	}
	entry := strings.Replace(string(page), from, `from "@sessionvault/client"`, 1)
	if err := os.WriteFile(filepath.Join(app, "main.js"), []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
	res := api.Build(api.BuildOptions{
		EntryPoints:       []string{"main.js"},
		AbsWorkingDir:     app,
		Bundle:            true,
		Format:            api.FormatESModule,
		Platform:          api.PlatformBrowser,
		Target:            api.ES2022,
		MinifySyntax:      true,
		MinifyWhitespace:  true,
		MinifyIdentifiers: true,
		Write:             false,
		Outfile:           "out.js",
		LogLevel:          api.LogLevelSilent,
	})
	for _, m := range res.Errors {
		t.Errorf("esbuild: %s", m.Text)
	}
	if len(res.Errors) > 0 || len(res.OutputFiles) != 1 {
		t.Fatalf("esbuild: %d errors, %d outputs", len(res.Errors), len(res.OutputFiles))
	}
	bundle := res.OutputFiles[0].Contents
	// The bundle holds the page client only: no import left, none of the worker's code (the
	// worker comes from the Go handler, with its ticket and CSP).
	for _, bad := range []string{"/sv/client.js", "import(", "wasi_snapshot_preview1", "takeTicket"} {
		if strings.Contains(string(bundle), bad) {
			t.Errorf("the bundle contains %q", bad)
		}
	}
	t.Logf("bundled and minified page app: %d bytes", len(bundle))

	srv.Handle(t, "/t/bundled.js", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setHarnessHeaders(w)
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Write(bundle)
	}))
	srv.Handle(t, "/t/bundled.html", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setHarnessHeaders(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bundled</title>` +
			`<script type="module" src="/t/bundled.js"></script></head><body data-state="loading"><p>bundled app</p></body></html>`))
	}))

	tb := newTab(t)
	tb.Open("/t/bundled.html", `document.body.dataset.state !== "loading"`)
	if got := Eval[string](tb, `document.body.dataset.state`); got != "empty" {
		t.Fatalf("bundled app: state %q (%s)", got, Eval[string](tb, `document.body.dataset.error || ""`))
	}
	if st := loginAPI(tb, "alice"); st != "active" {
		t.Fatalf("login: %s", st)
	}
	if got := vaultFetch(tb, "/api/profile", ""); !strings.HasPrefix(got, "200 ") || !strings.Contains(got, "alice") {
		t.Fatalf("signed fetch: %s", got)
	}
	if got := Eval[string](tb, `vault.fetch("https://elsewhere.example/x").then(() => "sent", (e) => (e instanceof VaultError) + " " + (e instanceof Error) + " " + e.code)`); got != "true true policy_denied" {
		t.Errorf("a refused fetch: %s, want a VaultError policy_denied", got)
	}
	tb.Open("/t/bundled.html", `document.body.dataset.state !== "loading"`)
	if got := Eval[string](tb, `document.body.dataset.state + " " + vault.joined`); got != "active true" {
		t.Errorf("after a reload: %s, want the bundled app to join the session", got)
	}
	if st := Eval[string](tb, `vault.logout().then((s) => s.state)`); st != "wiped" {
		t.Errorf("logout: %s", st)
	}
	assertNoConsoleErrors(tb)
	if v := tb.CSPViolations(); len(v) > 0 {
		t.Errorf("CSP violations: %v", v)
	}
}
