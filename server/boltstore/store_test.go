package boltstore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/storetest"
)

func openTemp(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(filepath.Join(tb.TempDir(), "sv.db"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) server.Store { return openTemp(t) })
}

// TestReopen: records, tombstones (of a session and of a lane deleted alone) and replay windows
// survive a clean Close and Open, and then no new replay floor is needed (the saving store's stays).
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sv.db")
	st, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := storetest.NewSession("alice", time.Now())
	l := storetest.NewLane(s)
	gone := storetest.NewSession("alice", time.Now())
	gl := storetest.NewLane(gone)
	for _, x := range []struct {
		s *server.Session
		l *server.Lane
	}{{s, l}, {gone, gl}} {
		if err := st.Create(ctx, x.s, x.l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Delete(ctx, gone.ID, "revoked"); err != nil {
		t.Fatal(err)
	}
	evicted := storetest.NewLane(s)
	if err := st.AddLane(ctx, evicted); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteLane(ctx, evicted.ID, "lane_evicted"); err != nil {
		t.Fatal(err)
	}
	if err := st.Seen(ctx, l.ID, 7); err != nil {
		t.Fatal(err)
	}
	floor1 := st.ReplayFloor()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Seen(ctx, l.ID, 8); !errors.Is(err, errClosed) {
		t.Errorf("Seen after Close = %v, want errClosed", err)
	}
	if _, _, err := st.Lane(ctx, l.ID); err == nil {
		t.Error("Lane after Close succeeded")
	}

	st, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A new file opens with a floor, as after a crash (no clean mark); a clean reopen keeps it
	// (the restored windows hold nothing from before it) and sets no new one.
	if f := st.ReplayFloor(); !f.Equal(floor1) {
		t.Errorf("ReplayFloor after a clean reopen = %v, want the saving store's %v (the windows were restored)", f, floor1)
	}
	if floor1.IsZero() {
		t.Error("ReplayFloor of a new file is zero")
	}
	gotL, gotS, err := st.Lane(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotL.Key, l.Key) || !bytes.Equal(gotS.ID, s.ID) || gotS.UserID != "alice" {
		t.Error("records changed across reopen")
	}
	// The window was restored: nonce 7 is still spent, 8 is fresh.
	if err := st.Seen(ctx, l.ID, 7); !errors.Is(err, server.ErrReplay) {
		t.Errorf("Seen(7) after a clean reopen = %v, want ErrReplay (window restored)", err)
	}
	if err := st.Seen(ctx, l.ID, 8); err != nil {
		t.Errorf("Seen(8) after reopen = %v, want nil", err)
	}
	var g *server.GoneError
	if err := st.Seen(ctx, gl.ID, 1); !errors.As(err, &g) || g.Reason != "revoked" {
		t.Errorf("Seen(deleted lane) after reopen = %v, want GoneError(revoked)", err)
	}
	if _, _, err := st.Lane(ctx, gl.ID); !errors.As(err, &g) {
		t.Errorf("Lane(deleted) after reopen = %v, want GoneError", err)
	}
	// A lane deleted alone stays deleted, with its reason, and out of its live session.
	if err := st.Seen(ctx, evicted.ID, 1); !errors.As(err, &g) || g.Reason != "lane_evicted" {
		t.Errorf("Seen(lane deleted alone) after reopen = %v, want GoneError(lane_evicted)", err)
	}
	if _, _, err := st.Lane(ctx, evicted.ID); !errors.As(err, &g) || g.Reason != "lane_evicted" {
		t.Errorf("Lane(lane deleted alone) after reopen = %v, want GoneError(lane_evicted)", err)
	}
	if _, lanes, err := st.Session(ctx, s.ID); err != nil || len(lanes) != 1 || lanes[0] != l.ID {
		t.Errorf("Session after reopen = lanes %v, %v; want only %v", lanes, err, l.ID)
	}
}

// TestNoPlaintextKey documents that stores never see a usable key: the Manager seals keys before
// they reach the store, and the file holds only what it was given. The positive control checks
// that the search would find the bytes if they were there.
func TestNoPlaintextKey(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sv.db")
	st, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("K3Y!"), 8) // a recognizable 32-byte test key
	storeKey := make([]byte, 32)
	rand.Read(storeKey)
	block, _ := aes.NewCipher(storeKey)
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	sealed := aead.Seal(nonce, nonce, plain, []byte("lane-id and epoch"))

	s := storetest.NewSession("alice", time.Now())
	l := storetest.NewLane(s)
	l.Key = sealed
	l.PrevKey = sealed
	if err := st.Create(ctx, s, l); err != nil {
		t.Fatal(err)
	}
	next := *l
	next.Epoch = 1
	if err := st.UpdateLane(ctx, &next, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(file, sealed) {
		t.Fatal("positive control: the sealed key is not in the file, so the search proves nothing")
	}
	if bytes.Contains(file, plain) || bytes.Contains(file, plain[:16]) || bytes.Contains(file, plain[16:]) {
		t.Fatal("the file contains plaintext key bytes")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

func TestCorruptRecord(t *testing.T) {
	ctx := t.Context()
	st := openTemp(t)
	s := storetest.NewSession("alice", time.Now())
	l := storetest.NewLane(s)
	if err := st.Create(ctx, s, l); err != nil {
		t.Fatal(err)
	}
	err := st.db.Update(func(tx *bolt.Tx) error {
		v := bytes.Clone(tx.Bucket(bucketLanes).Get(l.ID[:]))
		return tx.Bucket(bucketLanes).Put(l.ID[:], v[:len(v)-3])
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Lane(ctx, l.ID); !errors.Is(err, errCorrupt) {
		t.Errorf("Lane(corrupt) = %v, want errCorrupt", err)
	}
	if err := st.UpdateLane(ctx, l, 0); !errors.Is(err, errCorrupt) {
		t.Errorf("UpdateLane(corrupt) = %v, want errCorrupt", err)
	}
	st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSessions).Put(s.ID, []byte{9}) })
	if _, _, err := st.Session(ctx, s.ID); !errors.Is(err, errCorrupt) {
		t.Errorf("Session(corrupt) = %v, want errCorrupt", err)
	}
	if _, err := st.UserSessions(ctx, "alice"); !errors.Is(err, errCorrupt) {
		t.Errorf("UserSessions(corrupt) = %v, want errCorrupt", err)
	}
	if _, err := st.Delete(ctx, s.ID, "logout"); !errors.Is(err, errCorrupt) {
		t.Errorf("Delete(corrupt) = %v, want errCorrupt", err)
	}
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	// Another format version.
	path := filepath.Join(dir, "v2.db")
	st, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{2}) })
	st.Close()
	if st, err := Open(path, nil); err == nil {
		st.Close()
		t.Error("Open accepted format 2")
	}
	// A file that is not a bolt file.
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, bytes.Repeat([]byte("junk"), 4096), 0o600)
	if st, err := Open(junk, nil); err == nil {
		st.Close()
		t.Error("Open accepted a junk file")
	}
	// A file another holder has open: fails after the lock timeout.
	path = filepath.Join(dir, "locked.db")
	st, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	if st2, err := Open(path, &Options{LockTimeout: 50 * time.Millisecond}); err == nil {
		st2.Close()
		t.Error("second Open of a locked file succeeded")
	} else if !strings.Contains(err.Error(), "another process has it open") || !strings.Contains(err.Error(), path) {
		t.Errorf("second Open: %v, want an error naming the file and saying another process has it", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v", d)
	}
}

