package boltstore

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/storetest"
)

const crashOpsEnv = "SESSIONVAULT_CRASH_OPS_DB"

// TestCrashRotateRevoke kills (SIGKILL) a writer that creates sessions, rotates their lanes
// (UpdateLane), joins and evicts lanes (AddLane, DeleteLane) and revokes sessions (Delete), at a
// random moment, five times on one file. After each kill: every acknowledged rotation is there
// (the lane's epoch is at least the acknowledged one, at most one more for a rotation in flight),
// every acknowledged lane deletion and revocation is there with its reason (and its lanes refuse
// Seen, UpdateLane and AddLane of their IDs), and nothing deleted is live again.
func TestCrashRotateRevoke(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "ops.db")
	epoch := map[string]uint32{}    // lane -> acknowledged epoch
	laneSess := map[string]string{} // lane -> session
	laneGone := map[string]string{} // lane -> acknowledged DeleteLane reason
	sessGone := map[string]string{} // session -> acknowledged Delete reason
	deleting := map[string]bool{}   // sessions or lanes whose deletion started
	for round := range 5 {
		proc := startChild(t, "TestCrashOpsChild", crashOpsEnv, path)
		// Wait for the first acknowledged revocation or the child's end (under -race a start takes a while).
		revoked := func(line string) bool { return strings.HasPrefix(line, "sessgone ") }
		if _, timedOut := proc.await(revoked, 20*time.Second); timedOut {
			t.Fatal("the child acknowledged no revocation within 20 s")
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		lines := proc.kill()
		acks := 0
		for _, line := range lines {
			f := strings.Fields(line)
			switch {
			case len(f) == 0:
			case f[0] == "fail":
				t.Fatalf("child: %s", line)
			case f[0] == "lane" && len(f) == 3: // lane <lane> <session>: created or joined (acknowledged)
				laneSess[f[1]], epoch[f[1]] = f[2], 0
				acks++
			case f[0] == "rotated" && len(f) == 3:
				e, _ := strconv.ParseUint(f[2], 10, 32)
				epoch[f[1]] = uint32(e)
				acks++
			case f[0] == "deleting":
				deleting[f[1]] = true
			case f[0] == "lanegone" && len(f) == 3:
				laneGone[f[1]] = f[2]
				acks++
			case f[0] == "sessgone" && len(f) == 3:
				sessGone[f[1]] = f[2]
				acks++
			}
		}
		t.Logf("round %d: %d acknowledged writes; %d lanes, %d lanes deleted, %d sessions deleted so far",
			round, acks, len(epoch), len(laneGone), len(sessGone))
		checkOps(t, path, epoch, laneSess, laneGone, sessGone, deleting)
	}
	if len(laneGone) == 0 || len(sessGone) == 0 {
		t.Fatal("the child acknowledged no lane deletion or no revocation: the test proves nothing")
	}
}

func checkOps(t *testing.T, path string, epoch map[string]uint32, laneSess, laneGone, sessGone map[string]string, deleting map[string]bool) {
	t.Helper()
	st, err := Open(path, &Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Open after kill: %v", err)
	}
	defer st.Close()
	ctx := t.Context()
	wantGone := func(what string, err error, reason string) {
		t.Helper()
		var g *server.GoneError
		if !errors.As(err, &g) || g.Reason != reason {
			t.Errorf("%s after kill = %v, want gone (%s)", what, err, reason)
		}
	}
	for lid, e := range epoch {
		raw, _ := hex.DecodeString(lid)
		var id protocol.LaneID
		copy(id[:], raw)
		sid := laneSess[lid]
		l, _, err := st.Lane(ctx, id)
		switch {
		case sessGone[sid] != "" && laneGone[lid] == "":
			wantGone("Lane of a revoked session", err, sessGone[sid])
			wantGone("Seen of a revoked session's lane", st.Seen(ctx, id, 1<<40), sessGone[sid])
		case laneGone[lid] != "":
			wantGone("Lane deleted alone", err, laneGone[lid])
			wantGone("Seen of a lane deleted alone", st.Seen(ctx, id, 1<<40), laneGone[lid])
			again := &server.Lane{ID: id, SessionID: must(hex.DecodeString(sid)), Key: []byte("k")}
			if err := st.AddLane(ctx, again); err == nil {
				t.Errorf("AddLane of a deleted lane's ID after kill succeeded")
			}
		case deleting[lid] || deleting[sid]:
			// deletion in flight: either state
		case err != nil:
			t.Errorf("lane %s: acknowledged, but %v after kill", lid, err)
		case l.Epoch != e && l.Epoch != e+1:
			t.Errorf("lane %s: epoch %d after kill, acknowledged %d", lid, l.Epoch, e)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestCrashOpsChild is the writer TestCrashRotateRevoke kills. Each line it prints is written
// after the call it reports returned ("deleting" before a deletion starts).
func TestCrashOpsChild(t *testing.T) {
	st, say, fail := childStore(t, crashOpsEnv, "TestCrashRotateRevoke", &Options{LockTimeout: 5 * time.Second})
	h := func(b []byte) string { return hex.EncodeToString(b) }
	deadline := time.Now().Add(10 * time.Second)
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
				say("lane %s %s", h(l.ID[:]), h(s.ID))
				l2 := storetest.NewLane(s)
				if err := st.AddLane(ctx, l2); err != nil {
					fail("add lane", err)
				}
				say("lane %s %s", h(l2.ID[:]), h(s.ID))
				cur := *l
				for range 3 {
					next := cur
					next.Epoch++
					next.PrevKey, next.Key = cur.Key, []byte(fmt.Sprintf("key-%d", next.Epoch))
					if err := st.UpdateLane(ctx, &next, cur.Epoch); err != nil {
						fail("update lane", err)
					}
					say("rotated %s %d", h(l.ID[:]), next.Epoch)
					cur = next
				}
				say("deleting %s", h(l2.ID[:]))
				if err := st.DeleteLane(ctx, l2.ID, "lane_evicted"); err != nil {
					fail("delete lane", err)
				}
				say("lanegone %s lane_evicted", h(l2.ID[:]))
				if i%2 == 1 {
					say("deleting %s", h(s.ID))
					if _, err := st.Delete(ctx, s.ID, "revoked"); err != nil {
						fail("delete", err)
					}
					say("sessgone %s revoked", h(s.ID))
				}
			}
		})
	}
	wg.Wait()
	st.Close()
}
