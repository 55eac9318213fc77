package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/workers/dialer"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/worker"
)

// Environment variables the worker reads besides the operator's contract
// (controllers.Env*): Twilio credentials for local runs, the simulator's
// URL, and the pod name.
const (
	envTwilioSID     = "TWILIO_ACCOUNT_SID"
	envTwilioToken   = "TWILIO_AUTH_TOKEN"
	envTwilioBaseURL = controllers.EnvTwilioBaseURL
	envPodName       = controllers.EnvPodName
)

// workerConfig is `delauto worker`'s configuration, validated.
type workerConfig struct {
	name              string
	namespace         string
	campaign          string
	shards            []queue.Shard
	concurrency       int
	callbackURL       string
	campaignFile      string
	campaignPoll      time.Duration
	creds             *twilioclient.Credentials
	credsPoll         time.Duration
	tokenOverlap      time.Duration
	twilioBaseURL     string
	twilioTimeout     time.Duration
	relayAllowPrivate bool
	httpAddr, opsAddr string
	lease, queueLease time.Duration
	clockSkew         time.Duration
	unknownGrace      time.Duration
	finalStatusMargin time.Duration
	staleAfter        time.Duration
	reconcileInterval time.Duration
	sweepInterval     time.Duration
	sweepWatch        time.Duration
	sweepOverdue      time.Duration
	drainTimeout      time.Duration
	drainToken        string
	logLevel          slog.Level
	conn              stores.Settings
	watcher           *campaignfile.Watcher
}

