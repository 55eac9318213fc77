package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultQueueKey is the relay queue's Redis key. Its hash tag keeps it in
// one Redis Cluster slot (the Lua scripts touch only it).
const DefaultQueueKey = "{delauto:relay}:due"

// Queue is the relay's work list: a Redis sorted set of attempt ids scored
// by when to look at them next (Unix milliseconds). It only says "look at
// this attempt"; what was sent lives in MongoDB (the attempt's notification
// state), so an entry processed twice sends nothing twice, and a lost entry
// is found again by the sender's sweep.
type Queue struct {
	rdb redis.UniversalClient
	key string
}

// NewQueue returns the queue at key (DefaultQueueKey when empty).
func NewQueue(rdb redis.UniversalClient, key string) *Queue {
	if key == "" {
		key = DefaultQueueKey
	}
	return &Queue{rdb: rdb, key: key}
}

// Key is the queue's Redis key.
func (q *Queue) Key() string { return q.key }

// Enqueue asks for attempt id to be looked at at time at: it is added, or
// moved earlier if it was due later (never later: a retry's backoff or a
// wait for a transcription is cut short, not extended).
func (q *Queue) Enqueue(ctx context.Context, id string, at time.Time) error {
	if id == "" {
		return fmt.Errorf("relay queue: empty attempt id")
	}
	err := q.rdb.ZAddLT(ctx, q.key, redis.Z{Score: float64(at.UnixMilli()), Member: id}).Err()
	if err != nil {
		return fmt.Errorf("relay queue: enqueue %s: %w", id, err)
	}
	return nil
}

// Len is the number of queued attempts.
func (q *Queue) Len(ctx context.Context) (int64, error) { return q.rdb.ZCard(ctx, q.key).Result() }

// Due is the number of attempts due at now.
func (q *Queue) Due(ctx context.Context, now time.Time) (int64, error) {
	return q.rdb.ZCount(ctx, q.key, "-inf", fmt.Sprint(now.UnixMilli())).Result()
}

// takeScript leases up to n due members: their score becomes the lease's
// end, so no other sender takes them until it passes.
var takeScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids`)

// settleScript ends a lease: the member is removed (ARGV[2] == "") or
// rescheduled to ARGV[2], but only while its score is still the lease this
// sender set; if someone enqueued it meanwhile (a transcription arrived),
// it stays as they left it.
var settleScript = redis.NewScript(`
local cur = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not cur or tonumber(cur) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then redis.call('ZREM', KEYS[1], ARGV[3]) else redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3]) end
return 1`)

// lease is a set of attempts taken until a time.
type lease struct {
	ids   []string
	until int64
}

func (q *Queue) take(ctx context.Context, now time.Time, d time.Duration, n int) (lease, error) {
	until := now.Add(d).UnixMilli()
	res, err := takeScript.Run(ctx, q.rdb, []string{q.key}, now.UnixMilli(), until, n).StringSlice()
	if err != nil {
		return lease{}, fmt.Errorf("relay queue: take: %w", err)
	}
	return lease{ids: res, until: until}, nil
}

// settle removes id (at zero) or reschedules it to at, if the lease still holds.
func (q *Queue) settle(ctx context.Context, l lease, id string, at time.Time) error {
	next := ""
	if !at.IsZero() {
		next = fmt.Sprint(at.UnixMilli())
	}
	if err := settleScript.Run(ctx, q.rdb, []string{q.key}, l.until, next, id).Err(); err != nil {
		return fmt.Errorf("relay queue: settle %s: %w", id, err)
	}
	return nil
}
