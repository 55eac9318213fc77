package queue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// PromoterOptions configure RunPromoter.
type PromoterOptions struct {
	// SafetyTick is the longest a promoter sleeps without checking, in case
	// a wake-up was missed (pub/sub is best effort). Default 1s.
	SafetyTick time.Duration
	// Limit is how many entries one script call moves. Default 1000.
	Limit int
}

// RunPromoter moves due attempts of the shards from their due sets to their
// ready streams until ctx is done. Each shard's promoter sleeps until the
// earliest due time (as the server's clock counts it), or until the safety
// tick, or until an attempt scheduled in this process or announced on the
// shard's wake channel by another process is due earlier. Every worker may
// run one: promotion is one atomic script, so an entry is never promoted
// twice.
func (q *Queue) RunPromoter(ctx context.Context, shards []Shard, opts PromoterOptions) error {
	if opts.SafetyTick <= 0 {
		opts.SafetyTick = time.Second
	}
	if opts.Limit <= 0 {
		opts.Limit = 1000
	}
	if len(shards) == 0 {
		return fmt.Errorf("queue: promoter needs at least one shard")
	}
	wake := make(map[string]chan struct{}, len(shards))
	var channels []string
	for _, s := range shards {
		if err := s.Validate(); err != nil {
			return err
		}
		ch, cancel := q.subscribeLocal(s)
		defer cancel()
		wake[s.WakeChannel()] = ch
		channels = append(channels, s.WakeChannel())
	}
	var wg sync.WaitGroup
	ps := q.rdb.Subscribe(ctx, channels...)
	wg.Add(1)
	go func() {
		defer wg.Done()
		msgs := ps.Channel(redis.WithChannelSize(64))
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				if ch := wake[m.Channel]; ch != nil {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	for _, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.promoteLoop(ctx, s, wake[s.WakeChannel()], opts)
		}()
	}
	<-ctx.Done()
	ps.Close()
	wg.Wait()
	return nil
}

// promoteLoop is one shard's promoter.
func (q *Queue) promoteLoop(ctx context.Context, s Shard, wake <-chan struct{}, opts PromoterOptions) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	keys := s.keys()
	promoted := q.metrics.Promoted.WithLabelValues(s.String())
	backoff := 50 * time.Millisecond
	for {
		wait := opts.SafetyTick
		n, now, next, err := q.promote(ctx, keys, opts.Limit)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			q.log.Warn("queue promoter: promote failed", "shard", s.String(), "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(2*backoff, opts.SafetyTick)
		default:
			backoff = 50 * time.Millisecond
			promoted.Add(float64(n))
			if n >= int64(opts.Limit) {
				continue // more are due
			}
			if next >= 0 {
				wait = min(wait, time.Duration(next-now)*time.Millisecond)
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-wake:
			timer.Stop() // Go 1.23 timers: no stale tick after Stop or Reset
		}
	}
}

// promote runs the promotion script once: moved entries, server time and the
// next due time (-1 when none), both in Unix ms.
func (q *Queue) promote(ctx context.Context, keys []string, limit int) (n, now, next int64, err error) {
	vals, err := promoteScript.Run(ctx, q.rdb, keys, q.group, limit).Int64Slice()
	if err != nil {
		return 0, 0, 0, err
	}
	if len(vals) != 3 {
		return 0, 0, 0, fmt.Errorf("queue: promote: unexpected reply %v", vals)
	}
	return vals[0], vals[1], vals[2], nil
}

// PromoteNow runs shard s's promotion once and returns how many entries
// became ready. Tools and tests use it; workers run RunPromoter.
func (q *Queue) PromoteNow(ctx context.Context, s Shard) (int64, error) {
	if err := s.Validate(); err != nil {
		return 0, err
	}
	var total int64
	for {
		n, _, _, err := q.promote(ctx, s.keys(), 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}
