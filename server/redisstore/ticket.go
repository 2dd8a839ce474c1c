package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionvault/sessionvault/server"
)

// Join tickets: one string key per ticket, in its session's slot (the hash tag is the session
// ID, as for the session's hash), so that a Redis Cluster keeps a session and its tickets
// together:
//
//	sv:t:{b64(session ID)}b64(ticket hash)   "0" fresh, "1" used; expires with the ticket (PXAT)
//
// A used ticket keeps its key, marked, until the ticket's expiry, so that a second use is told
// apart from an unknown ticket (server.ErrTicketUsed). Redis's clock decides the expiry.
func (st *Store) ticketKey(sid, hash []byte) string {
	return st.prefix + "t:{" + b64.EncodeToString(sid) + "}" + b64.EncodeToString(hash)
}

// scriptTakeTicket: no ARGV. Replies 0 taken now; 1 taken before; 2 not found (or expired).
var scriptTakeTicket = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 2 end
if v ~= '0' then return 1 end
redis.call('SET', KEYS[1], '1', 'KEEPTTL')
return 0
`)

// PutTicket implements [server.Store]: one SET NX PXAT.
func (st *Store) PutTicket(ctx context.Context, sessionID, hash []byte, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return unavailable("put ticket", err)
	}
	if len(sessionID) == 0 {
		return errEmptyID
	}
	err := st.c.Do(ctx, "set", st.ticketKey(sessionID, hash), "0", "pxat", max(ms(expires), 1), "nx").Err()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return server.ErrExists
	}
	return unavailable("put ticket", err)
}

// TakeTicket implements [server.Store]: one script, atomic across every node.
func (st *Store) TakeTicket(ctx context.Context, sessionID, hash []byte) error {
	if err := ctx.Err(); err != nil {
		return unavailable("take ticket", err)
	}
	res, err := st.run(ctx, scriptTakeTicket, st.ticketKey(sessionID, hash))
	if err != nil {
		return unavailable("take ticket", err)
	}
	switch res {
	case int64(codeOK):
		return nil
	case int64(codeRefused):
		return server.ErrTicketUsed
	case int64(codeNotFound):
		return server.ErrNotFound
	}
	return unavailable("take ticket", fmt.Errorf("%w: %v", errReply, res))
}
