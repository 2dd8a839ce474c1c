package redisstore

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The tests run against a real redis-server, started here on a free loopback port without
// persistence. Tests that kill Redis start their own.
var (
	shared      *redisProc
	missing     string // why there is no redis-server, if there is none
	testCounter atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if !testing.Verbose() {
		redis.SetLogger(quietLogger{}) // the tests that kill Redis make go-redis log every failed dial
	}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		return m.Run() // a fuzz worker runs the codec's target only: no Redis
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		missing = "REDIS-SERVER MISSING: redis-server is not on PATH; the redisstore tests are NOT run"
	} else if p, err := startRedis(0); err != nil {
		missing = "REDIS-SERVER FAILED TO START: " + err.Error() + "; the redisstore tests are NOT run"
	} else {
		shared = p
		defer p.kill()
	}
	if missing != "" {
		fmt.Fprintf(os.Stderr, "\n***** %s *****\n\n", missing)
		if os.Getenv("SV_STRICT") == "1" {
			fmt.Fprintln(os.Stderr, "SV_STRICT=1: failing")
			return 1
		}
	}
	return m.Run()
}

// needRedis skips (or, with SV_STRICT=1, fails) a test when there is no redis-server.
func needRedis(tb testing.TB) {
	tb.Helper()
	if missing == "" {
		return
	}
	if os.Getenv("SV_STRICT") == "1" {
		tb.Fatal(missing)
	}
	tb.Skip(missing)
}

type redisProc struct {
	port  int
	extra []string // arguments beyond the defaults, for a restart
	cmd   *exec.Cmd
	done  chan struct{}
}

func (p *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRedis starts redis-server on port (0: a free one) with extra arguments; without any, it
// keeps nothing (no RDB, no AOF).
func startRedis(port int, extra ...string) (*redisProc, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no", "--appendonly", "no"}
	args = append(args, extra...) // later arguments win
	p := &redisProc{port: port, extra: extra, cmd: exec.Command("redis-server", args...), done: make(chan struct{})}
	if testing.Verbose() {
		p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	c := redis.NewClient(&redis.Options{Addr: p.addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("redis-server on port %d exited: %v", port, p.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("redis-server on port %d does not answer: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the server with SIGKILL (no shutdown, no save) and waits for it to exit.
func (p *redisProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// ownRedis starts a private redis-server for a test that kills it. With persist, it writes an
// append-only file fsynced before each reply, so that a restart loses nothing acknowledged.
func ownRedis(t *testing.T, persist bool) *redisProc {
	t.Helper()
	needRedis(t)
	var extra []string
	if persist {
		extra = []string{"--appendonly", "yes", "--appendfsync", "always", "--dir", t.TempDir()}
	}
	p, err := startRedis(0, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return p
}

// stop kills the server unless it has exited.
func (p *redisProc) stop() {
	select {
	case <-p.done:
	default:
		p.kill()
	}
}

// restart starts the server again on the same port (and directory) and returns it.
func (p *redisProc) restart(t *testing.T) *redisProc {
	t.Helper()
	np, err := startRedis(p.port, p.extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(np.stop)
	return np
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
	needRedis(tb)
	return New(newClient(tb, sharedAddr(tb)), &Options{Prefix: testPrefix()})
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// sharedAddr returns the address of the shared server, skipping the test if there is none.
func sharedAddr(tb testing.TB) string {
	tb.Helper()
	needRedis(tb)
	return shared.addr()
}
