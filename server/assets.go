package server

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/sessionvault/sessionvault/internal/vault"
	"github.com/sessionvault/sessionvault/js"
)

// assets are the static files the handler serves when [Config.Module] is set: the wasm module
// and the page's client module.
type assets struct {
	wasm, wasmGz []byte
	version      string // b64url of the first 16 bytes of SHA-256(wasm): the ?v= of its URL
	wasmTag      string // ETags of the unversioned URL, identity and gzip
	wasmGzTag    string
	client       []byte
	clientTag    string
}

// wasmMagic starts every wasm module (the magic number and version 1).
var wasmMagic = []byte{0, 'a', 's', 'm', 1, 0, 0, 0}

// buildHint says how to build the module that matches this library.
const buildHint = "build it at the version of github.com/sessionvault/sessionvault that go.mod names: " +
	"GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags=\"-s -w\" -o vault.wasm github.com/sessionvault/sessionvault/wasm/worker"

func newAssets(module []byte) (*assets, error) {
	if !bytes.HasPrefix(module, wasmMagic) {
		return nil, configError("Module is not a wasm module; " + buildHint)
	}
	switch abi, err := moduleABI(module); {
	case err != nil:
		return nil, configError("Module is not a valid wasm module (" + err.Error() + "); " + buildHint)
	case abi == "":
		return nil, configError("Module is a vault.wasm from a version of sessionvault before ABI versions (this library needs " + vault.ABIExport + "); " + buildHint)
	case abi != vault.ABIExport:
		return nil, configError("Module is a vault.wasm from another version of sessionvault (" + abi + "; this library needs " + vault.ABIExport + "); " + buildHint)
	}
	sum := sha256.Sum256(module)
	if a, ok := assetCache.Load(sum); ok {
		return a.(*assets), nil
	}
	a := &assets{wasm: bytes.Clone(module)}
	a.version = base64.RawURLEncoding.EncodeToString(sum[:16])
	a.wasmTag = `"` + a.version + `"`
	a.wasmGzTag = `"` + a.version + `-gz"`
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(a.wasm)
	zw.Close()
	a.wasmGz = gz.Bytes()
	client, err := js.Files.ReadFile("client.js")
	if err != nil {
		return nil, configError("js.Files has no client.js")
	}
	a.client = client
	cs := sha256.Sum256(client)
	a.clientTag = `"` + base64.RawURLEncoding.EncodeToString(cs[:16]) + `"`
	assetCache.Store(sum, a)
	return a, nil
}

// assetCache holds the assets of each module a Manager of this process was given, by SHA-256:
// they never change, and compressing 2.4 MB at the best level takes a noticeable fraction of a
// second, which Managers made again and again (tests, a reloading server) need not pay twice.
var assetCache sync.Map // [sha256.Size]byte -> *assets

// moduleFile is the wasm module's name under the prefix, as the boot script asks for it.
const moduleFile = "vault.wasm"

// serveModule serves GET {prefix}vault.wasm. The boot script asks for vault.wasm?v=<version>,
// which is cached for a year as immutable (a new build has a new version, so a stale module is
// never used and a worker start costs no revalidation); any other URL of it is served with
// no-cache and an ETag.
func (m *Manager) serveModule(w http.ResponseWriter, r *http.Request) {
	a := m.assets
	h := w.Header()
	h["Vary"] = []string{"Accept-Encoding"}
	gz := acceptsGzip(strings.Join(r.Header.Values("Accept-Encoding"), ","))
	// Each encoding has its own strong validator (RFC 9110 8.8.3); a client holding either has
	// the current module, so either revalidates.
	tag := a.wasmTag
	if gz {
		tag = a.wasmGzTag
	}
	if r.URL.RawQuery == "v="+a.version {
		assetHeaders(h, "application/wasm", "public, max-age=31536000, immutable")
	} else if revalidated(w, r, "application/wasm", tag, a.wasmTag, a.wasmGzTag) {
		return
	}
	body := a.wasm
	if gz {
		h["Content-Encoding"] = []string{"gzip"}
		body = a.wasmGz
	}
	writeAsset(w, r, body)
}

