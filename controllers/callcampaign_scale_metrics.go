package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
)

// ScaleMetrics are the autoscaler's per-shard figures and decisions. The
// gauges are also what an external autoscaler (KEDA's Prometheus scaler)
// reads when a campaign sets spec.workers.autoscaling: External.
type ScaleMetrics struct {
	calls, waiting, inFlight, dueSoon *prometheus.GaugeVec
	needed, ceiling, target           *prometheus.GaugeVec
	decisions                         *prometheus.CounterVec
	redisErrors                       *prometheus.CounterVec
}

// NewScaleMetrics registers the autoscaler's metrics on reg.
func NewScaleMetrics(reg prometheus.Registerer) *ScaleMetrics {
	shard := []string{"namespace", "campaign", "shard"}
	g := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "delauto", Subsystem: "shard", Name: name, Help: help}, shard)
	}
	m := &ScaleMetrics{
		calls:    g("load_calls", "Calls a shard must serve soon: due now + in flight + due within the look-ahead."),
		waiting:  g("due_calls", "Attempts due and not yet picked up by a worker."),
		inFlight: g("in_flight_calls", "Attempts workers hold now."),
		dueSoon:  g("due_soon_calls", "Attempts due within the look-ahead."),
		needed:   g("needed_replicas", "Worker pods the load asks for: load_calls / calls per pod, rounded up."),
		ceiling:  g("rate_ceiling_replicas", "Most worker pods the account's rate keeps busy: calls per second x average call duration / calls per pod."),
		target:   g("target_replicas", "Worker pods the operator's decision asks for: needed, cut to the rate ceiling, within min and max."),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "delauto", Subsystem: "autoscaler", Name: "decisions_total",
			Help: "Replica changes by reason and direction (up, down)."}, []string{"namespace", "campaign", "reason", "direction"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "delauto", Subsystem: "autoscaler", Name: "held_total",
			Help: "Decisions skipped because the queue figures could not be read (replicas held)."}, []string{"namespace", "campaign"}),
	}
	reg.MustRegister(m.calls, m.waiting, m.inFlight, m.dueSoon, m.needed, m.ceiling, m.target, m.decisions, m.redisErrors)
	return m
}

func (m *ScaleMetrics) figures(ns, campaign, shard string, in ScaleInputs, t ScaleTarget) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"namespace": ns, "campaign": campaign, "shard": shard}
	m.calls.With(l).Set(float64(in.Waiting + in.InFlight + in.DueSoon))
	m.waiting.With(l).Set(float64(in.Waiting))
	m.inFlight.With(l).Set(float64(in.InFlight))
	m.dueSoon.With(l).Set(float64(in.DueSoon))
	m.needed.With(l).Set(float64(t.Needed))
	m.ceiling.With(l).Set(float64(t.Ceiling))
	m.target.With(l).Set(float64(t.Replicas))
}

func (m *ScaleMetrics) decided(ns, campaign, reason string, from, to int32) {
	if m == nil {
		return
	}
	dir := "up"
	if to < from {
		dir = "down"
	}
	m.decisions.WithLabelValues(ns, campaign, reason, dir).Inc()
}

func (m *ScaleMetrics) redisDown(ns, campaign string) {
	if m != nil {
		m.redisErrors.WithLabelValues(ns, campaign).Inc()
	}
}

func (m *ScaleMetrics) forget(ns, campaign, shard string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"namespace": ns, "campaign": campaign, "shard": shard}
	for _, g := range []*prometheus.GaugeVec{m.calls, m.waiting, m.inFlight, m.dueSoon, m.needed, m.ceiling, m.target} {
		g.Delete(l)
	}
}
