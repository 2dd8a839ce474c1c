package server_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/sessionvault/sessionvault/internal/vault"
	"github.com/sessionvault/sessionvault/js"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
)

// testModule stands in for vault.wasm: a valid module with the ABI version export, and enough
// compressible bytes (a custom section) that gzip is worth it.
var testModule = wasmModule(vault.ABIExport, bytes.Repeat([]byte("sessionvault "), 4000))

// wasmModule is a valid wasm module with one empty function exported as export (none if ""),
// and pad in a custom section. wasm/worker's tests check the real module's export.
func wasmModule(export string, pad []byte) []byte {
	uleb := func(b []byte, n int) []byte {
		for n >= 0x80 {
			b = append(b, byte(n)|0x80)
			n >>= 7
		}
		return append(b, byte(n))
	}
	section := func(b []byte, id byte, body []byte) []byte {
		return append(uleb(append(b, id), len(body)), body...)
	}
	m := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	m = section(m, 1, []byte{1, 0x60, 0, 0}) // one type: () -> ()
	m = section(m, 3, []byte{1, 0})          // one function of it
	if export != "" {
		m = section(m, 7, append(append(uleb([]byte{1}, len(export)), export...), 0, 0))
	}
	m = section(m, 10, []byte{1, 2, 0, 0x0b}) // its body: no locals, end
	return section(m, 0, append([]byte{3, 'p', 'a', 'd'}, pad...))
}

var moduleURL = regexp.MustCompile(`const wasmURL = new URL\("(vault\.wasm(?:\?v=[A-Za-z0-9_-]+)?)", import\.meta\.url\);`)

