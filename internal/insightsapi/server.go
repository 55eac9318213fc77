package insightsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/delauto/delauto/internal/insights"
)

// Authorizer decides whether the bearer token may read a namespace's
// insights. It returns the caller's user name, an *Error with code 401 or
// 403 for a refusal, or another error when it cannot tell (503).
type Authorizer interface {
	Authorize(ctx context.Context, token, namespace string) (user string, err error)
}

// Config configures a Server.
type Config struct {
	// Source answers the queries. Required.
	Source insights.Source
	// Auth checks every request's token. Required.
	Auth Authorizer
	// Redis caches answers; nil serves every request from Source.
	Redis redis.UniversalClient
	// CacheTTL is how long a cached answer lives (default 10 s).
	CacheTTL time.Duration
	// MaxRange is the longest from..to (default DefaultMaxRange).
	MaxRange time.Duration
	// QueryTimeout bounds one query of Source (default 10 s).
	QueryTimeout time.Duration
	// Logger logs refusals and failures (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock of default ranges (default time.Now).
	Now func() time.Time
}

// Server serves the read API.
type Server struct {
	src      insights.Source
	auth     Authorizer
	cache    *answerCache
	maxRange time.Duration
	timeout  time.Duration
	log      *slog.Logger
	now      func() time.Time
	metrics  *Metrics
	flight   singleflight.Group
	// renewals holds a token per background renewal running.
	renewals chan struct{}
	mux      *http.ServeMux
}

// maxRenewals is how many cached answers one API process makes again in
// the background at once; a stale answer found while that many run is
// renewed by a later request (it has a quarter of its TTL and more left).
const maxRenewals = 2

// Defaults of Config.
const (
	DefaultCacheTTL     = 10 * time.Second
	DefaultQueryTimeout = 10 * time.Second
)

// New makes a Server; its metrics are registered on reg (nil: none).
func New(c Config, reg prometheus.Registerer) (*Server, error) {
	if c.Source == nil || c.Auth == nil {
		return nil, errors.New("insightsapi: Config.Source and Config.Auth are required")
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.MaxRange <= 0 {
		c.MaxRange = DefaultMaxRange
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = DefaultQueryTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{src: c.Source, auth: c.Auth, maxRange: c.MaxRange, timeout: c.QueryTimeout,
		log: c.Logger, now: c.Now, metrics: m, renewals: make(chan struct{}, maxRenewals)}
	if c.Redis != nil {
		s.cache = &answerCache{rdb: c.Redis, ttl: c.CacheTTL}
	}
	s.mux = http.NewServeMux()
	for i := range routes {
		rt := &routes[i]
		s.mux.Handle("GET "+rt.pattern, s.instrument(rt.op, s.serveRoute(rt)))
	}
	s.mux.Handle("GET /openapi.json", s.instrument("openapi", http.HandlerFunc(serveOpenAPI)))
	s.mux.Handle("/", s.instrument("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, rt := range routes {
			if matches(rt.pattern, r.URL.Path) {
				w.Header().Set("Allow", "GET, HEAD")
				writeError(w, &Error{Code: http.StatusMethodNotAllowed, Reason: ReasonNotAllowed, Message: r.Method + " is not allowed; use GET"})
				return
			}
		}
		writeError(w, &Error{Code: http.StatusNotFound, Reason: ReasonNotFound, Message: "no such route; see /openapi.json"})
	})))
	return s, nil
}

// Handler serves the API and /openapi.json.
func (s *Server) Handler() http.Handler { return s.mux }

// route is one GET route of the API.
type route struct {
	pattern    string
	op         string
	summary    string
	params     []param
	schema     string
	deliveries bool
	answer     func(ctx context.Context, s *Server, q *query) (any, error)
}

func (rt *route) paramNames() string {
	names := make([]string, len(rt.params))
	for i, p := range rt.params {
		names[i] = p.name
	}
	if len(names) == 0 {
		return "no parameters"
	}
	return strings.Join(names, ", ")
}

