package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/periodic"
)

// Message is one delivery of an attempt to a handler.
type Message struct {
	// Shard the attempt belongs to.
	Shard Shard
	// ID is the attempt id.
	ID string
	// Due is the attempt's due time (the schedule time if it was scheduled
	// for a time already past).
	Due time.Time
	// EntryID is the ready-stream entry id.
	EntryID string
	// Deliveries counts handler runs of this entry including this one: 1 on
	// the first delivery, more when taken over from a consumer that died or
	// after the handler returned an error.
	Deliveries int64
}

// Handler runs one attempt. It must make its outcome durable (the call log
// in MongoDB) before returning, because the entry is acknowledged after it
// returns. Its context is cancelled when the consumer is aborted, when the
// lease was taken over by another consumer, or after HandlerTimeout.
//
// The returned error decides what happens to the entry:
//   - nil: acknowledged and removed;
//   - Retry(after, err): acknowledged and scheduled again after the delay;
//   - Dead(err): moved to the dead-letter stream with err as the reason;
//   - any other error: left pending; it is delivered again (to any worker)
//     once its lease expires, and dead-lettered after MaxDeliveries.
type Handler func(ctx context.Context, m Message) error

type retryError struct {
	after time.Duration
	err   error
}

func (e *retryError) Error() string { return fmt.Sprintf("retry in %s: %v", e.after, e.err) }
func (e *retryError) Unwrap() error { return e.err }

// Retry is a handler outcome: acknowledge the entry and schedule the same
// attempt id again after the delay.
func Retry(after time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	return &retryError{after: after, err: err}
}

type deadError struct{ err error }

func (e *deadError) Error() string { return e.err.Error() }
func (e *deadError) Unwrap() error { return e.err }

// Dead is a handler outcome: give up on the entry now and move it to the
// dead-letter stream with err's text as the reason.
func Dead(err error) error {
	if err == nil {
		err = errors.New("dead-lettered by the handler")
	}
	return &deadError{err: err}
}

// ShardWeight is a shard a consumer reads and its share of the consumer's
// slots when several shards have work.
type ShardWeight struct {
	Shard Shard
	// Weight is relative to the other shards' weights. Default 1.
	Weight int
}

// ConsumerOptions configure a Consumer. Durations and counts left zero get
// the defaults noted.
type ConsumerOptions struct {
	// Shards to read, with weights.
	Shards []ShardWeight
	// Handler runs each attempt. Required.
	Handler Handler
	// Name is this consumer's name in the consumer groups; it must be unique
	// among live consumers. Default: host name, process id and a random
	// suffix.
	Name string
	// Concurrency is how many handlers run at once. Default 10. Each idle
	// shard's reader holds one slot while it waits for entries, so give a
	// consumer of many shards more slots than shards.
	Concurrency int
	// Block is how long one XREADGROUP waits for new entries; it also bounds
	// how long Run takes to stop reading. Default 1s.
	Block time.Duration
	// Lease is how long an entry may go without its holder extending it
	// before another consumer takes it over. Running handlers' leases are
	// extended every Lease/3. Default 15s.
	Lease time.Duration
	// ReclaimInterval is how often expired leases are looked for. Recovery
	// after a crash takes at most Lease+ReclaimInterval. Default 1s.
	ReclaimInterval time.Duration
	// MaxDeliveries is how many times an entry is handed to a handler that
	// returns no outcome before it is dead-lettered. Default 5.
	MaxDeliveries int
	// AckBatch is the most outcomes acknowledged in one script call; a
	// batch is flushed when full or AckInterval after its first outcome.
	// Defaults 256 and 2ms.
	AckBatch    int
	AckInterval time.Duration
	// ReadLinger is how long a reader that got fewer than half the
	// concurrency in free slots waits for more to be released before
	// reading, so a saturated consumer reads in batches. Default 500µs;
	// negative disables.
	ReadLinger time.Duration
	// HandlerTimeout bounds each handler run (its context is cancelled).
	// Default: none.
	HandlerTimeout time.Duration
	// DrainTimeout is how long Run waits for running handlers once ctx is
	// done before aborting them. Default: wait until they finish or Abort
	// is called.
	DrainTimeout time.Duration
	// NoPromoter turns off the promoter Run otherwise runs for its shards.
	NoPromoter bool
	// Promoter configures that promoter.
	Promoter PromoterOptions
}

