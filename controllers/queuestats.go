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

// DialError implements DialErrorReader.
func (r RedisRates) DialError(ctx context.Context, namespace, campaign string) (*callrate.DialError, error) {
	return callrate.ReadDialError(ctx, r.Redis, namespace, campaign)
}