func TestModuleServing(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Module = testModule })
	sum := sha256.Sum256(testModule)
	version := base64.RawURLEncoding.EncodeToString(sum[:16])

	get := func(target string, header ...string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest("GET", testOrigin+target, nil)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		return e.serve(r)
	}

	// The boot script asks for the module by its content hash.
	boot := get("/sv/worker.js").Body.String()
	m := moduleURL.FindStringSubmatch(boot)
	if m == nil || m[1] != "vault.wasm?v="+version {
		t.Fatalf("boot script names the module as %q, want vault.wasm?v=%s", m, version)
	}

	// That URL is immutable; gzip when accepted, identity otherwise, same bytes either way.
	for _, c := range []struct {
		accept string
		gzip   bool
	}{
		{"gzip, deflate, br", true}, {"br;q=1, gzip;q=0.5", true}, {"GZIP", true}, {"gzip; level=1", true},
		{"gzip;q=0", false}, {"gzip;Q=0", false}, {"gzip; level=1; q=0", false}, {"gzip;q=x", false},
		{"", false}, {"identity", false}, {"*", false}, {"x-gzip", false},
	} {
		w := get("/sv/"+m[1], "Accept-Encoding", c.accept)
		if w.Code != 200 {
			t.Fatalf("%q: status %d", c.accept, w.Code)
		}
		h := w.Header()
		if h.Get("Content-Type") != "application/wasm" || h.Get("Cache-Control") != "public, max-age=31536000, immutable" ||
			h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Vary") != "Accept-Encoding" {
			t.Errorf("%q: headers %v", c.accept, h)
		}
		body := w.Body.Bytes()
		if got := h.Get("Content-Encoding") == "gzip"; got != c.gzip {
			t.Fatalf("%q: gzip %v, want %v", c.accept, got, c.gzip)
		}
		if c.gzip {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
			if w.Body.Len() >= len(testModule)/10 {
				t.Errorf("gzip body %d bytes for %d", w.Body.Len(), len(testModule))
			}
		}
		if !bytes.Equal(body, testModule) {
			t.Fatalf("%q: served %d bytes that are not the module", c.accept, len(body))
		}
	}

	// Any other URL of it (no version, an old one) is revalidated by ETag.
	for _, target := range []string{"/sv/vault.wasm", "/sv/vault.wasm?v=old", "/sv/vault.wasm?v=" + version + "&x=1"} {
		w := get(target)
		tag := w.Header().Get("Etag")
		if w.Code != 200 || w.Header().Get("Cache-Control") != "no-cache" || tag != `"`+version+`"` {
			t.Fatalf("%s: %d, Cache-Control %q, ETag %q", target, w.Code, w.Header().Get("Cache-Control"), tag)
		}
		for _, inm := range []string{tag, "W/" + tag, `"other", ` + tag, "*"} {
			if w := get(target, "If-None-Match", inm); w.Code != 304 || w.Body.Len() != 0 {
				t.Errorf("%s If-None-Match %s: %d with %d bytes", target, inm, w.Code, w.Body.Len())
			}
		}
		if w := get(target, "If-None-Match", `"other"`); w.Code != 200 {
			t.Errorf("%s with a stale ETag: %d", target, w.Code)
		}
	}

	// The gzip representation has its own validator; a client holding either revalidates.
	gzTag := `"` + version + `-gz"`
	if w := get("/sv/vault.wasm", "Accept-Encoding", "gzip"); w.Header().Get("Etag") != gzTag || w.Header().Get("Content-Encoding") != "gzip" {
		t.Errorf("gzip ETag %q, encoding %q", w.Header().Get("Etag"), w.Header().Get("Content-Encoding"))
	}
	if w := get("/sv/vault.wasm", "Accept-Encoding", "gzip", "If-None-Match", `"`+version+`"`); w.Code != 304 {
		t.Errorf("identity tag on a gzip request: %d", w.Code)
	}
	if w := get("/sv/vault.wasm", "If-None-Match", gzTag); w.Code != 304 {
		t.Errorf("gzip tag on an identity request: %d", w.Code)
	}
	// Header values split over several lines count as one list.
	r := httptest.NewRequest("GET", testOrigin+"/sv/"+m[1], nil)
	r.Header.Add("Accept-Encoding", "br")
	r.Header.Add("Accept-Encoding", "gzip")
	if w := e.serve(r); w.Header().Get("Content-Encoding") != "gzip" {
		t.Errorf("Accept-Encoding on two lines: no gzip")
	}
	r = httptest.NewRequest("GET", testOrigin+"/sv/vault.wasm", nil)
	r.Header.Add("If-None-Match", `"other"`)
	r.Header.Add("If-None-Match", `"`+version+`"`)
	if w := e.serve(r); w.Code != 304 {
		t.Errorf("If-None-Match on two lines: %d", w.Code)
	}

	// HEAD has the headers and no body; other methods are refused.
	w := e.serve(httptest.NewRequest("HEAD", testOrigin+"/sv/"+m[1], nil))
	if w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q", w.Code, w.Body.Len(), w.Header().Get("Content-Length"))
	}
	wantRefused(t, e.serve(httptest.NewRequest("POST", testOrigin+"/sv/vault.wasm", nil)), 405, "method_not_allowed")

	// client.js is the embedded page module, revalidated by ETag.
	client, _ := js.Files.ReadFile("client.js")
	w = get("/sv/client.js")
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), client) || w.Header().Get("Content-Type") != "text/javascript; charset=utf-8" || w.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("client.js: %d, %d bytes, %v", w.Code, w.Body.Len(), w.Header())
	}
	if w := get("/sv/client.js", "If-None-Match", w.Header().Get("Etag")); w.Code != 304 {
		t.Errorf("client.js revalidation: %d", w.Code)
	}
}

func TestModuleNotServedWithoutConfig(t *testing.T) {
	e := newEnv(t)
	boot := e.serve(httptest.NewRequest("GET", testOrigin+"/sv/worker.js", nil)).Body.String()
	if m := moduleURL.FindStringSubmatch(boot); m == nil || m[1] != "vault.wasm" {
		t.Fatalf("boot script names the module as %q, want plain vault.wasm", m)
	}
	for _, p := range []string{"/sv/vault.wasm", "/sv/client.js"} {
		wantRefused(t, e.serve(httptest.NewRequest("GET", testOrigin+p, nil)), 404, "not_found")
	}
}

func TestModuleMustBeWasm(t *testing.T) {
	for _, mod := range [][]byte{{}, []byte("<html>"), []byte("\x00asm\x02\x00\x00\x00")} {
		_, err := server.New(server.Config{Store: memstore.New(), StoreKey: testStoreKey, Module: mod})
		if !errors.Is(err, server.ErrConfig) || !strings.Contains(err.Error(), "Module") {
			t.Errorf("Module %q: err %v, want a ConfigError naming Module", mod, err)
		}
	}
}

