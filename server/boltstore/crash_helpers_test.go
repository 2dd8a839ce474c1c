package boltstore

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// The crash tests' harness: a parent test re-executes the test binary to run one child test
// (which does nothing unless an environment variable names its bolt file), reads the lines the
// child prints, and SIGKILLs it.

// child is a copy of the test binary running one child test.
type child struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser // the child's stdin
	done chan struct{}  // closed once the child's stdout has ended

	mu    sync.Mutex
	lines []string      // every line the child printed so far
	next  int           // the first of lines that await has not yet returned or passed over
	more  chan struct{} // has a value after a line is added
}

// startChild runs the child test name with env set to path, and reads its stdout into lines in a
// goroutine (at once, so that the child never waits for the parent to read).
func startChild(t *testing.T, name, env, path string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"="+path)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() }) // a test that failed before its kill
	c := &child{t: t, cmd: cmd, in: in, done: make(chan struct{}), more: make(chan struct{}, 1)}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default:
			}
		}
	}()
	return c
}

// await waits for the next line the child prints (past those await returned or passed over) for
// which match is true, and returns it; "" if the child's stdout ended first. With a timeout
// above zero, it gives up after that long and returns "", true.
func (c *child) await(match func(line string) bool, timeout time.Duration) (line string, timedOut bool) {
	var expire <-chan time.Time
	if timeout > 0 {
		expire = time.After(timeout)
	}
	scan := func() (string, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for c.next < len(c.lines) {
			line := c.lines[c.next]
			c.next++
			if match(line) {
				return line, true
			}
		}
		return "", false
	}
	for {
		if line, ok := scan(); ok {
			return line, false
		}
		select {
		case <-c.more:
		case <-c.done:
			line, _ := scan()
			return line, false
		case <-expire:
			return "", true
		}
	}
}

// kill SIGKILLs the child, waits for it and returns every line it printed.
func (c *child) kill() []string {
	c.t.Helper()
	if err := c.cmd.Process.Kill(); err != nil { // SIGKILL
		c.t.Fatal(err)
	}
	<-c.done
	c.cmd.Wait()
	return c.lines
}

// childStore starts a child test: it skips the test unless the environment variable env names a
// file (parent, the test that sets it, runs it), and opens the store there with opts. say prints
// a line (one write per line, whichever goroutine calls it); fail says "fail <what>: <err>" and
// exits.
func childStore(t *testing.T, env, parent string, opts *Options) (st *Store, say func(format string, args ...any), fail func(what string, err error)) {
	t.Helper()
	path := os.Getenv(env)
	if path == "" {
		t.Skip("run by " + parent)
	}
	var mu sync.Mutex
	say = func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		mu.Unlock()
	}
	fail = func(what string, err error) {
		say("fail %s: %v", what, err)
		os.Exit(1)
	}
	st, err := Open(path, opts)
	if err != nil {
		fail("open", err)
	}
	return st, say, fail
}
