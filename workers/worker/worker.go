// Package worker is the call worker process's engine (`delauto worker`):
// it runs the dialer on one or more shards of one campaign through a queue
// consumer, and the recovery loops (workers/recovery), watches Redis and
// MongoDB, drains on request, and serves the operations endpoints.
//
// # Lifecycle
//
// Run takes attempts from the queue while Redis and MongoDB are reachable,
// the campaign is not suspended and no drain is in force. When one of
// those changes it stops reading, and what it holds goes on as follows:
//
//   - a drain (Drain, POST /drain) or the end of Run's context (SIGTERM):
//     attempts still waiting for a rate-limit slot are put back for other
//     workers, calls being placed are placed and recorded (retrying the
//     store until it is back); after DrainTimeout, if set, what is still in
//     flight is cancelled;
//   - a store outage: the same, since claims can no longer be renewed and
//     other workers' recovery resolvers may take them over; taking attempts
//     resumes once the stores answer and nothing is in flight;
//   - a suspension: the attempts in flight go on as they are.
//
// Nothing in flight is dropped: an attempt whose outcome could not be
// written stays pending in Redis and leased in MongoDB, and the recovery resolver
// settles it. Run returns once its context has ended and the attempts in
// flight are done; Abort (a second signal) cancels them, and their calls,
// if placed, are resolved later.
//
// # Operations endpoints (OpsHandler, port 8082 "ops")
//
//	GET  /healthz  200 while the process runs (liveness)
//	GET  /readyz   200 when Redis and MongoDB answer and no drain is in force, else 503 with the reason
//	GET  /metrics  Prometheus metrics
//	POST /drain    start draining (idempotent): stop taking attempts, put back those
//	               waiting for a slot, finish the calls being placed, keep serving
//	               callbacks; answers 202 with the state
//	GET  /drain    the drain state: {"draining":bool,"drained":bool,"inFlight":n}
//	DELETE /drain  end a drain (the worker takes attempts again)
//
// Every /drain request needs "Authorization: Bearer <token>" with the
// operator's drain token (Options.DrainToken): 401 without, 403 otherwise.
//
// The operator's autoscaler scales a shard down through /drain: it picks
// pods with no attempt in flight, POSTs /drain, polls GET /drain until the
// pod is drained with nothing in flight (30 s at most; otherwise it ends the
// drain with DELETE /drain and keeps the pod), gives the drained pods the
// lowest pod-deletion-cost and then lowers the Deployment's replicas, so
// the ReplicaSet removes those pods.
//
// Twilio's callbacks are served on port 8080 "http" by CallbackHandler: the
// handler given in Options.Callbacks, or 404 when there is none.
//
// # The process
//
// Run is the whole `delauto worker` process once its Config (flags with
// the operator's worker contract, internal/workerpod, as defaults) is
// validated: the two HTTP servers, the stores, the campaign file and
// Twilio credentials followed as they change, the Worker, the Twilio
// callbacks server (workers/callbacks) and the relay sender
// (workers/relay) telling agents the answers the callbacks queue.
package worker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/defaults"
	"github.com/delauto/delauto/internal/periodic"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/dialer"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/recovery"
	"github.com/delauto/delauto/workers/store"
)

