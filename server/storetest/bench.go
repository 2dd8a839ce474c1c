package storetest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/server"
)

// BenchSeen measures [server.Store.Seen] on st: "serial" on one lane, "parallel" with a lane per
// goroutine (the common case: requests of different workers), and "parallel-one-lane" with all
// goroutines on one lane (one worker's requests in flight at once).
func BenchSeen(b *testing.B, st server.Store) {
	ctx := b.Context()
	b.Run("serial", func(b *testing.B) {
		_, l := benchCreate(b, st)
		b.ReportAllocs()
		seq := uint64(0)
		for b.Loop() {
			seq++
			if err := st.Seen(ctx, l.ID, seq); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		lanes := make([]*server.Lane, 64)
		for i := range lanes {
			_, lanes[i] = benchCreate(b, st)
		}
		var next atomic.Int32
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			l := lanes[int(next.Add(1)-1)%len(lanes)]
			seq := uint64(0)
			for pb.Next() {
				seq++
				if err := st.Seen(ctx, l.ID, seq); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("parallel-one-lane", func(b *testing.B) {
		_, l := benchCreate(b, st)
		var seq atomic.Uint64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				// Nonces arrive nearly in order; one that fell out of the window is a replay.
				if err := st.Seen(ctx, l.ID, seq.Add(1)); err != nil && err != server.ErrReplay {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchLane measures [server.Store.Lane], serially and in parallel, on a lane with realistic
// record sizes.
func BenchLane(b *testing.B, st server.Store) {
	ctx := b.Context()
	_, l := benchCreate(b, st)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := st.Lane(ctx, l.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := st.Lane(ctx, l.ID); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchCreate measures [server.Store.Create] (a login), serially and in parallel.
func BenchCreate(b *testing.B, st server.Store) {
	ctx := b.Context()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s, l := benchRecords()
			if err := st.Create(ctx, s, l); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s, l := benchRecords()
				if err := st.Create(ctx, s, l); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// benchRecords returns a session and lane of realistic sizes: sealed keys of 60 bytes (32-byte
// key, 12-byte nonce, 16-byte tag), a pending rotation's public values, a few claims.
func benchRecords() (*server.Session, *server.Lane) {
	now := time.Now()
	s := NewSession("user-1234567", now)
	s.Expires = now.Add(12 * time.Hour)
	s.Claims["email"] = "ada@example.com"
	l := NewLane(s)
	l.PrevKey = randBytes(60)
	l.PrevUntil = now.Add(30 * time.Second)
	l.RotateClientPub = randBytes(32)
	l.RotateReply = randBytes(64)
	return s, l
}

func benchCreate(b *testing.B, st server.Store) (*server.Session, *server.Lane) {
	b.Helper()
	s, l := benchRecords()
	if err := st.Create(b.Context(), s, l); err != nil {
		b.Fatal(err)
	}
	return s, l
}
