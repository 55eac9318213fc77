// Package ratelimit caps how fast all workers together create calls on one
// Twilio account: a GCRA (generic cell rate algorithm) limiter kept in Redis
// under the key {rl:<account>} and computed on the Redis server's clock
// (TIME inside the script), so workers with skewed clocks still share one
// schedule, on a single Redis or in Redis Cluster.
//
// # Reserve, not allow
//
// Reserve books the caller's slot and returns how long to wait for it: the
// theoretical arrival time (TAT) moves forward by one emission interval per
// reservation, so waiting callers are served in the order they asked (FIFO),
// each exactly one interval after the previous, and nobody polls. Wait
// reserves and sleeps.
//
// github.com/go-redis/redis_rate (v10) was evaluated and not used: it is
// allow-style. When a request is denied it books nothing and returns a
// RetryAfter, so every waiting worker sleeps and asks again at about the same
// moment; the first to arrive wins, later ones are denied again (a retry
// storm with no order), and a request that waited longest is not served
// first. It also keeps the TAT as floating-point seconds and expires keys in
// whole seconds. Changing it to reserve semantics means replacing its script,
// which is this package's script.
//
// # Cancelling
//
// A caller that gives up before its slot (Wait's context ends, or
// Reservation.Cancel) returns the slot only if nobody booked after it: then
// the TAT moves back one interval, exactly as if the reservation had never
// been made. If later reservations exist, their holders are already sleeping
// until their own slots; moving the TAT back would hand the next caller a slot
// that overlaps one of theirs and exceed the rate for a moment, so the
// cancelled slot is left unused instead. The limiter therefore never exceeds
// the rate, and under contention a cancellation costs at most one interval of
// throughput.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/promreg"
)

// Key is the Redis key of an account's limiter.
func Key(account string) string { return "{rl:" + account + "}" }

// reserveScript books the next slot. KEYS: the limiter key. ARGV: interval
// µs, burst tolerance µs, max wait µs (-1: none). Returns {wait µs, new TAT
// µs, now µs}, or {-1, wait µs, now µs} when the wait exceeds the maximum
// (nothing booked).
var reserveScript = redis.NewScript(`
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local maxwait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local at = tat - tau
if at < now then at = now end
local wait = at - now
if maxwait >= 0 and wait > maxwait then
  return {-1, wait, now}
end
local newtat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', newtat), 'PX', math.ceil((newtat - now) / 1000) + 1000)
return {wait, newtat, now}
`)

// cancelScript gives a reservation back if it is still the latest one.
// KEYS: the limiter key. ARGV: the reservation's TAT, interval µs. Returns 1
// when the slot was returned.
var cancelScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur == ARGV[1] then
  redis.call('SET', KEYS[1], string.format('%.0f', tonumber(cur) - tonumber(ARGV[2])), 'KEEPTTL')
  return 1
