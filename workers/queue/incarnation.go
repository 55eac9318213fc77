package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Incarnation identifies the Redis servers that hold the queues: their run
// ids (each master's, on a Redis Cluster), which change when a server
// restarts or a replica takes over. A new incarnation may have lost queued
// entries (an empty restart, the last second of an append-only file, a
// replica that lagged), so whoever guards against lost entries (the
// sweeper) looks again at once.
func (q *Queue) Incarnation(ctx context.Context) (string, error) {
	if c, ok := q.rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		var ids []string
		err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			id, err := runID(ctx, m)
			if err != nil {
				return err
			}
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
			return nil
		})
		if err != nil {
			return "", err
		}
		slices.Sort(ids)
		return strings.Join(ids, ","), nil
	}
	return runID(ctx, q.rdb)
}

// runID reads one server's run_id from INFO server.
func runID(ctx context.Context, c redis.Cmdable) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("queue: INFO server: %w", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("queue: INFO server has no run_id")
}

// CompleteKey holds the Redis incarnation in which the shard's queue was
// last made complete from the call log (see MarkComplete). It lives in the
// shard's slot, so it goes when the shard's entries go.
func (s Shard) CompleteKey() string { return s.tag() + ":complete" }

// CompleteIn returns the incarnation the shard's queue was last made
// complete in, or "" if none was recorded (or Redis lost it).
func (q *Queue) CompleteIn(ctx context.Context, s Shard) (string, error) {
	v, err := q.rdb.Get(ctx, s.CompleteKey()).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// MarkComplete records that the shard's queue holds every queued attempt
// of the call log in Redis incarnation id.
func (q *Queue) MarkComplete(ctx context.Context, s Shard, id string) error {
	return q.rdb.Set(ctx, s.CompleteKey(), id, 0).Err()
}
