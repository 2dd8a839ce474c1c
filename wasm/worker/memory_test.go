//go:build !wasm

package main

import (
	"math/rand/v2"
	"testing"

	"github.com/sessionvault/sessionvault/internal/vault"
)

// TestMemoryFlat: a long run of signing and status calls, with stray alloc/free pairs of varied
// sizes, leaves linear memory flat once warm: growth is allowed in the first half only.
func TestMemoryFlat(t *testing.T) {
	calls := 100_000
	if testing.Short() {
		calls = 50_000
	}
	p := loggedIn(t, 31)
	in := p.wasm
	rng := rand.New(rand.NewPCG(31, 31))
	bodies := make([][]byte, 16)
	for i := range bodies {
		bodies[i] = make([]byte, rng.IntN(4096))
	}
	signs := make([][]byte, 64)
	for i := range signs {
		fields := []field{fs(1, "POST"), fs(2, "https://app.example"), fs(3, "/api/items/"+string(rune('a'+i%26)))}
		if i%3 == 0 {
			fields = append(fields, fs(4, "page="+string(rune('0'+i%10))))
		}
		fields = append(fields, f(5, bodies[i%len(bodies)]))
		signs[i] = req(vault.OpSign, fields...)
	}
	status := req(vault.OpStatus)
	start := in.MemSize()
	var half uint32
	grewLate, lastGrowth, size := 0, 0, start
	for i := range calls {
		var q []byte
		switch rng.IntN(4) {
		case 0:
			q = status
		default:
			q = signs[rng.IntN(len(signs))]
		}
		b, err := in.Call(q)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if b[1] != 0 {
			t.Fatalf("call %d: status %s", i, vault.CodeOf(b[1]))
		}
		if i%16 == 0 { // a stray buffer, as a page that gives up on a request leaves
			n := uint32(1 + rng.IntN(64<<10))
			a, err := in.Alloc(n)
			if err != nil || a == 0 {
				t.Fatalf("alloc(%d) = %d, %v", n, a, err)
			}
			if err := in.Free(a); err != nil {
				t.Fatal(err)
			}
		}
		if m := in.MemSize(); m != size {
			lastGrowth, size = i, m
		}
		switch {
		case i == calls/2-1:
			half = in.MemSize()
		case i >= calls/2 && in.MemSize() != half:
			grewLate++
			t.Errorf("call %d: memory grew from %d to %d bytes after warm-up", i, half, in.MemSize())
			half = in.MemSize()
		}
		if grewLate > 3 {
			t.FailNow()
		}
	}
	t.Logf("%d calls: linear memory %d bytes at start, %d at half-time, %d at the end (last growth at call %d)", calls, start, half, in.MemSize(), lastGrowth)
}
