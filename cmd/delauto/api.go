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
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/delauto/delauto/internal/httpserve"
	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/internal/insightsapi"
	"github.com/delauto/delauto/internal/stores"
)

// apiConfig is `delauto api`'s configuration, validated.
type apiConfig struct {
	httpAddr, opsAddr string
	tlsCert, tlsKey   string
	cacheTTL          time.Duration
	authTTL           time.Duration
	authEntries       int
	audiences         []string
	maxRange          time.Duration
	queryTimeout      time.Duration
	kubeQPS           float64
	kubeBurst         int
	logLevel          slog.Level
	conn              stores.Settings
}

// apiTimeouts bound the API's connections: a dashboard's request is
// answered in well under a second, a slow client cannot hold a connection.
var apiTimeouts = httpserve.Timeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 30 * time.Second, Idle: 120 * time.Second}

// parseAPIConfig reads the flags (environment variables give the store
// settings' defaults) and reports every problem, one per line.
func parseAPIConfig(args []string, getenv func(string) string) (*apiConfig, error) {
	c := &apiConfig{}
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.StringVar(&c.httpAddr, "http-addr", ":8090", "address of the API (/api/v1/..., /openapi.json)")
	fs.StringVar(&c.opsAddr, "ops-addr", ":8091", "address of /healthz, /readyz and /metrics (not :8081 nor :8082, the operator's and the workers', so all run on one machine)")
	fs.StringVar(&c.tlsCert, "tls-cert-file", "", "serve the API over HTTPS with this certificate (PEM; with --tls-key-file); default plain HTTP, for TLS ended in front of it")
	fs.StringVar(&c.tlsKey, "tls-key-file", "", "the private key of --tls-cert-file (PEM)")
	fs.DurationVar(&c.cacheTTL, "cache-ttl", insightsapi.DefaultCacheTTL, "how long an answer stays in the Redis cache; a new outcome of its namespace ends it sooner")
	fs.DurationVar(&c.authTTL, "auth-cache-ttl", insightsapi.DefaultAuthTTL, "how long a TokenReview or SubjectAccessReview answer is reused (a revoked token or RoleBinding takes effect after at most this long)")
	fs.IntVar(&c.authEntries, "auth-cache-size", insightsapi.DefaultAuthMaxEntries, "most tokens (and token-namespace pairs) the TokenReview (and SubjectAccessReview) cache holds")
	audiences := fs.String("token-audiences", "", "comma-separated audiences a token must be issued for (empty: the apiserver's own)")
	fs.DurationVar(&c.maxRange, "max-range", insightsapi.DefaultMaxRange, "the longest from..to an analytics query may span")
	fs.DurationVar(&c.queryTimeout, "query-timeout", insightsapi.DefaultQueryTimeout, "timeout of one query of the call log (answered 504 past it)")
	fs.Float64Var(&c.kubeQPS, "kube-api-qps", 50, "most requests per second to the Kubernetes API (TokenReviews and SubjectAccessReviews on cache misses)")
	fs.IntVar(&c.kubeBurst, "kube-api-burst", 100, "burst of --kube-api-qps")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	c.conn.RegisterEnv(fs, getenv)
	if err := parseModeFlags(fs, args, "api", "Serves the delivery insights read API (see docs/api.md)."); err != nil {
		return nil, err
	}
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		bad("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	serverAddrs(bad, c.httpAddr, c.opsAddr)
	if (c.tlsCert == "") != (c.tlsKey == "") {
		bad("--tls-cert-file and --tls-key-file go together")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--cache-ttl", c.cacheTTL}, {"--auth-cache-ttl", c.authTTL}, {"--max-range", c.maxRange}, {"--query-timeout", c.queryTimeout}} {
		if d.v <= 0 {
			bad("%s must be positive, got %s", d.name, d.v)
		}
	}
	if c.maxRange > 0 && c.maxRange < time.Hour {
		bad("--max-range %s is shorter than an hour, the rollups' step", c.maxRange)
	}
	if c.authEntries < 1 {
		bad("--auth-cache-size must be at least 1, got %d", c.authEntries)
	}
	if c.kubeQPS <= 0 || c.kubeBurst < 1 {
		bad("--kube-api-qps and --kube-api-burst must be positive")
	}
	for _, a := range strings.Split(*audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.audiences = append(c.audiences, a)
		}
	}
	storeProblems(bad, &c.conn)
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return c, nil
}

// runAPI is `delauto api`.
func runAPI(args []string) error {
	cfg, err := parseAPIConfig(args, os.Getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel})).With("mode", "api")
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	kcfg, err := ctrlconfig.GetConfig()
	if err != nil {
		return fmt.Errorf("Kubernetes API configuration (in-cluster, or KUBECONFIG): %w", err)
	}
	kcfg.QPS, kcfg.Burst = float32(cfg.kubeQPS), cfg.kubeBurst
	kcfg.UserAgent = "delauto-api/" + version
	kube, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	auth, err := insightsapi.NewKubeAuth(kube, insightsapi.AuthOptions{TTL: cfg.authTTL, MaxEntries: cfg.authEntries, Audiences: cfg.audiences, Registerer: reg})
	if err != nil {
		return err
	}
	rdb, err := cfg.conn.Redis()
	if err != nil {
		return err
	}
	defer rdb.Close()

	// The ops endpoints answer from the start: live, not ready until the
	// call log is open.
	var ready httpserve.Slot
	ready.Set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "starting: the call log is not open yet", http.StatusServiceUnavailable)
	}))
	ops := http.NewServeMux()
	ops.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ops.Handle("GET /readyz", &ready)
	ops.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	var api httpserve.Slot
	api.Set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	opsSrv, apiSrv := httpserve.NewServer(cfg.opsAddr, ops, apiTimeouts), httpserve.NewServer(cfg.httpAddr, &api, apiTimeouts)
	serveErr := make(chan error, 2)
	for _, s := range []*http.Server{opsSrv, apiSrv} {
		l, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", s.Addr, err)
		}
		tls := s == apiSrv && cfg.tlsCert != ""
		go func() {
			var err error
			if tls {
				err = s.ServeTLS(l, cfg.tlsCert, cfg.tlsKey)
			} else {
				err = s.Serve(l)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("serve %s: %w", s.Addr, err)
			}
		}()
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = apiSrv.Shutdown(sctx)
		_ = opsSrv.Shutdown(sctx)
	}()

	callLog, err := cfg.conn.StoreRetrying(ctx, func(err error, in time.Duration) {
		log.Error("the call log is unreachable; retrying", "err", err, "in", in.String())
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer callLog.Close(context.Background())
	var src insights.Source = callLog
	srv, err := insightsapi.New(insightsapi.Config{Source: src, Auth: auth, Redis: rdb, CacheTTL: cfg.cacheTTL,
		MaxRange: cfg.maxRange, QueryTimeout: cfg.queryTimeout, Logger: log}, reg)
	if err != nil {
		return err
	}
	api.Set(srv.Handler())
	ready.Set(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Redis is a cache: without it the API still answers, slower.
		if err := callLog.Ping(r.Context()); err != nil {
			http.Error(w, "the call log is unreachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}))
	log.Info("serving", "http", cfg.httpAddr, "ops", cfg.opsAddr, "tls", cfg.tlsCert != "", "cacheTTL", cfg.cacheTTL.String(), "authCacheTTL", cfg.authTTL.String())
	select {
	case <-ctx.Done():
		log.Info("signal: stopping")
		return nil
	case err := <-serveErr:
		return err
	}
}
