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
	// Interval is the time between sweeps (with ±20% jitter). Default 30s.
	Interval time.Duration
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

// Sweeper republishes attempts that are due in the call log (queued or
// retry, due more than Overdue ago) to the queue with AddOnly: an attempt
// still queued, ready or in flight in Redis is left as it is, one that Redis
// lost is queued again. Losing Redis therefore delays calls, never loses
// them; the fenced claim makes a republished duplicate harmless.
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
		opts.Interval = 30 * time.Second
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

// Run sweeps every Interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) {
	for {
		d := s.opts.Interval
		d += time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
		if !sleep(ctx, nil, d) {
			return
		}
		if _, err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
			s.m.LoopErrors.WithLabelValues("sweeper").Inc()
			s.log.Warn("sweep failed", "error", err)
		}
	}
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
			entries := make([]queue.Entry, len(due))
			for i, a := range due {
				entries[i] = queue.Entry{Shard: sh, ID: a.ID, Due: a.Due, Mode: queue.AddOnly}
			}
			res, err := s.opts.Queue.ScheduleBatch(ctx, entries)
			if err != nil {
				return total, err
			}
			added := 0
			for i, r := range res {
				if r == queue.Added {
					added++
					s.log.Info("attempt missing from the queue republished", "attempt", due[i].ID, "shard", sh.String(), "due", due[i].Due)
				}
			}
			total += added
			s.m.Swept.Add(float64(added))
			// A full batch with nothing missing means the rest is queued
			// too (it is all older work waiting in Redis); stop there.
			if len(due) < s.opts.Batch || added == 0 {
				break
			}
		}
	}
	return total, nil
}