end
return 0
`)

// Metrics are the limiters' Prometheus metrics, labelled by account.
type Metrics struct {
	// Wait is how long callers waited for their slot.
	Wait *prometheus.HistogramVec
	// Returned counts cancelled reservations whose slot was given back.
	Returned *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered); metrics registered there before are reused.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "delauto", Subsystem: "ratelimit", Name: "wait_seconds",
			Help:    "Time callers waited for their call-creation slot on the account's limit.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"account"}),
		Returned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "delauto", Subsystem: "ratelimit", Name: "returned_total",
			Help: "Cancelled reservations whose slot was given back.",
		}, []string{"account"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.Wait, err = promreg.Register(reg, m.Wait); err != nil {
		return nil, err
	}
	if m.Returned, err = promreg.Register(reg, m.Returned); err != nil {
		return nil, err
	}
	return m, nil
}

// Options configure a Limiter.
type Options struct {
	// Burst is how many calls may start at once after an idle period.
	// Default 1: calls are spaced evenly, as Twilio's calls-per-second limit
	// expects.
	Burst int
	// MaxWait refuses (books nothing, returns a *WaitTooLongError, which is
	// ErrWaitTooLong) a slot further away than this. Default 0: no maximum.
	MaxWait time.Duration
	// Metrics; default unregistered metrics.
	Metrics *Metrics
}

// ErrWaitTooLong is returned (as a *WaitTooLongError) when the next slot is
// further away than MaxWait.
var ErrWaitTooLong = errors.New("ratelimit: next slot is further away than the maximum wait")

// WaitTooLongError is a refused reservation: the next slot was Wait away,
// beyond MaxWait; nothing was booked. errors.Is(err, ErrWaitTooLong).
type WaitTooLongError struct {
	// Wait is how far away the next slot was.
	Wait time.Duration
	// MaxWait is the limiter's maximum.
	MaxWait time.Duration
}

func (e *WaitTooLongError) Error() string {
	return fmt.Sprintf("%v (%s, maximum %s)", ErrWaitTooLong, e.Wait, e.MaxWait)
}

// Is reports ErrWaitTooLong.
func (e *WaitTooLongError) Is(target error) bool { return target == ErrWaitTooLong }

// Limiter is one account's shared rate limit. It is safe for concurrent use.
type Limiter struct {
	rdb      redis.UniversalClient
	account  string
	key      string
	interval int64 // µs
	tau      int64 // µs
	maxWait  int64 // µs, -1 none
	wait     prometheus.Observer
	returned prometheus.Counter
}

// New returns the limiter of account at perSecond calls per second.
func New(rdb redis.UniversalClient, account string, perSecond float64, opts Options) (*Limiter, error) {
	if account == "" || strings.ContainsAny(account, "{}") {
		return nil, fmt.Errorf("ratelimit: account %q must be non-empty and without '{' or '}'", account)
	}
	if !(perSecond > 0) || math.IsInf(perSecond, 0) || perSecond > 1e6 {
		return nil, fmt.Errorf("ratelimit: rate %v per second must be above 0 and at most 1e6", perSecond)
	}
	if opts.Burst <= 0 {
		opts.Burst = 1
	}
	if opts.Metrics == nil {
		opts.Metrics, _ = NewMetrics(nil)
	}
	interval := int64(math.Round(1e6 / perSecond))
	l := &Limiter{
		rdb: rdb, account: account, key: Key(account),
		interval: interval, tau: interval * int64(opts.Burst-1), maxWait: -1,
		wait:     opts.Metrics.Wait.WithLabelValues(account),
		returned: opts.Metrics.Returned.WithLabelValues(account),
	}
	if opts.MaxWait > 0 {
		l.maxWait = opts.MaxWait.Microseconds()
	}
	return l, nil
}

// Reservation is a booked slot.
type Reservation struct {
	l *Limiter
	// Delay is how long after the reservation was made the slot starts.
	Delay time.Duration
	// At is when the slot starts, on this process's clock.
	At time.Time
	// Slot is when the slot starts on the Redis server's clock: the instant
	// the limiter granted, free of this process's latency.
	Slot time.Time
	tat  int64
}

// Reserve books the next slot and says when it starts. The caller must wait
// until then (or Cancel).
func (l *Limiter) Reserve(ctx context.Context) (*Reservation, error) {
	vals, err := reserveScript.Run(ctx, l.rdb, []string{l.key}, l.interval, l.tau, l.maxWait).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("ratelimit: reserve on %s: %w", l.account, err)
	}
	if len(vals) != 3 {
		return nil, fmt.Errorf("ratelimit: reserve on %s: unexpected reply %v", l.account, vals)
	}
	if vals[0] < 0 {
		return nil, &WaitTooLongError{Wait: time.Duration(vals[1]) * time.Microsecond, MaxWait: time.Duration(l.maxWait) * time.Microsecond}
	}
	d := time.Duration(vals[0]) * time.Microsecond
	return &Reservation{l: l, Delay: d, At: time.Now().Add(d), Slot: time.UnixMicro(vals[2] + vals[0]), tat: vals[1]}, nil
}

// Wait books a slot and sleeps until it starts. If ctx ends first it gives
// the slot back when it can (see the package doc) and returns ctx's error.
func (l *Limiter) Wait(ctx context.Context) error {
	r, err := l.Reserve(ctx)
	if err != nil {
		return err
	}
	if r.Delay <= 0 {
		l.wait.Observe(0)
		return nil
	}
	t := time.NewTimer(r.Delay)
	defer t.Stop()
	select {
	case <-t.C:
		l.wait.Observe(r.Delay.Seconds())
		return nil
	case <-ctx.Done():
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_, _ = r.Cancel(cctx)
		return ctx.Err()
	}
}

// Cancel gives the slot back if no later reservation was made, and reports
// whether it did. Cancel a reservation only before its slot starts.
func (r *Reservation) Cancel(ctx context.Context) (bool, error) {
	n, err := cancelScript.Run(ctx, r.l.rdb, []string{r.l.key}, strconv.FormatInt(r.tat, 10), r.l.interval).Int64()
	if err != nil {
		return false, fmt.Errorf("ratelimit: cancel on %s: %w", r.l.account, err)
	}
	if n == 1 {
		r.l.returned.Inc()
	}
	return n == 1, nil
}
