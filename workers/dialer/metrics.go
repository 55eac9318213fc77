package dialer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/delauto/delauto/internal/promreg"
	"github.com/delauto/delauto/workers/ratelimit"
)

// Metrics are the dialer's and the recovery loops' (workers/recovery) Prometheus
// metrics. Share one Metrics between them; NewMetrics registers them once.
type Metrics struct {
	// Dials counts attempts that reached the dial step, by result: dialed,
	// rejected (permanent 4xx), released (429 kept failing, not sent, or
	// refused for a configuration reason; due again later), ambiguous
	// (marked unknown).
	Dials *prometheus.CounterVec
	// Checks counts attempts stopped before dialing, by outcome:
	// not_claimable (cancelled, already handled, held by another worker),
	// not_due, not_found, opted_out, outside_hours, window_ended, draining,
	// suspended, store_unavailable, limiter_unavailable, config, called_off
	// (its delivery was cancelled or deleted while MongoDB was unreachable),
	// held (its delivery's plan was changing then), call_off_unknown (Redis
	// could not say).
	Checks *prometheus.CounterVec
	// TwilioErrors counts failed create-call requests by Twilio error code
	// (or http_<status>, timeout, reset, connect, other).
	TwilioErrors *prometheus.CounterVec
	// ClaimConflicts counts claims refused, by the attempt's state.
	ClaimConflicts *prometheus.CounterVec
	// FenceConflicts counts writes refused because a newer claim exists.
	FenceConflicts prometheus.Counter
	// Ambiguous counts attempts marked unknown, by source: dial (a timeout,
	// reset or 5xx) or stale_lease (the worker holding it went away).
	Ambiguous *prometheus.CounterVec
	// AmbiguousResolved counts unknown attempts settled, by how: found (the
	// call is in Twilio's list), absent (provably no call; released for a new
	// dial), callback (a callback moved it first).
	AmbiguousResolved *prometheus.CounterVec
	// FinalStatusLookups counts calls whose final status callback never
	// came, looked up at Twilio by call SID, by outcome: finished (the
	// attempt was finished from what Twilio said), active (Twilio says the
	// call goes on), missing (Twilio does not know the SID).
	FinalStatusLookups *prometheus.CounterVec
	// InFlight is the attempts being handled now.
	InFlight prometheus.Gauge
	// PickupToDial is the time from a handler's start to its create-call
	// request (claim, checks and the rate limiter's wait).
	PickupToDial prometheus.Histogram
	// RecordRetries counts repeated store writes after a failed one.
	RecordRetries prometheus.Counter
	// Swept counts attempts the republisher put back into the queue.
	Swept prometheus.Counter
	// Sweeps counts finished sweeps, by kind (periodic, restore).
	Sweeps *prometheus.CounterVec
	// LoopErrors counts failed rounds of the recovery loops, by loop:
	// "reconciler" (recovery.Resolver) and "sweeper" (recovery.Republisher),
	// the label values dashboards and alerts know.
	LoopErrors *prometheus.CounterVec
	// Limiter are the account limiter's metrics (its wait histogram is the
	// limiter waits).
	Limiter *ratelimit.Metrics
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered). Metrics registered on reg by an earlier call are reused.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "delauto", Subsystem: "worker", Name: name, Help: help}, labels)
	}
	m := &Metrics{
		Dials:              counter("dials_total", "Attempts that reached the dial step, by result (dialed, rejected, released, ambiguous).", "result"),
		Checks:             counter("checks_total", "Attempts stopped before dialing, by outcome.", "outcome"),
		TwilioErrors:       counter("twilio_errors_total", "Failed create-call requests by Twilio error code or transport failure.", "code"),
		ClaimConflicts:     counter("claim_conflicts_total", "Claims refused, by the attempt's state.", "state"),
		Ambiguous:          counter("ambiguous_total", "Attempts marked unknown, by source (dial, stale_lease).", "source"),
		AmbiguousResolved:  counter("ambiguous_resolved_total", "Unknown attempts settled, by how (found, absent, callback, conflict).", "how"),
		FinalStatusLookups: counter("final_status_lookups_total", "Calls without a final status callback looked up at Twilio, by outcome (finished, active, missing).", "outcome"),
		Sweeps:             counter("sweeps_total", "Finished sweeps, by kind (periodic: overdue attempts; restore: whole queues after a new Redis incarnation).", "kind"),
		LoopErrors:         counter("loop_errors_total", "Failed reconciler and sweeper rounds.", "loop"),
		FenceConflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "delauto", Subsystem: "worker", Name: "fence_conflicts_total",
			Help: "Writes refused because a newer claim of the attempt exists."}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "delauto", Subsystem: "worker", Name: "in_flight",
			Help: "Attempts being handled now."}),
		PickupToDial: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "delauto", Subsystem: "worker", Name: "pickup_to_dial_seconds",
			Help:    "Time from a handler's start to its create-call request (claim, checks, rate limiter wait).",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		RecordRetries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "delauto", Subsystem: "worker", Name: "record_retries_total",
			Help: "Store writes repeated after a failure (store unavailable)."}),
		Swept: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "delauto", Subsystem: "worker", Name: "swept_total",
			Help: "Attempts due in MongoDB but missing from Redis, put back into the queue."}),
	}
	var err error
	if m.Limiter, err = ratelimit.NewMetrics(reg); err != nil {
		return nil, err
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []**prometheus.CounterVec{&m.Dials, &m.Checks, &m.TwilioErrors, &m.ClaimConflicts, &m.Ambiguous, &m.AmbiguousResolved, &m.FinalStatusLookups, &m.Sweeps, &m.LoopErrors} {
		if *c, err = promreg.Register(reg, *c); err != nil {
			return nil, err
		}
	}
	for _, c := range []*prometheus.Counter{&m.FenceConflicts, &m.RecordRetries, &m.Swept} {
		if *c, err = promreg.Register(reg, *c); err != nil {
			return nil, err
		}
	}
	if m.InFlight, err = promreg.Register(reg, m.InFlight); err != nil {
		return nil, err
	}
	if m.PickupToDial, err = promreg.Register(reg, m.PickupToDial); err != nil {
		return nil, err
	}
	return m, nil
}
