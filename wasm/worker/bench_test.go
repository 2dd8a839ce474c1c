//go:build !wasm

package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
)

// benchLogin brings a fresh instance and a native vault to an active session with the same key.
func benchLogin(b *testing.B) (*instance, *vault.Vault) {
	p := newPair(b, 7)
	p.do("policy", req(vault.OpPolicy, fs(1, "https://app.example")))
	login(p)
	return p.wasm, p.native
}

// login runs a login handshake with a real native server side on both twins.
func login(p *pair) {
	p.t.Helper()
	r := p.do("begin", req(vault.OpBegin, fu(1, protocol.HandshakeLogin)))
	if r.Code != 0 {
		p.fatalf("begin: %s", r.code())
	}
	pub, _ := r.Get(1)
	p.pending, p.kind = p.takeScalar(pub), protocol.HandshakeLogin
	copy(p.pendPub[:], pub)
	var lane protocol.LaneID
	copy(lane[:], p.bytes(16))
	se := p.serverEph()
	tr := protocol.HandshakeTranscript(protocol.HandshakeLogin, p.pendPub, se.Public(), lane, nil)
	srvPub := se.Public()
	k, err := protocol.Handshake(se, p.pendPub, tr, lane)
	if err != nil {
		p.fatalf("server handshake: %v", err)
	}
	c := protocol.Confirm(&k, tr)
	r = p.do("finish", req(vault.OpFinish, f(1, lane[:]), f(2, srvPub[:]), f(3, c[:]), fu(4, uint64(p.nowMs()))))
	if r.Code != 0 {
		p.fatalf("finish: %s %s", r.code(), r.str(1))
	}
	p.sess = newSession(k, lane)
	p.sess.offsetMs = 0
	p.pending = nil
}

var benchSignReq = req(vault.OpSign, fs(1, "POST"), fs(2, "https://app.example"), fs(3, "/api/v1/items/42"),
	fs(4, "page=2&sort=name"), fs(5, `{"name":"widget","qty":3}`))

func BenchmarkWasmSign(b *testing.B) {
	in, _ := benchLogin(b)
	b.ReportAllocs()
	for b.Loop() {
		out, err := in.Call(benchSignReq)
		if err != nil || out[1] != 0 {
			b.Fatalf("%x %v", out, err)
		}
	}
}

func BenchmarkNativeSign(b *testing.B) {
	_, n := benchLogin(b)
	b.ReportAllocs()
	for b.Loop() {
		if out := n.Call(benchSignReq); out[1] != 0 {
			b.Fatalf("%x", out)
		}
	}
}

func BenchmarkWasmStatus(b *testing.B) {
	in := newInstance(b, 7, newFakeClock(time.Unix(1_700_000_000, 0)))
	q := req(vault.OpStatus)
	b.ReportAllocs()
	for b.Loop() {
		if out, err := in.Call(q); err != nil || out[1] != 0 {
			b.Fatalf("%x %v", out, err)
		}
	}
}

// BenchmarkWasmBegin is dominated by one X25519 base-point multiplication in wasm.
func BenchmarkWasmBegin(b *testing.B) {
	in := newInstance(b, 7, newFakeClock(time.Unix(1_700_000_000, 0)))
	in.mustOK(b, req(vault.OpPolicy, fs(1, "https://app.example")))
	q := req(vault.OpBegin, fu(1, protocol.HandshakeLogin))
	for b.Loop() {
		if out, err := in.Call(q); err != nil || out[1] != 0 {
			b.Fatalf("%x %v", out, err)
		}
	}
}

func BenchmarkNativeBegin(b *testing.B) {
	n := nativeVault(7, newFakeClock(time.Unix(1_700_000_000, 0)))
	n.Call(req(vault.OpPolicy, fs(1, "https://app.example")))
	q := req(vault.OpBegin, fu(1, protocol.HandshakeLogin))
	for b.Loop() {
		if out := n.Call(q); out[1] != 0 {
			b.Fatalf("%x", out)
		}
	}
}

// BenchmarkInstantiate is the cost of a fresh instance (including _initialize) of the compiled
// module: a page reload's worth of work on the host side.
func BenchmarkInstantiate(b *testing.B) {
	h := getHost(b)
	clock := newFakeClock(time.Unix(1_700_000_000, 0))
	for b.Loop() {
		in, err := h.instantiate(1, clock)
		if err != nil {
			b.Fatal(err)
		}
		in.Close()
	}
}

// BenchmarkCompile measures compiling the module with a fresh runtime, without a compilation
// cache and with a warm one.
func BenchmarkCompile(b *testing.B) {
	wasm, err := os.ReadFile(wasmPath())
	if err != nil {
		b.Fatalf("%v: run make wasm", err)
	}
	ctx := context.Background()
	b.Run("nocache", func(b *testing.B) {
		for b.Loop() {
			rt := wazero.NewRuntime(ctx)
			if _, err := rt.CompileModule(ctx, wasm); err != nil {
				b.Fatal(err)
			}
			rt.Close(ctx)
		}
	})
	b.Run("cache", func(b *testing.B) {
		cache, err := wazero.NewCompilationCacheWithDir(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		cfg := wazero.NewRuntimeConfig().WithCompilationCache(cache)
		rt := wazero.NewRuntimeWithConfig(ctx, cfg) // fill the cache
		if _, err := rt.CompileModule(ctx, wasm); err != nil {
			b.Fatal(err)
		}
		rt.Close(ctx)
		for b.Loop() {
			rt := wazero.NewRuntimeWithConfig(ctx, cfg)
			wasi_snapshot_preview1.MustInstantiate(ctx, rt)
			if _, err := rt.CompileModule(ctx, wasm); err != nil {
				b.Fatal(err)
			}
			rt.Close(ctx)
		}
	})
}
