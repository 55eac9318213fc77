package queue

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Every per-shard script gets KEYS = due, ready, index, dead, calledoff
// (Shard.keys), all
// in the shard's hash tag, and reads the clock with TIME on the server, so
// every worker agrees on "now" whatever its own clock says. Redis 7 replicates
// script effects, so TIME before writes is allowed.

// luaNow is the server time in Unix milliseconds.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// luaEnsureGroup creates the stream and its group before the first XADD; the
// group starts at 0 so nothing added before it existed is missed.
const luaEnsureGroup = `
local grouped = false
local function ensure_group()
  if not grouped and redis.call('EXISTS', KEYS[2]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
  end
  grouped = true
end
`

// luaGroupOf is the group of an attempt id: "<group>-<n>" (see CallOff).
const luaGroupOf = `
local function group_of(id)
  return string.match(id, '^(.+)-%d+$') or id
end
`

// scheduleScript adds, moves or keeps attempts.
// ARGV: group, wake channel, then (id, due ms, mode) triples; mode is nx
// (add only), xx (move only) or up (add or move).
// Returns {wake, result...}: wake is 1 when an entry became the earliest of
// the due set, and each result is added, moved, unchanged, inflight,
// absent or calledoff (its group was called off: nothing is queued).
//
// An id that is already in the ready stream but not yet delivered is taken
// out of the stream when moved; one delivered to a worker is left alone
// (inflight). An attempt due now goes straight to the stream when nothing
// else is waiting in the due set, saving the promoter's round trip; otherwise
// it joins the due set so due order is kept.
var scheduleScript = redis.NewScript(luaNow + luaEnsureGroup + luaGroupOf + `
local due, ready, index, calledoff = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local group, chan = ARGV[1], ARGV[2]
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
local earliest = tonumber(first[2])
local wake = 0
local out = {0}
for i = 3, #ARGV, 3 do
  local id, score, mode = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local res = nil
  local present = false
  local sid = redis.call('HGET', index, id)
  if redis.call('ZSCORE', calledoff, group_of(id)) then
    res = 'calledoff'
  elseif sid then
    present = true
    if mode == 'nx' then
      res = 'unchanged'
    elseif #redis.call('XPENDING', ready, group, sid, sid, 1) > 0 then
      res = 'inflight'
    else
      redis.call('XDEL', ready, sid)
      redis.call('HDEL', index, id)
    end
  elseif redis.call('ZSCORE', due, id) then
    present = true
    if mode == 'nx' then
      res = 'unchanged'
    else
      redis.call('ZREM', due, id)
    end
  elseif mode == 'xx' then
    res = 'absent'
  end
  if not res then
    if present then res = 'moved' else res = 'added' end
    local direct = false
    if score <= now then
      local f = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
      direct = (#f == 0) or (tonumber(f[2]) > now)
    end
    if direct then
      ensure_group()
      local s = redis.call('XADD', ready, '*', 'id', id, 'due', ARGV[i + 1])
      redis.call('HSET', index, id, s)
    else
      redis.call('ZADD', due, score, id)
      if earliest == nil or score < earliest then
        earliest = score
        wake = 1
      end
    end
  end
  out[#out + 1] = res
end
if wake == 1 then
  out[1] = 1
  redis.call('PUBLISH', chan, string.format('%.0f', earliest))
end
return out
`)

// promoteScript moves up to ARGV[2] due entries (score <= server time) from
// the due set to the ready stream, oldest first, in one atomic step.
// ARGV: group, limit. Returns {moved, now ms, next due ms or -1}.
var promoteScript = redis.NewScript(luaNow + luaEnsureGroup + `
local due, ready, index = KEYS[1], KEYS[2], KEYS[3]
local items = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local n = #items / 2
if n > 0 then
  ensure_group()
  local ids = {}
  local kv = {}
  for i = 1, #items, 2 do
    local s = redis.call('XADD', ready, '*', 'id', items[i], 'due', items[i + 1])
    ids[#ids + 1] = items[i]
    kv[#kv + 1] = items[i]
    kv[#kv + 1] = s
  end
  redis.call('HSET', index, unpack(kv))
  redis.call('ZREM', due, unpack(ids))
end
local f = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
local nxt = -1
if #f > 0 then nxt = math.floor(tonumber(f[2])) end
return {n, now, nxt}
`)

