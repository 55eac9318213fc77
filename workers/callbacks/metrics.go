package callbacks

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the callback server's Prometheus metrics.
type metrics struct {
	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	rejected         *prometheus.CounterVec
	cache            *prometheus.CounterVec
	journalAppended  prometheus.Counter
	journalApplied   *prometheus.CounterVec
	journalCoalesced prometheus.Counter
	writeThrough     *prometheus.CounterVec
	outcomes         *prometheus.CounterVec
	amd              *prometheus.CounterVec
	answers          *prometheus.CounterVec
	backlog          prometheus.GaugeFunc
	heldWrites       prometheus.Gauge
}

func newMetrics(backlog func() float64) *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_callbacks_requests_total", Help: "Twilio webhook requests, by endpoint and HTTP status.",
		}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "delauto_callbacks_request_duration_seconds", Help: "Time to answer a Twilio webhook, by endpoint.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 15},
		}, []string{"endpoint"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_callbacks_rejected_total",
			Help: "Webhook requests refused before touching state, by reason (signature_missing, signature_invalid, method, too_large, content_type, malformed_body, malformed_attempt, bad_form, unknown_attempt, unknown_path).",
		}, []string{"reason"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_callbacks_context_cache_total", Help: "Call context lookups, by result (hit: in the Redis cache; miss: read MongoDB; shared: took the context another lookup of the same attempt read or cached meanwhile).",
		}, []string{"result"}),
		journalAppended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delauto_callbacks_journal_appended_total", Help: "Writes appended to the Redis write-behind journal.",
		}),
		journalApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_callbacks_journal_applied_total", Help: "Journal entries written to MongoDB, by kind and result (applied, duplicate, dropped, error).",
		}, []string{"kind", "result"}),
		journalCoalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delauto_callbacks_journal_coalesced_total", Help: "Status callbacks not written because a later one of the same call was written in the same batch.",
		}),
		writeThrough: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_callbacks_fallback_writes_total", Help: "Writes that took the fallback path, by path (mongo: Redis was down; journal: MongoDB did not answer in time).",
		}, []string{"path"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_callbacks_outcome_events_total", Help: "Outcome events published for the operator, by result (ok, error).",
		}, []string{"result"}),
		amd: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_callbacks_machine_answers_total", Help: "Calls answered by a machine, by action taken (voicemail, hangup, error).",
		}, []string{"action"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_callbacks_menu_answers_total",
			Help: "Menu answers, by the language of the call's wording, the option understood (confirm, reschedule, instructions, stop, repeat, none) and how it was given (dtmf, speech, silence).",
		}, []string{"language", "option", "input"}),
		backlog: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "delauto_callbacks_journal_backlog", Help: "Journal entries not yet written to MongoDB.",
		}, backlog),
		heldWrites: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "delauto_callbacks_held_writes", Help: "Answers, opt-outs, recordings and transcriptions this worker journaled because MongoDB failed, kept in memory until it has written them itself (in case Redis loses the journal).",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.rejected, m.cache, m.journalAppended, m.journalApplied,
		m.journalCoalesced, m.writeThrough, m.outcomes, m.amd, m.answers, m.backlog, m.heldWrites}
}

// stats mirrors the counters a benchmark reads.
type stats struct {
	hits, misses, shared atomic.Int64
}

// count counts a call context lookup by result (hit, miss, shared).
func (s *Server) count(result string) {
	s.m.cache.WithLabelValues(result).Inc()
	switch result {
	case "hit":
		s.stats.hits.Add(1)
	case "miss":
		s.stats.misses.Add(1)
	case "shared":
		s.stats.shared.Add(1)
	}
}

// Stats are counters of the server since it started.
type Stats struct {
	// CacheHits, CacheMisses and CacheShared count call context lookups:
	// found in Redis, read from MongoDB (one read per miss), and given the
	// context another lookup of the same attempt was reading or had just
	// cached (concurrent misses share one read).
	CacheHits, CacheMisses, CacheShared int64
}

// HitRate is CacheHits over all lookups (0 without lookups).
func (s Stats) HitRate() float64 {
	if n := s.CacheHits + s.CacheMisses + s.CacheShared; n > 0 {
		return float64(s.CacheHits) / float64(n)
	}
	return 0
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{CacheHits: s.stats.hits.Load(), CacheMisses: s.stats.misses.Load(), CacheShared: s.stats.shared.Load()}
}

// RegisterMetrics registers the callback server's metrics on reg.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range s.m.collectors() {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) backlogGauge() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := s.JournalBacklog(ctx)
	if err != nil {
		return -1
	}
	return float64(n)
}
