package dialer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

// SweeperOptions configure a Sweeper.
type SweeperOptions struct {
	// Store and Queue are the call log and the dispatch queue (required).
	Store *store.Store
	Queue *queue.Queue
	// Campaign is the campaign as namespace/name (required).
	Campaign string
	// Shards are the queue shards swept (required).
	Shards []queue.Shard
	// Interval is the time between periodic sweeps (with ±10% jitter), the
	// safety net for entries lost without a new Redis incarnation (a flush,
	// an eviction). Default 5m.
	Interval time.Duration
	// WatchInterval is how often the Redis incarnation (its servers' run
	// ids) is checked. A new one (a restart, a failover), which may have
	// lost entries, makes the sweeper republish the shards' whole queues at
	// once. Default 5s.
	WatchInterval time.Duration
	// Ready, when set, holds the sweeper while it returns an error (the
	// worker's readiness: Redis and MongoDB reachable).
	Ready func() error
	// Overdue is how late an attempt must be before it is republished, so
	// fresh attempts on their way through Redis are left alone. Default 30s.
	Overdue time.Duration
	// Batch is the most attempts read per shard and step. Default 500.
	Batch int
	// Metrics; default unregistered metrics.
	Metrics *Metrics
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Sweeper republishes attempts of the call log that Redis lost to the
// queue with AddOnly: an attempt still queued, ready or in flight in Redis
// is left as it is, one that Redis lost is queued again, and the fenced
// claim makes a republished duplicate harmless. Losing Redis therefore
// delays calls, never loses them.
//
// When Redis is a new incarnation (restarted or failed over) it republishes
// every queued or retry attempt of its shards, future ones included, at
// once (Restore). Every Interval it also republishes the attempts due more
// than Overdue ago (RunOnce), for losses no restart announces. A periodic
// sweep reads every queued attempt of the shard where the server cannot
// filter on the due time (FerretDB), hence the long default interval.
type Sweeper struct {
	opts SweeperOptions
	log  *slog.Logger
	m    *Metrics
}

// NewSweeper checks the options and returns a Sweeper.
func NewSweeper(opts SweeperOptions) (*Sweeper, error) {
	if opts.Store == nil || opts.Queue == nil || opts.Campaign == "" || len(opts.Shards) == 0 {
		return nil, errors.New("sweeper: Store, Queue, Campaign and Shards are required")
	}
	for _, s := range opts.Shards {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Minute
	}
	if opts.WatchInterval <= 0 {
		opts.WatchInterval = 5 * time.Second
	}
	if opts.Overdue <= 0 {
		opts.Overdue = 30 * time.Second
	}
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if opts.Metrics == nil {
		opts.Metrics, _ = NewMetrics(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Sweeper{opts: opts, log: opts.Logger.With("component", "sweeper"), m: opts.Metrics}, nil
}

// Run sweeps until ctx ends: once WatchInterval after the start (the
// worker may have missed a restart while it was down), then every
// Interval, and Restore whenever Redis is a new incarnation.
func (s *Sweeper) Run(ctx context.Context) {
	var known string   // the Redis incarnation last seen
	restored := true   // whether known's queues are complete
	next := time.Now() // the next periodic sweep
	for sleep(ctx, nil, s.opts.WatchInterval) {
		id, err := s.opts.Queue.Incarnation(ctx)
		if err != nil {
			continue // Redis unreachable: readiness reports it
		}
		if known != "" && id != known {
			s.log.Warn("Redis is a new incarnation (restarted or failed over); republishing the queues")
			restored = false
		}
		known = id
		if s.opts.Ready != nil && s.opts.Ready() != nil {
			continue
		}
		if !restored {
			n, err := s.Restore(ctx)
			if err != nil {
				s.failed(ctx, err) // tried again at the next watch
				continue
			}
			s.log.Info("queues republished after a new Redis incarnation", "attempts", n)
			s.m.Sweeps.WithLabelValues("restore").Inc()
			restored = true
		} else if time.Now().Before(next) {
			continue
		} else if _, err := s.RunOnce(ctx); err != nil {
			s.failed(ctx, err)
		} else {
			s.m.Sweeps.WithLabelValues("periodic").Inc()
		}
		d := s.opts.Interval
		next = time.Now().Add(d + time.Duration(rand.Int64N(int64(d)/5+1)) - d/10)
	}
}

func (s *Sweeper) failed(ctx context.Context, err error) {
	if ctx.Err() == nil {
		s.m.LoopErrors.WithLabelValues("sweeper").Inc()
		s.log.Warn("sweep failed", "error", err)
	}
}

// Restore republishes every queued or retry attempt of the shards, whatever
// its due time, page by page, and returns how many were missing from Redis.
func (s *Sweeper) Restore(ctx context.Context) (int, error) {
	total := 0
	for _, sh := range s.opts.Shards {
		var c store.DueCursor
		for size := restoreBatch * s.opts.Batch; ; {
			page, err := s.opts.Store.ClaimableAfter(ctx, s.opts.Campaign, sh.Name, c, size)
			if err != nil {
				return total, err
			}
			if len(page) == 0 {
				break
			}
			n, err := s.republish(ctx, sh, page)
			total += n
			if err != nil {
				return total, err
			}
			if len(page) < size {
				break // the last page
			}
			c = c.After(&page[len(page)-1])
		}
	}
	return total, nil
}

// restoreBatch is Restore's page size in sweep batches: a restore reads a
// shard's whole queue, and on a server that sorts in memory (FerretDB)
// every page costs a read of all of it.
const restoreBatch = 10

// republish queues attempts with AddOnly and returns how many were missing.
func (s *Sweeper) republish(ctx context.Context, sh queue.Shard, as []store.Attempt) (int, error) {
	entries := make([]queue.Entry, len(as))
	for i, a := range as {
		entries[i] = queue.Entry{Shard: sh, ID: a.ID, Due: a.Due, Mode: queue.AddOnly}
	}
	res, err := s.opts.Queue.ScheduleBatch(ctx, entries)
	if err != nil {
		return 0, err
	}
	added := 0
	for i, r := range res {
		if r == queue.Added {
			added++
			s.log.Info("attempt missing from the queue republished", "attempt", as[i].ID, "shard", sh.String(), "due", as[i].Due)
		}
	}
	s.m.Swept.Add(float64(added))
	return added, nil
}

// RunOnce sweeps once and returns how many attempts it queued again.
func (s *Sweeper) RunOnce(ctx context.Context) (int, error) {
	before := time.Now().Add(-s.opts.Overdue)
	total := 0
	for _, sh := range s.opts.Shards {
		for {
			due, err := s.opts.Store.DueBefore(ctx, s.opts.Campaign, sh.Name, before, s.opts.Batch)
			if err != nil {
				return total, err
			}
			if len(due) == 0 {
				break
			}
			added, err := s.republish(ctx, sh, due)
			total += added
			if err != nil {
				return total, err
			}
			// A full batch with nothing missing means the rest is queued
			// too (it is all older work waiting in Redis); stop there.
			if len(due) < s.opts.Batch || added == 0 {
				break
			}
		}
	}
	return total, nil
}