// parseWorkerConfig reads the flags (environment variables give their
// defaults) and checks everything that can be checked without a network:
// every problem is reported, one per line.
func parseWorkerConfig(args []string, getenv func(string) string) (*workerConfig, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	envOr := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	c := &workerConfig{}
	host, _ := os.Hostname()
	fs.StringVar(&c.name, "name", envOr(envPodName, host), "this worker's name in the queue and in claims, unique among live workers (env "+envPodName+", default the host name)")
	fs.StringVar(&c.namespace, "campaign-namespace", getenv(controllers.EnvCampaignNamespace), "namespace of the CallCampaign (env "+controllers.EnvCampaignNamespace+"; default: the campaign file's)")
	fs.StringVar(&c.campaign, "campaign", getenv(controllers.EnvCampaign), "name of the CallCampaign (env "+controllers.EnvCampaign+"; default: the campaign file's)")
	shards := fs.String("shards", getenv(controllers.EnvShards), "comma-separated shards of the campaign this worker serves, e.g. shard-0 (env "+controllers.EnvShards+")")
	concurrency := fs.String("concurrency", envOr(controllers.EnvConcurrency, "50"), "attempts handled at once, 1-1000 (env "+controllers.EnvConcurrency+")")
	fs.StringVar(&c.callbackURL, "callback-url", getenv(controllers.EnvCallbackURL), "public base URL of the Twilio callbacks (env "+controllers.EnvCallbackURL+"; default: the campaign's twilio.callbackURL)")
	fs.StringVar(&c.campaignFile, "campaign-file", getenv(controllers.EnvCampaignFile), "the campaign as JSON, from its ConfigMap; re-read when it changes (env "+controllers.EnvCampaignFile+")")
	fs.DurationVar(&c.campaignPoll, "campaign-poll", 5*time.Second, "how often the campaign file is checked for changes")
	twilioDir := fs.String("twilio-dir", getenv(controllers.EnvTwilioDir), "folder with the files "+controllers.TwilioAccountFile+" and "+controllers.TwilioTokenFile+" from the campaign's Twilio Secret (env "+controllers.EnvTwilioDir+"); without it, env "+envTwilioSID+" and "+envTwilioToken)
	fs.StringVar(&c.twilioBaseURL, "twilio-base-url", getenv(envTwilioBaseURL), "send Twilio API requests to this server instead of Twilio, e.g. the simulator http://127.0.0.1:8089 (env "+envTwilioBaseURL+")")
	fs.DurationVar(&c.credsPoll, "credentials-poll", 10*time.Second, "how often the files of --twilio-dir are re-read, so a rotated auth token takes effect without a restart")
	fs.DurationVar(&c.tokenOverlap, "token-overlap", twilioclient.DefaultOverlap, "how long webhook signatures made with a replaced auth token are still accepted")
	fs.BoolVar(&c.relayAllowPrivate, "relay-allow-private", getenv(controllers.EnvRelayAllowPrivate) == "true", "let the relay webhook use plain http and reach private, loopback and link-local addresses (tests, a dispatch system inside the cluster; env "+controllers.EnvRelayAllowPrivate+"=true)")
	fs.DurationVar(&c.twilioTimeout, "twilio-timeout", 10*time.Second, "timeout of one Twilio API request; a create-call request that times out is ambiguous and reconciled")
	fs.StringVar(&c.httpAddr, "http-addr", ":"+strconv.Itoa(controllers.CallbackPort), "address of the Twilio callbacks server")
	fs.StringVar(&c.opsAddr, "ops-addr", ":"+strconv.Itoa(controllers.OpsPort), "address of /healthz, /readyz, /metrics and /drain")
	fs.DurationVar(&c.lease, "lease", 30*time.Second, "claim lease in MongoDB, renewed every third of it while an attempt is held")
	fs.DurationVar(&c.queueLease, "queue-lease", 15*time.Second, "how long a queue entry may go unextended before another worker takes it over")
	fs.DurationVar(&c.clockSkew, "max-clock-skew", time.Second, "the most the clocks of the campaign's workers may differ (leases are written on one pod's clock and judged on another's)")
	fs.DurationVar(&c.unknownGrace, "unknown-grace", 2*time.Minute, "how long an ambiguous dial's call must stay absent from Twilio's call list before a new dial is allowed")
	fs.DurationVar(&c.finalStatusMargin, "final-status-margin", 2*time.Minute, "how long past a call's ring timeout and time limit a call without a final status callback waits before its status is fetched from Twilio")
	fs.DurationVar(&c.staleAfter, "stale-after", 5*time.Second, "how long past its lease a dialing claim is taken as abandoned by its worker and reconciled")
	fs.DurationVar(&c.reconcileInterval, "reconcile-interval", 5*time.Second, "period of the ambiguity reconciler")
	fs.DurationVar(&c.sweepInterval, "sweep-interval", 5*time.Minute, "period of the sweeper's safety-net pass that requeues overdue attempts Redis lost")
	fs.DurationVar(&c.sweepWatch, "sweep-watch-interval", 5*time.Second, "how often the sweeper checks whether Redis restarted or failed over (then it requeues the shards' whole queues at once)")
	fs.DurationVar(&c.sweepOverdue, "sweep-overdue", 30*time.Second, "how late an attempt must be before the sweeper requeues it")
	drainTokenFile := fs.String("drain-token-file", getenv(controllers.EnvDrainTokenFile), "file with the operator's drain token that /drain requests must carry as a Bearer token (env "+controllers.EnvDrainTokenFile+"); without it /drain refuses every request")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 0, "on SIGTERM or a drain, cancel attempts still in flight after this long (0: wait for them)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	c.conn.RegisterEnv(fs, getenv)
	if err := parseModeFlags(fs, args, "worker", "Places the calls of one campaign's shards (see workers/worker)."); err != nil {
		return nil, err
	}

	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if c.name == "" {
		bad("--name is empty (env %s): every worker needs a unique name", envPodName)
	}
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		bad("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	n, err := strconv.Atoi(strings.TrimSpace(*concurrency))
	switch {
	case err != nil:
		bad("--concurrency (env %s) %q is not a number", controllers.EnvConcurrency, *concurrency)
	case n < 1 || n > 1000:
		bad("--concurrency (env %s) %d must be between 1 and 1000", controllers.EnvConcurrency, n)
	}
	c.concurrency = n

	// The campaign.
	if c.campaignFile == "" {
		bad("--campaign-file (env %s) is required: the campaign's JSON from its ConfigMap", controllers.EnvCampaignFile)
	} else if c.watcher, err = campaignfile.NewWatcher(c.campaignFile); err != nil {
		bad("%v", err)
	} else {
		cur := c.watcher.Current()
		if c.namespace == "" {
			c.namespace = cur.Namespace
		} else if c.namespace != cur.Namespace {
			bad("--campaign-namespace (env %s) is %q but the campaign file is of namespace %q", controllers.EnvCampaignNamespace, c.namespace, cur.Namespace)
		}
		if c.campaign == "" {
			c.campaign = cur.Name
		} else if c.campaign != cur.Name {
			bad("--campaign (env %s) is %q but the campaign file is of campaign %q", controllers.EnvCampaign, c.campaign, cur.Name)
		}
		if c.callbackURL != "" {
			if err := dialer.CheckCallbackURL(c.callbackURL); err != nil {
				bad("--callback-url (env %s): %v", controllers.EnvCallbackURL, err)
			}
		}
		if _, err := dialer.Compile(cur, c.callbackURL); err != nil {
			bad("%v", err)
		}
	}
	if c.campaignPoll <= 0 {
		bad("--campaign-poll must be positive")
	}
	if strings.TrimSpace(*shards) == "" {
		bad("--shards (env %s) is required: the comma-separated shards this worker serves, e.g. shard-0", controllers.EnvShards)
	} else {
		seen := map[string]bool{}
		for _, name := range strings.Split(*shards, ",") {
			name = strings.TrimSpace(name)
			if seen[name] {
				bad("--shards lists %q twice", name)
				continue
			}
			seen[name] = true
			s := queue.Shard{Namespace: c.namespace, Campaign: c.campaign, Name: name}
			if c.namespace == "" || c.campaign == "" {
				continue // reported above
			}
			if err := s.Validate(); err != nil {
				bad("--shards: %v", err)
				continue
			}
			c.shards = append(c.shards, s)
		}
	}

	if *drainTokenFile != "" {
		tok, err := twilioclient.ReadSecretFile(*drainTokenFile)
		if err != nil {
			bad("drain token from --drain-token-file (env %s): %v", controllers.EnvDrainTokenFile, err)
		}
		c.drainToken = tok
	}

	// Twilio.
	switch {
	case *twilioDir != "":
		creds, err := twilioclient.LoadCredentials(*twilioDir, c.tokenOverlap)
		if err != nil {
			bad("Twilio credentials from --twilio-dir (env %s): %v", controllers.EnvTwilioDir, err)
		}
		c.creds = creds
	case getenv(envTwilioSID) != "" || getenv(envTwilioToken) != "":
		creds, err := twilioclient.StaticCredentials(strings.TrimSpace(getenv(envTwilioSID)), strings.TrimSpace(getenv(envTwilioToken)))
		if err != nil {
			bad("%v", err)
		}
		c.creds = creds
	default:
		bad("no Twilio credentials: mount the campaign's Secret and set --twilio-dir (env %s) to the folder with %s and %s, or set %s and %s",
			controllers.EnvTwilioDir, controllers.TwilioAccountFile, controllers.TwilioTokenFile, envTwilioSID, envTwilioToken)
	}
	if c.credsPoll <= 0 || c.tokenOverlap <= 0 {
		bad("--credentials-poll and --token-overlap must be positive")
	}
	if c.twilioBaseURL != "" {
		if _, err := twilioclient.RedirectTransport(c.twilioBaseURL, nil); err != nil {
			bad("--twilio-base-url (env %s): %v", envTwilioBaseURL, err)
		}
	}
	if c.twilioTimeout <= 0 {
		bad("--twilio-timeout must be positive")
	}

	// Timing.
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--queue-lease", c.queueLease}, {"--unknown-grace", c.unknownGrace}, {"--final-status-margin", c.finalStatusMargin}, {"--stale-after", c.staleAfter}, {"--reconcile-interval", c.reconcileInterval},
		{"--sweep-interval", c.sweepInterval}, {"--sweep-watch-interval", c.sweepWatch}, {"--sweep-overdue", c.sweepOverdue}, {"--max-clock-skew", c.clockSkew}} {
		if d.v <= 0 {
			bad("%s must be positive, got %s", d.name, d.v)
		}
	}
	if c.lease < 3*time.Second {
		bad("--lease %s is too short: use 3s or more", c.lease)
	} else if c.twilioTimeout > 0 && c.staleAfter > 0 && c.unknownGrace > 0 && c.queueLease > 0 && c.clockSkew > 0 {
		// The relations that keep an attempt to one call (dialer.Timing).
		_, err := dialer.Timing{Lease: c.lease, QueueLease: c.queueLease, TwilioTimeout: c.twilioTimeout,
			StaleAfter: c.staleAfter, UnknownGrace: c.unknownGrace, ClockSkew: c.clockSkew}.Derive()
		for _, e := range unjoin(err) {
			bad("--lease, --twilio-timeout, --stale-after, --unknown-grace, --max-clock-skew: %v", e)
		}
	}
	if c.drainTimeout < 0 {
		bad("--drain-timeout must not be negative")
	}
	serverAddrs(bad, c.httpAddr, c.opsAddr)
	storeProblems(bad, &c.conn)
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return c, nil
}