// cancelScript removes attempts that are not yet delivered to a worker.
// ARGV: group, then ids. Returns one of cancelled, inflight, absent per id.
var cancelScript = redis.NewScript(`
local due, ready, index = KEYS[1], KEYS[2], KEYS[3]
local group = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local res = 'absent'
  if redis.call('ZREM', due, id) == 1 then
    res = 'cancelled'
  else
    local sid = redis.call('HGET', index, id)
    if sid then
      if #redis.call('XPENDING', ready, group, sid, sid, 1) > 0 then
        res = 'inflight'
      else
        redis.call('XDEL', ready, sid)
        redis.call('HDEL', index, id)
        res = 'cancelled'
      end
    end
  end
  out[#out + 1] = res
end
return out
`)

// callOffScript records attempt groups as called off and forgets those
// called off more than ARGV[1] ms ago. ARGV: keep ms, then groups.
var callOffScript = redis.NewScript(luaNow + `
local calledoff = KEYS[5]
redis.call('ZREMRANGEBYSCORE', calledoff, '-inf', now - tonumber(ARGV[1]))
for i = 2, #ARGV do
  redis.call('ZADD', calledoff, now, ARGV[i])
end
return #ARGV - 1
`)

// holdScript holds a group (Queue.Hold) and keeps the latest generation
// that asked for it. KEYS: the called-off set, the group's hold key. ARGV:
// keep ms, the group's hold member, the generation.
var holdScript = redis.NewScript(luaNow + `
local calledoff, holdgen = KEYS[1], KEYS[2]
local keep, gen = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', calledoff, '-inf', now - keep)
local held = tonumber(redis.call('GET', holdgen) or '-1')
if gen > held then held = gen end
redis.call('SET', holdgen, held, 'PX', keep)
redis.call('ZADD', calledoff, now, ARGV[2])
return 1
`)

// unholdScript lifts a hold (Queue.Unhold) unless a later generation asked
// for it. KEYS as holdScript's. ARGV: the group's hold member, the
// generation carried out. It returns 1 when lifted.
var unholdScript = redis.NewScript(`
local held = tonumber(redis.call('GET', KEYS[2]) or '-1')
if held > tonumber(ARGV[2]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
`)

// luaTrim drops acknowledged entries from the head of the ready stream:
// everything older than the oldest pending entry, or, with none pending,
// everything delivered. MINID ~ frees whole stream nodes only, which costs
// next to nothing; deleting each acknowledged entry with XDEL instead cost
// about 9 µs per entry (half of Redis's time per job) when profiled. The
// ready stream has a single consumer group.
const luaTrim = `
local function trim(ready, group)
  local p = redis.call('XPENDING', ready, group)
  local minid
  if p[1] > 0 then
    minid = p[2]
  else
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', ready)) do
      local name, last
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
      if name == group and last then
        local ms, seq = string.match(last, '^(%d+)-(%d+)$')
        if ms then minid = ms .. '-' .. string.format('%.0f', tonumber(seq) + 1) end
      end
    end
  end
  if minid then redis.call('XTRIM', ready, 'MINID', '~', minid) end
end
`

// ackScript records handler outcomes in one step: acknowledged entries leave
// the pending list and the index (and the stream when luaTrim frees their
// node); retried ones go back to the due set; dead ones are copied to the
// dead-letter stream first.
// ARGV: group, dead-letter max length, wake channel, #acks, #retries, #deads,
// then (entry, id) per ack, (entry, id, due ms) per retry, and
// (entry, id, due, reason, deliveries, consumer) per dead.
// Returns the number of entries acknowledged.
var ackScript = redis.NewScript(luaNow + luaTrim + `
local due, ready, index, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, maxlen, chan = ARGV[1], ARGV[2], ARGV[3]
local na, nr, nd = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local sids, ids = {}, {}
local p = 7
for i = 1, na do
  sids[#sids + 1] = ARGV[p]
  ids[#ids + 1] = ARGV[p + 1]
  p = p + 2
end
local retries = {}
for i = 1, nr do
  sids[#sids + 1] = ARGV[p]
  ids[#ids + 1] = ARGV[p + 1]
  retries[#retries + 1] = {ARGV[p + 1], tonumber(ARGV[p + 2])}
  p = p + 3
end
for i = 1, nd do
  sids[#sids + 1] = ARGV[p]
  ids[#ids + 1] = ARGV[p + 1]
  redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*', 'id', ARGV[p + 1], 'due', ARGV[p + 2],
    'reason', ARGV[p + 3], 'deliveries', ARGV[p + 4], 'consumer', ARGV[p + 5], 'entry', ARGV[p], 'at', now)
  p = p + 6
end
local acked = 0
if #sids > 0 then
  acked = redis.call('XACK', ready, group, unpack(sids))
  redis.call('HDEL', index, unpack(ids))
  trim(ready, group)
end
if #retries > 0 then
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  local earliest = tonumber(first[2])
  local wake = false
  for _, r in ipairs(retries) do
    if redis.call('ZADD', due, 'NX', r[2], r[1]) == 1 and (earliest == nil or r[2] < earliest) then
      earliest = r[2]
      wake = true
    end
  end
  if wake then redis.call('PUBLISH', chan, string.format('%.0f', earliest)) end
end
return acked
`)

