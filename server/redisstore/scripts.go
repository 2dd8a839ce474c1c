package redisstore

import "github.com/redis/go-redis/v9"

// Lua scripts. Each touches exactly one key, declared in KEYS[1] (so each runs in one Redis
// Cluster slot), and runs atomically: no other command sees a half-done script.
//
// Session hash fields (see doc.go): s session record, t last seen, e Expires (Unix ms), x the
// absolute deadline of the records (Unix ms), l<lane> lane record, w<lane> replay window, d<lane>
// the reason of a lane deleted alone (DeleteLane; kept in the tombstone), q the IDs of the lanes
// with a d field, oldest first (at most server.LaneTombstones), and in a tombstone only
// g (the reason), l<lane> = "" for each lane the session had at its deletion, and the d<lane>.
//
// Replies: 0 done; 1 refused (exists, conflict, replay); 2 not found; a string: gone, with this
// reason.
const (
	codeOK       = 0
	codeRefused  = 1
	codeNotFound = 2
)

// scriptCreate: ARGV s, t, e, x, lane field, lane record, deadline of the key (Unix ms).
var scriptCreate = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
redis.call('HSET', KEYS[1], 's', ARGV[1], 't', ARGV[2], 'e', ARGV[3], 'x', ARGV[4], ARGV[5], ARGV[6])
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
return 0
`)

// scriptAddLane: ARGV lane field, lane record. Replies {0, x} when added; 1 if the lane ID is
// taken, by a lane or by the tombstone of a lane deleted alone.
var scriptAddLane = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'g', 'x', 'd' .. string.sub(ARGV[1], 2))
if r[1] then return r[1] end
if not r[2] then return 2 end
if r[3] then return 1 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 1 end
return {0, r[2]}
`)

// scriptUpdateLane: ARGV lane field, version||previous epoch (5 bytes), lane record.
var scriptUpdateLane = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'g', ARGV[1], 'd' .. string.sub(ARGV[1], 2))
if r[3] then return r[3] end
if r[1] then
  if r[2] then return r[1] end
  return 2
end
if not r[2] then return 2 end
if string.sub(r[2], 1, 5) ~= ARGV[2] then return 1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 0
`)

// scriptTouch: ARGV last seen (12 bytes, byte order is time order), the idle deadline (Unix ms)
// or "" when the store has no idle timeout.
var scriptTouch = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 's', 't', 'x')
if not r[1] then return 0 end
local cur, new = r[2], ARGV[1]
if cur then
  for i = 1, 12 do
    local a, b = string.byte(cur, i), string.byte(new, i)
    if a ~= b then
      if a > b then return 0 end
      break
    end
    if i == 12 then return 0 end
  end
end
redis.call('HSET', KEYS[1], 't', new)
if ARGV[2] ~= '' then
  local d, x = tonumber(ARGV[2]), tonumber(r[3])
  if x < d then d = x end
  redis.call('PEXPIREAT', KEYS[1], d)
end
return 1
`)

