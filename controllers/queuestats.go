package controllers

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/workers/queue"
)

// RedisQueueStats reads shard figures from the workers' Redis queues.
type RedisQueueStats struct {
	Queue *queue.Queue
}

// ShardStats implements QueueStats with one pipelined read for all shards.
func (r RedisQueueStats) ShardStats(ctx context.Context, namespace, campaign string, shards []string) (map[string]ShardQueueStats, error) {
	qs := make([]queue.Shard, len(shards))
	for i, s := range shards {
		qs[i] = queue.Shard{Namespace: namespace, Campaign: campaign, Name: s}
	}
	st, err := r.Queue.Stats(ctx, qs, time.Minute)
	if err != nil {
		return nil, err
	}
	out := make(map[string]ShardQueueStats, len(st))
	for _, s := range st {
		out[s.Shard.Name] = ShardQueueStats{
			DueNow:        s.Waiting(),
			Scheduled:     s.Scheduled,
			InFlight:      s.InFlight,
			OldestPending: s.OldestPendingAge,
		}
	}
	return out, nil
}

// RedisRates reads the per-campaign call counters the workers keep in Redis.
type RedisRates struct {
	Redis redis.UniversalClient
}

// Read implements RateReader.
func (r RedisRates) Read(ctx context.Context, namespace, campaign string) (float64, bool, error) {
	return callrate.Read(ctx, r.Redis, namespace, campaign, time.Now())
}

// AverageCallDuration implements CallDurations from the durations the
// workers' callback servers record for each answered call.
func (r RedisRates) AverageCallDuration(ctx context.Context, namespace, campaign string, now time.Time) (time.Duration, int64, error) {
	return callrate.AverageDuration(ctx, r.Redis, namespace, campaign, now)
}

// LastCall implements CallDurations: when the campaign last placed a call.
func (r RedisRates) LastCall(ctx context.Context, namespace, campaign string) (time.Time, error) {
	return callrate.LastCall(ctx, r.Redis, namespace, campaign)
}

// ShardMover moves the queued attempts of a shard the campaign no longer
// has to the shards that own them now.
type ShardMover interface {
	MoveQueued(ctx context.Context, namespace, campaign, from string, owner func(attemptID string) string) (moved int, err error)
}

// MoveQueued implements ShardMover. Each attempt is first queued on its new
// shard (same due time), then cancelled on the old one, so a crash in
// between leaves it queued twice (the fenced claim in the call log dials
// it once), never lost. One a worker of the old shard already holds stays
// with that worker, and its new copy is cancelled.
func (r RedisQueueStats) MoveQueued(ctx context.Context, namespace, campaign, from string, owner func(attemptID string) string) (int, error) {
	old := queue.Shard{Namespace: namespace, Campaign: campaign, Name: from}
	moved := 0
	for {
		entries, err := r.Queue.Queued(ctx, old, 1000)
		if err != nil || len(entries) == 0 {
			return moved, err
		}
		next := make([]queue.Entry, len(entries))
		refs := make([]queue.Ref, len(entries))
		for i, e := range entries {
			next[i] = queue.Entry{Shard: queue.Shard{Namespace: namespace, Campaign: campaign, Name: owner(e.ID)}, ID: e.ID, Due: e.Due}
			refs[i] = queue.Ref{Shard: old, ID: e.ID}
		}
		if _, err := r.Queue.ScheduleBatch(ctx, next); err != nil {
			return moved, err
		}
		res, err := r.Queue.CancelBatch(ctx, refs)
		if err != nil {
			return moved, err
		}
		var keep []queue.Ref
		pass := 0
		for i, rs := range res {
			switch rs {
			case queue.Cancelled:
				pass++
			case queue.InFlight:
				keep = append(keep, queue.Ref{Shard: next[i].Shard, ID: next[i].ID})
			}
		}
		if len(keep) > 0 {
			if _, err := r.Queue.CancelBatch(ctx, keep); err != nil {
				return moved, err
			}
		}
		moved += pass
		if pass == 0 {
			// What is left is in flight with the old shard's workers.
			return moved, nil
		}
	}
}

// DialError implements DialErrorReader.
func (r RedisRates) DialError(ctx context.Context, namespace, campaign string) (*callrate.DialError, error) {
	return callrate.ReadDialError(ctx, r.Redis, namespace, campaign)
}
