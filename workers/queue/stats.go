package queue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ShardStats is a snapshot of one shard's queue, for the autoscaler and the
// campaign status.
type ShardStats struct {
	Shard Shard
	// DueNow is attempts due but still in the due set (not yet promoted).
	DueNow int64
	// Ready is attempts in the ready stream not yet delivered to a worker
	// (the consumer group's lag).
	Ready int64
	// InFlight is attempts delivered to workers and not yet acknowledged.
	InFlight int64
	// Scheduled is attempts due later.
	Scheduled int64
	// DueSoon is the part of Scheduled due within the horizon asked for.
	DueSoon int64
	// OldestPendingAge is how long ago the oldest in-flight attempt became
	// ready (zero when none is in flight).
	OldestPendingAge time.Duration
	// DeadLetters is the length of the dead-letter stream.
	DeadLetters int64
}

// Waiting is the attempts due now and not yet picked up by a worker.
func (s ShardStats) Waiting() int64 { return s.DueNow + s.Ready }

// Stats reads each shard's counts with O(1) and O(log n) commands (ZCOUNT,
// HLEN, XLEN, XINFO GROUPS, the XPENDING summary), all in one pipeline. horizon is
// the window DueSoon counts. Counts are taken at slightly different moments,
// so they are consistent to within the pipeline's duration.
func (q *Queue) Stats(ctx context.Context, shards []Shard, horizon time.Duration) ([]ShardStats, error) {
	return q.StatsAt(ctx, shards, time.Now(), horizon)
}

// StatsAt is Stats as seen at now: DueNow counts attempts due by now and
// DueSoon those due after now and within horizon. The autoscaler passes its
// own clock, so its decisions can be tested in fake time.
func (q *Queue) StatsAt(ctx context.Context, shards []Shard, asOf time.Time, horizon time.Duration) ([]ShardStats, error) {
	type cmds struct {
		dueNow, later, soon, queued, deadLen *redis.IntCmd
		groups                               *redis.XInfoGroupsCmd
		pending                              *redis.XPendingCmd
	}
	now := asOf.UnixMilli()
	nowS := strconv.FormatInt(now, 10)
	pipe := q.rdb.Pipeline()
	cs := make([]cmds, len(shards))
	for i, s := range shards {
		if err := s.Validate(); err != nil {
			return nil, err
		}
		cs[i] = cmds{
			dueNow:  pipe.ZCount(ctx, s.DueKey(), "-inf", nowS),
			later:   pipe.ZCount(ctx, s.DueKey(), "("+nowS, "+inf"),
			soon:    pipe.ZCount(ctx, s.DueKey(), "("+nowS, strconv.FormatInt(now+horizon.Milliseconds(), 10)),
			queued:  pipe.HLen(ctx, s.IndexKey()),
			deadLen: pipe.XLen(ctx, s.DeadKey()),
			groups:  pipe.XInfoGroups(ctx, s.ReadyKey()),
			pending: pipe.XPending(ctx, s.ReadyKey(), q.group),
		}
	}
	_, _ = pipe.Exec(ctx)
	out := make([]ShardStats, len(shards))
	for i, s := range shards {
		c := cs[i]
		st := ShardStats{Shard: s}
		var err error
		if st.DueNow, err = c.dueNow.Result(); err != nil {
			return nil, fmt.Errorf("queue: stats of %s: %w", s, err)
		}
		st.Scheduled, _ = c.later.Result()
		st.DueSoon, _ = c.soon.Result()
		st.DeadLetters, _ = c.deadLen.Result()
		queued, _ := c.queued.Result()
		lag := int64(-1)
		if gs, err := c.groups.Result(); err == nil {
			for _, g := range gs {
				if g.Name == q.group {
					lag = g.Lag
				}
			}
		} else if !missingStream(err) {
			return nil, fmt.Errorf("queue: stats of %s: %w", s, err)
		}
		if p, err := c.pending.Result(); err == nil {
			st.InFlight = p.Count
			if p.Count > 0 {
				if at, ok := entryTime(p.Lower); ok {
					st.OldestPendingAge = max(0, time.Duration(now-at.UnixMilli())*time.Millisecond)
				}
			}
		} else if !missingStream(err) {
			return nil, fmt.Errorf("queue: stats of %s: %w", s, err)
		}
		// Redis 7.0 reports no lag when deletions (cancelled entries) make
		// it unknown; the index holds exactly the undelivered and the
		// in-flight entries, so their difference is the lag.
		if lag < 0 {
			lag = max(0, queued-st.InFlight)
		}
		st.Ready = lag
		out[i] = st
	}
	return out, nil
}

// missingStream reports the errors of XINFO and XPENDING on a shard that has
// no stream or group yet.
func missingStream(err error) bool {
	if err == redis.Nil {
		return true
	}
	s := err.Error()
	return strings.HasPrefix(s, "NOGROUP") || strings.Contains(s, "no such key")
}

// Queued lists up to limit attempts of s that no worker holds yet: those
// in the due set with their due time, then those in the ready stream
// (IDs of the index; due is now for them; some may be in flight by the
// time the caller acts, which Cancel reports).
func (q *Queue) Queued(ctx context.Context, s Shard, limit int64) ([]Entry, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	zs, err := q.rdb.ZRangeWithScores(ctx, s.DueKey(), 0, limit-1).Result()
	if err != nil {
		return nil, fmt.Errorf("queue: queued of %s: %w", s, err)
	}
	out := make([]Entry, 0, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		out = append(out, Entry{Shard: s, ID: id, Due: time.UnixMilli(int64(z.Score))})
	}
	if int64(len(out)) >= limit {
		return out, nil
	}
	ids, err := q.rdb.HKeys(ctx, s.IndexKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("queue: queued of %s: %w", s, err)
	}
	now := time.Now()
	for _, id := range ids {
		if int64(len(out)) >= limit {
			break
		}
		out = append(out, Entry{Shard: s, ID: id, Due: now})
	}
	return out, nil
}
