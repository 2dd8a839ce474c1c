// Package redistest starts real redis-server processes on free loopback ports for the tests of
// other packages (server/redisstore, server, cmd/devserver, e2e). It is test support: nothing
// outside tests imports it.
//
// Without redis-server on PATH, [Need] skips a test loudly, or fails it when SV_STRICT=1 (CI
// must not pass by skipping). A package that uses [Shared] runs its tests through [Main], which
// stops the shared server at the end:
//
//	func TestMain(m *testing.M) { os.Exit(redistest.Main(m)) }
//
// # Concurrency
//
// Every function is safe for concurrent use; a [Server]'s methods too.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Strict reports SV_STRICT=1: a missing program is a failure, not a skip.
func Strict() bool { return os.Getenv("SV_STRICT") == "1" }

// Missing returns why there is no usable redis-server ("" if it is on PATH).
func Missing() string {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return "REDIS-SERVER MISSING: redis-server is not on PATH (Debian: apt-get install redis-server); the Redis tests are NOT run"
	}
	return ""
}

// Need skips tb (fails it under SV_STRICT=1) when redis-server is missing.
func Need(tb testing.TB) {
	tb.Helper()
	msg := Missing()
	if msg == "" {
		return
	}
	if Strict() {
		tb.Fatal(msg + " (SV_STRICT=1: failing)")
	}
	tb.Skip(msg)
}

// Server is one redis-server process.
type Server struct {
	Port  int
	extra []string // arguments beyond the defaults, kept for Restart
	cmd   *exec.Cmd
	done  chan struct{}
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Verbose, if true, sends the servers' output to standard error.
var Verbose bool

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts redis-server on port (0: a free one) with extra arguments, and waits until it
// answers PING. Without extra arguments it keeps nothing (no RDB, no AOF); later arguments win.
func Start(port int, extra ...string) (*Server, error) {
	if msg := Missing(); msg != "" {
		return nil, errors.New(msg)
	}
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no", "--appendonly", "no"}
	args = append(args, extra...)
	s := &Server{Port: port, extra: extra, cmd: exec.Command("redis-server", args...), done: make(chan struct{})}
	if Verbose {
		s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("redis-server on port %d exited: %v", port, s.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("redis-server on port %d does not answer: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL (no shutdown, no save) and waits for it to exit.
func (s *Server) Kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// Stop kills the server unless it has exited.
func (s *Server) Stop() {
	select {
	case <-s.done:
	default:
		s.Kill()
	}
}

// Restart starts a server again on the same port with the same arguments (so the same
// directory and persistence) and returns it. The old one must have exited.
func (s *Server) Restart() (*Server, error) { return Start(s.Port, s.extra...) }

// Persistent are the arguments of a server that writes an append-only file in dir, fsynced
// before each reply: a restart (even after SIGKILL) loses nothing it acknowledged.
func Persistent(dir string) []string {
	return []string{"--appendonly", "yes", "--appendfsync", "always", "--dir", dir}
}

// Own starts a private server for a test (one that kills it, say), stopped at the test's end.
// With persist it is [Persistent] in a temporary directory.
func Own(t testing.TB, persist bool) *Server {
	t.Helper()
	Need(t)
	var extra []string
	if persist {
		extra = Persistent(t.TempDir())
	}
	s, err := Start(0, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// RestartT is Restart for a test: it fails t on error and stops the new server at t's end.
func (s *Server) RestartT(t testing.TB) *Server {
	t.Helper()
	ns, err := s.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	return ns
}

var shared struct {
	once sync.Once
	s    *Server
	err  error
}

// Shared returns the package's shared server (without persistence), started on first use; tests
// sharing it keep apart by key prefix or database. [Main] stops it.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	Need(tb)
	shared.once.Do(func() { shared.s, shared.err = Start(0) })
	if shared.err != nil {
		tb.Fatal("redis-server failed to start: ", shared.err)
	}
	return shared.s
}

// StopShared stops the shared server if it was started.
func StopShared() {
	if shared.s != nil {
		shared.s.Stop()
	}
}

// Main runs m, then stops the shared server. It prints a banner when redis-server is missing,
// and under SV_STRICT=1 a missing redis-server fails the run.
func Main(m *testing.M) int {
	defer StopShared()
	if msg := Missing(); msg != "" {
		fmt.Fprintf(os.Stderr, "\n***** %s *****\n\n", msg)
		if Strict() {
			fmt.Fprintln(os.Stderr, "SV_STRICT=1: failing")
			return 1
		}
	}
	return m.Run()
}
