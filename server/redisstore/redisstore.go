package redisstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/internal/protocol"
	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/internal/record"
)

var _ server.Store = (*Store)(nil)

// Options configure a [Store]. The zero value (or a nil *Options) is ready to use.
type Options struct {
	// Prefix starts every key and the notice channel, so that several applications (or test
	// runs) can share one Redis database. If empty, "sv:". It must not contain '{' or '}'.
	Prefix string
	// IdleTimeout lets Redis drop a session nobody used for IdleTimeout (plus a minute) before
	// its Expires: set it to the Manager's idle timeout to keep abandoned sessions from holding
	// memory for the whole absolute timeout. [Store.Touch] moves the deadline on. If zero, a
	// session's records live until its Expires (plus a minute) or its deletion.
	IdleTimeout time.Duration
}

// Store is a [server.Store] in Redis, shared by every server node that uses the same Redis and
// Prefix. See the package documentation for the layout and the guarantees.
//
// A Store is safe for concurrent use. Its zero value is not usable; call [New] or [Open].
type Store struct {
	c       redis.UniversalClient
	owned   bool // Close closes c
	prefix  string
	channel string
	idle    time.Duration
	lanes   laneCache
}

// IdleTimeout is Options.IdleTimeout (zero: none); server.New refuses a longer
// Config.IdleTimeout (server.IdleBound).
func (st *Store) IdleTimeout() time.Duration { return st.idle }

// linger is how long a session's records outlive its Expires (or, for a session created already
// past it, its creation), so that the Manager can tell an expired session ("expired") from an
// unknown one.
const linger = time.Minute

// New returns a Store on client: a *redis.Client, a *redis.ClusterClient, a failover client or
// a *redis.Ring (a Ring spreads keys without regard to hash tags; the scripts stay correct, as
// each touches one key). The caller keeps ownership of client: [Store.Close] does not close it.
// Configure a *redis.Client or failover client with MaxRetries: -1 (see [Open]): a retried script
// whose first reply was lost runs twice. A cluster client retries within its redirect handling
// whatever its options (see the package documentation, Errors).
func New(client redis.UniversalClient, opts *Options) *Store {
	if opts == nil {
		opts = &Options{}
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "sv:"
	}
	if strings.ContainsAny(prefix, "{}") {
		panic("redisstore: Options.Prefix contains '{' or '}'")
	}
	return &Store{c: client, prefix: prefix, channel: prefix + "notice", idle: opts.IdleTimeout}
}

// Open connects to the Redis at url, in the form go-redis's ParseURL reads:
// redis://[user:password@]host[:port][/db], rediss:// for TLS, unix:///path?db=N, with options as
// query parameters (dial_timeout, pool_size, ...). It does not wait for Redis: a Store whose
// Redis is down fails each call and recovers by itself. Unlike go-redis's defaults, a connection
// is dialed once (not 5 times 100 ms apart), so that with Redis down a call fails within about
// 0.1 s rather than seconds, and a command is never retried (max_retries in the URL is
// overridden): the store's scripts are not idempotent, and go-redis retries a command whose
// reply was lost after Redis ran it, so a retry would refuse a first use of a nonce as a replay
// or a first use of a ticket as reuse. A lost reply fails the call instead (503
// store_unavailable, fail closed). Give [New] a client with MaxRetries: -1 for the same reason.
// [Store.Close] closes the connections.
func Open(url string, opts *Options) (*Store, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	o.DialerRetries, o.DialerRetryTimeout = 1, time.Millisecond
	o.MaxRetries = -1
	st := New(redis.NewClient(o), opts)
	st.owned = true
	return st, nil
}

// Close closes the connections if the Store made them ([Open]); a client given to [New] stays
// open. It returns nil for a client given to New.
func (st *Store) Close() error {
	if !st.owned {
		return nil
	}
	return st.c.Close()
}