// Consumer reads attempts from shards' ready streams and runs a handler on
// each with bounded concurrency, acknowledging outcomes in batches, taking
// over entries of dead consumers and dead-lettering poison entries.
type Consumer struct {
	q      *Queue
	opts   ConsumerOptions
	name   string
	shards []*shardState
	pool   *slotPool
	acks   chan ack

	base     context.Context // handler contexts derive from it (values only)
	hctx     context.Context // cancelled by Abort
	hcancel  context.CancelFunc
	work     chan job
	handlers sync.WaitGroup
	running  atomic.Int64 // handlers running
	started  atomic.Bool

	mu       sync.Mutex
	inflight map[flightKey]context.CancelFunc
}

type flightKey struct {
	shard int
	entry string
}

// shardState is a consumer's view of one shard.
type shardState struct {
	idx      int
	shard    Shard
	name     string
	keys     []string
	user     *slotUser // the reader's slots
	reclaim  *slotUser // the reclaimer's slots
	cursor   string
	pickup   prometheus.Observer
	lateness prometheus.Observer

	handled, failed, retried, reclaimed, dead, leaseLost prometheus.Counter
}

type ackKind uint8

const (
	ackDone ackKind = iota
	ackRetry
	ackDead
)

type ack struct {
	sh         *shardState
	kind       ackKind
	entry, id  string
	due        int64 // retry: new due ms; dead: original due ms
	reason     string
	deliveries int64
}

// NewConsumer returns a consumer; Run starts it.
func (q *Queue) NewConsumer(opts ConsumerOptions) (*Consumer, error) {
	if opts.Handler == nil {
		return nil, errors.New("queue: consumer needs a handler")
	}
	if len(opts.Shards) == 0 {
		return nil, errors.New("queue: consumer needs at least one shard")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 10
	}
	def(&opts.Block, time.Second)
	def(&opts.Lease, 15*time.Second)
	def(&opts.ReclaimInterval, time.Second)
	def(&opts.AckInterval, 2*time.Millisecond)
	def(&opts.ReadLinger, 500*time.Microsecond)
	if opts.MaxDeliveries <= 0 {
		opts.MaxDeliveries = 5
	}
	if opts.AckBatch <= 0 {
		opts.AckBatch = 256
	}
	if opts.Block < time.Millisecond || opts.Lease < 3*time.Millisecond || opts.ReclaimInterval < time.Millisecond {
		return nil, errors.New("queue: Block, Lease and ReclaimInterval must be at least a millisecond (Lease 3ms)")
	}
	if opts.Name == "" {
		opts.Name = defaultConsumerName()
	}
	c := &Consumer{
		q: q, opts: opts, name: opts.Name,
		pool:     newSlotPool(opts.Concurrency),
		acks:     make(chan ack, 2*opts.Concurrency),
		inflight: map[flightKey]context.CancelFunc{},
	}
	c.base = context.Background()
	c.hctx, c.hcancel = context.WithCancel(context.Background())
	c.work = make(chan job, opts.Concurrency)
	seen := map[Shard]bool{}
	for i, sw := range opts.Shards {
		if err := sw.Shard.Validate(); err != nil {
			return nil, err
		}
		if seen[sw.Shard] {
			return nil, fmt.Errorf("queue: shard %s listed twice", sw.Shard)
		}
		seen[sw.Shard] = true
		w := float64(sw.Weight)
		if w <= 0 {
			w = 1
		}
		name := sw.Shard.String()
		m := q.metrics
		c.shards = append(c.shards, &shardState{
			idx: i, shard: sw.Shard, name: name, keys: sw.Shard.keys(),
			user: c.pool.addUser(w, true), reclaim: c.pool.addUser(w, false), cursor: "0-0",
			pickup:   m.PickupLatency.WithLabelValues(name),
			lateness: m.ScheduleLateness.WithLabelValues(name),
			handled:  m.Handled.WithLabelValues(name), failed: m.Failed.WithLabelValues(name),
			retried: m.Retried.WithLabelValues(name), reclaimed: m.Reclaimed.WithLabelValues(name),
			dead: m.DeadLettered.WithLabelValues(name), leaseLost: m.LeaseLost.WithLabelValues(name),
		})
	}
	return c, nil
}

