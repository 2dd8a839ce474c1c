// Package boltstore is the durable embedded [server.Store]: one file, written through
// go.etcd.io/bbolt, for a server that runs as a single process.
//
//	st, err := boltstore.Open("/var/lib/myapp/sessions.db", nil)
//	if err != nil { ... }
//	defer st.Close()
//
// A session created, a lane rotated or a session deleted is on disk (bbolt syncs the file on every
// commit) when the method returns: a process killed at any moment loses no acknowledged session
// and resurrects no deleted one. The package's crash test kills a writer with SIGKILL and checks
// exactly that.
//
// # Layout
//
// Buckets, all keys raw bytes:
//
//	meta        "format" -> 1 (Open refuses any other)
//	sessions    session ID -> session record (with the IDs of its lanes)
//	lanes       lane ID -> lane record
//	users       uvarint(len(user)) || user || created || session ID -> empty
//	            (the per-user index: a range scan, already in Created order)
//	tombstones  'l' || lane ID -> until, reason
//	            's' || session ID -> until, reason, lane IDs
//	            (while the session lives: no reason, the lanes DeleteLane removed, so that
//	            Sweep and Delete find their tombstones)
//	expiry      expires || session ID -> empty
//	            (Sweep walks it in order: a live session due is removed, a deleted one's
//	            tombstones are; the entry lives exactly as long as the session or its tombstones)
//
// Times in keys sort by byte order. Records use a compact versioned binary encoding (codec.go)
// decoded strictly: a corrupt record is an error, never a panic.
//
// Replay windows are not written per request: that would cost a sync per request. They live in
// process memory; a clean [Store.Close] saves them all in one transaction with a "clean" mark,
// and the next Open restores them and removes both, so a restart (a deploy) loses nothing and
// needs no new floor. After a crash (no mark) they start empty, and the Store implements
// [server.ReplayFloor] with the time Open got the file (its lock, which the crashed process
// held until it died), so the Manager refuses signatures made before it and a crash cannot
// reopen a window. A clean Close saves that floor with the windows (meta "floor") and the next
// Open keeps it: the windows saved after a crash hold nothing the crashed process accepted.
//
// Join tickets are not in the file either: they live seconds and are used once, so the Store
// keeps them in process memory (a restart forgets them: a worker that got a ticket just before
// the restart falls back to a login, and a forgotten ticket can never be used). bbolt lets one
// process open the file, so memory is as shared as the file is.
//
// # Security
//
// The file holds session records and sealed keys; the Manager seals [server.Lane.Key] and
// [server.Lane.PrevKey] (AES-256-GCM under its store key) before they reach the store, which only
// stores bytes: a stolen file yields no usable key. The file is created with mode 0600. Session
// IDs are never part of an error message. bbolt reuses freed pages without zeroing them, so
// deleted records linger in the file until overwritten; they are ciphertext too.
//
// # Concurrency
//
// A Store is safe for concurrent use. bbolt runs one write transaction at a time and read
// transactions in parallel with it; every compare-and-set (Create's ErrExists, UpdateLane's epoch)
// happens inside one write transaction. Replay windows sit in a map under one mutex
// (map[LaneID]*ReplayWindow); the map also says which lanes are live, loaded from the lanes bucket
// at Open, so Seen touches no transaction on the hot path; only for a lane that is not live does
// it read the tombstone to tell a deleted lane (*GoneError) from an unknown one (ErrNotFound). A
// new lane enters the map before its transaction commits (and leaves it if that fails), a deleted
// one leaves it after the deleting transaction commits, so a Delete never leaves a window behind.
// The file is locked: only one process may open it; a second Open waits
// [Options.LockTimeout] and fails.
//
// # Errors
//
// Besides the [server.Store] errors, methods return the context's error when ctx is done before
// the work starts (nothing is changed), an error wrapping a bbolt error when the file fails, and
// an error for a corrupt record. All of them mean "store unavailable" to the Manager, which fails
// closed.
package boltstore