// reclaimScript takes over entries whose holder has not extended them for
// the lease (a crashed or stuck worker), and dead-letters those delivered
// more often than allowed.
// ARGV: group, consumer, min idle ms, start cursor, count, max deliveries,
// dead-letter max length.
// Returns {next cursor, {{entry, id, due, deliveries}...}, dead-lettered}.
var reclaimScript = redis.NewScript(luaNow + `
local due, ready, index, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer = ARGV[1], ARGV[2]
local maxd = tonumber(ARGV[6])
local r = redis.call('XAUTOCLAIM', ready, group, consumer, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
local ndead = 0
for _, e in ipairs(r[2]) do
  local sid = e[1]
  local id, d = '', '0'
  if e[2] then
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'id' then id = f[i + 1] elseif f[i] == 'due' then d = f[i + 1] end
    end
  end
  local pe = redis.call('XPENDING', ready, group, sid, sid, 1)
  local n = 1
  if pe[1] then n = tonumber(pe[1][4]) end
  if n > maxd then
    redis.call('XADD', dead, 'MAXLEN', '~', ARGV[7], '*', 'id', id, 'due', d,
      'reason', 'delivered ' .. (n - 1) .. ' times without an outcome (max ' .. maxd .. ')',
      'deliveries', n - 1, 'consumer', consumer, 'entry', sid, 'at', now)
    redis.call('XACK', ready, group, sid)
    redis.call('XDEL', ready, sid)
    if id ~= '' then redis.call('HDEL', index, id) end
    ndead = ndead + 1
  else
    out[#out + 1] = {sid, id, d, n}
  end
end
return {r[1], out, ndead}
`)

// extendScript resets the idle time of entries this consumer still holds
// (XCLAIM JUSTID does not count a delivery), so a long handler keeps its
// lease. Entries now held by another consumer are not taken back.
// ARGV: group, consumer, entry ids. Returns the entry ids this consumer lost.
var extendScript = redis.NewScript(`
local ready = KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local claim = {'XCLAIM', ready, group, consumer, 0}
local lost = {}
for i = 3, #ARGV do
  local pe = redis.call('XPENDING', ready, group, ARGV[i], ARGV[i], 1)
  if pe[1] and pe[1][2] == consumer then
    claim[#claim + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if #claim > 5 then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return lost
`)

// leaveScript removes this consumer from the group when it holds nothing.
// ARGV: group, consumer. Returns 1 when removed.
var leaveScript = redis.NewScript(`
local ready = KEYS[2]
if redis.call('EXISTS', ready) == 0 then return 0 end
local pe = redis.call('XPENDING', ready, ARGV[1], '-', '+', 1, ARGV[2])
if #pe > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', ready, ARGV[1], ARGV[2])
return 1
`)

// isNoScript reports a NOSCRIPT reply (the script cache was flushed or the
// node is new).
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// scriptCall is one script invocation of a pipelined batch.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// runScripts runs the calls in one pipeline by EVALSHA, and those that met
// an empty script cache again by EVAL (a NOSCRIPT reply means the call did
// not run, so running it again is safe). In Redis Cluster the pipeline is
// split by node.
func runScripts(ctx context.Context, rdb redis.UniversalClient, calls []*scriptCall) error {
	if len(calls) == 1 {
		c := calls[0]
		c.cmd = c.script.Run(ctx, rdb, c.keys, c.args...)
		return c.cmd.Err()
	}
	pipe := rdb.Pipeline()
	for _, c := range calls {
		c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	var again []*scriptCall
	for _, c := range calls {
		if isNoScript(c.cmd.Err()) {
			again = append(again, c)
		}
	}
	if len(again) > 0 {
		pipe := rdb.Pipeline()
		for _, c := range again {
			c.cmd = c.script.Eval(ctx, pipe, c.keys, c.args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil && err != redis.Nil {
			return err
		}
	}
	return nil
}