// TestModuleOfAnotherVersion: a vault.wasm built from another version of the repository (a
// module committed for go:embed, then go get -u without a rebuild) is refused at New with a
// message that says so and how to build the right one, instead of every page failing later with
// "unexpected field". Modules whose sections do not parse are refused too, never a panic.
func TestModuleOfAnotherVersion(t *testing.T) {
	good := wasmModule(vault.ABIExport, nil)
	if _, err := server.New(server.Config{Store: memstore.New(), StoreKey: testStoreKey, Module: good}); err != nil {
		t.Fatalf("positive control: %v", err)
	}
	for _, c := range []struct {
		name string
		mod  []byte
		want string
	}{
		{"unversioned", wasmModule("", nil), "before ABI versions"},
		{"other export only", wasmModule("exec", nil), "before ABI versions"},
		{"older", wasmModule(vault.ABIExportPrefix+"1", nil), "another version of sessionvault (" + vault.ABIExportPrefix + "1;"},
		{"newer", wasmModule(vault.ABIExportPrefix+"99", nil), "another version"},
		{"truncated", good[:len(good)-3], "do not parse"},
		{"section past the end", append(bytes.Clone(good[:8]), 7, 0xff, 0x01, 1), "do not parse"},
		{"overlong leb", append(bytes.Clone(good[:8]), 7, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01), "do not parse"},
		{"export name past its section", append(bytes.Clone(good[:8]), 7, 3, 1, 0x7f, 'x'), "do not parse"},
	} {
		_, err := server.New(server.Config{Store: memstore.New(), StoreKey: testStoreKey, Module: c.mod})
		if !errors.Is(err, server.ErrConfig) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "go build -buildmode=c-shared") {
			t.Errorf("%s: err %v, want a ConfigError with %q and how to build the module", c.name, err, c.want)
		}
	}
}

// FuzzModuleABI: no input makes New panic or accept a module without the export.
func FuzzModuleABI(f *testing.F) {
	f.Add(wasmModule(vault.ABIExport, nil))
	f.Add(wasmModule("", []byte("x")))
	f.Fuzz(func(t *testing.T, mod []byte) {
		_, err := server.New(server.Config{Store: memstore.New(), StoreKey: testStoreKey, Module: mod})
		if err == nil && !bytes.Contains(mod, []byte(vault.ABIExport)) {
			t.Fatalf("accepted a module without %s", vault.ABIExport)
		}
	})
}

// TestWrongMethodNamesTheRightOnes: a 405 names the methods the endpoint takes (the files and
// the boot script GET and HEAD, the event socket GET, the rest POST).
func TestWrongMethodNamesTheRightOnes(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Module = testModule })
	for _, c := range []struct{ method, path, allow string }{
		{"POST", "/sv/vault.wasm", "GET, HEAD"},
		{"PUT", "/sv/client.js", "GET, HEAD"},
		{"POST", "/sv/worker.js", "GET, HEAD"},
		{"POST", "/sv/events", "GET"},
		{"HEAD", "/sv/events", "GET"},
		{"GET", "/sv/login", "POST"},
		{"GET", "/sv/rotate", "POST"},
		{"DELETE", "/sv/logout", "POST"},
	} {
		w := httptest.NewRecorder()
		e.mux.ServeHTTP(w, httptest.NewRequest(c.method, testOrigin+c.path, nil))
		if w.Code != 405 || w.Header().Get("Allow") != c.allow || w.Header().Get("Sv-Error") != "method_not_allowed" {
			t.Errorf("%s %s: %d Allow %q Sv-Error %q, want 405 Allow %q", c.method, c.path, w.Code, w.Header().Get("Allow"), w.Header().Get("Sv-Error"), c.allow)
		}
	}
}

// TestModuleMissingIsLogged: without Config.Module the handler serves neither vault.wasm nor
// client.js (404), and says why in the log, once.
func TestModuleMissingIsLogged(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/sv/client.js", "/sv/vault.wasm", "/sv/client.js"} {
		w := httptest.NewRecorder()
		e.mux.ServeHTTP(w, httptest.NewRequest("GET", testOrigin+p, nil))
		if w.Code != 404 {
			t.Fatalf("%s without Module: %d, want 404", p, w.Code)
		}
	}
	if got := e.logs.events("module_missing"); len(got) != 1 || got[0]["path"] != "client.js" || !strings.Contains(got[0]["msg"].(string), "Config.Module") {
		t.Fatalf("module_missing records: %v", got)
	}
	// With a Module, nothing of the kind.
	e2 := newEnv(t, func(c *server.Config) { c.Module = testModule })
	w := httptest.NewRecorder()
	e2.mux.ServeHTTP(w, httptest.NewRequest("GET", testOrigin+"/sv/client.js", nil))
	if w.Code != 200 || len(e2.logs.events("module_missing")) != 0 {
		t.Fatalf("with Module: %d, %v", w.Code, e2.logs.events("module_missing"))
	}
}
