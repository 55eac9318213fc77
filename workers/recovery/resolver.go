package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twilio/twilio-go/client"
	twilioapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/defaults"
	"github.com/delauto/delauto/internal/periodic"
	"github.com/delauto/delauto/internal/phone"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/dialer"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

// ResolverOptions configure a Resolver.
type ResolverOptions struct {
	// Store, Queue, Redis, Twilio and Campaign are as for the Dialer (required).
	Store    *store.Store
	Queue    *queue.Queue
	Redis    redis.UniversalClient
	Twilio   dialer.TwilioCalls
	Campaign campaignfile.Source
	// CallbackURL overrides the campaign's (only checked when compiling it).
	CallbackURL string
	// Interval is the time between rounds (with ±10% jitter). Default 5s.
	Interval time.Duration
	// Ready, when set, skips rounds while it returns an error (the
	// worker's readiness: Redis and MongoDB reachable, not draining).
	Ready func() error
	// StaleAfter is how long past its lease a dialing claim is taken as
	// abandoned (its worker died mid-dial). Default 5s.
	StaleAfter time.Duration
	// Grace is how long an unknown attempt must stay without a call in
	// Twilio's list before it is released for a new dial. Default 2m.
	Grace time.Duration
	// ClockSkew is the margin between this process's, the store's and
	// Twilio's clocks when matching a call's creation time. Default 5s.
	ClockSkew time.Duration
	// FinalStatusMargin is how long, beyond the campaign's ring timeout and
	// time limit, a call Twilio accepted may go without any status change
	// before its final status is fetched from Twilio (status callbacks are
	// not retried, so a lost one would leave the attempt unfinished).
	// Default 2m.
	FinalStatusMargin time.Duration
	// Batch is the most attempts handled per list per round. Default 100.
	Batch int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Metrics; default unregistered metrics.
	Metrics *dialer.Metrics
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Resolver settles ambiguous dials without ever redialing blindly. Each
// round it
//
//   - marks unknown the dialing claims of the campaign whose lease ran out
//     StaleAfter ago (their worker died or hung mid-dial), and
//   - looks up each unknown attempt of the campaign at Twilio: calls to its
//     number (To) that started at or after its claim (StartTime>), plus calls
//     still queued (Twilio gives them no start time yet), created at or after
//     the claim, whose SID no other attempt has. Found: the attempt is
//     dialed with that SID (the earliest such call, from its own caller ID
//     first). Not found, and Grace has passed since it was marked unknown:
//     the call provably does not exist, so the attempt is released and queued
//     for a new dial.
//   - fetches from Twilio, by call SID, the calls the campaign placed whose
//     final status never arrived (no change for longer than the ring
//     timeout, the time limit and FinalStatusMargin together: Twilio does
//     not retry status callbacks), and finishes each attempt from what
//     Twilio says.
//
// An attempt a callback already moved is no longer unknown and is left
// alone. Every step is a fenced conditional write, so any number of
// replicas may run resolvers at once.
type Resolver struct {
	opts ResolverOptions
	log  *slog.Logger
	m    *dialer.Metrics
}

// NewResolver checks the options and returns a Resolver.
func NewResolver(opts ResolverOptions) (*Resolver, error) {
	if opts.Store == nil || opts.Queue == nil || opts.Twilio == nil || opts.Campaign == nil {
		return nil, errors.New("resolver: Store, Queue, Twilio and Campaign are required")
	}
	defaults.Positive(&opts.Interval, 5*time.Second)
	defaults.Positive(&opts.StaleAfter, 5*time.Second)
	defaults.Positive(&opts.Grace, 2*time.Minute)
	defaults.Positive(&opts.ClockSkew, 5*time.Second)
	defaults.Positive(&opts.FinalStatusMargin, workerpod.DefaultFinalStatusMargin)
	defaults.Positive(&opts.Batch, 100)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Metrics == nil {
		opts.Metrics, _ = dialer.NewMetrics(nil)
	}
	defaults.Zero(&opts.Logger, slog.Default())
	return &Resolver{opts: opts, log: opts.Logger.With("component", "resolver"), m: opts.Metrics}, nil
}

// Run resolves every Interval (±10%) until ctx ends, skipping rounds
// while Ready reports a problem. A failed round is logged and counted; the
// next one tries again.
func (r *Resolver) Run(ctx context.Context) {
	for {
		d := r.opts.Interval
		d += time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
		if !periodic.Sleep(ctx, d) {
			return
		}
		if r.opts.Ready != nil && r.opts.Ready() != nil {
			continue
		}
		if err := r.RunOnce(ctx); err != nil && ctx.Err() == nil {
			r.m.LoopErrors.WithLabelValues("reconciler").Inc()
			r.log.Warn("resolver round failed", "error", err)
		}
	}
}

// RunOnce runs one round.
func (r *Resolver) RunOnce(ctx context.Context) error {
	src := r.opts.Campaign.Current()
	c, err := dialer.Compile(src, r.opts.CallbackURL)
	if err != nil {
		return err
	}
	now := r.opts.Now()
	stale, err := r.opts.Store.StaleDialingIn(ctx, c.Key, now.Add(-r.opts.StaleAfter), r.opts.Batch)
	if err != nil {
		return err
	}
	var errs []error
	for i := range stale {
		a := &stale[i]
		_, err := r.opts.Store.MarkUnknown(ctx, a.ID, a.Fence, "the claim's lease ran out mid-dial (its worker went away)")
		switch {
		case err == nil:
			r.m.Ambiguous.WithLabelValues("stale_lease").Inc()
			r.log.Warn("abandoned dialing claim marked unknown", "attempt", a.ID, "owner", a.Owner, "leaseUntil", a.LeaseUntil)
		case errors.Is(err, store.ErrStaleFence), errors.Is(err, store.ErrInvalidTransition):
			// Its worker came back and recorded the dial, or another
			// replica got there first.
		default:
			errs = append(errs, err)
		}
	}
	unknown, err := r.opts.Store.UnknownIn(ctx, c.Key, now, r.opts.Batch)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for i := range unknown {
		if ctx.Err() != nil {
			break
		}
		if err := r.settle(ctx, c, &unknown[i], now); err != nil {
			errs = append(errs, err)
		}
	}
	quiet := time.Duration(c.RingTimeout+c.TimeLimit)*time.Second + r.opts.FinalStatusMargin
	unfinished, err := r.opts.Store.UnfinishedCallsIn(ctx, c.Key, now.Add(-quiet), r.opts.Batch)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for i := range unfinished {
		if ctx.Err() != nil {
			break
		}
		if err := r.finish(ctx, &unfinished[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// finish fetches the call of an attempt whose final status callback never
// came and applies what Twilio says, as the callback would have.
func (r *Resolver) finish(ctx context.Context, a *store.Attempt) error {
	log := r.log.With("attempt", a.ID, "callSid", a.CallSID, "state", a.State)
	if a.CallSID == "" {
		return nil // only an unknown attempt lacks a SID; settle handles those
	}
	call, err := r.opts.Twilio.FetchCall(a.CallSID, &twilioapi.FetchCallParams{})
	if err != nil {
		if isNotFound(err) {
			r.m.FinalStatusLookups.WithLabelValues("missing").Inc()
			log.Warn("Twilio does not know the call of an unfinished attempt", "error", phone.Scrub(err.Error()))
			return nil
		}
		return fmt.Errorf("fetch call %s of attempt %s: %w", a.CallSID, a.ID, err)
	}
	u := store.StatusUpdate{CallSID: a.CallSID, Seq: a.LastSeq + 1}
	if call.Status != nil {
		u.Status = *call.Status
	}
	if t, ok := twilioTime(call.EndTime); ok {
		u.At = t
	}
	if call.AnsweredBy != nil {
		u.AnsweredBy = *call.AnsweredBy
	}
	if call.Duration != nil {
		if n, err := strconv.ParseInt(*call.Duration, 10, 32); err == nil {
			u.DurationSec = int32(n)
		}
	}
	if !finalStatus(u.Status) {
		r.m.FinalStatusLookups.WithLabelValues("active").Inc()
		log.Info("call of an attempt without a final status still goes on at Twilio", "twilioStatus", u.Status)
		return nil
	}
	b, applied, err := r.opts.Store.ApplyCallStatus(ctx, store.CallRef{AttemptID: a.ID}, u)
	if err != nil {
		return fmt.Errorf("finish attempt %s from Twilio's call: %w", a.ID, err)
	}
	if !applied {
		return nil // a late callback got there first
	}
	r.m.FinalStatusLookups.WithLabelValues("finished").Inc()
	log.Warn("final status callback never came: attempt finished from Twilio's call record", "twilioStatus", u.Status, "result", b.Result)
	dialer.PublishOutcome(r.opts.Redis, r.log, b)
	return nil
}

// finalStatus reports whether a Twilio CallStatus ends the call.
func finalStatus(s string) bool {
	switch s {
	case "completed", "busy", "no-answer", "failed", "canceled":
		return true
	}
	return false
}

// isNotFound reports whether a Twilio REST error is a 404.
func isNotFound(err error) bool {
	var te *client.TwilioRestError
	return errors.As(err, &te) && te.Status == http.StatusNotFound
}

// settle looks for the call of one unknown attempt. Attributing a call by
// number and time is safe because one attempt per number holds it at a time
// (store.Claim's line hold): while this attempt is in doubt no other attempt
// to its number can have placed a call.
func (r *Resolver) settle(ctx context.Context, c *dialer.Campaign, a *store.Attempt, now time.Time) error {
	if a.ConflictSID != "" {
		// Twilio gave it a call already recorded on another attempt: a
		// person resolves it; never released for a new dial.
		r.log.Debug("unknown attempt with a conflicting call SID left for a person", "attempt", a.ID, "callSid", a.ConflictSID)
		return nil
	}
	since := a.UpdatedAt
	if a.ClaimedAt != nil {
		since = *a.ClaimedAt
	}
	since = since.Add(-r.opts.ClockSkew)
	sid, from, err := r.find(ctx, c, a, since)
	if err != nil {
		return fmt.Errorf("look up the call of attempt %s: %w", a.ID, err)
	}
	log := r.log.With("attempt", a.ID, "to", phone.Mask(a.To), "fence", a.Fence)
	if sid != "" {
		b, err := r.opts.Store.RecordDial(ctx, a.ID, a.Fence, store.DialResult{CallSID: sid, From: from}, nil)
		switch {
		case err == nil:
			r.m.AmbiguousResolved.WithLabelValues("found").Inc()
			log.Info("ambiguous dial reconciled: the call exists", "callSid", sid)
			dialer.PublishOutcome(r.opts.Redis, r.log, b)
			return nil
		case errors.Is(err, store.ErrInvalidTransition), errors.Is(err, store.ErrStaleFence):
			r.m.AmbiguousResolved.WithLabelValues("callback").Inc()
			return nil
		case errors.Is(err, store.ErrDuplicate):
			// Not a success: the call is another attempt's. The attempt
			// stays unknown with the conflict recorded (store.MarkDialed).
			r.m.AmbiguousResolved.WithLabelValues("conflict").Inc()
			log.Error("ambiguous dial matched a call recorded on another attempt: left unknown for a person", "callSid", sid, "error", err)
			return nil
		}
		return err
	}
	if now.Sub(a.UpdatedAt) < r.opts.Grace {
		return nil // not yet provably absent
	}
	b, err := r.opts.Store.RecordDial(ctx, a.ID, a.Fence, store.DialResult{},
		&store.DialError{Kind: store.DialRetry, RetryAt: now, Err: fmt.Errorf("reconciled: no call at Twilio %s after the ambiguous dial", r.opts.Grace)})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrInvalidTransition), errors.Is(err, store.ErrStaleFence):
		r.m.AmbiguousResolved.WithLabelValues("callback").Inc()
		return nil
	default:
		return err
	}
	r.m.AmbiguousResolved.WithLabelValues("absent").Inc()
	if b.State == store.StateCancelled {
		// Its delivery was called off meanwhile (store.RequestCancel).
		log.Info("ambiguous dial reconciled: no call was created; the attempt was called off, so it is cancelled")
		dialer.PublishOutcome(r.opts.Redis, r.log, b)
		return nil
	}
	log.Warn("ambiguous dial reconciled: no call was created; released for a new dial")
	shard, err := shardOf(c, a)
	if err == nil {
		_, err = r.opts.Queue.Schedule(ctx, shard, a.ID, b.Due)
	}
	if err != nil {
		// The republisher republishes it from the call log.
		log.Warn("released attempt not queued; the republisher will", "error", err)
	}
	dialer.PublishOutcome(r.opts.Redis, r.log, b)
	return nil
}

// find returns the SID and caller ID of the call the attempt made, if any.
func (r *Resolver) find(ctx context.Context, c *dialer.Campaign, a *store.Attempt, since time.Time) (string, string, error) {
	started := &twilioapi.ListCallParams{}
	started.SetTo(a.To).SetStartTimeAfter(since.UTC()).SetPageSize(50).SetLimit(200)
	queued := &twilioapi.ListCallParams{}
	queued.SetTo(a.To).SetStatus("queued").SetPageSize(50).SetLimit(200)
	type cand struct {
		sid, from string
		created   time.Time
	}
	var cands []cand
	seen := map[string]bool{}
	for _, p := range []*twilioapi.ListCallParams{started, queued} {
		calls, err := r.opts.Twilio.ListCall(p)
		if err != nil {
			return "", "", err
		}
		for _, call := range calls {
			if call.Sid == nil || seen[*call.Sid] {
				continue
			}
			seen[*call.Sid] = true
			created, ok := twilioTime(call.DateCreated)
			if !ok || created.Before(since) {
				continue
			}
			from := ""
			if call.From != nil {
				from = *call.From
			}
			cands = append(cands, cand{sid: *call.Sid, from: from, created: created})
		}
	}
	want := c.CallerID(a)
	sort.Slice(cands, func(i, j int) bool {
		if (cands[i].from == want) != (cands[j].from == want) {
			return cands[i].from == want
		}
		return cands[i].created.Before(cands[j].created)
	})
	for _, cd := range cands {
		other, err := r.opts.Store.GetByCallSID(ctx, cd.sid)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return "", "", err
		case other.ID != a.ID:
			continue // another attempt's call
		}
		if cd.from != "" && phone.Validate(cd.from) != nil {
			cd.from = ""
		}
		return cd.sid, cd.from, nil
	}
	return "", "", nil
}

// twilioTime parses Twilio's RFC 2822 timestamps.
func twilioTime(s *string) (time.Time, bool) {
	if s == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC1123Z, *s)
	return t, err == nil
}

// shardOf is the queue shard of a campaign's attempt.
func shardOf(c *dialer.Campaign, a *store.Attempt) (queue.Shard, error) {
	s := queue.Shard{Namespace: c.Namespace, Campaign: c.Name, Name: a.Shard}
	return s, s.Validate()
}
