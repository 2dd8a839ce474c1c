//go:build !wasm

package main

// The wazero host the tests in this directory run the built module under: the very file the
// browser gets (build/vault.wasm, or the file named by SV_WASM), compiled once per test binary
// with an on-disk compilation cache, one fresh instance per test, deterministic randomness and
// clocks the test controls.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/sessionvault/sessionvault/internal/vault"
)

// wasmPath is the module under test: $SV_WASM, else build/vault.wasm of this checkout.
func wasmPath() string {
	if p := os.Getenv("SV_WASM"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "build", "vault.wasm")
}

// host is the per-test-binary runtime with the compiled module.
type host struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	bytes    []byte
	path     string
	compile  time.Duration
}

var (
	hostOnce sync.Once
	theHost  *host
	hostErr  error
)

// cacheDir is the wazero compilation cache shared by test runs (keyed by module hash and wazero
// version, so a rebuilt module or a new wazero never reads a stale entry).
func cacheDir() string { return filepath.Join(os.TempDir(), "sessionvault-wazero-cache") }

// getHost compiles the module once per test binary; a missing module fails the test, it does not
// skip it: a green run must mean the wasm was tested.
func getHost(tb testing.TB) *host {
	tb.Helper()
	hostOnce.Do(func() { theHost, hostErr = newHost(context.Background(), wasmPath(), cacheDir()) })
	if hostErr != nil {
		tb.Fatalf("wasm host: %v", hostErr)
	}
	return theHost
}

func newHost(ctx context.Context, path, cache string) (*host, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("no wasm module at " + path + ": run make wasm (or set SV_WASM)")
		}
		return nil, err
	}
	cfg := wazero.NewRuntimeConfig()
	if cache != "" {
		c, err := wazero.NewCompilationCacheWithDir(cache)
		if err != nil {
			return nil, err
		}
		cfg = cfg.WithCompilationCache(c)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	start := time.Now()
	compiled, err := rt.CompileModule(ctx, b)
	if err != nil {
		rt.Close(ctx)
		return nil, errors.New("compile " + path + ": " + err.Error())
	}
	return &host{rt: rt, compiled: compiled, bytes: b, path: path, compile: time.Since(start)}, nil
}

// fakeClock is the time both sides see. The wasm reads it through WASI clock_time_get
// (wall = Unix ns, monotonic = ns since the clock's start, so that time.Time comparisons with a
// monotonic reading agree with wall-clock ones); the native vault through Now.
type fakeClock struct {
	mu   sync.Mutex
	ns   int64 // Unix ns
	base int64
}

func newFakeClock(t time.Time) *fakeClock {
	return &fakeClock{ns: t.UnixNano(), base: t.UnixNano() - 1e9}
}

func (c *fakeClock) unixNano() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ns
}

// Advance moves the clock forward by d (never backwards).
func (c *fakeClock) Advance(d time.Duration) {
	if d < 0 {
		panic("fakeClock: negative advance")
	}
	c.mu.Lock()
	c.ns += int64(d)
	c.mu.Unlock()
}

func (c *fakeClock) Now() time.Time { return time.Unix(0, c.unixNano()) }

func (c *fakeClock) walltime() (int64, int32) {
	ns := c.unixNano()
	return ns / 1e9, int32(ns % 1e9)
}

func (c *fakeClock) nanotime() int64 { return c.unixNano() - c.base }

// randSwitch is the module's WASI random source. The Go runtime reads a seed while _initialize
// runs; those reads come from boot, so that every read after initialization (the vault's key
// generation) comes from vault, byte for byte the stream a native vault given the same seed reads.
type randSwitch struct {
	mu        sync.Mutex
	boot      *rand.ChaCha8
	vault     io.Reader
	ready     bool
	bootReads int
	reads     int // reads after initialization
	bytes     int
}

func (r *randSwitch) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ready {
		r.bootReads++
		return r.boot.Read(p)
	}
	r.reads++
	r.bytes += len(p)
	return io.ReadFull(r.vault, p)
}

// drawn is the number of bytes read after initialization.
func (r *randSwitch) drawn() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// seedOf expands a test seed into a ChaCha8 seed.
func seedOf(seed uint64, domain byte) [32]byte {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(seed >> (8 * i))
	}
	s[31] = domain
	return s
}

// seededReader is the randomness given to a native vault for the same seed as [newInstance].
func seededReader(seed uint64) *rand.ChaCha8 { return rand.NewChaCha8(seedOf(seed, 'v')) }

// instance is one module instance behind the three-function ABI. Calls are serialized by mu (a
// worker is single-threaded). After a trap the instance is closed and every later call fails.
type instance struct {
	mu                sync.Mutex
	h                 *host
	mod               api.Module
	alloc, free, call api.Function
	exec, reply       api.Function
	mem               api.Memory
	scratch, replyAt  uint32 // exec's request buffer (allocated at the first Exec) and reply buffer
	rand              *randSwitch
	clock             *fakeClock
	sleeps            int
	dead              error
	instantiate       time.Duration
}

