package redisstore

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/storetest"
)

// The benchmarks run against the real redis-server on loopback: the figures are round trips.
// go test -run XXX -bench . ./server/redisstore/

func BenchmarkLane(b *testing.B)   { storetest.BenchLane(b, newStore(b)) }
func BenchmarkSeen(b *testing.B)   { storetest.BenchSeen(b, newStore(b)) }
func BenchmarkCreate(b *testing.B) { storetest.BenchCreate(b, newStore(b)) }

// BenchmarkVerifyPath is the store's part of verifying one request: Lane then Seen, as the
// Manager calls them, with the round trips per request. "warm": the node has seen the lane
// before (every request but a lane's first on a node); "first-sight": another node's lane.
func BenchmarkVerifyPath(b *testing.B) {
	needRedis(b)
	ctx := b.Context()
	b.Run("warm", func(b *testing.B) {
		st, rt := countingStore(b, sharedAddr(b), testPrefix())
		_, l := create(b, st, "alice")
		b.ReportAllocs()
		st.c.ConfigResetStat(ctx)
		rt.n.Store(0)
		seq := uint64(0)
		for b.Loop() {
			seq++
			if _, _, err := st.Lane(ctx, l.ID); err != nil {
				b.Fatal(err)
			}
			if err := st.Seen(ctx, l.ID, seq); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rt.n.Load())/float64(b.N), "rt/op")
		// Redis's own time per call: what the store costs Redis, without the network and the
		// scheduling of a loaded machine.
		stats := st.c.Info(ctx, "commandstats").Val()
		for _, cmd := range []string{"hmget", "evalsha"} {
			if _, rest, ok := strings.Cut(stats, "cmdstat_"+cmd+":"); ok {
				if _, v, ok := strings.Cut(rest, "usec_per_call="); ok {
					v, _, _ = strings.Cut(v, ",")
					if f, err := strconv.ParseFloat(v, 64); err == nil {
						b.ReportMetric(f, "redis-µs/"+cmd)
					}
				}
			}
		}
	})
	b.Run("first-sight", func(b *testing.B) {
		prefix := testPrefix()
		a := New(newClient(b, sharedAddr(b)), &Options{Prefix: prefix})
		st, rt := countingStore(b, sharedAddr(b), prefix)
		lanes := make([]*server.Lane, b.N)
		for i := range lanes {
			_, lanes[i] = create(b, a, "alice")
		}
		if err := st.Ping(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		rt.n.Store(0)
		b.ResetTimer()
		for _, l := range lanes {
			if _, _, err := st.Lane(ctx, l.ID); err != nil {
				b.Fatal(err)
			}
			if err := st.Seen(ctx, l.ID, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rt.n.Load())/float64(b.N), "rt/op")
	})
	b.Run("parallel", func(b *testing.B) {
		st, rt := countingStore(b, sharedAddr(b), testPrefix())
		lanes := make(chan *server.Lane, 64)
		for range cap(lanes) {
			_, l := create(b, st, "alice")
			lanes <- l
		}
		b.ReportAllocs()
		rt.n.Store(0)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			l := <-lanes
			seq := uint64(0)
			for pb.Next() {
				seq++
				if _, _, err := st.Lane(ctx, l.ID); err != nil {
					b.Error(err)
					return
				}
				if err := st.Seen(ctx, l.ID, seq); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(rt.n.Load())/float64(b.N), "rt/op")
	})
}

// BenchmarkRevocation measures a revocation across two nodes: from Delete on node A to the
// notice arriving at node B's subscription. ns/op is the mean; p50 and p99 are reported too.
func BenchmarkRevocation(b *testing.B) {
	ctx := b.Context()
	a, nb := twoNodes(b, sharedAddr(b))
	ch := make(chan Notice, 1)
	stop, err := nb.Subscribe(ctx, func(n Notice) { ch <- n })
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	sessions := make([]*server.Session, b.N)
	for i := range sessions {
		s := storetest.NewSession("alice", time.Now())
		s.Expires = time.Now().Add(time.Hour)
		if err := a.Create(ctx, s, storetest.NewLane(s)); err != nil {
			b.Fatal(err)
		}
		sessions[i] = s
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for _, s := range sessions {
		start := time.Now()
		if _, err := a.Delete(ctx, s.ID, "revoked"); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			b.Fatal("notice lost")
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkPing is the peer: one bare round trip to the same Redis through the same client
// library, the floor under every figure above.
func BenchmarkPing(b *testing.B) {
	st := newStore(b)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if err := st.c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
