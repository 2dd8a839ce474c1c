package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Package state, set up once by TestMain.
var (
	srv *Server // the test server

	alloc         *pipeAllocator
	browserCtx    context.Context // the browser; newTab makes tabs under it
	browserErr    error           // why there is no browser
	browserAbsent bool            // browserErr is "not installed" (skip), not a failure

	wasmPath   string // the vault.wasm under test
	wasmErr    error
	wasmTmpDir string // holds a vault.wasm built for this run, if any
)

// strict is SV_STRICT=1: CI must not pass by skipping.
var strict = os.Getenv("SV_STRICT") == "1"

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	wasmPath, wasmErr = findWasm(root)
	if wasmTmpDir != "" {
		defer os.RemoveAll(wasmTmpDir)
	}
	if wasmErr != nil {
		fmt.Fprintln(os.Stderr, "e2e: no vault.wasm:", wasmErr)
	}
	srv, err = startServer(Env{Root: root, JSDir: filepath.Join(root, "js"), WasmPath: wasmPath})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: test server:", err)
		return 1
	}
	defer srv.Close()

	stop := startBrowser()
	defer stop()
	if browserErr != nil {
		banner := "CHROMIUM MISSING"
		if !browserAbsent {
			banner = "CHROMIUM FAILED TO START"
		}
		fmt.Fprintf(os.Stderr, "\n*** %s: %v\n*** e2e browser tests will %s.\n\n", banner, browserErr,
			map[bool]string{true: "FAIL", false: "be SKIPPED (NOT run); set SV_STRICT=1 to fail instead"}[strict || !browserAbsent])
	}
	return m.Run()
}

// startBrowser starts the one Chromium of the package and returns the func
// that stops it. On failure it sets browserErr.
func startBrowser() (stop func()) {
	path, err := findChromium()
	if err != nil {
		browserErr, browserAbsent = err, true
		return func() {}
	}
	// A short profile path: Chromium's singleton socket lives in it, and a
	// long $TMPDIR makes "Socket path too long".
	dir, err := os.MkdirTemp("/tmp", "sv")
	if err != nil {
		browserErr = err
		return func() {}
	}
	alloc = &pipeAllocator{path: path, dataDir: dir, debug: os.Getenv("SV_CDP_DEBUG") == "1"}
	actx, acancel := chromedp.NewAllocatorContext(context.Background(), alloc)
	bctx, bcancel := chromedp.NewContext(actx,
		chromedp.WithErrorf(func(f string, v ...any) { fmt.Fprintf(os.Stderr, "chromedp: "+f+"\n", v...) }),
		chromedp.WithLogf(func(string, ...any) {}))
	stop = func() {
		bcancel()
		acancel()
		alloc.stop()
	}
	// The first Run starts the browser and binds it to bctx.
	errc := make(chan error, 1)
	go func() { errc <- chromedp.Do(bctx) }()
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		err = errors.New("no answer in 30s")
	}
	if err != nil {
		browserErr = fmt.Errorf("starting %s: %w\n%s", path, err, alloc.Output())
		stop()
		return func() {}
	}
	browserCtx = bctx
	return stop
}

// requireBrowser skips the test (SV_STRICT=1: fails it) when Chromium is not
// installed, and fails it when Chromium would not start.
func requireBrowser(t testing.TB) {
	t.Helper()
	if browserErr == nil {
		return
	}
	if browserAbsent && !strict {
		t.Skipf("CHROMIUM MISSING: %v: e2e tests NOT run (SV_STRICT=1 makes this a failure)", browserErr)
	}
	if browserAbsent {
		t.Fatalf("CHROMIUM MISSING (SV_STRICT=1, so this fails): %v", browserErr)
	}
	t.Fatalf("CHROMIUM FAILED TO START: %v", browserErr)
}

// requireWasm fails the test when there is no usable vault.wasm (after
// requireBrowser: without a browser the test is skipped first).
func requireWasm(t testing.TB) {
	t.Helper()
	requireBrowser(t)
	if wasmErr != nil {
		t.Fatalf("vault.wasm: %v", wasmErr)
	}
}

// findWasm returns the vault.wasm to test: $SV_WASM if set (make test sets
// it right after building); else build/vault.wasm if it is newer than every
// Go file it is built from; else a fresh build from the current sources into
// a temporary directory (the Go build cache makes that fast). Tests never
// run against a stale module.
func findWasm(root string) (string, error) {
	if p := os.Getenv("SV_WASM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("SV_WASM: %w", err)
		}
		return p, nil
	}
	built := filepath.Join(root, "build", "vault.wasm")
	fi, err := os.Stat(built)
	if err == nil {
		newer, err := newestSource(root, fi.ModTime())
		if err != nil {
			return "", err
		}
		if newer == "" {
			return built, nil
		}
		fmt.Fprintf(os.Stderr, "e2e: build/vault.wasm is older than %s; building a fresh one (make wasm updates it)\n", newer)
	}
	dir, err := os.MkdirTemp("", "sv-e2e-wasm")
	if err != nil {
		return "", err
	}
	wasmTmpDir = dir
	out := filepath.Join(dir, "vault.wasm")
	goBin := "go"
	if p, err := exec.LookPath("go"); err == nil {
		goBin = p
	}
	cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", out, "./wasm/worker")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the wasm module: %v\n%s", err, b)
	}
	return out, nil
}

// newestSource returns a Go source of the wasm module newer than t, or "".
func newestSource(root string, t time.Time) (string, error) {
	var found string
	for _, d := range []string{"internal/protocol", "internal/vault", "wasm/worker"} {
		err := filepath.WalkDir(filepath.Join(root, d), func(p string, e fs.DirEntry, err error) error {
			if err != nil || found != "" {
				return err
			}
			if e.IsDir() {
				if e.Name() == "testdata" {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			if fi, err := e.Info(); err == nil && fi.ModTime().After(t) {
				found, _ = filepath.Rel(root, p)
			}
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return found, nil
}
