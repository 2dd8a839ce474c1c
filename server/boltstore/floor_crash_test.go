package boltstore

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server/storetest"
)

const floorChildEnv = "SESSIONVAULT_FLOOR_CHILD_DB"

// TestCrashThenCleanCloseKeepsFloor: a process that accepted nonce 5 of a lane is killed with
// SIGKILL; the next one opens with empty windows and a replay floor, accepts a later nonce (10)
// and closes cleanly; the one after it restores the saved windows, which know 10 but never
// knew 5. Its floor must still be the second process's: without it, the request with nonce 5
// (signed before the crash, within the Manager's signature-age window) is accepted a second time.
func TestCrashThenCleanCloseKeepsFloor(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "floor.db")
	proc := startChild(t, "TestCrashFloorChild", floorChildEnv, path)
	line, _ := proc.await(func(line string) bool {
		f := strings.Fields(line)
		return len(f) == 2 && f[0] == "ack" || len(f) > 0 && f[0] == "fail"
	}, 0)
	f := strings.Fields(line)
	if len(f) > 0 && f[0] == "fail" {
		t.Fatalf("child: %s", line)
	}
	if len(f) == 0 {
		t.Fatal("the child acknowledged nothing")
	}
	var lane protocol.LaneID
	raw, _ := hex.DecodeString(f[1])
	copy(lane[:], raw)
	proc.kill() // SIGKILL, with the file open

	b, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	floor := b.ReplayFloor()
	if floor.IsZero() {
		t.Fatal("positive control: no replay floor after a kill")
	}
	if err := b.Seen(ctx, lane, 10); err != nil { // a request signed after the restart
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // clean: saves a window that holds 10, not 5
		t.Fatal(err)
	}

	c, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Seen(ctx, lane, 10); err == nil {
		t.Error("positive control: the saved window was not restored")
	}
	if got := c.ReplayFloor(); got.Before(floor) {
		t.Errorf("ReplayFloor after crash, clean restart, restart = %v, want the floor of the first "+
			"start after the crash (%v): its windows do not hold what the killed process accepted", got, floor)
	}

	// And on: a clean Close of that store keeps the floor too.
	c.Close()
	d, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.ReplayFloor(); got.Before(floor) {
		t.Errorf("ReplayFloor two clean restarts after the crash = %v, want %v", got, floor)
	}
}

// TestCrashFloorChild is the process TestCrashThenCleanCloseKeepsFloor kills: it makes a
// session, accepts nonce 5 of its lane, says so, and waits.
func TestCrashFloorChild(t *testing.T) {
	st, say, fail := childStore(t, floorChildEnv, "TestCrashThenCleanCloseKeepsFloor", &Options{LockTimeout: 5 * time.Second})
	s := storetest.NewSession("crash", time.Now())
	s.Expires = time.Now().Add(time.Hour)
	l := storetest.NewLane(s)
	if err := st.Create(t.Context(), s, l); err != nil {
		fail("create", err)
	}
	if err := st.Seen(t.Context(), l.ID, 5); err != nil {
		fail("seen", err)
	}
	say("ack %s", hex.EncodeToString(l.ID[:]))
	time.Sleep(10 * time.Second) // killed long before
	os.Exit(1)
}

const floorWaitChildEnv = "SESSIONVAULT_FLOOR_WAIT_CHILD_DB"

// TestFloorAfterLockWait: Open waits up to Options.LockTimeout for a process that still has the
// file (a server shutting down, draining its requests). That process keeps accepting requests
// while Open waits, and if it is then killed (its shutdown timed out), the windows of those
// requests are lost too: the floor must be the time Open got the file, not the time it began
// to wait for it, or a request accepted during the wait (signed after the earlier floor plus
// the skew) could be replayed once to the new process.
func TestFloorAfterLockWait(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "wait.db")
	proc := startChild(t, "TestFloorWaitChild", floorWaitChildEnv, path)
	expect := func(what string) {
		t.Helper()
		if line, _ := proc.await(func(string) bool { return true }, 0); line != what {
			t.Fatalf("child said %q, want %q", line, what)
		}
	}
	expect("open")

	type opened struct {
		st  *Store
		err error
	}
	got := make(chan opened, 1)
	go func() {
		st, err := Open(path, &Options{LockTimeout: 20 * time.Second})
		got <- opened{st, err}
	}()
	time.Sleep(1500 * time.Millisecond) // Open is waiting for the lock
	fmt.Fprintln(proc.in, "seen")       // the old process accepts a request meanwhile
	expect("seen")
	accepted := time.Now()
	proc.kill() // and is killed before a clean Close
	o := <-got
	if o.err != nil {
		t.Fatal(o.err)
	}
	defer o.st.Close()
	if f := o.st.ReplayFloor(); f.Before(accepted.Add(-50 * time.Millisecond)) {
		t.Errorf("ReplayFloor = %v, %v before the killed process last accepted a request: its window is lost, and the floor does not cover it",
			f, accepted.Sub(f).Round(time.Millisecond))
	}
}

// TestFloorWaitChild holds the file for TestFloorAfterLockWait and accepts a nonce when told.
func TestFloorWaitChild(t *testing.T) {
	st, say, fail := childStore(t, floorWaitChildEnv, "TestFloorAfterLockWait", nil)
	s := storetest.NewSession("wait", time.Now())
	l := storetest.NewLane(s)
	if err := st.Create(t.Context(), s, l); err != nil {
		fail("create", err)
	}
	say("open")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if err := st.Seen(t.Context(), l.ID, 5); err != nil {
			fail("seen", err)
		}
		say("seen")
	}
	os.Exit(1) // killed before
}