func defaultConsumerName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Name is the consumer's name in the consumer groups.
func (c *Consumer) Name() string { return c.name }

// Abort cancels the contexts of running handlers (the "second signal" during
// a drain). Their entries stay pending unless the handlers still return an
// outcome, and are taken over by another consumer after the lease.
func (c *Consumer) Abort() {
	c.hcancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cancel := range c.inflight {
		cancel()
	}
}

// Run reads and handles attempts until ctx is done, then drains: it stops
// reading, waits for running handlers (see DrainTimeout and Abort), flushes
// their acknowledgements, leaves the consumer groups if it holds nothing,
// and returns. A Consumer runs once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("queue: a consumer runs only once")
	}
	defer c.hcancel()
	// Handler contexts carry ctx's values but not its cancellation, and
	// are not children of a shared context (no lock shared by every
	// handler): Abort and lease loss cancel them one by one.
	c.base = context.WithoutCancel(ctx)
	for _, sh := range c.shards {
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			err := c.q.EnsureGroup(ctx, sh.shard)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			c.q.log.Warn("queue consumer: cannot create consumer group, retrying", "shard", sh.name, "err", err, "retry_in", backoff)
			if !periodic.Sleep(ctx, backoff) {
				return nil
			}
		}
	}
	var readers, keepers sync.WaitGroup
	keepCtx, stopKeepers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopKeepers()
	if !c.opts.NoPromoter {
		shards := make([]Shard, len(c.shards))
		for i, sh := range c.shards {
			shards[i] = sh.shard
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			_ = c.q.RunPromoter(ctx, shards, c.opts.Promoter)
		}()
	}
	ackDone := make(chan struct{})
	go c.acker(ackDone)
	for i := 0; i < c.opts.Concurrency; i++ {
		c.handlers.Add(1)
		go c.worker()
	}
	for _, sh := range c.shards {
		readers.Add(2)
		go func() { defer readers.Done(); c.read(ctx, sh) }()
		go func() { defer readers.Done(); c.reclaimLoop(ctx, sh) }()
		keepers.Add(1)
		go func() { defer keepers.Done(); c.extendLoop(keepCtx, sh) }()
	}
	<-ctx.Done()
	c.q.log.Info("queue consumer: draining", "consumer", c.name, "running_handlers", c.running.Load())
	if c.opts.DrainTimeout > 0 {
		t := time.AfterFunc(c.opts.DrainTimeout, func() {
			c.q.log.Warn("queue consumer: drain timeout, aborting handlers", "consumer", c.name)
			c.Abort()
		})
		defer t.Stop()
	}
	readers.Wait()
	close(c.work)
	c.handlers.Wait()
	stopKeepers()
	keepers.Wait()
	close(c.acks)
	<-ackDone
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	for _, sh := range c.shards {
		if err := leaveScript.Run(lctx, c.q.rdb, sh.keys, c.q.group, c.name).Err(); err != nil {
			c.q.log.Debug("queue consumer: leave group", "shard", sh.name, "err", err)
		}
	}
	c.q.log.Info("queue consumer: drained", "consumer", c.name)
	return nil
}