func TestSweepBatches(t *testing.T) {
	ctx := t.Context()
	defer func(n int) { sweepBatch = n }(sweepBatch)
	sweepBatch = 3
	st := openTemp(t)
	now := time.Now()
	var lanes []*server.Lane
	for i := range 10 {
		s := storetest.NewSession("alice", now)
		s.Expires = now.Add(time.Duration(i) * time.Second)
		l := storetest.NewLane(s)
		if err := st.Create(ctx, s, l); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := st.Delete(ctx, s.ID, "logout"); err != nil {
				t.Fatal(err)
			}
		}
		lanes = append(lanes, l)
	}
	st.mu.Lock()
	if len(st.live) != 5 {
		t.Errorf("%d replay windows after deleting 5 of 10 sessions, want 5", len(st.live))
	}
	st.mu.Unlock()
	n, err := st.Sweep(ctx, now.Add(time.Hour))
	if err != nil || n != 5 {
		t.Fatalf("Sweep = %d, %v; want 5", n, err)
	}
	st.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSessions, bucketLanes, bucketUsers, bucketTombstones, bucketExpiry} {
			if k, _ := tx.Bucket(b).Cursor().First(); k != nil {
				t.Errorf("bucket %s not empty after a full sweep", b)
			}
		}
		return nil
	})
	st.mu.Lock()
	if len(st.live) != 0 {
		t.Errorf("%d replay windows left after a full sweep", len(st.live))
	}
	st.mu.Unlock()
}

func BenchmarkSeen(b *testing.B)   { storetest.BenchSeen(b, openTemp(b)) }
func BenchmarkLane(b *testing.B)   { storetest.BenchLane(b, openTemp(b)) }
func BenchmarkCreate(b *testing.B) { storetest.BenchCreate(b, openTemp(b)) }

// TestReopenAfterCrash: the file as a crash leaves it (a consistent copy taken while open, so no
// clean Close and no saved windows) opens with empty windows and a replay floor at Open, so the
// Manager refuses what the lost windows would have caught. The saved windows of an earlier
// clean Close are not reused either: they are removed when the file is opened.
func TestReopenAfterCrash(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path, crash := filepath.Join(dir, "sv.db"), filepath.Join(dir, "crash.db")
	st, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := storetest.NewSession("alice", time.Now())
	l := storetest.NewLane(s)
	if err := st.Create(ctx, s, l); err != nil {
		t.Fatal(err)
	}
	if err := st.Seen(ctx, l.ID, 3); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil { // clean: saves the window with 3
		t.Fatal(err)
	}
	if st, err = Open(path, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Seen(ctx, l.ID, 9); err != nil {
		t.Fatal(err)
	}
	if err := st.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(crash, 0o600) }); err != nil {
		t.Fatal(err)
	}
	st.Close()

	before := time.Now()
	c, err := Open(crash, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if f := c.ReplayFloor(); f.Before(before) {
		t.Errorf("ReplayFloor after a crash = %v, want the time of Open (>= %v)", f, before)
	}
	// Empty window: the store alone does not know 3 or 9 (the floor refuses them upstream).
	if err := c.Seen(ctx, l.ID, 9); err != nil {
		t.Errorf("Seen(9) after a crash = %v, want nil (windows lost, the floor applies)", err)
	}
	if err := c.Seen(ctx, l.ID, 3); err != nil {
		t.Errorf("Seen(3) after a crash = %v, want nil: the stale saved window must not come back", err)
	}
}