// unjoin splits an errors.Join error into its errors.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// runWorker is `delauto worker`.
func runWorker(args []string) error {
	cfg, err := parseWorkerConfig(args, os.Getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel})).With("worker", cfg.name)
	slog.SetDefault(log)
	redis.SetLogger(redisLogger{log.With("component", "redis-client")})

	// First signal: drain and exit; second: abort what is in flight.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var aborted sync.Once
	abort := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			log.Info("signal: draining, then exiting", "signal", s.String())
			stop()
		case <-ctx.Done():
			return
		}
		s := <-sigs
		log.Warn("second signal: aborting the attempts in flight", "signal", s.String())
		aborted.Do(func() { close(abort) })
	}()

	// The operations endpoints answer from the start: live, not ready.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var ops, callbacks handlerSlot
	ops.set(startingHandler())
	callbacks.set(http.NotFoundHandler())
	servers := []*http.Server{
		newServer(cfg.opsAddr, &ops, serverTimeouts),
		newServer(cfg.httpAddr, &callbacks, serverTimeouts),
	}
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
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
	}()

	rdb, err := cfg.conn.Redis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if r := cfg.watcher.Current().Spec.Retention; r != nil {
		// Attempts carry their campaign's retention from the operator; this
		// covers the ones planned before they did.
		cfg.conn.Retention = r.Duration
	}
	st, err := cfg.conn.StoreRetrying(ctx, func(err error, in time.Duration) {
		log.Error("the call log is unreachable; retrying", "error", err, "in", in.String())
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before the store came up: nothing in flight
		}
		return err
	}
	defer st.Close(context.Background())
	st.SetInsightsNotify(func(namespaces []string) { insights.Bump(rdb, log, namespaces...) })

	cfg.watcher.OnError = func(err error) {
		log.Error("the changed campaign file does not load; keeping the previous campaign", "error", err)
	}
	go cfg.watcher.Run(ctx, cfg.campaignPoll)

	hc, err := twilioclient.PooledHTTPClient(cfg.twilioBaseURL, cfg.twilioTimeout, cfg.concurrency)
	if err != nil {
		return err
	}
	// A rotated auth token in the mounted Secret takes effect without a
	// restart: requests use the new token at once, signatures made with
	// the old one stay valid for --token-overlap.
	go cfg.creds.Run(ctx, cfg.credsPoll,
		func() {
			log.Info("Twilio auth token changed in the mounted Secret; using the new one", "overlap", cfg.tokenOverlap)
		},
		func(err error) {
			log.Error("cannot re-read the Twilio credentials; keeping the ones in force", "error", err)
		})
	rc, err := twilioclient.NewRotating(cfg.creds, hc)
	if err != nil {
		return err
	}
	accountSID, _ := cfg.creds.Current()
	cb, runCallbacks, err := newCallbacks(callbackDeps{
		Name: cfg.name, Campaign: cfg.watcher, Store: st, Redis: rdb, Twilio: rc,
		Tokens: cfg.creds.Tokens, CallbackURL: cfg.callbackURL,
		RelayAllowPrivate: cfg.relayAllowPrivate, Registry: reg, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("callbacks: %w", err)
	}
	w, err := worker.New(worker.Options{
		Name: cfg.name, Shards: cfg.shards, Concurrency: cfg.concurrency,
		Store: st, Redis: rdb, Twilio: rc.Api, AccountSID: accountSID, Campaign: cfg.watcher,
		CallbackURL: cfg.callbackURL, Callbacks: cb, Registry: reg, Logger: log,
		Lease: cfg.lease, QueueLease: cfg.queueLease, TwilioTimeout: cfg.twilioTimeout, ClockSkew: cfg.clockSkew, UnknownGrace: cfg.unknownGrace, FinalStatusMargin: cfg.finalStatusMargin, StaleAfter: cfg.staleAfter,
		ReconcileInterval: cfg.reconcileInterval, SweepInterval: cfg.sweepInterval, SweepWatchInterval: cfg.sweepWatch, SweepOverdue: cfg.sweepOverdue,
		DrainTimeout: cfg.drainTimeout, DrainToken: cfg.drainToken,
	})
	if err != nil {
		return err
	}
	ops.set(w.OpsHandler())
	callbacks.set(w.CallbackHandler())
	var bg sync.WaitGroup
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer func() { stopBg(); bg.Wait() }()
	if runCallbacks != nil {
		bg.Add(1)
		go func() { defer bg.Done(); _ = runCallbacks(bgCtx) }()
	}
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
	log.Info("worker starting", "campaign", cfg.namespace+"/"+cfg.campaign, "shards", len(cfg.shards),
		"concurrency", cfg.concurrency, "twilioBaseURL", cfg.twilioBaseURL != "", "http", cfg.httpAddr, "ops", cfg.opsAddr)
	if err := w.Run(ctx); err != nil {
		return err
	}
	select {
	case <-abort:
		return errors.New("aborted by a second signal: attempts in flight are reconciled by the other workers")
	default:
	}
	log.Info("worker stopped")
	return nil
}