// Ping reports whether Redis answers, for health checks.
func (st *Store) Ping(ctx context.Context) error {
	if err := st.c.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

var (
	errEmptyID      = errors.New("redisstore: empty session ID")
	errSessionMatch = errors.New("redisstore: lane's SessionID does not match the session")
	errReply        = errors.New("redisstore: unexpected reply")
)

// unavailable wraps a failure of Redis (or of ctx): never one of the server sentinels, so the
// Manager fails closed.
func unavailable(op string, err error) error { return fmt.Errorf("redisstore: %s: %w", op, err) }

// Keys.

var b64 = base64.RawURLEncoding

func (st *Store) sessionKey(sid []byte) string {
	return st.prefix + "s:{" + b64.EncodeToString(sid) + "}"
}

func (st *Store) laneKey(id protocol.LaneID) string {
	return st.prefix + "l:{" + b64.EncodeToString(id[:]) + "}"
}

func (st *Store) userKey(user string) string {
	return st.prefix + "u:{" + b64.EncodeToString([]byte(user)) + "}"
}

// laneField is the hash field of a lane's record; its replay window is "w" + the same ID.
func laneField(id protocol.LaneID) string { return "l" + string(id[:]) }

// deadField is the hash field of the reason of a lane deleted alone ([Store.DeleteLane]).
func deadField(id protocol.LaneID) string { return "d" + string(id[:]) }

// userMember is a session's entry in its user's index: created (byte order is time order) ||
// session ID, so that byte order is the order UserSessions returns.
func userMember(created time.Time, sid []byte) string {
	return string(append(record.AppendSortableTime(make([]byte, 0, record.TimeSize+len(sid)), created), sid...))
}

// Deadlines, in Unix milliseconds.

func ms(t time.Time) int64 { return t.UnixMilli() }

// absDeadline is when a session's records end at the latest: a minute past Expires, or past now
// for a session created already expired.
func absDeadline(expires, now time.Time) int64 {
	if expires.Before(now) {
		expires = now
	}
	return ms(expires.Add(linger))
}

// idleDeadline is when a session last seen at seen ends for idleness (never before now plus a
// minute), or abs if the store has no idle timeout.
func (st *Store) idleDeadline(abs int64, seen, now time.Time) int64 {
	if st.idle <= 0 {
		return abs
	}
	end := seen.Add(st.idle)
	if end.Before(now) {
		end = now
	}
	return min(abs, ms(end.Add(linger)))
}

// laneCache maps lane IDs to their session's key. The mapping never changes (a lane belongs to
// one session for life and lane IDs are never reused), so an entry needs no invalidation for
// correctness; an entry whose session is gone is dropped when a lookup through it finds
// nothing. It is bounded: past maxCachedLanes, an arbitrary entry goes.
type laneCache struct {
	m sync.Map // protocol.LaneID -> *laneRef
	n atomic.Int64
}

const maxCachedLanes = 1 << 16

type laneRef struct {
	sid string // the session ID, raw
	key string // the session's hash
}

func (c *laneCache) get(id protocol.LaneID) *laneRef {
	if r, ok := c.m.Load(id); ok {
		return r.(*laneRef)
	}
	return nil
}

func (c *laneCache) put(id protocol.LaneID, r *laneRef) {
	if c.n.Load() >= maxCachedLanes {
		c.m.Range(func(k, _ any) bool {
			if _, ok := c.m.LoadAndDelete(k); ok {
				c.n.Add(-1)
			}
			return false
		})
	}
	if _, loaded := c.m.Swap(id, r); !loaded {
		c.n.Add(1)
	}
}

func (c *laneCache) drop(id protocol.LaneID) {
	if _, ok := c.m.LoadAndDelete(id); ok {
		c.n.Add(-1)
	}
}

// ref finds the session of lane id: from the cache, else from the lane index (one round trip).
func (st *Store) ref(ctx context.Context, id protocol.LaneID) (r *laneRef, cached bool, err error) {
	if r := st.lanes.get(id); r != nil {
		return r, true, nil
	}
	r, err = st.refFromIndex(ctx, id)
	return r, false, err
}

func (st *Store) refFromIndex(ctx context.Context, id protocol.LaneID) (*laneRef, error) {
	sid, err := st.c.Get(ctx, st.laneKey(id)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, server.ErrNotFound
	case err != nil:
		return nil, unavailable("lane index", err)
	}
	r := &laneRef{sid: sid, key: st.sessionKey([]byte(sid))}
	st.lanes.put(id, r)
	return r, nil
}

// recheck is called when the session of a cached lane has no such lane: it drops the entry and
// reads the index again. It returns nil, ErrNotFound when the index agrees (the usual case: the
// session ended) and the new ref otherwise.
func (st *Store) recheck(ctx context.Context, id protocol.LaneID, old *laneRef) (*laneRef, error) {
	st.lanes.drop(id)
	r, err := st.refFromIndex(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.sid == old.sid {
		return nil, server.ErrNotFound
	}
	return r, nil
}

// scriptReply reads a script's reply: a code, or a string (gone, with this reason).
func scriptReply(v any) (code int64, gone *server.GoneError, err error) {
	switch v := v.(type) {
	case int64:
		return v, nil, nil
	case string:
		return 0, &server.GoneError{Reason: v}, nil
	}
	return 0, nil, fmt.Errorf("%w: %T", errReply, v)
}

// run runs a script, loading it if Redis does not have it (after a restart).
func (st *Store) run(ctx context.Context, sc *redis.Script, key string, args ...any) (any, error) {
	return sc.Run(ctx, st.c, []string{key}, args...).Result()
}

// rerun runs sc again if its EVALSHA in a pipeline found no script (Redis restarted): the
// commands of a pipeline are independent, so running one again alone is the same.
func (st *Store) rerun(ctx context.Context, c *redis.Cmd, sc *redis.Script, key string, args []any) *redis.Cmd {
	if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
		return sc.Run(ctx, st.c, []string{key}, args...)
	}
	return c
}

// cleanup runs best-effort undo commands after a failed multi-key operation, on a context that
// outlives a canceled ctx for a moment. Whatever it cannot undo expires with its TTL.
func (st *Store) cleanup(ctx context.Context, fn func(context.Context, redis.Pipeliner)) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_, _ = st.c.Pipelined(ctx, func(p redis.Pipeliner) error { fn(ctx, p); return nil })
}