// Answers of the analytics routes: the normalized range and what it holds.
type (
	// RangeJSON is the range an answer covers, after rounding to hours.
	RangeJSON struct {
		From     time.Time `json:"from"`
		To       time.Time `json:"to"`
		Campaign string    `json:"campaign,omitempty"`
	}
	// OverviewAnswer is the body of analytics/overview.
	OverviewAnswer struct {
		Namespace string            `json:"namespace"`
		Range     RangeJSON         `json:"range"`
		Overview  insights.Overview `json:"overview"`
	}
	// BreakdownAnswer is the body of analytics/breakdown.
	BreakdownAnswer struct {
		Namespace string             `json:"namespace"`
		Range     RangeJSON          `json:"range"`
		By        insights.Dimension `json:"by"`
		Groups    []insights.Group   `json:"groups"`
	}
	// TimeseriesAnswer is the body of analytics/timeseries.
	TimeseriesAnswer struct {
		Namespace string           `json:"namespace"`
		Range     RangeJSON        `json:"range"`
		Step      string           `json:"step"`
		Points    []insights.Point `json:"points"`
	}
)

func rangeJSON(r insights.Range) RangeJSON {
	return RangeJSON{From: r.From.UTC(), To: r.To.UTC(), Campaign: r.Campaign}
}

const nsPrefix = "/api/v1/namespaces/{namespace}"

// routes are the API's routes; /openapi.json is made from them.
var routes = []route{
	{pattern: nsPrefix + "/deliveries", op: "deliveries", summary: "One page of the namespace's delivery list, newest first",
		params: deliveryParams, schema: "DeliveryPage", deliveries: true,
		answer: func(ctx context.Context, s *Server, q *query) (any, error) {
			p, err := s.src.Deliveries(ctx, q.namespace, q.deliveries)
			if errors.Is(err, insights.ErrBadContinue) {
				return nil, badParam("continue", "not a token this list issued for these filters; start again without continue")
			}
			if p.Items == nil {
				p.Items = []insights.DeliverySummary{}
			}
			return p, err
		}},
	{pattern: nsPrefix + "/analytics/overview", op: "overview", summary: "Rates, counts and durations of the outcomes in a range",
		params: rangeParams, schema: "OverviewAnswer",
		answer: func(ctx context.Context, s *Server, q *query) (any, error) {
			o, err := s.src.Overview(ctx, q.namespace, q.rng)
			return OverviewAnswer{Namespace: q.namespace, Range: rangeJSON(q.rng), Overview: o}, err
		}},
	{pattern: nsPrefix + "/analytics/breakdown", op: "breakdown", summary: "The overview per region, agent, campaign or hour, largest first",
		params: append([]param{byParam}, rangeParams...), schema: "BreakdownAnswer",
		answer: func(ctx context.Context, s *Server, q *query) (any, error) {
			g, err := s.src.Breakdown(ctx, q.namespace, q.by, q.rng)
			if g == nil {
				g = []insights.Group{}
			}
			return BreakdownAnswer{Namespace: q.namespace, Range: rangeJSON(q.rng), By: q.by, Groups: g}, err
		}},
	{pattern: nsPrefix + "/analytics/timeseries", op: "timeseries", summary: "The overview per step of the range",
		params: append([]param{stepParam}, rangeParams...), schema: "TimeseriesAnswer",
		answer: func(ctx context.Context, s *Server, q *query) (any, error) {
			p, err := s.src.Timeseries(ctx, q.namespace, q.step, q.rng)
			if p == nil {
				p = []insights.Point{}
			}
			return TimeseriesAnswer{Namespace: q.namespace, Range: rangeJSON(q.rng), Step: hours(q.step), Points: p}, err
		}},
}

// matches reports whether path fits pattern, whose {x} segments match any
// one segment.
func matches(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if !strings.HasPrefix(ps[i], "{") && ps[i] != xs[i] {
			return false
		}
	}
	return true
}

