package queue

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/delauto/delauto/internal/promreg"
)

// latencyBuckets span half a millisecond to a minute.
var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Metrics are the queue's Prometheus metrics, labelled by shard
// (namespace/campaign/name). Share one Metrics between the queues of a
// process; NewMetrics registers them once.
type Metrics struct {
	// PickupLatency is due time (or enqueue time, for attempts due at once)
	// to handler start.
	PickupLatency *prometheus.HistogramVec
	// ScheduleLateness is due time to promotion into the ready stream.
	ScheduleLateness *prometheus.HistogramVec
	// Handled counts handler runs that ended in an acknowledgement.
	Handled *prometheus.CounterVec
	// Failed counts handler runs that returned an error (retried later).
	Failed *prometheus.CounterVec
	// Retried counts attempts a handler sent back to the due set.
	Retried *prometheus.CounterVec
	// Reclaimed counts entries taken over from a consumer that stopped
	// extending its lease.
	Reclaimed *prometheus.CounterVec
	// DeadLettered counts entries moved to the dead-letter stream.
	DeadLettered *prometheus.CounterVec
	// LeaseLost counts in-flight entries another consumer took over.
	LeaseLost *prometheus.CounterVec
	// Promoted counts entries moved from the due set to the ready stream by
	// this process's promoters.
	Promoted *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered). Metrics already registered on reg by an earlier call are
// reused, so several queues in one process share them.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	lbl := []string{"shard"}
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "delauto", Subsystem: "queue", Name: name, Help: help, Buckets: latencyBuckets,
		}, lbl)
	}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "delauto", Subsystem: "queue", Name: name, Help: help,
		}, lbl)
	}
	m := &Metrics{
		PickupLatency:    hist("pickup_latency_seconds", "Time from an attempt's due (or enqueue) time to its handler's start."),
		ScheduleLateness: hist("schedule_lateness_seconds", "Time from an attempt's due time to its promotion into the ready stream."),
		Handled:          counter("handled_total", "Handler runs that ended in an acknowledgement."),
		Failed:           counter("failed_total", "Handler runs that returned an error; the entry is redelivered after its lease."),
		Retried:          counter("retried_total", "Attempts a handler sent back to the due set."),
		Reclaimed:        counter("reclaimed_total", "Entries taken over from a consumer that stopped extending its lease."),
		DeadLettered:     counter("dead_lettered_total", "Entries moved to the dead-letter stream."),
		LeaseLost:        counter("lease_lost_total", "In-flight entries that another consumer took over."),
		Promoted:         counter("promoted_total", "Entries moved from the due set to the ready stream."),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	for _, h := range []**prometheus.HistogramVec{&m.PickupLatency, &m.ScheduleLateness} {
		if *h, err = promreg.Register(reg, *h); err != nil {
			return nil, err
		}
	}
	for _, c := range []**prometheus.CounterVec{&m.Handled, &m.Failed, &m.Retried, &m.Reclaimed, &m.DeadLettered, &m.LeaseLost, &m.Promoted} {
		if *c, err = promreg.Register(reg, *c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