// redisLogger sends go-redis's own messages (reconnects) to the JSON log.
type redisLogger struct{ log *slog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.log.Warn(fmt.Sprintf(format, v...))
}

// handlerSlot is an http.Handler that can be swapped while serving.
type handlerSlot struct {
	mu sync.RWMutex
	h  http.Handler
}

func (s *handlerSlot) set(h http.Handler) { s.mu.Lock(); s.h = h; s.mu.Unlock() }

func (s *handlerSlot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	h := s.h
	s.mu.RUnlock()
	h.ServeHTTP(w, r)
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

// timeouts bound how long a client may hold a connection of the worker's
// HTTP servers: a slow or stalled client cannot pile up connections.
type timeouts struct {
	readHeader, read, write, idle time.Duration
}

// serverTimeouts suit Twilio's webhooks (Twilio itself gives up after 15 s)
// and the operator's and Prometheus's requests.
var serverTimeouts = timeouts{readHeader: 5 * time.Second, read: 15 * time.Second, write: 30 * time.Second, idle: 120 * time.Second}

// newServer is an HTTP server on addr with every timeout set.
func newServer(addr string, h http.Handler, t timeouts) *http.Server {
	return &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: t.readHeader, ReadTimeout: t.read, WriteTimeout: t.write, IdleTimeout: t.idle,
	}
}