// Create implements [server.Store] in two round trips: a pipeline of the lane index claim (SET
// NX) and the session hash (a script that refuses an existing key), then the user index entry.
// If either ID is taken, what the other did is undone and Create returns ErrExists. The entry
// comes only once the session exists: UserSessions drops an entry whose session it does not
// find, and in a cluster (the index and the hash on different masters, a pipeline's commands
// run on each master in parallel, or the hash's script rerun after NOSCRIPT) an entry written
// with the session could be seen, and dropped, before it: the session would then be missing
// from every later UserSessions, so from a revocation of all the user's sessions.
func (st *Store) Create(ctx context.Context, s *server.Session, l *server.Lane) error {
	if err := ctx.Err(); err != nil {
		return unavailable("create", err)
	}
	if len(s.ID) == 0 {
		return errEmptyID
	}
	if !bytes.Equal(s.ID, l.SessionID) {
		return errSessionMatch
	}
	now := time.Now()
	abs := absDeadline(s.Expires, now)
	skey, lkey, ukey := st.sessionKey(s.ID), st.laneKey(l.ID), st.userKey(s.UserID)
	member := userMember(s.Created, s.ID)
	sargs := []any{encodeSession(s), encodeSeen(s.LastSeen), ms(s.Expires), abs, laneField(l.ID), encodeLane(l),
		st.idleDeadline(abs, s.LastSeen, now)}

	pipe := st.c.Pipeline()
	ic := pipe.Do(ctx, "set", lkey, s.ID, "pxat", abs, "nx")
	cc := scriptCreate.EvalSha(ctx, pipe, []string{skey}, sargs...)
	_, _ = pipe.Exec(ctx) // each command's own error is read below
	cc = st.rerun(ctx, cc, scriptCreate, skey, sargs)

	claimed, created, added := ic.Err() == nil, false, false
	var err error
	if e := ic.Err(); e != nil && !errors.Is(e, redis.Nil) {
		err = e
	}
	if code, e := cc.Int64(); e != nil {
		err = firstErr(err, e)
	} else {
		created = code == codeOK
	}
	if err == nil && claimed && created {
		e := scriptUserAdd.Run(ctx, st.c, []string{ukey}, member, abs, ms(time.Now())).Err()
		if e == nil {
			st.lanes.put(l.ID, &laneRef{sid: string(s.ID), key: skey})
			return nil
		}
		err, added = e, true // its reply may be what was lost: remove the entry too
	}
	st.cleanup(ctx, func(ctx context.Context, p redis.Pipeliner) {
		if claimed {
			p.Del(ctx, lkey)
		}
		if created {
			p.Del(ctx, skey)
		}
		if added {
			p.ZRem(ctx, ukey, member)
		}
	})
	if err != nil {
		return unavailable("create", err)
	}
	return server.ErrExists
}

