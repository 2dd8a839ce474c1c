package boltstore

import (
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/storetest"
)

const crashEnv = "SESSIONVAULT_CRASH_CHILD_DB"

// TestCrash kills a writer at a random moment, five times on one file, and checks after each
// kill that the file opens cleanly, that every session whose Create returned (and whose Delete
// was never started) is there, and that no session whose Delete returned has come back.
//
// SIGKILL tests process death, not power loss: the kernel still writes what the process handed
// it. bbolt's fdatasync on commit is what covers the latter; this test cannot.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	created := map[string]bool{}  // acknowledged creates
	deleting := map[string]bool{} // deletes started (acknowledged or not)
	deleted := map[string]bool{}  // acknowledged deletes
	for round := range 5 {
		proc := startChild(t, "TestCrashChild", crashEnv, path)
		delay := time.Duration(50+rand.IntN(451)) * time.Millisecond
		time.Sleep(delay)
		lines := proc.kill()

		acks := 0
		for _, line := range lines {
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "ack" && f[1] == "create":
				created[f[2]] = true
				acks++
			case len(f) == 2 && f[0] == "delete":
				deleting[f[1]] = true
			case len(f) == 3 && f[0] == "ack" && f[1] == "delete":
				deleted[f[2]] = true
				acks++
			case strings.HasPrefix(line, "fail"):
				t.Fatalf("child: %s", line)
			}
		}
		t.Logf("round %d: killed after %v, %d acknowledged writes (%d sessions created, %d deleted so far)",
			round, delay, acks, len(created), len(deleted))
		checkCrashFile(t, path, created, deleting, deleted)
	}
	if len(created) == 0 || len(deleted) == 0 {
		t.Fatal("the child acknowledged no create or no delete: the test proves nothing")
	}
}

func checkCrashFile(t *testing.T, path string, created, deleting, deleted map[string]bool) {
	t.Helper()
	st, err := Open(path, &Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Open after kill: %v", err)
	}
	defer st.Close()
	err = st.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("bbolt consistency check after kill: %v", err)
	}
	ctx := t.Context()
	for id := range created {
		raw, _ := hex.DecodeString(id)
		s, lanes, err := st.Session(ctx, raw)
		switch {
		case deleted[id]:
			if err == nil {
				t.Errorf("session %s: deleted (acknowledged) but present after kill", id)
			}
		case deleting[id]:
			// Delete started but not acknowledged: either state is right.
		case err != nil:
			t.Errorf("session %s: created (acknowledged) but %v after kill", id, err)
		case s.UserID != "crash" || len(lanes) != 1:
			t.Errorf("session %s: wrong content after kill: %q, %d lanes", id, s.UserID, len(lanes))
		default:
			if _, _, err := st.Lane(ctx, lanes[0]); err != nil {
				t.Errorf("session %s: lane: %v", id, err)
			}
		}
	}
	for id := range deleted {
		raw, _ := hex.DecodeString(id)
		_, _, err := st.Session(ctx, raw)
		var g *server.GoneError
		if !errors.As(err, &g) || g.Reason != "logout" {
			t.Errorf("session %s: deleted (acknowledged) but Session = %v after kill", id, err)
		}
	}
}

// TestCrashChild is the writer TestCrash kills. It does nothing unless run by TestCrash. Two
// goroutines create sessions and delete every third one; each prints "ack ..." only after the
// call returned, and "delete <id>" before it starts a Delete.
func TestCrashChild(t *testing.T) {
	st, say, fail := childStore(t, crashEnv, "TestCrash", &Options{LockTimeout: 5 * time.Second})
	deadline := time.Now().Add(10 * time.Second) // in case the parent is gone
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			ctx := t.Context()
			for i := 0; time.Now().Before(deadline); i++ {
				s := storetest.NewSession("crash", time.Now())
				s.Expires = time.Now().Add(24 * time.Hour)
				l := storetest.NewLane(s)
				if err := st.Create(ctx, s, l); err != nil {
					fail("create", err)
				}
				id := hex.EncodeToString(s.ID)
				say("ack create %s", id)
				if i%3 == 2 {
					say("delete %s", id)
					if _, err := st.Delete(ctx, s.ID, "logout"); err != nil {
						fail("delete", err)
					}
					say("ack delete %s", id)
				}
			}
		})
	}
	wg.Wait()
	st.Close()
}
