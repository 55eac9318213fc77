package dialer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	twilioapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/defaults"
	"github.com/delauto/delauto/internal/outcome"
	"github.com/delauto/delauto/internal/phone"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/ratelimit"
	"github.com/delauto/delauto/workers/store"
)

// TwilioCalls is the part of twilio-go's Voice API the worker uses;
// (*twilio.RestClient).Api is one.
type TwilioCalls interface {
	CreateCall(params *twilioapi.CreateCallParams) (*twilioapi.ApiV2010Call, error)
	ListCall(params *twilioapi.ListCallParams) ([]twilioapi.ApiV2010Call, error)
	FetchCall(sid string, params *twilioapi.FetchCallParams) (*twilioapi.ApiV2010Call, error)
}

// StatusEvents are the call progress events every call reports to its
// status callback.
var StatusEvents = []string{"initiated", "ringing", "answered", "completed"}

// ErrDraining is the reason an attempt is put back while its worker drains.
var ErrDraining = errors.New("worker draining: attempt put back for another worker")

// Options configure a Dialer.
type Options struct {
	// Store is the call log (required).
	Store *store.Store
	// Redis holds the account's rate limiter and the outcome stream (required).
	Redis redis.UniversalClient
	// Twilio places the calls (required).
	Twilio TwilioCalls
	// AccountSID is the Twilio account; its limiter is shared by every
	// worker calling from it (required).
	AccountSID string
	// Campaign is the campaign in force (required).
	Campaign campaignfile.Source
	// CallbackURL overrides the campaign's public callback base URL.
	CallbackURL string
	// Owner names this worker in claims (required).
	Owner string
	// Lease is how long a claim lasts without renewal; it is renewed every
	// Lease/3 while the attempt is held. Default 30s.
	Lease time.Duration
	// TwilioTimeout is the Twilio client's timeout for one request (the
	// client is built with it): a create-call request is sent only while
	// the claim's last confirmed lease covers it whole. Default 10s.
	TwilioTimeout time.Duration
	// MaxWait is the longest wait for a rate-limit slot; when the next slot
	// is further away, nothing is booked and the attempt is put back for
	// about then. Default: derived (Timing.Derive), below the lease.
	MaxWait time.Duration
	// RateLimitRetries is how many times a create-call request answered 429
	// is tried again while the attempt is held, before it is released.
	// Default 4; negative: none.
	RateLimitRetries int
	// RateLimitBackoff is the first wait after a 429, doubled each time (up
	// to 8s), with jitter. Default 500ms.
	RateLimitBackoff time.Duration
	// RateHeadroom is the fraction of the account's calls-per-second limit
	// left unused, so that calls whose requests are delayed a little on the
	// way (network and scheduling jitter) never reach Twilio more than the
	// limit within one second. Default 0.05; negative: none.
	RateHeadroom float64
	// RecordTimeout is how long a store write that failed (store unavailable)
	// is retried before the claim is left to expire and the recovery resolver takes
	// over. Default 2m.
	RecordTimeout time.Duration
	// Now is the clock of the calling-hours and delivery-window checks
	// (tests); default time.Now. Leases and the rate limit keep real time.
	Now func() time.Time
	// Metrics; default unregistered metrics.
	Metrics *Metrics
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Dialer is the per-attempt pipeline, a queue handler: fenced claim,
// checks, rate limit, dial, record. It is safe for concurrent use.
type Dialer struct {
	opts Options
	log  *slog.Logger
	m    *Metrics

	mu      sync.Mutex
	src     any // the campaignfile.Config pointer cur was compiled from
	cur     *Campaign
	curErr  error
	limiter *ratelimit.Limiter
	limCPS  float64
	margin  time.Duration // Timing.Margin: lease kept free by the guard

	dialErrAt atomic.Int64 // Unix second a dial error was last flagged

	yield     atomic.Pointer[chan struct{}]
	inflight  atomic.Int64
	limitedAt atomic.Int64 // Unix second the campaign was last flagged rate limited
	calls     callCount
}

// New checks the options and returns a Dialer. It fails when the campaign
// in force cannot be dialed.
func New(opts Options) (*Dialer, error) {
	var missing []string
	for _, c := range []struct {
		ok   bool
		name string
	}{{opts.Store != nil, "Store"}, {opts.Redis != nil, "Redis"}, {opts.Twilio != nil, "Twilio"},
		{opts.AccountSID != "", "AccountSID"}, {opts.Campaign != nil, "Campaign"}, {opts.Owner != "", "Owner"}} {
		if !c.ok {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("dialer: missing %v", missing)
	}
	if opts.Lease < 0 || (opts.Lease > 0 && opts.Lease < 3*time.Millisecond) {
		return nil, fmt.Errorf("dialer: lease %s is too short", opts.Lease)
	}
	tm, err := Timing{Lease: opts.Lease, TwilioTimeout: opts.TwilioTimeout, MaxWait: opts.MaxWait}.Derive()
	if err != nil {
		return nil, fmt.Errorf("dialer: %w", err)
	}
	opts.Lease, opts.TwilioTimeout, opts.MaxWait = tm.Lease, tm.TwilioTimeout, tm.MaxWait
	if opts.RateLimitRetries == 0 {
		opts.RateLimitRetries = 4
	}
	defaults.Positive(&opts.RateLimitBackoff, 500*time.Millisecond)
	defaults.Positive(&opts.RecordTimeout, 2*time.Minute)
	switch {
	case opts.RateHeadroom == 0:
		opts.RateHeadroom = 0.05
	case opts.RateHeadroom < 0:
		opts.RateHeadroom = 0
	case opts.RateHeadroom >= 0.5:
		return nil, fmt.Errorf("dialer: rate headroom %v must be below 0.5", opts.RateHeadroom)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Metrics == nil {
		opts.Metrics, _ = NewMetrics(nil)
	}
	defaults.Zero(&opts.Logger, slog.Default())
	d := &Dialer{opts: opts, log: opts.Logger.With("component", "dialer"), m: opts.Metrics, margin: tm.Margin()}
	ch := make(chan struct{})
	d.yield.Store(&ch)
	if _, err := d.Campaign(); err != nil {
		return nil, err
	}
	return d, nil
}

// Campaign is the campaign in force, compiled. When a changed campaign does
// not compile, the last good one stays in force and the error is logged.
func (d *Dialer) Campaign() (*Campaign, error) {
	src := d.opts.Campaign.Current()
	d.mu.Lock()
	defer d.mu.Unlock()
	if any(src) == d.src && (d.cur != nil || d.curErr != nil) {
		if d.cur != nil {
			return d.cur, nil
		}
		return nil, d.curErr
	}
	d.src = src
	c, err := Compile(src, d.opts.CallbackURL)
	if err != nil {
		if d.cur != nil {
			d.log.Error("the changed campaign cannot be dialed; keeping the previous one", "error", err)
			return d.cur, nil
		}
		d.curErr = err
		return nil, err
	}
	if d.cur != nil {
		d.log.Info("campaign changed", "campaign", c.Key, "callsPerSecond", c.CallsPerSecond, "fromNumbers", len(c.From), "suspended", c.Suspended)
	}
	d.cur, d.curErr = c, nil
	return c, nil
}

// limiterFor returns the account's limiter at the campaign's rate, less the
// headroom.
func (d *Dialer) limiterFor(c *Campaign) (*ratelimit.Limiter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.limiter != nil && d.limCPS == c.CallsPerSecond {
		return d.limiter, nil
	}
	l, err := ratelimit.New(d.opts.Redis, d.opts.AccountSID, c.CallsPerSecond*(1-d.opts.RateHeadroom),
		ratelimit.Options{MaxWait: d.opts.MaxWait, Metrics: d.m.Limiter})
	if err != nil {
		return nil, err
	}
	d.limiter, d.limCPS = l, c.CallsPerSecond
	return l, nil
}

// Yield makes handlers that have not dialed yet put their attempts back for
// other workers; calls already being placed finish. The worker yields when
// it drains, stops or loses a store.
func (d *Dialer) Yield() {
	ch := *d.yield.Load()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// Resume ends a Yield.
func (d *Dialer) Resume() {
	if d.Yielding() {
		ch := make(chan struct{})
		d.yield.Store(&ch)
	}
}

// Yielding reports whether Yield is in force.
func (d *Dialer) Yielding() bool {
	select {
	case <-*d.yield.Load():
		return true
	default:
		return false
	}
}

// InFlight is the number of attempts being handled.
func (d *Dialer) InFlight() int64 { return d.inflight.Load() }

// run is one handler run.
type run struct {
	m       queue.Message
	c       *Campaign
	start   time.Time
	yield   <-chan struct{}
	ctx     context.Context // the handler's: cancelled on abort or lost queue lease
	dialed  bool            // the dial step ran
	claimed *store.Attempt
	res     store.DialResult
	dialErr error
	check   string // a check that stopped the attempt before a request was sent
}

// storeRetry is how soon an attempt whose claim failed (store unavailable)
// is tried again.
const storeRetry = 5 * time.Second

// lineBusyRetry is how soon an attempt is tried again whose number another
// attempt holds (dialing, in doubt, or its call going on).
const lineBusyRetry = 10 * time.Second

// Handle runs one attempt; it is the queue's handler. Its outcome is durable
// in the call log before it returns (or, when the store stays unavailable,
// it returns an error and the entry is redelivered).
func (d *Dialer) Handle(ctx context.Context, m queue.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	yield := *d.yield.Load()
	c, err := d.Campaign()
	if err != nil {
		return queue.Retry(time.Minute, err)
	}
	select {
	case <-yield:
		d.m.Checks.WithLabelValues("draining").Inc()
		return queue.Retry(0, ErrDraining)
	default:
	}
	if c.Suspended {
		d.m.Checks.WithLabelValues("suspended").Inc()
		return queue.Retry(time.Second, errors.New("campaign suspended"))
	}
	d.m.InFlight.Inc()
	d.inflight.Add(1)
	defer func() { d.m.InFlight.Dec(); d.inflight.Add(-1) }()
	r := &run{m: m, c: c, start: time.Now(), yield: yield, ctx: ctx}
	// Store writes are not cut short by the handler's context: a call
	// placed must be recorded. They are bounded by the store's timeouts.
	sctx := context.WithoutCancel(ctx)
	a, err := d.opts.Store.DialSequence(sctx, m.ID, d.opts.Owner, d.opts.Lease, func(_ context.Context, a *store.Attempt) (store.DialResult, error) {
		r.dialed, r.claimed = true, a
		r.res, r.dialErr = d.dial(r, a)
		return r.res, r.dialErr
	})
	return d.settle(r, a, err)
}

// settle turns DialSequence's result into the queue outcome.
func (d *Dialer) settle(r *run, a *store.Attempt, err error) error {
	if !r.dialed {
		var nc *store.NotClaimableError
		switch {
		case err == nil: // the number opted out: cancelled
			d.m.Checks.WithLabelValues("opted_out").Inc()
			d.log.Info("number opted out: attempt cancelled", "attempt", a.ID, "to", phone.Mask(a.To))
			d.publish(a)
			return nil
		case errors.As(err, &nc) && nc.LineBusy:
			// One attempt per number at a time: put it back a little later.
			d.m.Checks.WithLabelValues("line_busy").Inc()
			return queue.Retry(lineBusyRetry, err)
		case errors.As(err, &nc):
			d.m.ClaimConflicts.WithLabelValues(string(nc.State)).Inc()
			if nc.State.Claimable() && nc.LeaseUntil == nil && nc.Due.After(time.Now()) {
				d.m.Checks.WithLabelValues("not_due").Inc()
				return queue.Retry(time.Until(nc.Due), err)
			}
			d.m.Checks.WithLabelValues("not_claimable").Inc()
			d.log.Debug("attempt not claimable; acknowledged", "attempt", r.m.ID, "state", nc.State)
			return nil
		case errors.Is(err, store.ErrNotFound):
			d.m.Checks.WithLabelValues("not_found").Inc()
			d.log.Warn("queued attempt is not in the call log; acknowledged", "attempt", r.m.ID, "shard", r.m.Shard.String())
			return nil
		case errors.Is(err, store.ErrStaleFence):
			d.m.FenceConflicts.Inc()
			return nil
		case errors.Is(err, store.ErrInvalidTransition):
			return nil
		case a != nil:
			// Claimed, then the opt-out check failed: nothing was dialed,
			// so put the attempt back (or fail it, if its number is unusable).
			r.claimed, r.dialed = a, true
			if errors.Is(err, store.ErrInvalidInput) {
				r.dialErr = &store.DialError{Kind: store.DialRejected, Err: err}
			} else {
				r.check = "store_unavailable"
				r.dialErr = &store.DialError{Kind: store.DialRetry, RetryAt: time.Now().Add(storeRetry), Err: err}
			}
			b, err := d.opts.Store.RecordDial(context.WithoutCancel(r.ctx), a.ID, a.Fence, r.res, r.dialErr)
			if err != nil {
				return d.retryRecord(r, err)
			}
			return d.recorded(r, b)
		default:
			d.log.Warn("claim failed; retrying", "attempt", r.m.ID, "error", err)
			return queue.Retry(storeRetry, err)
		}
	}
	switch {
	case err == nil:
		d.m.Dials.WithLabelValues("dialed").Inc()
		d.log.Debug("dialed", "attempt", a.ID, "callSid", a.CallSID, "fence", a.Fence)
		// The Delivery shows Calling now, not at the call's end.
		d.publish(a)
		return nil
	case err == r.dialErr:
		return d.recorded(r, a)
	}
	return d.retryRecord(r, err)
}

// recorded finishes an attempt whose failed dial was recorded.
func (d *Dialer) recorded(r *run, a *store.Attempt) error {
	var de *store.DialError
	if !errors.As(r.dialErr, &de) {
		de = &store.DialError{Kind: store.DialAmbiguous, Err: r.dialErr}
	}
	log := d.log.With("attempt", r.m.ID, "to", phone.Mask(r.claimed.To), "fence", r.claimed.Fence)
	switch de.Kind {
	case store.DialRetry:
		after := max(0, time.Until(de.RetryAt))
		if r.check != "" {
			d.m.Checks.WithLabelValues(r.check).Inc()
		} else {
			d.m.Dials.WithLabelValues("released").Inc()
		}
		switch r.check {
		case "draining", "slot_too_far":
			// Routine, and back within seconds: not worth an event each.
			log.Debug("attempt put back", "reason", scrub(de.Error()), "due", de.RetryAt)
		default:
			log.Info("attempt put back", "reason", scrub(de.Error()), "due", de.RetryAt)
			d.publish(a)
		}
		return queue.Retry(after, r.dialErr)
	case store.DialRejected:
		d.m.Dials.WithLabelValues("rejected").Inc()
		log.Warn("Twilio refused the number: attempt failed", "code", de.Code, "error", scrub(de.Error()))
		d.publish(a)
		return nil
	case store.DialCancelled:
		d.m.Checks.WithLabelValues(r.check).Inc()
		log.Info("attempt cancelled", "reason", de.Error())
		d.publish(a)
		return nil
	default:
		d.m.Dials.WithLabelValues("ambiguous").Inc()
		d.m.Ambiguous.WithLabelValues("dial").Inc()
		log.Warn("ambiguous dial: attempt marked unknown for reconciliation", "error", scrub(de.Error()))
		return nil
	}
}

// retryRecord repeats the record of the dial after a failed store write,
// while the store is unavailable, for up to RecordTimeout.
func (d *Dialer) retryRecord(r *run, err error) error {
	a := r.claimed
	log := d.log.With("attempt", a.ID, "fence", a.Fence, "callSid", r.res.CallSID)
	deadline := time.Now().Add(d.opts.RecordTimeout)
	backoff := 100 * time.Millisecond
	for {
		switch {
		case errors.Is(err, store.ErrStaleFence):
			d.m.FenceConflicts.Inc()
			log.Error("a newer claim of the attempt exists: this worker's outcome was not recorded", "error", err)
			return nil
		case errors.Is(err, store.ErrInvalidTransition), errors.Is(err, store.ErrDuplicate), errors.Is(err, store.ErrInvalidInput):
			// Also a repeated Release or MarkFailed that had applied.
			log.Warn("outcome not recorded: the attempt moved on", "error", err)
			var de *store.DialError
			if errors.As(r.dialErr, &de) && de.Kind == store.DialRetry {
				return queue.Retry(max(0, time.Until(de.RetryAt)), r.dialErr)
			}
			return nil
		}
		if time.Now().After(deadline) || r.ctx.Err() != nil {
			log.Error("cannot record the outcome; the claim's lease will run out and the recovery resolver takes over", "error", err)
			return fmt.Errorf("record attempt %s: %w", a.ID, err)
		}
		log.Warn("recording the outcome failed; retrying", "error", err, "in", backoff)
		if !sleep(r.ctx, nil, backoff) {
			continue
		}
		backoff = min(2*backoff, 5*time.Second)
		d.m.RecordRetries.Inc()
		var b *store.Attempt
		b, err = d.opts.Store.RecordDial(context.WithoutCancel(r.ctx), a.ID, a.Fence, r.res, r.dialErr)
		if err == nil {
			if r.dialErr == nil {
				d.m.Dials.WithLabelValues("dialed").Inc()
				d.publish(b)
				return nil
			}
			return d.recorded(r, b)
		}
	}
}

// dial checks the calling hours, waits for a slot on the account's rate
// limit and places the call, retrying 429s while it holds the attempt.
// Immediately before each create-call request (after the slot, after every
// 429) it checks again, in mayDial, everything that time can change: the
// calling hours and the delivery window, the drain, the handler's context,
// and that the claim's last confirmed lease covers the whole request.
func (d *Dialer) dial(r *run, a *store.Attempt) (store.DialResult, error) {
	c, ctx := r.c, r.ctx
	in, err := c.input(a)
	if err != nil {
		d.log.Warn("recipient time zone unknown; using the campaign's default", "attempt", a.ID, "error", err)
	}
	// Its delivery cancelled, deleted or being changed, or its number
	// opted out, while the call log could not be written: Redis knows.
	if err := d.checkBlocks(r, a); err != nil {
		return store.DialResult{}, err
	}
	// A first look before taking a slot: an attempt that came due outside
	// the hours goes back at once.
	if err := d.checkHours(r, a, in); err != nil {
		return store.DialResult{}, err
	}
	from := c.CallerID(a)
	params, err := d.params(c, a, from)
	if err != nil {
		r.check = "config"
		return store.DialResult{}, &store.DialError{Kind: store.DialRetry, RetryAt: time.Now().Add(time.Minute), Err: err}
	}
	keep := d.keep(ctx, a, r.start)
	defer keep.stop()
	backoff := d.opts.RateLimitBackoff
	for try := 0; ; try++ {
		if err := d.waitSlot(ctx, r.yield, keep, c); err != nil {
			at := time.Now()
			var far *ratelimit.WaitTooLongError
			switch {
			case errors.Is(err, ErrDraining):
				r.check = "draining"
			case errors.As(err, &far):
				// Come back while the booked slots still reach at least half
				// of MaxWait ahead (so none goes unused), spread so that
				// attempts put back together do not return together.
				r.check = "slot_too_far"
				at = at.Add(far.Wait - far.MaxWait + jitter(far.MaxWait/2))
			case ctx.Err() == nil && !keep.isLost():
				r.check = "limiter_unavailable" // Redis: try again a little later
				at = at.Add(storeRetry)
			}
			return store.DialResult{}, &store.DialError{Kind: store.DialRetry, RetryAt: at, Err: err}
		}
		if err := d.mayDial(r, a, in, keep); err != nil {
			return store.DialResult{}, err
		}
		if try == 0 {
			d.m.PickupToDial.Observe(time.Since(r.start).Seconds())
		}
		call, err := d.opts.Twilio.CreateCall(params)
		if err == nil {
			if call == nil || call.Sid == nil || *call.Sid == "" {
				d.m.TwilioErrors.WithLabelValues("no_sid").Inc()
				return store.DialResult{}, &store.DialError{Kind: store.DialAmbiguous, Err: errors.New("create call answered without a call SID")}
			}
			d.countCall(c)
			return store.DialResult{CallSID: *call.Sid, From: from}, nil
		}
		kind, code, label := classify(err)
		d.m.TwilioErrors.WithLabelValues(label).Inc()
		switch kind {
		case rateLimited:
			wait := jitter(backoff)
			backoff = min(2*backoff, 8*time.Second)
			if try < d.opts.RateLimitRetries {
				d.log.Debug("Twilio rate limited the call; retrying", "attempt", a.ID, "try", try+1, "in", wait)
				if sleep(ctx, r.yield, wait) {
					continue
				}
				wait = 0
			}
			return store.DialResult{}, &store.DialError{Kind: store.DialRetry, RetryAt: time.Now().Add(wait), Code: int32(code), Err: err}
		case rejected:
			return store.DialResult{}, &store.DialError{Kind: store.DialRejected, Code: int32(code), Err: err}
		case refused:
			d.log.Error("Twilio refused the request: the campaign's or the account's configuration (caller ID, permissions, credentials); the attempt waits and is retried in a minute",
				"attempt", a.ID, "code", code, "error", scrub(err.Error()))
			d.flagDialError(c, code, label, err)
			return store.DialResult{}, &store.DialError{Kind: store.DialRetry, RetryAt: time.Now().Add(time.Minute), Code: int32(code), Err: err}
		case notSent:
			return store.DialResult{}, &store.DialError{Kind: store.DialRetry, RetryAt: time.Now().Add(storeRetry), Err: err}
		default:
			return store.DialResult{}, &store.DialError{Kind: store.DialAmbiguous, Code: int32(code), Err: err}
		}
	}
}

// errCalledOff is why an attempt whose delivery the operator called off
// in Redis is cancelled.
var errCalledOff = errors.New("the delivery was cancelled or deleted (called off while the call log was unreachable)")

// errHeld is why an attempt whose delivery the operator holds in Redis is
// put back.
var errHeld = errors.New("the delivery's plan is changing (held until the operator has carried the change out)")

// errOptOutPending is why an attempt to a number whose opt-out MongoDB does
// not have yet is cancelled.
var errOptOutPending = errors.New("the number opted out (the opt-out waits in a worker's journal for the call log)")

// checkBlocks asks Redis, in one round trip, what may stand against the
// dial that the claim could not see in MongoDB (queue.DialBlocks). It
// cancels an attempt the operator called off (queue.CallOff) and one to a
// number whose opt-out is still on its way to MongoDB
// (queue.MarkOptOutPending: make chaos found three numbers called 11 s
// after they opted out during a PostgreSQL stop, before the journal writer
// had written their opt-outs); it puts back one the operator holds
// (queue.Hold: the plan is changing) and one Redis cannot say about. nil
// when it may be called.
func (d *Dialer) checkBlocks(r *run, a *store.Attempt) error {
	b, err := queue.DialBlocks(r.ctx, d.opts.Redis, r.m.Shard, a.ID, a.Delivery.Namespace, a.To)
	switch {
	case err != nil:
		r.check = "call_off_unknown"
		return &store.DialError{Kind: store.DialRetry, RetryAt: time.Now().Add(storeRetry), Err: err}
	case b.CalledOff:
		r.check = "called_off"
		return &store.DialError{Kind: store.DialCancelled, Err: errCalledOff}
	case b.OptOutPending:
		r.check = "opted_out"
		return &store.DialError{Kind: store.DialCancelled, Err: errOptOutPending}
	case b.Held:
		r.check = "held"
		return &store.DialError{Kind: store.DialRetry, RetryAt: time.Now().Add(storeRetry), Err: errHeld}
	}
	return nil
}

// checkHours puts the attempt back (to the next allowed time) outside the
// recipient's calling hours, and cancels it when no calling hours are left
// before its delivery window ends; nil when it may be called now.
func (d *Dialer) checkHours(r *run, a *store.Attempt, in schedule.Input) error {
	now := d.opts.Now()
	dec := r.c.Policy.Earliest(in, int(a.Number), now, now)
	if !dec.Call() {
		r.check = "window_ended"
		return &store.DialError{Kind: store.DialCancelled, Err: errors.New(dec.String())}
	}
	if dec.At.After(now.Add(time.Second)) {
		r.check = "outside_hours"
		return &store.DialError{Kind: store.DialRetry, RetryAt: dec.At, Err: fmt.Errorf("outside calling hours: %s", dec.Message)}
	}
	// The create-call request reaches Twilio a moment after this check:
	// the call must still be inside the hours then. In their last
	// hoursMargin the attempt waits for the next calling hours instead.
	if end := now.Add(hoursMargin); !r.c.Policy.InCallingHours(in.Location, end) {
		next := r.c.Policy.Earliest(in, int(a.Number), end, now)
		if !next.Call() {
			r.check = "window_ended"
			return &store.DialError{Kind: store.DialCancelled, Err: errors.New(next.String())}
		}
		r.check = "outside_hours"
		return &store.DialError{Kind: store.DialRetry, RetryAt: next.At, Err: fmt.Errorf("calling hours end within %s: %s", hoursMargin, next.Message)}
	}
	return nil
}

// hoursMargin is how long before the calling hours end the last call may
// be placed: the create-call request's way to Twilio on a loaded machine.
// make chaos found a call placed at 10:41:00.05 for hours ending 10:41,
// checked a moment before.
const hoursMargin = 5 * time.Second

// errLeaseUnconfirmed is why an attempt whose claim could not be renewed
// is put back instead of dialed.
var errLeaseUnconfirmed = errors.New("the claim's confirmed lease does not cover a create-call request (renewals failed: is MongoDB reachable?)")

// mayDial is the last check before a create-call request, after every
// wait: nil when the call may be placed now, else the attempt's outcome.
// It costs no store round trip.
func (d *Dialer) mayDial(r *run, a *store.Attempt, in schedule.Input, keep *keeper) error {
	retry := func(check string, at time.Time, err error) error {
		r.check = check
		return &store.DialError{Kind: store.DialRetry, RetryAt: at, Err: err}
	}
	now := time.Now()
	select {
	case <-r.yield:
		return retry("draining", now, ErrDraining)
	default:
	}
	if err := r.ctx.Err(); err != nil {
		// Aborted, or the queue entry went to another consumer.
		return retry("cancelled", now, fmt.Errorf("handler cancelled before dialing: %w", err))
	}
	if keep.isLost() {
		return retry("claim_lost", now, errors.New("claim lost before dialing"))
	}
	if !keep.covers(now, d.opts.TwilioTimeout+d.margin) {
		d.log.Warn("not dialing: the claim's lease is not confirmed for the whole request", "attempt", a.ID, "fence", a.Fence,
			"confirmedUntil", keep.confirmedUntil(), "twilioTimeout", d.opts.TwilioTimeout)
		return retry("lease_unconfirmed", now.Add(storeRetry), errLeaseUnconfirmed)
	}
	return d.checkHours(r, a, in)
}

// params are the create-call parameters of a claimed attempt.
func (d *Dialer) params(c *Campaign, a *store.Attempt, from string) (*twilioapi.CreateCallParams, error) {
	voice, err := callurls.For(c.CallbackURL, callurls.VoicePath, a.ID, a.Fence)
	if err != nil {
		return nil, err
	}
	status, err := callurls.For(c.CallbackURL, callurls.StatusPath, a.ID, a.Fence)
	if err != nil {
		return nil, err
	}
	p := &twilioapi.CreateCallParams{}
	p.SetTo(a.To).SetFrom(from).SetUrl(voice).SetMethod("POST").
		SetStatusCallback(status).SetStatusCallbackMethod("POST").SetStatusCallbackEvent(StatusEvents).
		SetTimeout(c.RingTimeout).SetTimeLimit(c.TimeLimit)
	if c.MachineDetection {
		amd, err := callurls.For(c.CallbackURL, callurls.AMDPath, a.ID, a.Fence)
		if err != nil {
			return nil, err
		}
		p.SetMachineDetection("Enable").SetAsyncAmd("true").
			SetAsyncAmdStatusCallback(amd).SetAsyncAmdStatusCallbackMethod("POST")
	}
	return p, nil
}

// waitSlot waits for the account limiter's next slot; a drain, a lost
// claim or the handler's end give the slot back and return an error. A slot
// further away than MaxWait is not booked (a *ratelimit.WaitTooLongError).
// A wait flags the campaign as rate limited for the operator (callrate).
func (d *Dialer) waitSlot(ctx context.Context, yield <-chan struct{}, keep *keeper, c *Campaign) error {
	lim, err := d.limiterFor(c)
	if err != nil {
		return err
	}
	res, err := lim.Reserve(ctx)
	if err != nil {
		if errors.Is(err, ratelimit.ErrWaitTooLong) {
			d.markLimited(c)
		}
		return err
	}
	wait := d.m.Limiter.Wait.WithLabelValues(d.opts.AccountSID)
	if res.Delay <= 0 {
		wait.Observe(0)
		return nil
	}
	d.markLimited(c)
	t := time.NewTimer(res.Delay)
	defer t.Stop()
	var why error
	select {
	case <-t.C:
		wait.Observe(res.Delay.Seconds())
		return nil
	case <-ctx.Done():
		why = ctx.Err()
	case <-yield:
		why = ErrDraining
	case <-keep.lost:
		why = errors.New("claim lost while waiting for a rate-limit slot")
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, _ = res.Cancel(cctx)
	return why
}

// markLimited flags the campaign as waiting on the account's rate limit, at
// most once a second.
func (d *Dialer) markLimited(c *Campaign) {
	now := time.Now().Unix()
	if last := d.limitedAt.Load(); last == now || !d.limitedAt.CompareAndSwap(last, now) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := callrate.MarkLimited(ctx, d.opts.Redis, c.Namespace, c.Name); err != nil {
		d.log.Debug("cannot flag the campaign as rate limited", "error", err)
	}
}

// flagDialError records a configuration error Twilio gave a dial of the
// campaign, at most once a second, so that the operator shows the campaign
// Degraded with the code (callrate.ReadDialError).
func (d *Dialer) flagDialError(c *Campaign, code int, label string, err error) {
	now := time.Now().Unix()
	if last := d.dialErrAt.Load(); last == now || !d.dialErrAt.CompareAndSwap(last, now) {
		return
	}
	msg := scrub(err.Error())
	if code == 0 {
		msg = label + ": " + msg
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := callrate.MarkDialError(ctx, d.opts.Redis, c.Namespace, c.Name, callrate.DialError{Code: code, Message: msg, At: time.Now().UTC()}); err != nil {
		d.log.Warn("cannot flag the campaign's dial error for the operator", "code", code, "error", err)
	}
}

// callCount adds up the calls placed in the current second; they are
// written to the campaign's calls-per-second counter (callrate) once the
// second is over, in one write.
type callCount struct {
	mu        sync.Mutex
	sec, n    int64
	namespace string
	name      string
}

// countCall adds a placed call to the campaign's calls-per-second counter.
func (d *Dialer) countCall(c *Campaign) {
	now := time.Now().Unix()
	cc := &d.calls
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.sec != now {
		d.flushCallsLocked()
		cc.sec, cc.namespace, cc.name = now, c.Namespace, c.Name
		time.AfterFunc(time.Until(time.Unix(now+1, 0))+50*time.Millisecond, func() {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			if cc.sec == now {
				d.flushCallsLocked()
			}
		})
	}
	cc.n++
}

func (d *Dialer) flushCallsLocked() {
	cc := &d.calls
	if cc.n == 0 {
		return
	}
	sec, n, ns, name := cc.sec, cc.n, cc.namespace, cc.name
	cc.n = 0
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := callrate.RecordN(ctx, d.opts.Redis, ns, name, time.Unix(sec, 0), n); err != nil {
			d.log.Debug("cannot count calls in the campaign's call rate", "error", err)
		}
	}()
}

// keeper renews a claim's lease while the attempt is held, and keeps the
// end of the last lease the store confirmed: computed from the time the
// claim or renewal request was made, on this process's clock, so it never
// lies after the lease's end in the store.
type keeper struct {
	lost     chan struct{}
	lostFlag atomic.Bool
	done     chan struct{}
	until    atomic.Int64 // UnixNano: end of the last confirmed lease
}

func (k *keeper) isLost() bool { return k.lostFlag.Load() }
func (k *keeper) stop()        { close(k.done) }

// covers reports whether the confirmed lease lasts beyond now+d.
func (k *keeper) covers(now time.Time, d time.Duration) bool {
	return now.Add(d).UnixNano() < k.until.Load()
}

func (k *keeper) confirmedUntil() time.Time { return time.Unix(0, k.until.Load()) }

// confirm records a lease the store granted at the request made at sent.
func (k *keeper) confirm(a *store.Attempt, sent time.Time, lease time.Duration) {
	until := sent.Add(lease)
	if a != nil && a.LeaseUntil != nil && a.LeaseUntil.Before(until) {
		until = *a.LeaseUntil
	}
	for {
		cur := k.until.Load()
		if until.UnixNano() <= cur || k.until.CompareAndSwap(cur, until.UnixNano()) {
			return
		}
	}
}

// keep starts renewing the claim a, which was requested at claimed (or
// later).
func (d *Dialer) keep(ctx context.Context, a *store.Attempt, claimed time.Time) *keeper {
	k := &keeper{lost: make(chan struct{}), done: make(chan struct{})}
	k.confirm(a, claimed, d.opts.Lease)
	go func() {
		t := time.NewTicker(d.opts.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-k.done:
				return
			case <-t.C:
			}
			sent := time.Now()
			b, err := d.opts.Store.Renew(context.WithoutCancel(ctx), a.ID, a.Fence, d.opts.Lease)
			switch {
			case err == nil:
				k.confirm(b, sent, d.opts.Lease)
			case errors.Is(err, store.ErrStaleFence), errors.Is(err, store.ErrInvalidTransition):
				d.log.Warn("claim lost while holding the attempt", "attempt", a.ID, "fence", a.Fence, "error", err)
				k.lostFlag.Store(true)
				close(k.lost)
				return
			default:
				// No dial once the confirmed lease no longer covers a
				// request (mayDial).
				d.log.Warn("cannot renew the claim's lease", "attempt", a.ID, "error", err, "confirmedUntil", k.confirmedUntil())
			}
		}
	}()
	return k
}

// publish tells the operator that the worker changed an attempt.
func (d *Dialer) publish(a *store.Attempt) {
	PublishOutcome(d.opts.Redis, d.log, a)
}

// PublishOutcome tells the operator that attempt a changed (an outcome
// event), logging a failure: the operator also reads the call log.
func PublishOutcome(rdb redis.UniversalClient, log *slog.Logger, a *store.Attempt) {
	if a == nil {
		return
	}
	outcome.PublishOrLog(rdb, log, outcome.Event{AttemptID: a.ID, Namespace: a.Delivery.Namespace, Name: a.Delivery.Name, State: string(a.State)})
}

func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// sleep waits d; false when ctx ended or yield closed first.
func sleep(ctx context.Context, yield <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-yield:
		return false
	}
}

// scrub masks phone numbers in s, for logs.
func scrub(s string) string { return phone.Scrub(s) }
