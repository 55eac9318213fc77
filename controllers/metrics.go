package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the operator's own counters, beside controller-runtime's.
type Metrics struct {
	decisions *prometheus.CounterVec
	replans   prometheus.Counter
	outcomes  prometheus.Counter
	// finalizerMode is 1 for the way new Deliveries get the finalizer.
	finalizerMode    *prometheus.GaugeVec
	finalizerPatches prometheus.Counter
	fallback         *prometheus.CounterVec
}

// NewMetrics registers the operator's counters on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_operator_planning_decisions_total",
			Help: "Planning decisions by result: Planned, or why no more calls are made.",
		}, []string{"decision"}),
		replans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delauto_operator_replans_total",
			Help: "Queued attempts cancelled and planned again because the Delivery changed.",
		}),
		outcomes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delauto_operator_outcome_events_total",
			Help: "Outcome events read from the workers' outcome stream.",
		}),
		finalizerMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "delauto_operator_finalizer_mode",
			Help: "1 for how new Deliveries get the cancel-calls finalizer, chosen at start-up: AdmissionPolicy (set at create by the MutatingAdmissionPolicy, no write of the operator) or Patch (one patch per Delivery).",
		}, []string{"mode"}),
		finalizerPatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delauto_operator_finalizer_patches_total",
			Help: "Deliveries the operator patched to add the finalizer: each one an API write. Growing in AdmissionPolicy mode means the policy does not act.",
		}),
	}
	m.fallback = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "delauto_operator_language_fallbacks_total",
		Help: "Deliveries whose recipient's language the campaign has no wording for, so calls are held in the campaign's default language; by requested and used base language.",
	}, []string{"requested", "used"})
	reg.MustRegister(m.decisions, m.replans, m.outcomes, m.finalizerMode, m.finalizerPatches, m.fallback)
	return m
}

func (m *Metrics) decided(decision string) {
	if m != nil {
		m.decisions.WithLabelValues(decision).Inc()
	}
}

func (m *Metrics) replanned() {
	if m != nil {
		m.replans.Inc()
	}
}

func (m *Metrics) outcome() {
	if m != nil {
		m.outcomes.Inc()
	}
}

// SetFinalizerMode reports the mode chosen at start-up.
func (m *Metrics) SetFinalizerMode(mode FinalizerMode) {
	if m == nil {
		return
	}
	for _, k := range []FinalizerMode{FinalizerByAdmissionPolicy, FinalizerByPatch} {
		v := 0.0
		if k == mode {
			v = 1
		}
		m.finalizerMode.WithLabelValues(string(k)).Set(v)
	}
}

func (m *Metrics) finalizerPatched() {
	if m != nil {
		m.finalizerPatches.Inc()
	}
}

func (m *Metrics) languageFallback(requested, used string) {
	if m != nil {
		m.fallback.WithLabelValues(requested, used).Inc()
	}
}