// trapError is a call that trapped; the instance is gone.
type trapError struct{ err error }

func (e *trapError) Error() string { return "wasm trapped: " + e.err.Error() }
func (e *trapError) Unwrap() error { return e.err }

// newInstance instantiates a fresh module with randomness from seed and time from clock, and
// closes it when the test ends.
func newInstance(tb testing.TB, seed uint64, clock *fakeClock) *instance {
	tb.Helper()
	in, err := getHost(tb).instantiate(seed, clock)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(in.Close)
	return in
}

func (h *host) instantiate(seed uint64, clock *fakeClock) (*instance, error) {
	return h.instantiateWith(seed, seededReader(seed), clock)
}

// instantiateWith is instantiate with the randomness the vault draws after initialization
// given by vaultRand (a vector's fixed scalars).
func (h *host) instantiateWith(seed uint64, vaultRand io.Reader, clock *fakeClock) (*instance, error) {
	ctx := context.Background()
	in := &instance{
		h:     h,
		clock: clock,
		rand:  &randSwitch{boot: rand.NewChaCha8(seedOf(seed, 'b')), vault: vaultRand},
	}
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: many instances of one module side by side
		WithStartFunctions("_initialize").
		WithRandSource(in.rand).
		WithWalltime(clock.walltime, 1).
		WithNanotime(clock.nanotime, 1).
		WithNanosleep(func(int64) { in.sleeps++ }) // never sleep, never move the clock
	start := time.Now()
	mod, err := h.rt.InstantiateModule(ctx, h.compiled, cfg)
	if err != nil {
		return nil, errors.New("instantiate " + h.path + ": " + err.Error())
	}
	in.instantiate = time.Since(start)
	in.rand.mu.Lock()
	in.rand.ready = true
	in.rand.mu.Unlock()
	in.mod, in.mem = mod, mod.Memory()
	in.alloc, in.free, in.call = mod.ExportedFunction("alloc"), mod.ExportedFunction("free"), mod.ExportedFunction("call")
	in.exec, in.reply = mod.ExportedFunction("exec"), mod.ExportedFunction("reply")
	if in.alloc == nil || in.free == nil || in.call == nil || in.exec == nil || in.reply == nil || in.mem == nil {
		mod.Close(ctx)
		return nil, errors.New(h.path + " lacks an export of the ABI (alloc, free, call, exec, reply, memory)")
	}
	return in, nil
}

// Close releases the instance.
func (in *instance) Close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.dead == nil {
		in.dead = errors.New("instance closed")
	}
	in.mod.Close(context.Background())
}

// trapped records a trap and throws the instance away.
func (in *instance) trapped(err error) error {
	in.dead = &trapError{err}
	in.mod.Close(context.Background())
	return in.dead
}

// Call runs one ABI request: alloc, copy in, call, copy the reply out, free both buffers.
func (in *instance) Call(req []byte) ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.dead != nil {
		return nil, in.dead
	}
	ctx := context.Background()
	// An empty request still gets a buffer (alloc(0) is refused) so that the module decodes it.
	r, err := in.alloc.Call(ctx, uint64(max(len(req), 1)))
	if err != nil {
		return nil, in.trapped(err)
	}
	p := uint32(r[0])
	if p == 0 {
		return nil, errors.New("alloc refused " + strconv.Itoa(len(req)) + " bytes")
	}
	if !in.mem.Write(p, req) {
		return nil, in.trapped(errors.New("alloc returned a buffer outside memory"))
	}
	reply, err := in.rawCallLocked(p, uint32(len(req)))
	if err != nil {
		return nil, err
	}
	if _, err := in.free.Call(ctx, uint64(p)); err != nil {
		return nil, in.trapped(err)
	}
	if err := in.zeroedLocked(p, uint32(len(req)), "request"); err != nil {
		return nil, err
	}
	return reply, nil
}

// zeroedLocked checks that free left nothing of a buffer in memory (SECURITY.md: every ABI
// buffer is zeroed on free, since requests and replies carry key-derived bytes).
func (in *instance) zeroedLocked(p, n uint32, what string) error {
	b, ok := in.mem.Read(p, n)
	if !ok {
		return in.trapped(errors.New(what + " buffer outside memory"))
	}
	if !bytes.Equal(b, make([]byte, n)) {
		return errors.New("free left the " + what + " in memory")
	}
	return nil
}