// bearer is the request's bearer token, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func (s *Server) serveRoute(rt *route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns := r.PathValue("namespace")
		token := bearer(r)
		if token == "" {
			s.refuse(w, r, ns, "", &Error{Code: http.StatusUnauthorized, Reason: ReasonUnauthorized, Message: "send a Kubernetes bearer token: Authorization: Bearer <token>"})
			return
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			writeError(w, badParam("namespace", "%q is not a namespace name: %s", ns, strings.Join(errs, "; ")))
			return
		}
		user, err := s.auth.Authorize(r.Context(), token, ns)
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				s.refuse(w, r, ns, user, e)
				return
			}
			s.log.Error("cannot check the caller's token or access", "namespace", ns, "route", rt.op, "err", err)
			writeError(w, &Error{Code: http.StatusServiceUnavailable, Reason: ReasonUnavailable, Message: "cannot check the token with the Kubernetes API; try again"})
			return
		}
		q := &query{namespace: ns}
		if e := s.parse(rt, r.URL.Query(), q); e != nil {
			writeError(w, e)
			return
		}
		a, status, err := s.answer(r.Context(), rt, q)
		if err != nil {
			var e *Error
			switch {
			case errors.As(err, &e):
			case errors.Is(err, context.DeadlineExceeded):
				s.log.Error("query timed out", "namespace", ns, "route", rt.op, "timeout", s.timeout.String(), "err", err)
				e = &Error{Code: http.StatusGatewayTimeout, Reason: ReasonTimeout, Message: "the query took longer than " + s.timeout.String()}
			case r.Context().Err() != nil:
				return // the client left
			default:
				s.log.Error("query failed", "namespace", ns, "route", rt.op, "err", err)
				e = &Error{Code: http.StatusInternalServerError, Reason: ReasonInternal, Message: "the query failed; see the API's log"}
			}
			writeError(w, e)
			return
		}
		s.metrics.cache.WithLabelValues(rt.op, status).Inc()
		a.write(w, r, status)
	})
}

// answer returns the encoded answer of q from the cache, or from Source
// (one query for concurrent identical misses) and stores it. A cached
// answer past half its TTL is served and made again in the background.
func (s *Server) answer(ctx context.Context, rt *route, q *query) (*answer, string, error) {
	key := q.key(rt.op)
	var ck string
	if s.cache != nil {
		var a *answer
		var err error
		a, ck, err = s.cache.get(ctx, q.namespace, key)
		switch {
		case err != nil:
			s.log.Warn("cache unreachable; answering from the store", "namespace", q.namespace, "err", err)
			s.metrics.cacheErrors.Inc()
		case a != nil:
			if s.cache.stale(a, time.Now()) {
				select {
				case s.renewals <- struct{}{}:
					renewed := s.flight.DoChan(q.namespace+"\x00"+key+"\x00"+ck, s.query(ctx, rt, q, ck))
					go func() {
						r := <-renewed
						<-s.renewals
						if r.Err != nil {
							s.log.Warn("cannot renew a cached answer; it expires", "namespace", q.namespace, "route", rt.op, "err", r.Err)
						}
					}()
				default:
					// maxRenewals are running: a later request renews it.
				}
			}
			return a, cacheHit, nil
		}
	}
	v, err, _ := s.flight.Do(q.namespace+"\x00"+key+"\x00"+ck, s.query(ctx, rt, q, ck))
	if err != nil {
		return nil, "", err
	}
	return v.(*answer), cacheMiss, nil
}

// query is the flight that answers q from Source and caches the answer
// under ck (if set); it outlives the request that started it (bounded by
// the query timeout), as other requests may be waiting for it.
func (s *Server) query(ctx context.Context, rt *route, q *query, ck string) func() (any, error) {
	return func() (any, error) {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		defer cancel()
		body, err := rt.answer(qctx, s, q)
		if err != nil {
			return nil, err
		}
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode the answer: %w", err)
		}
		a := newAnswer(append(raw, '\n'))
		if s.cache != nil && ck != "" {
			if err := s.cache.put(qctx, ck, a); err != nil {
				s.log.Warn("cannot cache the answer", "namespace", q.namespace, "err", err)
				s.metrics.cacheErrors.Inc()
			}
		}
		return a, nil
	}
}

// refuse logs a 401 or 403, without the token, and writes it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, ns, user string, e *Error) {
	s.metrics.refusals.WithLabelValues(strconv.Itoa(e.Code)).Inc()
	s.log.Info("request refused", "code", e.Code, "reason", e.Reason, "namespace", ns, "user", user,
		"path", r.URL.Path, "remote", r.RemoteAddr, "why", e.Message)
	writeError(w, e)
}
