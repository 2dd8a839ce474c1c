// Command worker is the Sessionvault wasm module: a WASI reactor (GOOS=wasip1 GOARCH=wasm
// -buildmode=c-shared) that holds one lane's key in its linear memory and exposes the vault
// through a small ABI. js/worker.js loads it in a Web Worker; the tests in this directory load
// the very same file under wazero.
//
// # ABI
//
//	alloc(n u32) u32          a pinned buffer of n bytes (0 if n is 0, above the 8 MiB message
//	                          limit, or if the host already holds 32 MiB of unfreed buffers)
//	free(p u32)               releases a buffer from alloc or from a call's result
//	call(p u32, n u32) u64    runs one ABI request (PROTOCOL.md section 7) read from [p, p+n);
//	                          returns result pointer << 32 | result length. The result is a
//	                          pinned buffer the host copies out, then frees.
//	reply() u32               the address of the module's reply buffer (fixed for the
//	                          instance's life, ReplySize bytes)
//	exec(p u32, n u32) u32    runs one request like call, zeroes [p, p+n) afterwards (the host
//	                          keeps that buffer for the next request), and writes the reply at
//	                          reply(); returns its length. One export call per operation
//	                          instead of four (alloc, call, free, free), no allocation for the
//	                          host to release: the worker's per-request path.
//
// The host must call _initialize once before anything else. Calls must not overlap (a worker is
// single-threaded). Every export recovers from panics and reports them as an "internal" status,
// so no input can trap the instance.
package main

import (
	"time"
	"unsafe"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/vault"
)

func main() {}

// maxPinned bounds the bytes of all buffers the host holds at once (requests not yet freed and
// results not yet freed). Past it alloc returns 0, so a host that leaks buffers gets refusals
// instead of an out-of-memory trap that no recover can catch.
const maxPinned = 32 << 20

var (
	// pinned keeps every buffer handed to the host reachable until it is freed. Go's GC does not
	// move heap objects, so the address stays valid.
	pinned      = map[uint32][]byte{}
	pinnedBytes int
	v           = vault.New(wasiRandom{}, time.Now)
)

func ptr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

//go:wasmexport alloc
func alloc(n uint32) (p uint32) {
	defer func() {
		if recover() != nil {
			p = 0
		}
	}()
	if n == 0 || n > protocol.MaxMessageSize || pinnedBytes+int(n) > maxPinned {
		return 0
	}
	b := make([]byte, n)
	p = ptr(b)
	pinned[p] = b
	pinnedBytes += len(b)
	return p
}

//go:wasmexport free
func free(p uint32) {
	defer func() { recover() }()
	if b, ok := pinned[p]; ok {
		clear(b) // requests and replies may hold bodies and signatures; leave nothing behind
		delete(pinned, p)
		pinnedBytes -= len(b)
	}
}

//go:wasmexport call
func call(p, n uint32) (res uint64) {
	defer func() {
		if recover() != nil {
			res = result(internalError)
		}
	}()
	in, ok := request(p, n)
	if !ok {
		return result(badPointer)
	}
	return result(v.Call(in))
}

// request returns [p, p+n) if it lies in a pinned buffer.
func request(p, n uint32) ([]byte, bool) {
	in, ok := pinned[p]
	if !ok || n > uint32(len(in)) {
		return nil, false
	}
	return in[:n], true
}

// ReplySize is the size of exec's reply buffer. Every reply the vault produces is far smaller
// (the largest, a signature with a Content-Digest, is under 400 bytes); a larger one would be
// answered with an "internal" status rather than truncated.
const ReplySize = 4096

// replyBuf holds exec's last reply (replyLen bytes). It never holds key material (no reply
// does); the next exec overwrites it and clears what a shorter reply leaves.
var (
	replyBuf [ReplySize]byte
	replyLen int
)

//go:wasmexport reply
func replyAddr() uint32 { return ptr(replyBuf[:]) }

// abiVersion is the module's ABI version export (vault.ABIExport): hosts check its name before
// they use the module; it does nothing.
//
//go:wasmexport sessionvault_abi_2
func abiVersion() {}

//go:wasmexport exec
func execute(p, n uint32) (length uint32) {
	defer func() {
		if recover() != nil {
			length = put(internalError)
		}
	}()
	in, ok := request(p, n)
	if !ok {
		return put(badPointer)
	}
	// Requests may hold bodies and tickets, and the host reuses the buffer: zero it once the
	// reply is copied out, and on a panic too.
	defer clear(in)
	return put(v.Call(in))
}

// put writes out into the reply buffer, zeroing the rest of the previous reply.
func put(out []byte) uint32 {
	if len(out) > len(replyBuf) {
		out = replyTooLarge
	}
	n := copy(replyBuf[:], out)
	if replyLen > n {
		clear(replyBuf[n:replyLen])
	}
	replyLen = n
	return uint32(n)
}

var (
	replyTooLarge = []byte{protocol.CodecVersion, vault.StatusOf(vault.CodeInternal), 1, 15, 'r', 'e', 'p', 'l', 'y', ' ', 't', 'o', 'o', ' ', 'l', 'a', 'r', 'g', 'e'}
	badPointer    = []byte{protocol.CodecVersion, vault.StatusOf(vault.CodeBadMessage), 1, 23, 'b', 'u', 'f', 'f', 'e', 'r', ' ', 'n', 'o', 't', ' ', 'f', 'r', 'o', 'm', ' ', 'a', 'l', 'l', 'o', 'c', '(', ')'}
	internalError = []byte{protocol.CodecVersion, vault.StatusOf(vault.CodeInternal), 1, 14, 'i', 'n', 't', 'e', 'r', 'n', 'a', 'l', ' ', 'f', 'a', 'u', 'l', 't'}
)

// result pins a copy of out and packs its address and length.
func result(out []byte) uint64 {
	b := make([]byte, max(len(out), 1)) // never a zero-size (shared) allocation
	copy(b, out)
	p := ptr(b)
	pinned[p] = b
	pinnedBytes += len(b)
	return uint64(p)<<32 | uint64(len(b))
}
