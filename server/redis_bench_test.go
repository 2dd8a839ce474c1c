package server_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/internal/redistest"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
	"github.com/sessionvault/sessionvault/server/redisstore"
)

// Benchmarks of the Manager on redisstore, against a real redis-server on loopback (one per
// benchmark, without persistence). The revocation latency across two nodes is a test-reported
// figure: TestRedisRevocationLatency (SV_BENCH=1 for 300 trials).
//
//	go test -run '^$' -bench 'Redis' -benchmem ./server/

// rtCounter counts round trips to Redis: each command or pipeline sent.
type rtCounter struct{ n atomic.Int64 }

func (c *rtCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *rtCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *rtCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// countedRedisStore returns a Store on a fresh redis-server whose round trips c counts.
func countedRedisStore(b *testing.B) (*redisstore.Store, *rtCounter) {
	srv := redistest.Own(b, false)
	cl := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	b.Cleanup(func() { cl.Close() })
	c := &rtCounter{}
	cl.AddHook(c)
	return redisstore.New(cl, nil), c
}

// BenchmarkRedisRequire is BenchmarkRequire's verify path (parse, lane, HMAC, replay window,
// handler) with redisstore: one node, one lane, sequential requests. rt/op is the round trips
// to Redis per verified request (the login's few round trips are amortized into it).
func BenchmarkRedisRequire(b *testing.B) {
	st, rt := countedRedisStore(b)
	rt.n.Store(0)
	benchRequire(b, st)
	b.ReportMetric(float64(rt.n.Load())/float64(b.N), "rt/op")
}

// BenchmarkRedisLogin is the issuance rate: logins (X25519 agreement, session and lane
// written, per-user limit checked) in parallel, each of a new user, through the login handler.
// The client's key pair is made outside the timer. memstore is the peer in the same run.
func BenchmarkRedisLogin(b *testing.B) {
	b.Run("redisstore", func(b *testing.B) {
		st, rt := countedRedisStore(b)
		benchLogin(b, st, rt)
	})
	b.Run("memstore", func(b *testing.B) { benchLogin(b, memstore.New(), nil) })
}

func benchLogin(b *testing.B, st server.Store, rt *rtCounter) {
	m, err := server.New(server.Config{
		Store:    st,
		StoreKey: testStoreKey,
		Authenticator: server.AuthenticatorFunc(func(_ context.Context, _ *http.Request, cred json.RawMessage) (string, map[string]string, error) {
			var c struct{ User string }
			json.Unmarshal(cred, &c)
			return c.User, nil, nil
		}),
		Logger:            slog.New(slog.DiscardHandler),
		ThrottleThreshold: -1,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	h := m.Handler()
	// Login bodies made ahead: a public key per login is the worker's cost, not the server's.
	const pool = 1024
	pubs := make([]string, pool)
	for i := range pubs {
		e, err := protocol.NewEphemeral(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		p := e.Public()
		pubs[i] = b64u(p[:])
	}
	var users atomic.Int64
	if rt != nil {
		rt.n.Store(0)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		w := &benchWriter{h: http.Header{}}
		for pb.Next() {
			n := users.Add(1)
			body := fmt.Sprintf(`{"pub":%q,"credentials":{"user":"u%d"}}`, pubs[n%pool], n)
			r := httptest.NewRequest("POST", "/sv/login", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.RemoteAddr = "192.0.2.1:50000"
			w.code = 0
			clear(w.h)
			h.ServeHTTP(w, r)
			if w.code != 0 && w.code != 200 {
				b.Fatalf("login: %d %v", w.code, w.h)
			}
		}
	})
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "logins/s")
	if rt != nil {
		b.ReportMetric(float64(rt.n.Load())/float64(b.N), "rt/op")
	}
}