// scriptDelete: ARGV reason, now (Unix ms), notice channel, notice head. Replies {} if there is
// no live session, else {session record, lane IDs...}. The tombstone replaces the session in
// the same key and lives until Expires; past Expires nothing is left. The lanes deleted alone
// before keep their d<lane> reasons in it. The notice (head and the lane IDs) is published from
// inside the script: no deletion without its notice.
var scriptDelete = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 's', 'e')
if not r[1] then return {} end
local lanes, dead = {}, {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if #f == 17 then
    local c = string.sub(f, 1, 1)
    if c == 'l' then lanes[#lanes + 1] = string.sub(f, 2)
    elseif c == 'd' then dead[#dead + 1] = f end
  end
end
local why = {}
if #dead > 0 then why = redis.call('HMGET', KEYS[1], unpack(dead)) end
redis.call('DEL', KEYS[1])
local e = tonumber(r[2])
if e > tonumber(ARGV[2]) then
  local args = {'g', ARGV[1]}
  for _, l in ipairs(lanes) do
    args[#args + 1] = 'l' .. l
    args[#args + 1] = ''
  end
  for i, f in ipairs(dead) do
    args[#args + 1] = f
    args[#args + 1] = why[i]
  end
  redis.call('HSET', KEYS[1], unpack(args))
  redis.call('PEXPIREAT', KEYS[1], e)
end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. table.concat(lanes))
return {r[1], unpack(lanes)}
`)

// scriptDeleteLane: ARGV lane ID (16 bytes), reason, now (Unix ms), notice channel, notice
// head, the most d<lane> fields to keep (server.LaneTombstones). Removes the lane's record and
// replay window and, unless the session is past its Expires, leaves d<lane> = reason (it lives
// as long as the session's key, and in its tombstone) and appends the lane to q, the lanes with
// a d field, oldest first; past the bound, the oldest's d goes. The notice of the lane is
// published from inside the script, like Delete's.
var scriptDeleteLane = redis.NewScript(`
local id = ARGV[1]
local r = redis.call('HMGET', KEYS[1], 'g', 'l' .. id, 'd' .. id, 'e', 'q')
if r[3] then return r[3] end
if r[1] then
  if r[2] then return r[1] end
  return 2
end
if not r[2] then return 2 end
redis.call('HDEL', KEYS[1], 'l' .. id, 'w' .. id)
if tonumber(r[4]) > tonumber(ARGV[3]) then
  local q = (r[5] or '') .. id
  if #q > 16 * tonumber(ARGV[6]) then
    redis.call('HDEL', KEYS[1], 'd' .. string.sub(q, 1, 16))
    q = string.sub(q, 17)
  end
  redis.call('HSET', KEYS[1], 'd' .. id, ARGV[2], 'q', q)
end
redis.call('PUBLISH', ARGV[4], ARGV[5] .. id)
return 0
`)

// scriptSeen is [server.ReplayWindow.Check] on the lane's window, field w<lane>: 136 bytes, the
// highest nonce seen (u64be) then a 1024-bit ring in which nonce n is bit n mod 1024 (bit i of
// byte i/8, least significant first). The window holds the 1024 nonces top-1023..top; advancing
// the top to seq clears the ring positions of top+1..seq (the nonces that fall out) first.
// Lua numbers are doubles, so 64-bit nonces are handled as two 32-bit halves: top-seq is
// computed exactly when it is small and, when it is not, with the right sign and far beyond 1024.
// ARGV: lane ID (16 bytes), seq (u64be).
var scriptSeen = redis.NewScript(`
local id = ARGV[1]
local r = redis.call('HMGET', KEYS[1], 'g', 'w' .. id, 'd' .. id)
if r[3] then return r[3] end
local here = redis.call('HEXISTS', KEYS[1], 'l' .. id) == 1
if r[1] then
  if here then return r[1] end
  return 2
end
if not here then return 2 end
local s1, s2, s3, s4, s5, s6, s7, s8 = string.byte(ARGV[2], 1, 8)
local shi = ((s1 * 256 + s2) * 256 + s3) * 256 + s4
local slo = ((s5 * 256 + s6) * 256 + s7) * 256 + s8
if shi == 0 and slo == 0 then return 1 end
local w = r[2]
local thi, tlo = 0, 0
if w then
  if #w ~= 136 then return redis.error_reply('redisstore: corrupt replay window') end
  local t1, t2, t3, t4, t5, t6, t7, t8 = string.byte(w, 1, 8)
  thi = ((t1 * 256 + t2) * 256 + t3) * 256 + t4
  tlo = ((t5 * 256 + t6) * 256 + t7) * 256 + t8
end
local d = (thi - shi) * 4294967296 + (tlo - slo)
local p = slo % 1024
local bi = math.floor(p / 8) + 1
local m = 2 ^ (p % 8)
if d == -1 and w then
  -- The next nonce, the common case: its position held top-1023, which falls out; set it.
  local b = string.byte(w, 8 + bi)
  if math.floor(b / m) % 2 == 0 then b = b + m end
  redis.call('HSET', KEYS[1], 'w' .. id, ARGV[2] .. string.sub(w, 9, 7 + bi) .. string.char(b) .. string.sub(w, 9 + bi))
  return 0
end
if d < 0 then
  local ring
  if not w or -d >= 1024 then
    ring = {}
    for i = 1, 128 do ring[i] = 0 end
  else
    ring = {string.byte(w, 9, 136)}
    for v = 1, -d do
      local q = (tlo + v) % 1024
      local qi = math.floor(q / 8) + 1
      local qm = 2 ^ (q % 8)
      if math.floor(ring[qi] / qm) % 2 == 1 then ring[qi] = ring[qi] - qm end
    end
  end
  ring[bi] = ring[bi] + m
  redis.call('HSET', KEYS[1], 'w' .. id, ARGV[2] .. string.char(unpack(ring)))
  return 0
end
if d >= 1024 or not w then return 1 end
local b = string.byte(w, 8 + bi)
if math.floor(b / m) % 2 == 1 then return 1 end
redis.call('HSET', KEYS[1], 'w' .. id, string.sub(w, 1, 7 + bi) .. string.char(b + m) .. string.sub(w, 9 + bi))
return 0
`)

// scriptUserAdd: ARGV member, the session's absolute deadline (Unix ms, the score), now (Unix
// ms). Drops members whose deadline passed, adds the member, and lets the set live until its
// last member's deadline. Replies 1 if added.
var scriptUserAdd = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local added = redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return added
`)

// scriptUserPrune: ARGV now (Unix ms), members to remove. Drops them and the members whose
// deadline passed.
var scriptUserPrune = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #ARGV > 1 then redis.call('ZREM', KEYS[1], unpack(ARGV, 2)) end
return 0
`)
