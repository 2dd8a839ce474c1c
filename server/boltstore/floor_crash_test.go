package boltstore

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
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
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashFloorChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), floorChildEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var lane protocol.LaneID
	acked := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "ack" {
			raw, _ := hex.DecodeString(f[1])
			copy(lane[:], raw)
			acked = true
			break
		}
		if len(f) > 0 && f[0] == "fail" {
			t.Fatalf("child: %s", sc.Text())
		}
	}
	if !acked {
		t.Fatal("the child acknowledged nothing")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL, with the file open
		t.Fatal(err)
	}
	cmd.Wait()

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
	path := os.Getenv(floorChildEnv)
	if path == "" {
		t.Skip("run by TestCrashThenCleanCloseKeepsFloor")
	}
	st, err := Open(path, &Options{LockTimeout: 5 * time.Second})
	if err != nil {
		fmt.Printf("fail open: %v\n", err)
		os.Exit(1)
	}
	s := storetest.NewSession("crash", time.Now())
	s.Expires = time.Now().Add(time.Hour)
	l := storetest.NewLane(s)
	if err := st.Create(t.Context(), s, l); err != nil {
		fmt.Printf("fail create: %v\n", err)
		os.Exit(1)
	}
	if err := st.Seen(t.Context(), l.ID, 5); err != nil {
		fmt.Printf("fail seen: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("ack %s\n", hex.EncodeToString(l.ID[:]))
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
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloorWaitChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), floorWaitChildEnv+"="+path)
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
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	expect := func(what string) {
		t.Helper()
		if !sc.Scan() || sc.Text() != what {
			t.Fatalf("child said %q, want %q", sc.Text(), what)
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
	fmt.Fprintln(in, "seen")            // the old process accepts a request meanwhile
	expect("seen")
	accepted := time.Now()
	if err := cmd.Process.Kill(); err != nil { // and is killed before a clean Close
		t.Fatal(err)
	}
	cmd.Wait()
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
	path := os.Getenv(floorWaitChildEnv)
	if path == "" {
		t.Skip("run by TestFloorAfterLockWait")
	}
	st, err := Open(path, nil)
	if err != nil {
		fmt.Printf("fail open: %v\n", err)
		os.Exit(1)
	}
	s := storetest.NewSession("wait", time.Now())
	l := storetest.NewLane(s)
	if err := st.Create(t.Context(), s, l); err != nil {
		fmt.Printf("fail create: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("open")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if err := st.Seen(t.Context(), l.ID, 5); err != nil {
			fmt.Printf("fail seen: %v\n", err)
			os.Exit(1)
		}
		fmt.Println("seen")
	}
	os.Exit(1) // killed before
}