// firstErr returns the first non-nil error.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// AddLane implements [server.Store] in two round trips: the lane enters the session's hash (a
// script that checks the session is live and the field free), then the lane index (SET NX,
// until the session's deadline). If the lane ID is taken, the field is removed again.
func (st *Store) AddLane(ctx context.Context, l *server.Lane) error {
	if err := ctx.Err(); err != nil {
		return unavailable("add lane", err)
	}
	skey, field := st.sessionKey(l.SessionID), laneField(l.ID)
	res, err := st.run(ctx, scriptAddLane, skey, field, encodeLane(l))
	if err != nil {
		return unavailable("add lane", err)
	}
	var deadline string
	if a, ok := res.([]any); ok && len(a) == 2 && a[0] == int64(codeOK) {
		deadline, _ = a[1].(string)
	} else {
		code, gone, err := scriptReply(res)
		switch {
		case err != nil:
			return unavailable("add lane", err)
		case gone != nil:
			return gone
		case code == codeNotFound:
			return server.ErrNotFound
		case code == codeRefused:
			return server.ErrExists
		}
		return unavailable("add lane", fmt.Errorf("%w: %d", errReply, code))
	}
	err = st.c.Do(ctx, "set", st.laneKey(l.ID), l.SessionID, "pxat", deadline, "nx").Err()
	if err == nil {
		st.lanes.put(l.ID, &laneRef{sid: string(l.SessionID), key: skey})
		return nil
	}
	st.cleanup(ctx, func(ctx context.Context, p redis.Pipeliner) { p.HDel(ctx, skey, field) })
	if errors.Is(err, redis.Nil) {
		return server.ErrExists
	}
	return unavailable("add lane", err)
}

// Lane implements [server.Store]: one HMGET of the session's hash (the session, its last-seen
// time, the tombstone's reason and the lane), plus one GET of the lane index the first time
// this Store looks the lane up.
func (st *Store) Lane(ctx context.Context, id protocol.LaneID) (*server.Lane, *server.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, unavailable("lane", err)
	}
	r, cached, err := st.ref(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	for {
		v, err := st.c.HMGet(ctx, r.key, "s", "t", "g", laneField(id), deadField(id)).Result()
		if err != nil {
			return nil, nil, unavailable("lane", err)
		}
		if len(v) != 5 {
			return nil, nil, unavailable("lane", errReply)
		}
		rec, _ := v[0].(string)
		seen, _ := v[1].(string)
		reason, isGone := v[2].(string)
		lane, hasLane := v[3].(string)
		switch dead, isDead := v[4].(string); {
		case isDead:
			return nil, nil, &server.GoneError{Reason: dead}
		case isGone && hasLane:
			return nil, nil, &server.GoneError{Reason: reason}
		case v[0] != nil && hasLane:
			p := new(struct {
				l server.Lane
				s server.Session
			})
			if err := decodeLane(&p.l, id, r.sid, lane); err != nil {
				return nil, nil, err
			}
			if err := decodeSession(&p.s, r.sid, rec, seen); err != nil {
				return nil, nil, err
			}
			return &p.l, &p.s, nil
		}
		if !cached {
			return nil, nil, server.ErrNotFound
		}
		if r, err = st.recheck(ctx, id, r); err != nil {
			return nil, nil, err
		}
		cached = false
	}
}

