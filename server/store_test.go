package server

import (
	"math/rand/v2"
	"testing"
	"unsafe"
)

const W = ReplayWindowSize

// check calls w.Check(seq) and fails unless the result is want.
func check(t *testing.T, w *ReplayWindow, seq uint64, want bool) {
	t.Helper()
	if got := w.Check(seq); got != want {
		t.Fatalf("Check(%d) with Top %d = %v, want %v", seq, w.Top, got, want)
	}
}

func TestReplayWindowSize(t *testing.T) {
	if s := unsafe.Sizeof(ReplayWindow{}); s != 136 {
		t.Errorf("ReplayWindow is %d bytes, documented as 136", s)
	}
}

func TestReplayWindowZero(t *testing.T) {
	var w ReplayWindow
	check(t, &w, 0, false) // seq 0 is never fresh, even in an empty window
	if w.Top != 0 || w.Bits != ([W / 64]uint64{}) {
		t.Fatal("Check(0) changed the window")
	}
	check(t, &w, 1, true)
	check(t, &w, 0, false)
	check(t, &w, 1, false)
}

func TestReplayWindowInOrder(t *testing.T) {
	var w ReplayWindow
	for seq := uint64(1); seq <= 5*W; seq++ {
		check(t, &w, seq, true)
		check(t, &w, seq, false)
	}
	for seq := uint64(1); seq <= 5*W; seq++ {
		check(t, &w, seq, false)
	}
}

func TestReplayWindowOutOfOrder(t *testing.T) {
	var w ReplayWindow
	const top = 3 * W
	check(t, &w, top, true)
	// Every nonce inside the window, in random order, is fresh once.
	r := rand.New(rand.NewPCG(1, 2))
	seqs := make([]uint64, 0, W-1)
	for seq := uint64(top - W + 1); seq < top; seq++ {
		seqs = append(seqs, seq)
	}
	r.Shuffle(len(seqs), func(i, j int) { seqs[i], seqs[j] = seqs[j], seqs[i] })
	for _, seq := range seqs {
		check(t, &w, seq, true)
	}
	for _, seq := range seqs {
		check(t, &w, seq, false)
	}
	check(t, &w, top, false)
	for i := range w.Bits {
		if w.Bits[i] != ^uint64(0) {
			t.Fatalf("bitmap word %d = %x after seeing the whole window", i, w.Bits[i])
		}
	}
}

func TestReplayWindowEdge(t *testing.T) {
	var w ReplayWindow
	const top = 10 * W
	check(t, &w, top, true)
	check(t, &w, top-W, false)  // distance W: just outside
	check(t, &w, top-W+1, true) // distance W-1: the last nonce inside
	check(t, &w, top-W+1, false)
	// Moving up by one pushes that nonce out; the next one down becomes the edge.
	check(t, &w, top+1, true)
	check(t, &w, top-W+1, false)
	check(t, &w, top-W+2, true)
	check(t, &w, top-W+2, false)
	check(t, &w, top-W+3, true)
}

// TestReplayWindowJumps moves the top by every interesting distance and checks that exactly the
// seen nonces still inside the window are replays.
func TestReplayWindowJumps(t *testing.T) {
	for _, jump := range []uint64{1, 2, 31, 63, 64, 65, 127, 128, 129, 500, W - 65, W - 64, W - 63, W - 2, W - 1, W, W + 1, 2 * W, 1 << 40} {
		var w ReplayWindow
		const top = 5 * W
		seen := map[uint64]bool{}
		// A pattern of seen nonces across every word of the bitmap.
		for seq := uint64(top - W + 1); seq <= top; seq++ {
			if seq%3 == 0 || seq%64 == 0 || seq%64 == 63 || seq == top {
				check(t, &w, seq, true)
				seen[seq] = true
			}
		}
		newTop := top + jump
		check(t, &w, newTop, true)
		seen[newTop] = true
		lo := uint64(top - W + 1)
		for seq := lo; seq <= newTop && seq < lo+4*W; seq++ {
			inside := newTop-seq < W
			want := inside && !seen[seq]
			if got := w.Check(seq); got != want {
				t.Fatalf("jump %d: Check(%d) = %v, want %v (inside %v, seen %v)", jump, seq, got, want, inside, seen[seq])
			}
		}
	}
}

func TestReplayWindowMax(t *testing.T) {
	var w ReplayWindow
	const max = ^uint64(0)
	check(t, &w, 1, true)
	check(t, &w, max, true) // jump of nearly 2^64
	check(t, &w, 1, false)
	check(t, &w, max, false)
	check(t, &w, max-W+1, true)
	check(t, &w, max-W, false)
	check(t, &w, max-1, true)
}

// TestReplayWindowModel compares the window with a naive model (a set of every nonce seen and the
// highest one) over 100,000 random operations mixing in-order nonces, reordering inside the
// window, the edges, replays, seq 0 and jumps.
func TestReplayWindowModel(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0x5e55))
	var w ReplayWindow
	seen := map[uint64]bool{}
	var top uint64
	model := func(seq uint64) bool {
		if seq == 0 || seen[seq] || seq <= top && top-seq >= W {
			return false
		}
		seen[seq] = true
		top = max(top, seq)
		return true
	}
	fresh := 0
	for i := range 100_000 {
		var seq uint64
		switch k := r.IntN(100); {
		case k < 40: // next few
			seq = top + 1 + r.Uint64N(3)
		case k < 70: // reordered inside the window
			seq = top - min(top, r.Uint64N(W))
		case k < 80: // around the edge
			seq = top - min(top, W-2+r.Uint64N(4))
		case k < 88: // replay of something recent
			seq = top - min(top, r.Uint64N(64))
		case k < 92: // far below
			seq = r.Uint64N(top + 1)
		case k < 97: // jump
			seq = top + 1 + r.Uint64N(3*W)
		case k < 98:
			seq = 0
		default: // big jump
			seq = top + r.Uint64N(1<<32)
		}
		want := model(seq)
		if got := w.Check(seq); got != want {
			t.Fatalf("op %d: Check(%d) = %v, model says %v (top %d)", i, seq, got, want, top)
		}
		if w.Top != top {
			t.Fatalf("op %d: Top = %d, model %d", i, w.Top, top)
		}
		if want {
			fresh++
		}
	}
	if fresh < 30_000 || fresh > 90_000 {
		t.Errorf("%d of 100000 operations were fresh: the mix is off", fresh)
	}
}

func BenchmarkReplayWindowCheck(b *testing.B) {
	var w ReplayWindow
	seq := uint64(0)
	for b.Loop() {
		seq++
		w.Check(seq)
	}
}
