package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/delauto/delauto/internal/httpserve"
	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/workers/callbacks"
	"github.com/delauto/delauto/workers/relay"
)

// ErrAborted is Run's error when abort closed while attempts were in
// flight.
var ErrAborted = errors.New("aborted by a second signal: attempts in flight are reconciled by the other workers")

// Run is the worker process, with cfg validated (Config.Validate): it
// serves the ops endpoints at once (live, not ready), connects to Redis
// and the call log (retrying while MongoDB is down), follows the campaign
// file and the Twilio credentials, and runs the Worker, the Twilio
// callbacks server and the relay sender until ctx ends and the attempts in
// flight are done. Closing abort cancels those attempts (ErrAborted).
func Run(ctx context.Context, cfg *Config, log *slog.Logger, abort <-chan struct{}) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()

	// The operations endpoints answer from the start: live, not ready.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var ops, hooks httpserve.Slot
	ops.Set(startingHandler())
	hooks.Set(startingWebhooks())
	hookServer := httpserve.NewServer(cfg.HTTPAddr, &hooks, serverTimeouts)
	servers := []*http.Server{httpserve.NewServer(cfg.OpsAddr, &ops, serverTimeouts), hookServer}
	serveErr := make(chan error, len(servers))
	for _, s := range servers {
		l, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", s.Addr, err)
		}
		go func() {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("serve %s: %w", s.Addr, err)
			}
		}()
	}
	defer shutdown(servers...)

	rdb, err := cfg.Stores.Redis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if r := cfg.watcher.Current().Spec.Retention; r != nil {
		// Attempts carry their campaign's retention from the operator; this
		// covers the ones planned before they did.
		cfg.Stores.Retention = r.Duration
	}
	st, err := cfg.Stores.StoreRetrying(ctx, func(err error, in time.Duration) {
		log.Error("the call log is unreachable; retrying", "error", err, "in", in.String())
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before the store came up: nothing in flight
		}
		return err
	}
	defer st.Close(context.Background())
	// Each flush of the analytics rollups invalidates the read API's cached
	// answers of the namespaces it touched.
	st.SetInsightsNotify(func(namespaces []string) { insights.Bump(rdb, log, namespaces...) })

	cfg.watcher.OnError = func(err error) {
		log.Error("the changed campaign file does not load; keeping the previous campaign", "error", err)
	}
	go cfg.watcher.Run(ctx, cfg.CampaignPoll)

	hc, err := twilioclient.PooledHTTPClient(cfg.TwilioBaseURL, cfg.TwilioTimeout, cfg.Concurrency)
	if err != nil {
		return err
	}
	// A rotated auth token in the mounted Secret takes effect without a
	// restart: requests use the new token at once, signatures made with
	// the old one stay valid for TokenOverlap.
	go cfg.creds.Run(ctx, cfg.CredentialsPoll,
		func() {
			log.Info("Twilio auth token changed in the mounted Secret; using the new one", "overlap", cfg.TokenOverlap)
		},
		func(err error) {
			log.Error("cannot re-read the Twilio credentials; keeping the ones in force", "error", err)
		})
	rc, err := twilioclient.NewRotating(cfg.creds, hc)
	if err != nil {
		return err
	}
	accountSID, _ := cfg.creds.Current()

	// The Twilio callbacks, and the relay sender telling agents the
	// answers the callbacks queue.
	notify := relay.NewQueue(rdb, "")
	cb, err := callbacks.New(callbacks.Config{
		Campaign: cfg.watcher, Store: st, Redis: rdb, Tokens: cfg.creds.Tokens, Twilio: rc,
		PublicURL: cfg.CallbackURL, Consumer: cfg.Name, Logger: log, Notify: notify,
	})
	if err != nil {
		return fmt.Errorf("callbacks: %w", err)
	}
	sender, err := relay.NewSender(relay.Config{
		Store: st, Queue: notify, Campaign: cfg.watcher, Twilio: rc, Owner: cfg.Name, Logger: log,
		// The campaign's relay webhook key, mounted by the operator.
		Secret: relay.SecretSource(cfg.RelaySecretFile, cfg.RelaySecret), AllowPrivate: cfg.RelayAllowPrivate,
	})
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if err := cb.RegisterMetrics(reg); err != nil {
		return err
	}
	if err := sender.RegisterMetrics(reg); err != nil {
		return err
	}

	w, err := New(Options{
		Name: cfg.Name, Shards: cfg.shards, Concurrency: cfg.Concurrency,
		Store: st, Redis: rdb, Twilio: rc.Api, AccountSID: accountSID, Campaign: cfg.watcher,
		CallbackURL: cfg.CallbackURL, Callbacks: cb.Handler(), Registry: reg, Logger: log,
		Lease: cfg.Lease, QueueLease: cfg.QueueLease, TwilioTimeout: cfg.TwilioTimeout, ClockSkew: cfg.ClockSkew, UnknownGrace: cfg.UnknownGrace, FinalStatusMargin: cfg.FinalStatusMargin, StaleAfter: cfg.StaleAfter,
		ReconcileInterval: cfg.ReconcileInterval, SweepInterval: cfg.SweepInterval, SweepWatchInterval: cfg.SweepWatchInterval, SweepOverdue: cfg.SweepOverdue,
		DrainTimeout: cfg.DrainTimeout, DrainToken: cfg.drainToken,
	})
	if err != nil {
		return err
	}
	// Webhooks first: the readiness probe on the ops server puts the pod in
	// the callback Service's endpoints.
	hooks.Set(w.CallbackHandler())
	ops.Set(w.OpsHandler())
	// The callbacks' journal writer and the relay sender outlive ctx until
	// the worker has finished its attempts in flight.
	var bg sync.WaitGroup
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		// No webhook may come in once the held writes' writer stops: a
		// write neither store takes then would be held by nobody.
		shutdown(hookServer)
		stopBg()
		bg.Wait()
	}()
	bg.Add(2)
	go func() { defer bg.Done(); _ = cb.Run(bgCtx) }()
	go func() { defer bg.Done(); _ = sender.Run(bgCtx) }()
	go func() {
		select {
		case <-abort:
			w.Abort()
		case <-bgCtx.Done():
		}
	}()
	go func() {
		select {
		case err := <-serveErr:
			log.Error("an HTTP server failed; stopping", "error", err)
			stop()
		case <-bgCtx.Done():
		}
	}()
	log.Info("worker starting", "campaign", cfg.Namespace+"/"+cfg.Campaign, "shards", len(cfg.shards),
		"concurrency", cfg.Concurrency, "twilioBaseURL", cfg.TwilioBaseURL != "", "http", cfg.HTTPAddr, "ops", cfg.OpsAddr)
	if err := w.Run(ctx); err != nil {
		return err
	}
	select {
	case <-abort:
		return ErrAborted
	default:
	}
	log.Info("worker stopped")
	return nil
}

// startingHandler answers the operations endpoints before the worker runs.
func startingHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: starting (connecting to the stores)", http.StatusServiceUnavailable)
	})
	return mux
}

// serverTimeouts suit Twilio's webhooks (Twilio itself gives up after 15 s)
// and the operator's and Prometheus's requests.
var serverTimeouts = httpserve.Timeouts{ReadHeader: 5 * time.Second, Read: 15 * time.Second, Write: 30 * time.Second, Idle: 120 * time.Second}

// shutdown stops the servers gracefully, within 5 s.
func shutdown(servers ...*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(ctx)
	}
}

// startingWebhooks answers Twilio's webhooks before the worker runs: 503
// with a Retry-After, so a request that reaches a starting worker is
// refused as unavailable (a proxy may try another pod), never taken for a
// wrong URL. It reads nothing and changes nothing.
func startingWebhooks() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "not ready: starting (connecting to the stores)", http.StatusServiceUnavailable)
	})
}
