//go:build !wasm

package main

import (
	"bytes"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/vault"
	"github.com/tetratelabs/wazero/api"
)

// TestModuleShape checks what the module exports and imports (PROTOCOL.md section 7) and that
// the host setup is deterministic: the Go runtime draws randomness only while _initialize runs,
// and two instances given one seed and one clock answer alike.
func TestModuleShape(t *testing.T) {
	h := getHost(t)
	t.Logf("%s: %d bytes, compiled in %v (compilation cache %s)", h.path, len(h.bytes), h.compile, cacheDir())
	exports := h.compiled.ExportedFunctions()
	for name, sig := range map[string]string{
		"alloc": "i32 -> i32", "free": "i32 -> ", "call": "i32,i32 -> i64",
		"reply": " -> i32", "exec": "i32,i32 -> i32", "_initialize": " -> ",
	} {
		fn, ok := exports[name]
		if !ok {
			t.Errorf("no export %q", name)
			continue
		}
		if got := valueTypes(fn.ParamTypes()) + " -> " + valueTypes(fn.ResultTypes()); got != sig {
			t.Errorf("export %s is (%s), want (%s)", name, got, sig)
		}
	}
	if _, ok := h.compiled.ExportedMemories()["memory"]; !ok {
		t.Errorf("no exported memory")
	}
	var imports []string
	for _, fn := range h.compiled.ImportedFunctions() {
		mod, name, _ := fn.Import()
		if mod != "wasi_snapshot_preview1" {
			t.Errorf("import %s.%s outside WASI preview 1", mod, name)
		}
		imports = append(imports, name)
	}
	sort.Strings(imports)
	t.Logf("imports: %v", imports)

	clock := newFakeClock(time.Unix(1_700_000_000, 0))
	a := newInstance(t, 5, clock)
	b := newInstance(t, 5, clock)
	t.Logf("instantiate: %v; random reads while initializing: %d; linear memory %d bytes", a.instantiate, a.rand.bootReads, a.MemSize())
	a.mustOK(t, req(vault.OpStatus))
	if a.rand.reads != 0 {
		t.Errorf("a status call drew randomness (%d reads)", a.rand.reads)
	}
	for _, in := range []*instance{a, b} {
		in.mustOK(t, req(vault.OpPolicy, fs(1, "https://app.example")))
	}
	ra := a.mustOK(t, req(vault.OpBegin, fu(1, 1)))
	rb := b.mustOK(t, req(vault.OpBegin, fu(1, 1)))
	if !bytes.Equal(ra.raw, rb.raw) || a.rand.bytes != 32 {
		t.Errorf("same seed, different key pairs (%x, %x) or %d random bytes drawn", ra.raw, rb.raw, a.rand.bytes)
	}
	if a.sleeps != 0 {
		t.Errorf("the module slept %d times", a.sleeps)
	}
}

func valueTypes(ts []api.ValueType) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = api.ValueTypeName(t)
	}
	return strings.Join(names, ",")
}
