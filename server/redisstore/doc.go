// Package redisstore is the distributed [server.Store]: sessions, lanes, the per-user index
// and the replay windows live in Redis (github.com/redis/go-redis/v9), so that several server
// nodes share them, and a revocation on one node reaches the others by pub/sub.
//
//	st, err := redisstore.Open("redis://127.0.0.1:6379/0", nil)
//	if err != nil { ... }
//	defer st.Close()
//
// or, for Redis Cluster, Sentinel or a client you configure yourself:
//
//	st := redisstore.New(redis.NewClusterClient(&redis.ClusterOptions{...}), nil)
//
// It needs Redis 6.2 or later (SET ... PXAT) with Lua scripting. It does not implement
// [server.Sweeper]: every key carries a TTL, so Redis itself removes what has ended, and there
// is nothing to sweep.
//
// # Layout
//
// Keys (Options.Prefix, "sv:" by default, then a type letter; b64 is unpadded base64url, so no
// ID can contain the braces of a hash tag):
//
//	sv:s:{b64(session ID)}  hash: the session and everything of it
//	    s        session record (user, claims, created, expires, user agent)
//	    t        last seen (12 bytes whose byte order is time order)
//	    e        Expires, Unix ms (for the tombstone's TTL)
//	    x        the records' absolute deadline, Unix ms (max(Expires, creation) + 1 min)
//	    l<lane>  lane record (l + the 16 raw bytes of the lane ID)
//	    w<lane>  the lane's replay window, 136 bytes
//	    d<lane>  the reason of a lane deleted alone ([Store.DeleteLane]), which has no l or w
//	    q        the lanes with a d field, oldest first (16 bytes each, at most
//	             server.LaneTombstones: past it the oldest d goes)
//	  after Delete, the same key holds the tombstone instead:
//	    g        the reason
//	    l<lane>  "" for each lane the session had
//	    d<lane>  kept: a lane deleted alone before keeps its own reason
//	sv:l:{b64(lane ID)}     string: the session ID (the lane index)
//	sv:u:{b64(user ID)}     sorted set: created||session ID, scored by the session's deadline
//	sv:notice               the pub/sub channel of [Notice]s
//
// One session is one key, so all of it sits in one Redis Cluster slot (the hash tag is the
// session ID) and every operation on it is one single-key script or command: atomic, and correct
// in a cluster. Eviction under memory pressure can only take a whole session, never its replay
// window alone (which would reopen replays); still, run Redis with maxmemory-policy noeviction:
// an evicted user index would hide live sessions from UserSessions, and so from "log out
// everywhere".
//
// A lane is found by its ID alone, so the lane index is a key of its own, in the lane's slot. The
// mapping lane -> session never changes, so each Store caches it (bounded, 65536 lanes): the
// verify path is then one round trip per call, Lane (one HMGET) and Seen (one script), with one
// GET of the index more the first time a node sees a lane. The alternative, a copy of the session
// under each lane's own hash tag, would make Lane one round trip even on first sight, but Touch
// and Delete would have to write every lane's slot, without atomicity across slots: a Delete cut
// short would leave a live copy behind. The cache costs a round trip once per lane and node,
// and cannot serve stale data: it holds only the mapping; the records are read every time.
//
// The verify path cannot be one round trip in all: Seen must come after the HMAC, or anyone who
// knows a lane ID (it travels in every signature's keyid) could burn its nonces.
//
// Round trips: Create 2 (a pipeline: lane index SET NX, session script; then the user index
// script, once the session exists: see [Store.Create]);
// AddLane 2; Lane 1 (2 on first sight); Seen 1 (2 on first sight); UpdateLane 1; Touch 1;
// Delete 2; DeleteLane 1 (2 on first sight); Session 1; UserSessions 2.
//
// # TTLs
//
// Every key has a TTL; nothing outlives its session by more than a minute:
//
//   - the session hash ends at its deadline: Expires plus a minute (so that the Manager can
//     still tell "expired" from "unknown"), never sooner than a minute after its creation; with
//     [Options.IdleTimeout], also IdleTimeout plus a minute after its last Touch;
//   - a tombstone ends at the session's Expires (a session deleted past it leaves none); the
//     reason of a lane deleted alone lives in its session's key, so as long as the session, then
//     in its tombstone;
//   - a lane index entry ends at its session's absolute deadline;
//   - a user index ends at its last member's deadline; members whose deadline passed, or whose
//     session is gone, are dropped as the index is written and read.
//
// # Security
//
// Redis holds session records and sealed keys; the Manager seals [server.Lane.Key] and
// [server.Lane.PrevKey] before they reach the store: a dump of Redis yields no usable key. The
// session ID is a secret of the server and is part of key names, so treat access to Redis
// (and its MONITOR, SLOWLOG, AOF and RDB files) as access to the sessions: require AUTH/ACL and
// TLS off the loopback. No error message carries a session ID. Notices carry lane IDs and a
// reason, never a session ID.
//
// Everything the Store acknowledges is as durable as Redis: with appendfsync always nothing
// acknowledged is lost. With everysec (or a failover to an asynchronous replica) up to a second
// of writes can be forgotten, and not only accepted nonces (a request captured in that second
// replayed once within the Manager's signature-age window): a revocation, rotation or re-key
// acknowledged in that second can be undone (the revoked session verifies again, although its
// workers were told to wipe their keys), and a ticket used in that second can be used once
// more within its 10-second life. Run Redis with appendfsync always where revocation must hold
// across a Redis crash. A Redis that restarts empty loses the sessions too, which then answer
// ErrNotFound: fail closed.
//
// # Concurrency
//
// A Store is safe for concurrent use, by any number of goroutines and nodes: every write is a
// single-key script or command, atomic in Redis; Seen's window update is one Lua script, so one
// nonce is accepted once across all nodes. Create's and AddLane's claims of an ID are SET NX
// on the lane index and a refusing script on the session hash; when one of them loses, the
// other is undone (and what an interrupted undo leaves behind expires with its TTL).
//
// Notices ([Store.Publish], [Store.Subscribe]) use Redis pub/sub, which delivers at most once:
// a subscriber that loses its connection is told so at once (Notice.Lost) and to resync when it
// is back (Notice.Resync). A Store is a [server.Notifier]: a [server.Manager] on it subscribes by
// itself, and refuses signed requests (503) from a loss until the resync.
//
// # Errors
//
// Besides the [server.Store] errors, every method returns an error wrapping the context's error
// when ctx is done (before the work starts, nothing is changed), an error wrapping go-redis's
// when Redis fails or cannot be reached, and an error for a corrupt record. None of them is a
// server sentinel, so the Manager answers 503, and never accepts on stale data: there is no
// local copy of a record to fall back on. When Redis is back, go-redis reconnects and the same
// Store works again; scripts missing from a restarted Redis are loaded again by themselves.
//
// A command whose reply is lost (a network blip, a proxy restart) may have run in Redis. go-redis
// would retry it by default, and a script that runs twice answers as a second call would: a
// first use of a nonce refused as a replay and counted against the client, a first use of a
// ticket refused as reuse and logged as an attack. So [Open] turns retries off (give [New] a
// *redis.Client or failover client with MaxRetries: -1), and the lost reply fails the call: the
// Manager answers 503 store_unavailable. A *redis.ClusterClient sends a command again after a
// network error within its MaxRedirects loop (MaxRetries does not govern it), so on a cluster a
// lost reply may still turn into such a refusal (a refusal, never a false acceptance), unless
// the client has MaxRedirects: -1, which also fails (503) a call that meets a MOVED or ASK
// redirect while slots move. The price of no retries: after a Redis restart or failover, each
// idle pooled connection fails its next call once (503) where go-redis would have retried on a
// new one; over plain TCP go-redis finds most dead connections before use, over TLS (rediss://)
// it cannot, so expect up to the pool's size of 503s then. What the script did stands: a nonce so consumed only costs that request
// (the next one is signed anew), a ticket so used costs the page a retry of its join (a new
// worker, a new ticket), a session so created is an orphan until its idle timeout, and a re-key
// whose deletion of the old session so ran ends both sessions (fail closed: the user logs in
// again), since the Manager cannot tell that from a concurrent re-key that won.
package redisstore
