package redisstore

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/internal/redistest"
)

// The tests run against a real redis-server (internal/redistest), one shared without
// persistence; tests that kill Redis start their own.
var testCounter atomic.Int64

func TestMain(m *testing.M) {
	flag.Parse()
	redistest.Verbose = testing.Verbose()
	if !testing.Verbose() {
		redis.SetLogger(quietLogger{}) // the tests that kill Redis make go-redis log every failed dial
	}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run()) // a fuzz worker runs the codec's target only: no Redis
	}
	os.Exit(redistest.Main(m))
}

// needRedis skips (or, with SV_STRICT=1, fails) a test when there is no redis-server.
func needRedis(tb testing.TB) {
	tb.Helper()
	redistest.Need(tb)
}

// redisProc is a redis-server of the tests.
type redisProc struct{ *redistest.Server }

func (p *redisProc) addr() string { return p.Addr() }
func (p *redisProc) kill()        { p.Kill() }
func (p *redisProc) stop()        { p.Stop() }

// restart starts the server again on the same port (and directory) and returns it.
func (p *redisProc) restart(t *testing.T) *redisProc { return &redisProc{p.RestartT(t)} }

// startRedis starts redis-server on port (0: a free one) with extra arguments; without any, it
// keeps nothing (no RDB, no AOF).
func startRedis(port int, extra ...string) (*redisProc, error) {
	s, err := redistest.Start(port, extra...)
	if err != nil {
		return nil, err
	}
	return &redisProc{s}, nil
}

// ownRedis starts a private redis-server for a test that kills it. With persist, it writes an
// append-only file fsynced before each reply, so that a restart loses nothing acknowledged.
func ownRedis(t *testing.T, persist bool) *redisProc {
	t.Helper()
	return &redisProc{redistest.Own(t, persist)}
}

// newClient returns a client of the Redis at addr, closed with the test.
func newClient(tb testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

// testPrefix returns a key prefix of its own, so that tests share the server without sharing
// keys or notices.
func testPrefix() string { return fmt.Sprintf("t%d:", testCounter.Add(1)) }

// newStore returns a Store on the shared server with a fresh prefix.
func newStore(tb testing.TB) *Store {
	tb.Helper()
	return New(newClient(tb, sharedAddr(tb)), &Options{Prefix: testPrefix()})
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// sharedAddr returns the address of the shared server, skipping the test if there is none.
func sharedAddr(tb testing.TB) string {
	tb.Helper()
	return redistest.Shared(tb).Addr()
}
