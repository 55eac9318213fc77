package insightsapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/delauto/delauto/internal/promreg"
)

// Metrics are the API's Prometheus metrics.
type Metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	cache       *prometheus.CounterVec
	cacheErrors prometheus.Counter
	refusals    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "delauto_api_requests_total",
			Help: "Requests to the insights API by route and HTTP status code."}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "delauto_api_request_duration_seconds",
			Help:    "Time to answer a request of the insights API, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "delauto_api_cache_requests_total",
			Help: "Answers of the insights API by route and whether the Redis cache held them (result: hit or miss)."}, []string{"route", "result"}),
		cacheErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "delauto_api_cache_errors_total",
			Help: "Reads and writes of the insights API's Redis cache that failed (the answer came from the store)."}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "delauto_api_refusals_total",
			Help: "Requests refused for their token (code 401) or for the namespace (code 403)."}, []string{"code"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = promreg.Register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = promreg.Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.cache, err = promreg.Register(reg, m.cache); err != nil {
		return nil, err
	}
	if m.cacheErrors, err = promreg.Register(reg, m.cacheErrors); err != nil {
		return nil, err
	}
	if m.refusals, err = promreg.Register(reg, m.refusals); err != nil {
		return nil, err
	}
	return m, nil
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// instrument counts and times the requests of one route.
func (s *Server) instrument(route string, h http.Handler) http.Handler {
	dur := s.metrics.duration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		dur.Observe(time.Since(t).Seconds())
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
	})
}