// read is one shard's reader: it reads as many new entries as it has free
// slots, blocking for at most Block.
func (c *Consumer) read(ctx context.Context, sh *shardState) {
	rctx := context.WithoutCancel(ctx) // a read in progress is finished, not lost
	backoff := 50 * time.Millisecond
	var linger *time.Timer
	if c.opts.ReadLinger > 0 {
		linger = time.NewTimer(time.Hour)
		linger.Stop()
	}
	args := &redis.XReadGroupArgs{Group: c.q.group, Consumer: c.name, Streams: []string{sh.keys[1], ">"}, Block: c.opts.Block}
	for ctx.Err() == nil {
		// An idle shard is probed with one slot, so it holds none that
		// busy shards need; a busy one reads as many as it may take.
		want := 1
		if sh.user.active {
			want = c.opts.Concurrency
		}
		n := c.pool.acquire(ctx, sh.user, want, false)
		if n == 0 {
			return
		}
		if linger != nil && want > 1 {
			// Saturated: wait briefly for more slots so reads stay batched.
			minBatch := (n + c.pool.limit(sh.user, want-n)) / 2
			if n < minBatch {
				linger.Reset(c.opts.ReadLinger)
			top:
				for n < minBatch {
					select {
					case <-c.pool.released:
						n += c.pool.tryAcquire(sh.user, want-n)
					case <-linger.C:
						break top
					}
				}
				linger.Stop()
			}
		}
		args.Count = int64(n)
		res, err := c.q.rdb.XReadGroup(rctx, args).Result()
		if err != nil {
			c.pool.release(sh.user, n)
			c.pool.setActive(sh.user, false)
			if errors.Is(err, redis.Nil) {
				continue
			}
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				err = c.q.EnsureGroup(ctx, sh.shard)
				if err == nil {
					continue
				}
			}
			c.q.log.Warn("queue consumer: read failed", "shard", sh.name, "err", err, "retry_in", backoff)
			if !periodic.Sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		var msgs []redis.XMessage
		if len(res) > 0 {
			msgs = res[0].Messages
		}
		c.pool.release(sh.user, n-len(msgs))
		c.pool.setActive(sh.user, len(msgs) > 0)
		for _, m := range msgs {
			id, _ := m.Values["id"].(string)
			dueStr, _ := m.Values["due"].(string)
			due, _ := strconv.ParseInt(dueStr, 10, 64)
			c.start(sh, sh.user, Message{Shard: sh.shard, ID: id, Due: time.UnixMilli(due), EntryID: m.ID, Deliveries: 1})
		}
	}
}

// job is a message handed to a handler goroutine, with the slot it holds.
type job struct {
	ctx    context.Context
	cancel context.CancelFunc
	sh     *shardState
	user   *slotUser
	key    flightKey
	m      Message
}

// start hands m to a handler goroutine; the caller holds a slot for it, so
// one of the Concurrency goroutines is free or about to be.
func (c *Consumer) start(sh *shardState, u *slotUser, m Message) {
	var ctx context.Context
	var cancel context.CancelFunc
	if c.opts.HandlerTimeout > 0 {
		ctx, cancel = context.WithTimeout(c.base, c.opts.HandlerTimeout)
	} else {
		ctx, cancel = context.WithCancel(c.base)
	}
	key := flightKey{sh.idx, m.EntryID}
	c.mu.Lock()
	c.inflight[key] = cancel
	c.mu.Unlock()
	if c.hctx.Err() != nil { // aborted: the handler starts cancelled
		cancel()
	}
	c.work <- job{ctx: ctx, cancel: cancel, sh: sh, user: u, key: key, m: m}
}

// worker is one of the Concurrency handler goroutines.
func (c *Consumer) worker() {
	defer c.handlers.Done()
	for j := range c.work {
		c.running.Add(1)
		c.handle(j.ctx, j.cancel, j.sh, j.user, j.key, j.m)
		c.running.Add(-1)
	}
}

