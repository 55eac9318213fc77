package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/delauto/delauto/internal/defaults"
	"github.com/delauto/delauto/internal/periodic"
	"github.com/delauto/delauto/workers/dialer"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

// RepublisherOptions configure a Republisher.
type RepublisherOptions struct {
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
	// lost entries, makes the republisher republish the shards' whole queues at
	// once. Default 5s.
	WatchInterval time.Duration
	// Ready, when set, holds the republisher while it returns an error (the
	// worker's readiness: Redis and MongoDB reachable, not draining).
	Ready func() error
	// Overdue is how late an attempt must be before it is republished, so
	// fresh attempts on their way through Redis are left alone. Default 30s.
	Overdue time.Duration
	// Batch is the sweep's unit of work: a sweep reads restoreBatch (10)
	// batches per page. Default 500.
	Batch int
	// Metrics; default unregistered metrics.
	Metrics *dialer.Metrics
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Republisher republishes attempts of the call log that Redis lost to the
// queue with AddOnly: an attempt still queued, ready or in flight in Redis
// is left as it is, one that Redis lost is queued again, and the fenced
// claim makes a republished duplicate harmless. Losing Redis therefore
// delays calls, never loses them.
//
// When Redis is a new incarnation (restarted or failed over) it republishes
// every queued or retry attempt of its shards, future ones included, at
// once (RestoreShard), and marks each shard complete in that incarnation
// in Redis, so a restart while no worker ran is caught by the next worker
// to start and other replicas skip what one has restored. Every Interval
// it also republishes the attempts due more than Overdue ago (RunOnce),
// for losses no restart announces. A periodic sweep reads every queued
// attempt of the shard where the server cannot filter on the due time
// (FerretDB), hence the long default interval.
type Republisher struct {
	opts RepublisherOptions
	log  *slog.Logger
	m    *dialer.Metrics
}

// NewRepublisher checks the options and returns a Republisher.
func NewRepublisher(opts RepublisherOptions) (*Republisher, error) {
	if opts.Store == nil || opts.Queue == nil || opts.Campaign == "" || len(opts.Shards) == 0 {
		return nil, errors.New("republisher: Store, Queue, Campaign and Shards are required")
	}
	for _, s := range opts.Shards {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	defaults.Positive(&opts.Interval, 5*time.Minute)
	defaults.Positive(&opts.WatchInterval, 5*time.Second)
	defaults.Positive(&opts.Overdue, 30*time.Second)
	defaults.Positive(&opts.Batch, 500)
	if opts.Metrics == nil {
		opts.Metrics, _ = dialer.NewMetrics(nil)
	}
	defaults.Zero(&opts.Logger, slog.Default())
	return &Republisher{opts: opts, log: opts.Logger.With("component", "republisher"), m: opts.Metrics}, nil
}

// Run sweeps until ctx ends. Every WatchInterval it reads the Redis
// incarnation; when it is not the one this republisher last checked (at the
// start too: Redis may have restarted while no worker ran), it restores
// each shard whose queue is not marked complete in it (RestoreShard, then
// queue.MarkComplete), so one replica's restore serves the others. It also
// runs RunOnce at the start and every Interval; a restore of every shard
// stands in for the pass due then.
func (s *Republisher) Run(ctx context.Context) {
	var known string   // the incarnation this republisher's shards are complete in
	next := time.Now() // the next periodic sweep
	var retryAt time.Time
	backoff := s.opts.WatchInterval
	incarnationFailing := false
	for periodic.Sleep(ctx, min(s.opts.WatchInterval, s.opts.Interval)) {
		if s.opts.Ready != nil && s.opts.Ready() != nil {
			continue
		}
		id, err := s.opts.Queue.Incarnation(ctx)
		switch {
		case err != nil:
			if !incarnationFailing { // once per outage: the periodic sweep goes on
				s.failed(ctx, fmt.Errorf("cannot tell whether Redis restarted: %w", err))
			}
			incarnationFailing = true
		case id != known && !time.Now().Before(retryAt):
			incarnationFailing = false
			if known != "" {
				s.log.Warn("Redis is a new incarnation (restarted or failed over): restoring the queues")
			}
			n, all, err := s.restoreIn(ctx, id)
			if err != nil {
				s.failed(ctx, err)
				retryAt, backoff = time.Now().Add(backoff), min(2*backoff, 5*time.Minute)
				break
			}
			if n > 0 {
				s.log.Info("queues restored from the call log", "attempts", n)
			}
			known, backoff = id, s.opts.WatchInterval
			if all {
				// Every shard's whole queue was just republished: a periodic
				// pass now would only race the attempts being dialed.
				next = s.nextPeriodic()
			}
		default:
			incarnationFailing = false
		}
		if time.Now().Before(next) {
			continue
		}
		if _, err := s.RunOnce(ctx); err != nil {
			s.failed(ctx, err)
		} else {
			s.m.Sweeps.WithLabelValues("periodic").Inc()
		}
		next = s.nextPeriodic()
	}
}

// nextPeriodic is when the periodic pass after one now runs: Interval ±10%.
func (s *Republisher) nextPeriodic() time.Time {
	d := s.opts.Interval
	return time.Now().Add(d + time.Duration(rand.Int64N(int64(d)/5+1)) - d/10)
}

func (s *Republisher) failed(ctx context.Context, err error) {
	if ctx.Err() == nil {
		s.m.LoopErrors.WithLabelValues("sweeper").Inc()
		s.log.Warn("sweep failed", "error", err)
	}
}

// restoreIn restores the shards whose queues are not marked complete in
// incarnation id and marks them; it returns how many attempts were missing
// and whether it restored every shard (none was complete already).
func (s *Republisher) restoreIn(ctx context.Context, id string) (int, bool, error) {
	total, all := 0, true
	for _, sh := range s.opts.Shards {
		done, err := s.opts.Queue.CompleteIn(ctx, sh)
		if err != nil {
			return total, false, err
		}
		if done == id {
			all = false
			continue
		}
		n, err := s.RestoreShard(ctx, sh)
		total += n
		if err != nil {
			return total, false, err
		}
		if err := s.opts.Queue.MarkComplete(ctx, sh, id); err != nil {
			return total, false, err
		}
		s.m.Sweeps.WithLabelValues("restore").Inc()
	}
	return total, all, nil
}

// RestoreShard republishes every queued or retry attempt of shard sh,
// whatever its due time, page by page, and returns how many were missing
// from Redis.
func (s *Republisher) RestoreShard(ctx context.Context, sh queue.Shard) (int, error) {
	total := 0
	var c store.DueCursor
	for size := restoreBatch * s.opts.Batch; ; {
		page, err := s.opts.Store.ClaimableAfter(ctx, s.opts.Campaign, sh.Name, c, size)
		if err != nil {
			return total, err
		}
		n, err := s.republish(ctx, sh, page)
		total += n
		if err != nil || len(page) < size {
			return total, err
		}
		c = c.After(&page[len(page)-1])
	}
}

// restoreBatch is Restore's page size in sweep batches: a restore reads a
// shard's whole queue, and on a server that sorts in memory (FerretDB)
// every page costs a read of all of it.
const restoreBatch = 10

// republish queues attempts with AddOnly and returns how many were missing.
func (s *Republisher) republish(ctx context.Context, sh queue.Shard, as []store.Attempt) (int, error) {
	if len(as) == 0 {
		return 0, nil
	}
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
		switch r {
		case queue.Added:
			added++
			s.log.Info("attempt missing from the queue republished", "attempt", as[i].ID, "shard", sh.String(), "due", as[i].Due)
		case queue.CalledOff:
			// Its delivery was cancelled or deleted while the operator could
			// not reach the call log: cancel it there now.
			if _, err := s.opts.Store.RequestCancel(ctx, as[i].ID, "called off"); err != nil {
				s.log.Warn("could not cancel a called-off attempt", "attempt", as[i].ID, "error", err)
			}
		}
	}
	s.m.Swept.Add(float64(added))
	return added, nil
}

// RunOnce republishes the attempts of the shards due more than Overdue ago
// that Redis lost, page by page, and returns how many it queued again. A
// shard's pass covers its whole overdue range: entries Redis lost may lie
// behind any number of overdue attempts still waiting in Redis (a backlog),
// so a page with nothing missing says nothing about the next one. Pages are
// restoreBatch sweep batches, as for RestoreShard: on a server that sorts
// in memory (FerretDB) every page costs a read of the shard's queue.
func (s *Republisher) RunOnce(ctx context.Context) (int, error) {
	before := time.Now().Add(-s.opts.Overdue)
	size := restoreBatch * s.opts.Batch
	total := 0
	for _, sh := range s.opts.Shards {
		var c store.DueCursor
		for {
			due, err := s.opts.Store.DueBefore(ctx, s.opts.Campaign, sh.Name, before, c, size)
			if err != nil {
				return total, err
			}
			added, err := s.republish(ctx, sh, due)
			total += added
			if err != nil {
				return total, err
			}
			if len(due) < size {
				break
			}
			c = c.After(&due[len(due)-1])
		}
	}
	return total, nil
}