// Options configure a Worker.
type Options struct {
	// Name identifies the worker: its queue consumer name and the owner of
	// its claims; unique among live workers (the pod name). Required.
	Name string
	// Shards of the campaign this worker serves. Required.
	Shards []queue.Shard
	// Concurrency is how many attempts are handled at once. Default 50.
	Concurrency int
	// Store, Redis, Twilio, AccountSID and Campaign: see dialer.Options. Required.
	Store      *store.Store
	Redis      redis.UniversalClient
	Twilio     dialer.TwilioCalls
	AccountSID string
	Campaign   campaignfile.Source
	// CallbackURL overrides the campaign's public callback base URL.
	CallbackURL string
	// Callbacks serves Twilio's webhooks; nil answers 404.
	Callbacks http.Handler
	// Registry receives and serves every metric. Default: a new registry.
	Registry *prometheus.Registry
	// Logger; default slog.Default().
	Logger *slog.Logger

	// Lease is the claim lease in MongoDB (renewed every Lease/3). Default 30s.
	Lease time.Duration
	// QueueLease is how long a queue entry may go unextended before another
	// worker takes it over. Default 15s.
	QueueLease time.Duration
	// TwilioTimeout is the timeout of the Twilio client's requests (the
	// client given in Twilio is built with it). Default 10s.
	TwilioTimeout time.Duration
	// ClockSkew is the most the clocks of the campaign's workers may
	// differ. Default 1s.
	ClockSkew time.Duration
	// The lease, queue lease, Twilio timeout, StaleAfter, UnknownGrace and
	// ClockSkew must keep to dialer.Timing's rules (New refuses them
	// otherwise); the longest rate-limit wait is derived from them.
	// RateLimitRetries and RateLimitBackoff: see dialer.Options.
	RateLimitRetries int
	RateLimitBackoff time.Duration
	// RecordTimeout: see dialer.Options. Default 2m.
	RecordTimeout time.Duration
	// ReconcileInterval is the recovery.Resolver's period. Default 5s.
	ReconcileInterval time.Duration
	// StaleAfter: see recovery.ResolverOptions. Default 5s.
	StaleAfter time.Duration
	// UnknownGrace is how long an ambiguous dial's call must stay absent
	// from Twilio's list before a new dial is allowed. Default 2m.
	UnknownGrace time.Duration
	// FinalStatusMargin: see recovery.ResolverOptions. Default 2m.
	FinalStatusMargin time.Duration
	// SweepInterval is the period of the recovery.Republisher's safety-net pass of
	// overdue attempts. Default 5m.
	SweepInterval time.Duration
	// SweepWatchInterval is how often the republisher checks whether Redis is a
	// new incarnation (restarted, failed over), which makes it republish
	// the shards' queues at once. Default 5s.
	SweepWatchInterval time.Duration
	// SweepOverdue is how late an attempt must be before the republisher
	// republishes it. Default 30s.
	SweepOverdue time.Duration
	// HealthInterval is how often Redis and MongoDB are pinged. Default 1s.
	HealthInterval time.Duration
	// DrainTimeout bounds how long a drain waits for attempts in flight
	// before cancelling them. Default 0: wait for them.
	DrainTimeout time.Duration
	// DrainToken is the token /drain requests must carry as
	// "Authorization: Bearer <token>" (the operator's). Empty refuses
	// every /drain request.
	DrainToken string
}

// Worker runs the call pipeline of one campaign's shards.
type Worker struct {
	opts        Options
	log         *slog.Logger
	reg         *prometheus.Registry
	q           *queue.Queue
	d           *dialer.Dialer
	resolver    *recovery.Resolver
	republisher *recovery.Republisher
	m           *dialer.Metrics
	gauges      struct{ ready, draining, consuming, redisUp, mongoUp prometheus.Gauge }

	changed  chan struct{}
	drainMu  sync.Mutex // orders Drain, Resume and the store-outage drain
	outage   bool       // a store outage makes the dialer yield (drainMu)
	draining atomic.Bool
	redisOK  atomic.Bool
	mongoOK  atomic.Bool
	healthMu sync.Mutex
	healthE  error // why not ready, when a store is down

	mu       sync.Mutex
	consumer *queue.Consumer
	aborted  bool
}