// rawCallLocked calls the module on [p, p+n), copies the reply out and frees it.
func (in *instance) rawCallLocked(p, n uint32) ([]byte, error) {
	ctx := context.Background()
	r, err := in.call.Call(ctx, uint64(p), uint64(n))
	if err != nil {
		return nil, in.trapped(err)
	}
	rp, rn := uint32(r[0]>>32), uint32(r[0])
	b, ok := in.mem.Read(rp, rn)
	if !ok {
		return nil, in.trapped(errors.New("reply outside memory"))
	}
	reply := append([]byte(nil), b...) // copy out before the next call can grow memory
	if _, err := in.free.Call(ctx, uint64(rp)); err != nil {
		return nil, in.trapped(err)
	}
	if err := in.zeroedLocked(rp, rn, "reply"); err != nil {
		return nil, err
	}
	return reply, nil
}

// execScratch is the size of the request buffer Exec keeps, as js/abi.js does.
const execScratch = 64 << 10

// Exec runs one ABI request the way the browser worker does: copied into one long-lived buffer,
// one exec call, the reply read from the module's reply buffer. It fails if exec leaves any byte
// of the request behind. Requests larger than the buffer go through Call.
func (in *instance) Exec(req []byte) ([]byte, error) {
	if len(req) == 0 || len(req) > execScratch {
		return in.Call(req)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.dead != nil {
		return nil, in.dead
	}
	ctx := context.Background()
	if in.scratch == 0 {
		r, err := in.alloc.Call(ctx, execScratch)
		if err != nil {
			return nil, in.trapped(err)
		}
		if in.scratch = uint32(r[0]); in.scratch == 0 {
			return nil, errors.New("alloc refused the exec buffer")
		}
		if r, err = in.reply.Call(ctx); err != nil {
			return nil, in.trapped(err)
		}
		in.replyAt = uint32(r[0])
	}
	if !in.mem.Write(in.scratch, req) {
		return nil, in.trapped(errors.New("exec buffer outside memory"))
	}
	reply, err := in.rawExecLocked(in.scratch, uint32(len(req)))
	if err != nil {
		return nil, err
	}
	left, _ := in.mem.Read(in.scratch, uint32(len(req)))
	if !bytes.Equal(left, make([]byte, len(req))) {
		return nil, errors.New("exec left the request in its buffer")
	}
	return reply, nil
}

// RawExec calls exec with any pointer and length, as hostile JavaScript could.
func (in *instance) RawExec(p, n uint32) ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.dead != nil {
		return nil, in.dead
	}
	return in.rawExecLocked(p, n)
}

// rawExecLocked calls exec and copies the reply out of the reply buffer. It checks that the
// reply buffer holds nothing past the reply (what a longer earlier reply left is zeroed).
func (in *instance) rawExecLocked(p, n uint32) ([]byte, error) {
	ctx := context.Background()
	r, err := in.reply.Call(ctx)
	if err != nil {
		return nil, in.trapped(err)
	}
	at := uint32(r[0])
	if r, err = in.exec.Call(ctx, uint64(p), uint64(n)); err != nil {
		return nil, in.trapped(err)
	}
	rn := uint32(r[0])
	if rn > replySize {
		return nil, errors.New("exec reply longer than the reply buffer")
	}
	b, ok := in.mem.Read(at, replySize)
	if !ok {
		return nil, in.trapped(errors.New("reply buffer outside memory"))
	}
	if !bytes.Equal(b[rn:], make([]byte, replySize-rn)) {
		return nil, errors.New("reply buffer holds bytes past the reply")
	}
	return append([]byte(nil), b[:rn]...), nil
}

// replySize is the module's ReplySize.
const replySize = 4096

// RawCall calls the module with any pointer and length, as hostile JavaScript could.
func (in *instance) RawCall(p, n uint32) ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.dead != nil {
		return nil, in.dead
	}
	return in.rawCallLocked(p, n)
}

// Alloc calls alloc(n).
func (in *instance) Alloc(n uint32) (uint32, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.dead != nil {
		return 0, in.dead
	}
	r, err := in.alloc.Call(context.Background(), uint64(n))
	if err != nil {
		return 0, in.trapped(err)
	}
	return uint32(r[0]), nil
}

// Free calls free(p).
func (in *instance) Free(p uint32) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.dead != nil {
		return in.dead
	}
	if _, err := in.free.Call(context.Background(), uint64(p)); err != nil {
		return in.trapped(err)
	}
	return nil
}

// Write copies b into linear memory at p.
func (in *instance) Write(p uint32, b []byte) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.dead == nil && in.mem.Write(p, b)
}

// MemSize is the linear memory size in bytes.
func (in *instance) MemSize() uint32 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.mem.Size()
}

// nativeVault is the native twin of an instance made with the same seed and clock.
func nativeVault(seed uint64, clock *fakeClock) *vault.Vault {
	return vault.New(seededReader(seed), clock.Now)
}