func (c *Consumer) handle(ctx context.Context, cancel context.CancelFunc, sh *shardState, u *slotUser, key flightKey, m Message) {
	begin := time.Now()
	if m.Deliveries == 1 {
		sh.pickup.Observe(max(0, begin.Sub(m.Due).Seconds()))
		if at, ok := entryTime(m.EntryID); ok {
			sh.lateness.Observe(max(0, at.Sub(m.Due).Seconds()))
		}
	}
	var err error
	if m.ID == "" {
		err = Dead(errors.New("malformed ready entry: no attempt id"))
	} else {
		err = c.call(ctx, m)
	}
	cancel()
	c.mu.Lock()
	delete(c.inflight, key)
	c.mu.Unlock()
	a := ack{sh: sh, entry: m.EntryID, id: m.ID}
	var re *retryError
	var de *deadError
	switch {
	case err == nil:
		sh.handled.Inc()
	case errors.As(err, &re):
		a.kind, a.due = ackRetry, time.Now().Add(re.after).UnixMilli()
		sh.retried.Inc()
	case errors.As(err, &de):
		a.kind, a.due, a.reason, a.deliveries = ackDead, m.Due.UnixMilli(), de.Error(), m.Deliveries
	default:
		sh.failed.Inc()
		c.q.log.Warn("queue consumer: handler failed; redelivered after the lease",
			"shard", sh.name, "attempt", m.ID, "deliveries", m.Deliveries, "err", err)
		c.pool.release(u, 1)
		return
	}
	c.acks <- a
	c.pool.release(u, 1)
}

// call runs the handler, turning a panic into an error.
func (c *Consumer) call(ctx context.Context, m Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return c.opts.Handler(ctx, m)
}