// UpdateLane implements [server.Store]: one script compares the stored epoch and replaces the
// lane record (its replay window is another field and stays).
func (st *Store) UpdateLane(ctx context.Context, l *server.Lane, prevEpoch uint32) error {
	if err := ctx.Err(); err != nil {
		return unavailable("update lane", err)
	}
	res, err := st.run(ctx, scriptUpdateLane, st.sessionKey(l.SessionID), laneField(l.ID), laneHead(prevEpoch), encodeLane(l))
	if err != nil {
		return unavailable("update lane", err)
	}
	code, gone, err := scriptReply(res)
	switch {
	case err != nil:
		return unavailable("update lane", err)
	case gone != nil:
		return gone
	case code == codeOK:
		return nil
	case code == codeRefused:
		return server.ErrConflict
	case code != codeNotFound:
		return unavailable("update lane", fmt.Errorf("%w: %d", errReply, code))
	}
	// Not in l.SessionID's hash: is it another session's lane?
	sid, err := st.c.Get(ctx, st.laneKey(l.ID)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return server.ErrNotFound
	case err != nil:
		return unavailable("update lane", err)
	case sid != string(l.SessionID):
		return errSessionMatch
	}
	return server.ErrNotFound
}

// Touch implements [server.Store]: one script raises the last-seen time (bytewise comparison of
// the sortable encoding) and, with [Options.IdleTimeout], moves the session's deadline on.
func (st *Store) Touch(ctx context.Context, sessionID []byte, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return unavailable("touch", err)
	}
	idle := ""
	if st.idle > 0 {
		idle = fmt.Sprint(st.idleDeadline(1<<62, t, time.Now()))
	}
	if _, err := st.run(ctx, scriptTouch, st.sessionKey(sessionID), encodeSeen(t), idle); err != nil {
		return unavailable("touch", err)
	}
	return nil
}

// Delete implements [server.Store]: one script replaces the session's hash by its tombstone
// (until Expires) and publishes the notice; a second round trip removes the user index entry.
// If that one fails, the entry stays until UserSessions or its TTL drops it; the session is
// deleted all the same, and Delete reports success.
func (st *Store) Delete(ctx context.Context, sessionID []byte, reason string) ([]protocol.LaneID, error) {
	if err := ctx.Err(); err != nil {
		return nil, unavailable("delete", err)
	}
	res, err := st.run(ctx, scriptDelete, st.sessionKey(sessionID), reason, ms(time.Now()), st.channel, encodeNoticeHead(reason, false))
	if err != nil {
		return nil, unavailable("delete", err)
	}
	a, ok := res.([]any)
	if !ok {
		return nil, unavailable("delete", fmt.Errorf("%w: %T", errReply, res))
	}
	if len(a) == 0 {
		return nil, nil
	}
	var lanes []protocol.LaneID
	for _, v := range a[1:] {
		if id, ok := v.(string); ok && len(id) == protocol.LaneIDSize {
			lanes = append(lanes, protocol.LaneID([]byte(id)))
		}
	}
	if rec, ok := a[0].(string); ok {
		var s server.Session
		if decodeSessionRecord(&s, rec) == nil {
			ukey := st.userKey(s.UserID)
			_ = st.c.ZRem(ctx, ukey, userMember(s.Created, sessionID)).Err()
		}
	}
	return lanes, nil
}

// DeleteLane implements [server.Store]: one script removes the lane's record and replay window
// from its session's hash, leaves the lane's reason there (until the session's key ends, or
// [server.LaneTombstones] later ones; a later Delete keeps it in the tombstone) and publishes a
// notice of the lane; plus one GET of
// the lane index the first time this Store looks the lane up. The lane index entry stays until
// its TTL, so that Lane finds the reason.
func (st *Store) DeleteLane(ctx context.Context, id protocol.LaneID, reason string) error {
	if err := ctx.Err(); err != nil {
		return unavailable("delete lane", err)
	}
	r, cached, err := st.ref(ctx, id)
	if err != nil {
		return err
	}
	head := encodeNoticeHead(reason, false)
	for {
		res, err := st.run(ctx, scriptDeleteLane, r.key, id[:], reason, ms(time.Now()), st.channel, head, server.LaneTombstones)
		if err != nil {
			return unavailable("delete lane", err)
		}
		code, gone, err := scriptReply(res)
		switch {
		case err != nil:
			return unavailable("delete lane", err)
		case gone != nil:
			return gone
		case code == codeOK:
			return nil
		case code != codeNotFound:
			return unavailable("delete lane", fmt.Errorf("%w: %d", errReply, code))
		}
		if !cached {
			return server.ErrNotFound
		}
		if r, err = st.recheck(ctx, id, r); err != nil {
			return err
		}
		cached = false
	}
}