// serveClient serves GET {prefix}client.js, the page's module (js/client.js), revalidated by
// ETag.
func (m *Manager) serveClient(w http.ResponseWriter, r *http.Request) {
	if !revalidated(w, r, "text/javascript; charset=utf-8", m.assets.clientTag, m.assets.clientTag) {
		writeAsset(w, r, m.assets.client)
	}
}

func assetHeaders(h http.Header, contentType, cacheControl string) {
	h["Content-Type"] = []string{contentType}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Cross-Origin-Resource-Policy"] = []string{"same-origin"}
	h["Cache-Control"] = []string{cacheControl}
}

// revalidated sets the headers of a no-cache asset with ETag tag and answers 304 (returning
// true) when the request's If-None-Match names one of current (the tags of the asset's current
// representations).
func revalidated(w http.ResponseWriter, r *http.Request, contentType, tag string, current ...string) bool {
	h := w.Header()
	assetHeaders(h, contentType, "no-cache")
	h["Etag"] = []string{tag}
	inm := strings.Join(r.Header.Values("If-None-Match"), ",")
	for _, c := range current {
		if etagMatch(inm, c) {
			w.WriteHeader(http.StatusNotModified)
			return true
		}
	}
	return false
}

func writeAsset(w http.ResponseWriter, r *http.Request, body []byte) {
	w.Header()["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// etagMatch reports whether an If-None-Match value names tag (or is "*"); weak tags match too.
func etagMatch(header, tag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == tag || t == "*" {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding value accepts gzip: listed by name (not "*",
// which we do not take as a promise), with no q parameter or one above 0.
func acceptsGzip(header string) bool {
	for _, c := range strings.Split(header, ",") {
		params := strings.Split(c, ";")
		if !strings.EqualFold(strings.TrimSpace(params[0]), "gzip") {
			continue
		}
		for _, p := range params[1:] {
			k, v, _ := strings.Cut(p, "=")
			if strings.EqualFold(strings.TrimSpace(k), "q") {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				return err == nil && f > 0
			}
		}
		return true
	}
	return false
}

// moduleABI returns the name of module's ABI version export (one starting with
// vault.ABIExportPrefix), or "" if it has none. It reads the section headers and the export
// section only, and fails on a module whose sections do not parse (a truncated file).
func moduleABI(module []byte) (string, error) {
	r := wasmReader{b: module, i: len(wasmMagic)}
	found := ""
	for r.i < len(r.b) {
		id := r.byte()
		size := r.uleb()
		if r.err != nil || size > uint64(len(r.b)-r.i) {
			return "", errBadWasm
		}
		end := r.i + int(size)
		if id != 7 { // not the export section
			r.i = end
			continue
		}
		sec := wasmReader{b: r.b[:end], i: r.i}
		for n := sec.uleb(); n > 0 && sec.err == nil; n-- {
			name := sec.name()
			sec.byte() // kind
			sec.uleb() // index
			if sec.err == nil && strings.HasPrefix(name, vault.ABIExportPrefix) {
				found = name
			}
		}
		if sec.err != nil || sec.i != end {
			return "", errBadWasm
		}
		r.i = end
	}
	return found, nil
}

var errBadWasm = errors.New("its sections do not parse")

// wasmReader reads a wasm binary; the first read past the end sets err and every later read
// returns zero.
type wasmReader struct {
	b   []byte
	i   int
	err error
}

func (r *wasmReader) byte() byte {
	if r.err != nil || r.i >= len(r.b) {
		r.err = errBadWasm
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

// uleb reads an unsigned LEB128 of at most 32 bits (every count and size in a wasm binary).
func (r *wasmReader) uleb() uint64 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
	}
	r.err = errBadWasm
	return 0
}

func (r *wasmReader) name() string {
	n := r.uleb()
	if r.err != nil || n > uint64(len(r.b)-r.i) {
		r.err = errBadWasm
		return ""
	}
	s := string(r.b[r.i : r.i+int(n)])
	r.i += int(n)
	return s
}
