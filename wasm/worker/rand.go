//go:build wasip1

package main

import "unsafe"

// wasiRandom reads from WASI random_get directly. crypto/rand would link math/big, fmt and
// reflect (about 250 KB); on wasip1 it ends in this same call. In the browser the shim answers it
// with crypto.getRandomValues; there is no fallback to a weaker source.
type wasiRandom struct{}

//go:wasmimport wasi_snapshot_preview1 random_get
func randomGet(buf unsafe.Pointer, n uint32) uint32

// Read fills p completely or panics (a failed CSPRNG is not an error to continue from; the
// export's recover turns it into an "internal" status and no key is made).
func (wasiRandom) Read(p []byte) (int, error) {
	for off := 0; off < len(p); {
		n := min(len(p)-off, 256)
		if errno := randomGet(unsafe.Pointer(&p[off]), uint32(n)); errno != 0 {
			panic("random_get failed")
		}
		off += n
	}
	return len(p), nil
}