// entryTime is when a stream entry was added (its id's millisecond part, on
// the server's clock).
func entryTime(id string) (time.Time, bool) {
	i := strings.IndexByte(id, '-')
	if i <= 0 {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(id[:i], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// acker batches outcomes and acknowledges them, until c.acks is closed and
// empty.
func (c *Consumer) acker(done chan<- struct{}) {
	defer close(done)
	batch := make([]ack, 0, c.opts.AckBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if len(batch) == 0 {
			a, ok := <-c.acks
			if !ok {
				return
			}
			batch = append(batch, a)
			timer.Reset(c.opts.AckInterval)
			continue
		}
		select {
		case a, ok := <-c.acks:
			if !ok {
				c.flush(batch)
				return
			}
			batch = append(batch, a)
			if len(batch) < c.opts.AckBatch {
				continue
			}
			timer.Stop()
		case <-timer.C:
		}
		c.flush(batch)
		batch = batch[:0]
	}
}

// flush acknowledges a batch, retrying while Redis is unreachable. Once the
// consumer is aborted it gives up after one failed try: the entries stay
// pending and are taken over after the lease.
func (c *Consumer) flush(batch []ack) {
	var calls []*scriptCall
	byShard := make(map[*shardState][]ack, 1)
	for _, a := range batch {
		byShard[a.sh] = append(byShard[a.sh], a)
	}
	for sh, as := range byShard {
		var na, nr, nd int
		for _, a := range as {
			switch a.kind {
			case ackDone:
				na++
			case ackRetry:
				nr++
			case ackDead:
				nd++
			}
		}
		args := make([]any, 0, 6+2*na+3*nr+6*nd)
		args = append(args, c.q.group, c.q.deadMax, sh.shard.WakeChannel(), na, nr, nd)
		for _, a := range as {
			if a.kind == ackDone {
				args = append(args, a.entry, a.id)
			}
		}
		for _, a := range as {
			if a.kind == ackRetry {
				args = append(args, a.entry, a.id, a.due)
			}
		}
		for _, a := range as {
			if a.kind == ackDead {
				args = append(args, a.entry, a.id, a.due, a.reason, a.deliveries, c.name)
			}
		}
		calls = append(calls, &scriptCall{script: ackScript, keys: sh.keys, args: args})
		if nr > 0 {
			defer c.q.wakeLocal(sh.shard)
		}
		if nd > 0 {
			sh.dead.Add(float64(nd))
		}
	}
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := runScripts(ctx, c.q.rdb, calls)
		cancel()
		if err == nil {
			return
		}
		if c.hctx.Err() != nil {
			c.q.log.Error("queue consumer: acknowledgements lost after abort; entries will be redelivered after the lease",
				"consumer", c.name, "entries", len(batch), "err", err)
			return
		}
		c.q.log.Warn("queue consumer: acknowledge failed, retrying", "consumer", c.name, "entries", len(batch), "err", err, "retry_in", backoff)
		time.Sleep(backoff)
	}
}

// reclaimLoop takes over entries whose lease expired (their consumer died or
// their handler failed) and dead-letters those delivered too often.
func (c *Consumer) reclaimLoop(ctx context.Context, sh *shardState) {
	periodic.Every(ctx, c.opts.ReclaimInterval, func(ctx context.Context) {
		for c.reclaimOnce(ctx, sh) {
		}
	})
}

// reclaimOnce runs one XAUTOCLAIM step; it reports whether another step may
// find more right away.
func (c *Consumer) reclaimOnce(ctx context.Context, sh *shardState) bool {
	actx, cancel := context.WithTimeout(ctx, c.opts.ReclaimInterval)
	n := c.pool.acquire(actx, sh.reclaim, min(100, c.opts.Concurrency), true)
	cancel()
	if n == 0 {
		return false
	}
	res, err := reclaimScript.Run(context.WithoutCancel(ctx), c.q.rdb, sh.keys, c.q.group, c.name,
		c.opts.Lease.Milliseconds(), sh.cursor, n, c.opts.MaxDeliveries, c.q.deadMax).Slice()
	if err != nil || len(res) != 3 {
		c.pool.release(sh.reclaim, n)
		if err != nil && !strings.HasPrefix(err.Error(), "NOGROUP") && ctx.Err() == nil {
			c.q.log.Warn("queue consumer: reclaim failed", "shard", sh.name, "err", err)
		}
		return false
	}
	sh.cursor, _ = res[0].(string)
	entries, _ := res[1].([]any)
	if nd, _ := res[2].(int64); nd > 0 {
		sh.dead.Add(float64(nd))
		c.q.log.Warn("queue consumer: dead-lettered entries delivered too often", "shard", sh.name, "count", nd)
	}
	c.pool.release(sh.reclaim, n-len(entries))
	for _, e := range entries {
		f, _ := e.([]any)
		if len(f) != 4 {
			continue
		}
		sid, _ := f[0].(string)
		id, _ := f[1].(string)
		dueStr, _ := f[2].(string)
		due, _ := strconv.ParseInt(dueStr, 10, 64)
		n, _ := f[3].(int64)
		sh.reclaimed.Inc()
		c.q.log.Info("queue consumer: took over an expired lease", "shard", sh.name, "attempt", id, "deliveries", n)
		c.start(sh, sh.reclaim, Message{Shard: sh.shard, ID: id, Due: time.UnixMilli(due), EntryID: sid, Deliveries: n})
	}
	return len(entries) == n && sh.cursor != "0-0"
}

// extendLoop keeps the leases of running handlers, and cancels handlers
// whose entries another consumer took over (after this one stalled).
func (c *Consumer) extendLoop(ctx context.Context, sh *shardState) {
	periodic.Every(ctx, c.opts.Lease/3, func(ctx context.Context) { c.extendOnce(ctx, sh) })
}

// extendOnce extends the leases of the shard's running handlers once.
func (c *Consumer) extendOnce(ctx context.Context, sh *shardState) {
	c.mu.Lock()
	var ids []string
	for k := range c.inflight {
		if k.shard == sh.idx {
			ids = append(ids, k.entry)
		}
	}
	c.mu.Unlock()
	for start := 0; start < len(ids); start += 500 {
		part := ids[start:min(start+500, len(ids))]
		args := make([]any, 0, 2+len(part))
		args = append(args, c.q.group, c.name)
		for _, id := range part {
			args = append(args, id)
		}
		lost, err := extendScript.Run(ctx, c.q.rdb, sh.keys, args...).StringSlice()
		if err != nil {
			if ctx.Err() == nil {
				c.q.log.Warn("queue consumer: extend leases failed", "shard", sh.name, "err", err)
			}
			return
		}
		for _, id := range lost {
			c.mu.Lock()
			cancel := c.inflight[flightKey{sh.idx, id}]
			c.mu.Unlock()
			if cancel != nil {
				sh.leaseLost.Inc()
				c.q.log.Warn("queue consumer: lease lost to another consumer; cancelling the handler", "shard", sh.name, "entry", id)
				cancel()
			}
		}
	}
}