// New checks the options and builds a Worker; it fails when the campaign
// cannot be dialed.
func New(opts Options) (*Worker, error) {
	if opts.Name == "" {
		return nil, errors.New("worker: a name is required")
	}
	if len(opts.Shards) == 0 {
		return nil, errors.New("worker: at least one shard is required")
	}
	for _, s := range opts.Shards {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	defaults.Positive(&opts.Concurrency, 50)
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	defaults.Zero(&opts.Logger, slog.Default())
	tm, err := dialer.Timing{Lease: opts.Lease, QueueLease: opts.QueueLease, TwilioTimeout: opts.TwilioTimeout,
		StaleAfter: opts.StaleAfter, UnknownGrace: opts.UnknownGrace, ClockSkew: opts.ClockSkew}.Derive()
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	opts.Lease, opts.QueueLease, opts.TwilioTimeout = tm.Lease, tm.QueueLease, tm.TwilioTimeout
	opts.StaleAfter, opts.UnknownGrace, opts.ClockSkew = tm.StaleAfter, tm.UnknownGrace, tm.ClockSkew
	defaults.Positive(&opts.ReconcileInterval, 5*time.Second)
	defaults.Positive(&opts.FinalStatusMargin, workerpod.DefaultFinalStatusMargin)
	defaults.Positive(&opts.SweepInterval, 5*time.Minute)
	defaults.Positive(&opts.SweepWatchInterval, 5*time.Second)
	defaults.Positive(&opts.SweepOverdue, 30*time.Second)
	defaults.Positive(&opts.HealthInterval, time.Second)
	if opts.Store == nil || opts.Redis == nil {
		return nil, errors.New("worker: Store and Redis are required")
	}
	w := &Worker{opts: opts, log: opts.Logger.With("component", "worker", "worker", opts.Name), reg: opts.Registry,
		changed: make(chan struct{}, 1)}
	if w.m, err = dialer.NewMetrics(w.reg); err != nil {
		return nil, err
	}
	qm, err := queue.NewMetrics(w.reg)
	if err != nil {
		return nil, err
	}
	w.q = queue.New(opts.Redis, queue.Options{Metrics: qm, Logger: opts.Logger.With("component", "queue")})
	w.d, err = dialer.New(dialer.Options{
		Store: opts.Store, Redis: opts.Redis, Twilio: opts.Twilio, AccountSID: opts.AccountSID,
		Campaign: opts.Campaign, CallbackURL: opts.CallbackURL, Owner: opts.Name, Lease: opts.Lease,
		TwilioTimeout: opts.TwilioTimeout, MaxWait: tm.MaxWait, RateLimitRetries: opts.RateLimitRetries, RateLimitBackoff: opts.RateLimitBackoff, RecordTimeout: opts.RecordTimeout,
		Metrics: w.m, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	c, _ := w.d.Campaign()
	for _, s := range opts.Shards {
		if s.Namespace != c.Namespace || s.Campaign != c.Name {
			return nil, fmt.Errorf("worker: shard %s is not of campaign %s", s, c.Key)
		}
	}
	w.resolver, err = recovery.NewResolver(recovery.ResolverOptions{
		Store: opts.Store, Queue: w.q, Redis: opts.Redis, Twilio: opts.Twilio, Campaign: opts.Campaign,
		CallbackURL: opts.CallbackURL, Interval: opts.ReconcileInterval, StaleAfter: opts.StaleAfter,
		Grace: opts.UnknownGrace, FinalStatusMargin: opts.FinalStatusMargin, Ready: w.Ready, Metrics: w.m, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	w.republisher, err = recovery.NewRepublisher(recovery.RepublisherOptions{
		Store: opts.Store, Queue: w.q, Campaign: c.Key, Shards: opts.Shards,
		Interval: opts.SweepInterval, WatchInterval: opts.SweepWatchInterval, Overdue: opts.SweepOverdue,
		Ready: w.Ready, Metrics: w.m, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "delauto", Subsystem: "worker", Name: name, Help: help})
		w.reg.MustRegister(g)
		return g
	}
	w.gauges.ready = gauge("ready", "1 when the worker is ready: Redis and MongoDB reachable, not draining.")
	w.gauges.draining = gauge("draining", "1 while a drain is in force.")
	w.gauges.consuming = gauge("consuming", "1 while the worker takes attempts from the queue.")
	w.gauges.redisUp = gauge("redis_up", "1 when Redis answered the last ping.")
	w.gauges.mongoUp = gauge("mongo_up", "1 when MongoDB answered the last ping.")
	return w, nil
}

// Queue is the worker's queue client.
func (w *Worker) Queue() *queue.Queue { return w.q }

// Dialer is the worker's per-attempt pipeline.
func (w *Worker) Dialer() *dialer.Dialer { return w.d }

func (w *Worker) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Drain stops taking attempts (see the package doc); the worker keeps
// serving callbacks and the operations endpoints.
func (w *Worker) Drain() {
	w.drainMu.Lock()
	defer w.drainMu.Unlock()
	if w.draining.CompareAndSwap(false, true) {
		w.log.Info("draining: no new attempts; finishing the calls in flight")
		w.d.Yield()
		w.gauges.draining.Set(1)
		w.gauges.ready.Set(0)
		w.notify()
	}
}

// Resume ends a drain.
func (w *Worker) Resume() {
	w.drainMu.Lock()
	defer w.drainMu.Unlock()
	if w.draining.CompareAndSwap(true, false) {
		w.log.Info("drain ended: taking attempts again")
		if !w.outage {
			w.d.Resume()
		}
		w.gauges.draining.Set(0)
		w.gauges.ready.Set(b2f(w.Ready() == nil))
		w.notify()
	}
}

// DrainState is what GET /drain reports.
type DrainState struct {
	// Draining: a drain is in force.
	Draining bool `json:"draining"`
	// Drained: draining, and no attempt is in flight any more.
	Drained bool `json:"drained"`
	// InFlight is the attempts being handled.
	InFlight int64 `json:"inFlight"`
}

// State reports the drain state.
func (w *Worker) State() DrainState {
	w.mu.Lock()
	consuming := w.consumer != nil
	w.mu.Unlock()
	n := w.d.InFlight()
	s := DrainState{Draining: w.draining.Load(), InFlight: n}
	s.Drained = s.Draining && !consuming && n == 0
	return s
}

// Ready reports why the worker is not ready, or nil.
func (w *Worker) Ready() error {
	if w.draining.Load() {
		return errors.New("draining")
	}
	w.healthMu.Lock()
	defer w.healthMu.Unlock()
	return w.healthE
}

// Abort cancels the attempts in flight (the second signal): their calls,
// if placed, are resolved later.
func (w *Worker) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.aborted = true
	if w.consumer != nil {
		w.consumer.Abort()
	}
}

// Run works until ctx ends, then drains and returns.
func (w *Worker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	loops, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer func() { stopLoops(); wg.Wait() }()
	w.checkHealth(ctx)
	wg.Add(3)
	go func() { defer wg.Done(); w.monitor(loops) }()
	go func() {
		defer wg.Done()
		w.resolver.Run(loops)
	}()
	go func() {
		defer wg.Done()
		w.republisher.Run(loops)
	}()
	w.log.Info("worker started", "shards", len(w.opts.Shards), "concurrency", w.opts.Concurrency)
	for {
		if !w.waitUntilConsumable(ctx) {
			w.log.Info("worker stopped")
			return nil
		}
		w.consume(ctx)
		if ctx.Err() != nil {
			w.log.Info("worker stopped")
			return nil
		}
	}
}

// consumable says whether the worker should take attempts now, and if not why.
func (w *Worker) consumable() (bool, string) {
	if w.draining.Load() {
		return false, "draining"
	}
	if err := w.Ready(); err != nil {
		return false, err.Error()
	}
	if c, err := w.d.Campaign(); err == nil && c.Suspended {
		return false, "campaign suspended"
	}
	return true, ""
}

func (w *Worker) waitUntilConsumable(ctx context.Context) bool {
	t := time.NewTicker(w.opts.HealthInterval)
	defer t.Stop()
	for {
		if ctx.Err() != nil {
			return false
		}
		if ok, _ := w.consumable(); ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-w.changed:
		case <-t.C:
		}
	}
}

// consume runs one queue consumer until the worker should stop taking
// attempts or ctx ends, then drains it.
func (w *Worker) consume(ctx context.Context) {
	shards := make([]queue.ShardWeight, len(w.opts.Shards))
	for i, s := range w.opts.Shards {
		shards[i] = queue.ShardWeight{Shard: s}
	}
	c, err := w.q.NewConsumer(queue.ConsumerOptions{
		Shards: shards, Handler: w.d.Handle, Name: w.opts.Name, Concurrency: w.opts.Concurrency,
		Lease: w.opts.QueueLease, DrainTimeout: w.opts.DrainTimeout,
	})
	if err != nil {
		w.log.Error("cannot create the queue consumer", "error", err)
		periodic.Sleep(ctx, 5*time.Second)
		return
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.mu.Lock()
	w.consumer = c
	aborted := w.aborted
	w.mu.Unlock()
	if aborted {
		c.Abort()
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	w.gauges.consuming.Set(1)
	w.log.Info("taking attempts")
	t := time.NewTicker(w.opts.HealthInterval)
	defer t.Stop()
	var why string
watch:
	for {
		select {
		case <-ctx.Done():
			why = "stopping"
			break watch
		case err := <-done:
			w.log.Error("queue consumer stopped unexpectedly; restarting", "error", err)
			done <- err
			why = "consumer stopped"
			break watch
		case <-w.changed:
		case <-t.C:
		}
		var ok bool
		if ok, why = w.consumable(); !ok {
			break watch
		}
	}
	w.log.Info("not taking attempts; finishing those in flight", "reason", why)
	// Attempts waiting for a rate-limit slot go back for other workers when
	// the worker stops, and when a store is unreachable: their claims
	// cannot be renewed (MongoDB) and other workers' recovery resolvers may take
	// them over, so they must not be dialed when their slots come. Calls
	// being placed finish. A suspension lets them go on.
	w.healthMu.Lock()
	outage := why != "stopping" && w.healthE != nil
	w.healthMu.Unlock()
	if outage {
		w.drainMu.Lock()
		w.outage = true
		w.d.Yield()
		w.drainMu.Unlock()
	}
	if why == "stopping" {
		w.d.Yield()
	}
	cancel()
	<-done
	if outage {
		// Nothing is in flight any more: the next consumer's attempts go
		// ahead (unless a drain was asked for meanwhile).
		w.drainMu.Lock()
		w.outage = false
		if !w.draining.Load() {
			w.d.Resume()
		}
		w.drainMu.Unlock()
	}
	w.mu.Lock()
	w.consumer = nil
	w.mu.Unlock()
	w.gauges.consuming.Set(0)
	w.log.Info("attempts in flight finished", "reason", why)
}

// monitor pings Redis and MongoDB every HealthInterval and follows the
// campaign (suspend).
func (w *Worker) monitor(ctx context.Context) {
	t := time.NewTicker(w.opts.HealthInterval)
	defer t.Stop()
	suspended := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.checkHealth(ctx)
		if c, err := w.d.Campaign(); err == nil && c.Suspended != suspended {
			suspended = c.Suspended
			w.log.Info("campaign suspension changed", "suspended", suspended)
			w.notify()
		}
	}
}

func (w *Worker) checkHealth(ctx context.Context) {
	timeout := max(w.opts.HealthInterval, time.Second)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rerr, merr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); rerr = w.opts.Redis.Ping(pctx).Err() }()
	go func() { defer wg.Done(); merr = w.opts.Store.Ping(pctx) }()
	wg.Wait()
	var errs []error
	if rerr != nil {
		errs = append(errs, fmt.Errorf("redis unreachable: %w", rerr))
	}
	if merr != nil {
		errs = append(errs, fmt.Errorf("mongodb unreachable: %w", merr))
	}
	err := errors.Join(errs...)
	prevR, prevM := w.redisOK.Swap(rerr == nil), w.mongoOK.Swap(merr == nil)
	w.healthMu.Lock()
	w.healthE = err
	w.healthMu.Unlock()
	w.gauges.redisUp.Set(b2f(rerr == nil))
	w.gauges.mongoUp.Set(b2f(merr == nil))
	w.gauges.ready.Set(b2f(w.Ready() == nil))
	if prevR != (rerr == nil) || prevM != (merr == nil) {
		if err != nil {
			w.log.Warn("a store is unreachable: not taking attempts", "error", err)
		} else {
			w.log.Info("Redis and MongoDB reachable")
		}
		w.notify()
	}
}

// OpsHandler serves /healthz, /readyz, /metrics and /drain.
func (w *Worker) OpsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if err := w.Ready(); err != nil {
			http.Error(rw, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{Registry: w.reg}))
	state := func(rw http.ResponseWriter, code int) {
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(code)
		_ = json.NewEncoder(rw).Encode(w.State())
	}
	mux.Handle("GET /drain", w.drainAuth(func(rw http.ResponseWriter, _ *http.Request) { state(rw, http.StatusOK) }))
	mux.Handle("POST /drain", w.drainAuth(func(rw http.ResponseWriter, _ *http.Request) { w.Drain(); state(rw, http.StatusAccepted) }))
	mux.Handle("DELETE /drain", w.drainAuth(func(rw http.ResponseWriter, _ *http.Request) { w.Resume(); state(rw, http.StatusOK) }))
	return mux
}

// drainAuth lets through only requests carrying Options.DrainToken as a
// Bearer token: 401 without one, 403 with another or when the worker has
// no token.
func (w *Worker) drainAuth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case !ok || got == "":
			rw.Header().Set("WWW-Authenticate", `Bearer realm="delauto-drain"`)
			http.Error(rw, "drain needs Authorization: Bearer <the operator's drain token>", http.StatusUnauthorized)
		case w.opts.DrainToken == "":
			http.Error(rw, "drain refused: this worker was given no drain token", http.StatusForbidden)
		case subtle.ConstantTimeCompare([]byte(got), []byte(w.opts.DrainToken)) != 1:
			w.log.Warn("drain request with a wrong token refused", "method", r.Method, "remote", r.RemoteAddr)
			http.Error(rw, "drain refused: wrong drain token", http.StatusForbidden)
		default:
			next(rw, r)
		}
	})
}

// CallbackHandler serves Twilio's callbacks: Options.Callbacks, or 404.
func (w *Worker) CallbackHandler() http.Handler {
	if w.opts.Callbacks != nil {
		return w.opts.Callbacks
	}
	return http.NotFoundHandler()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