// Session implements [server.Store]: one HGETALL.
func (st *Store) Session(ctx context.Context, sessionID []byte) (*server.Session, []protocol.LaneID, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, unavailable("session", err)
	}
	h, err := st.c.HGetAll(ctx, st.sessionKey(sessionID)).Result()
	if err != nil {
		return nil, nil, unavailable("session", err)
	}
	if g, ok := h["g"]; ok {
		return nil, nil, &server.GoneError{Reason: g}
	}
	rec, ok := h["s"]
	if !ok {
		return nil, nil, server.ErrNotFound
	}
	s := new(server.Session)
	if err := decodeSession(s, string(sessionID), rec, h["t"]); err != nil {
		return nil, nil, err
	}
	var lanes []protocol.LaneID
	for f := range h {
		if len(f) == 1+protocol.LaneIDSize && f[0] == 'l' {
			lanes = append(lanes, protocol.LaneID([]byte(f[1:])))
		}
	}
	slices.SortFunc(lanes, func(a, b protocol.LaneID) int { return bytes.Compare(a[:], b[:]) })
	return s, lanes, nil
}

// UserSessions implements [server.Store]: one ZRANGE of the user's index, then one pipeline of
// HMGETs (one per session, each in its own slot). Entries of sessions that are gone are
// dropped from the index on the way.
func (st *Store) UserSessions(ctx context.Context, userID string) ([]*server.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, unavailable("user sessions", err)
	}
	ukey := st.userKey(userID)
	members, err := st.c.ZRange(ctx, ukey, 0, -1).Result()
	if err != nil {
		return nil, unavailable("user sessions", err)
	}
	slices.Sort(members) // created, then session ID
	members = slices.DeleteFunc(members, func(m string) bool { return len(m) <= record.TimeSize })
	if len(members) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.SliceCmd, len(members))
	_, err = st.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			cmds[i] = p.HMGet(ctx, st.sessionKey([]byte(m[record.TimeSize:])), "s", "t")
		}
		return nil
	})
	if err != nil {
		return nil, unavailable("user sessions", err)
	}
	out := make([]*server.Session, 0, len(members))
	stale := []any{ms(time.Now())}
	for i, c := range cmds {
		v := c.Val()
		rec, ok1 := v[0].(string)
		seen, ok2 := v[1].(string)
		if !ok1 || !ok2 {
			stale = append(stale, members[i])
			continue
		}
		s := new(server.Session)
		if err := decodeSession(s, members[i][record.TimeSize:], rec, seen); err != nil {
			return nil, err
		}
		if s.UserID != userID { // a session ID reused across users: only a broken random source
			continue
		}
		out = append(out, s)
	}
	if len(stale) > 1 {
		_, _ = st.run(ctx, scriptUserPrune, ukey, stale...)
	}
	return out, nil
}

// Seen implements [server.Store]: one script checks that the lane is live and updates its
// window atomically ([server.ReplayWindow] semantics), plus one GET of the lane index the first
// time this Store looks the lane up (the Manager's Lane call before it has done that).
func (st *Store) Seen(ctx context.Context, id protocol.LaneID, seq uint64) error {
	if err := ctx.Err(); err != nil {
		return unavailable("seen", err)
	}
	r, cached, err := st.ref(ctx, id)
	if err != nil {
		return err
	}
	var sq [8]byte
	binary.BigEndian.PutUint64(sq[:], seq)
	for {
		res, err := st.run(ctx, scriptSeen, r.key, id[:], sq[:])
		if err != nil {
			return unavailable("seen", err)
		}
		code, gone, err := scriptReply(res)
		switch {
		case err != nil:
			return unavailable("seen", err)
		case gone != nil:
			return gone
		case code == codeOK:
			return nil
		case code == codeRefused:
			return server.ErrReplay
		case code != codeNotFound:
			return unavailable("seen", fmt.Errorf("%w: %d", errReply, code))
		}
		if !cached {
			return server.ErrNotFound
		}
		if r, err = st.recheck(ctx, id, r); err != nil {
			return err
		}
		cached = false
	}
}
