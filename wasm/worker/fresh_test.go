//go:build !wasm

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sessionvault/sessionvault/internal/vault"
)

// TestWasmFresh fails when the module under test is not what the sources build today: it runs
// the Makefile's exact build command into a temporary directory and compares bytes (the build is
// reproducible: -trimpath, -s -w, no VCS stamping).
func TestWasmFresh(t *testing.T) {
	h := getHost(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "vault.wasm")
	// Makefile: WASM_FLAGS WASM_BUILD -o $@ ./wasm/worker
	cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", out, "./wasm/worker")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the module failed: %v\n%s", err, b)
	}
	fresh, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, h.bytes) {
		t.Fatalf("%s is stale (%d bytes; the sources build %d bytes): run make wasm", h.path, len(h.bytes), len(fresh))
	}
}

// TestABIVersionExport: the module exports vault.ABIExport, and no other version export, which
// is what the server (Config.Module) and the worker's host check before they use it.
func TestABIVersionExport(t *testing.T) {
	h := getHost(t)
	var versions []string
	for name := range h.compiled.ExportedFunctions() {
		if strings.HasPrefix(name, vault.ABIExportPrefix) {
			versions = append(versions, name)
		}
	}
	if len(versions) != 1 || versions[0] != vault.ABIExport {
		t.Fatalf("version exports %v, want [%s] (the //go:wasmexport directive and vault.ABIExport disagree)", versions, vault.ABIExport)
	}
	if want := vault.ABIExportPrefix + strconv.Itoa(vault.ABIVersion); vault.ABIExport != want {
		t.Fatalf("vault.ABIExport %q, want %q", vault.ABIExport, want)
	}
}

// TestModuleLinksNoHeavyPackages keeps out of the module the standard packages we replaced to
// keep it small (RATIONALE.md: "Why our own X25519...", "Why our own SHA-256...", "Why not
// crypto/rand and encoding/binary..."): each costs every worker start its size in reading and
// compiling. crypto/... would bring back the FIPS 140 module (278 KB), fmt and reflect 100-250 KB.
func TestModuleLinksNoHeavyPackages(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "./wasm/worker")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list listed only %q", deps)
	}
	for _, p := range deps {
		if p == "crypto" || strings.HasPrefix(p, "crypto/") || p == "fmt" || p == "reflect" ||
			p == "encoding/binary" || p == "math/big" || p == "os" {
			t.Errorf("the module links %s", p)
		}
	}
}
