package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	delautov1alpha1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/workers/queue"
)

// managedByLabel marks the objects the operator owns (worker Deployments and
// Services); the cache holds only those, not every Deployment of the cluster.
const managedByLabel = controllers.LabelManagedBy + "=" + controllers.ManagedBy

// operatorConfig is `delauto operator`'s configuration, validated.
type operatorConfig struct {
	metricsAddr     string
	secureMetrics   bool
	probeAddr       string
	pprofAddr       string
	leaderElect     bool
	leaderNamespace string
	concurrency     int
	logLevel        string
	statusInterval  time.Duration
	finalizerPolicy string
	conn            stores.Settings
	retention       retentionFlags
	// workers is what every worker Deployment gets, the operator's own
	// store settings included.
	workers controllers.WorkerDefaults
}

// parseOperatorConfig reads the flags (environment variables give the store
// settings' defaults) and checks them.
// envPodNamespace is the operator pod's namespace (downward API).
const envPodNamespace = "POD_NAMESPACE"

func parseOperatorConfig(args []string, getenv func(string) string) (*operatorConfig, error) {
	c := &operatorConfig{}
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	fs.StringVar(&c.metricsAddr, "metrics-bind-address", ":8443", "address of the metrics endpoint (HTTPS, Kubernetes authn/authz); 0 disables it")
	fs.BoolVar(&c.secureMetrics, "metrics-secure", true, "serve metrics over HTTPS behind authentication and authorization")
	fs.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.StringVar(&c.pprofAddr, "pprof-bind-address", "", "address of Go's /debug/pprof endpoints (empty: off)")
	fs.BoolVar(&c.leaderElect, "leader-elect", false, "elect a leader so only one operator replica acts")
	fs.StringVar(&c.leaderNamespace, "leader-election-namespace", getenv(envPodNamespace), "namespace of the leader Lease (default: env "+envPodNamespace+", which the chart sets from the downward API, else the pod's ServiceAccount namespace)")
	fs.IntVar(&c.concurrency, "max-concurrent-reconciles", 32, "reconciles run at once per controller (the Delivery reconcile waits on the apiserver, MongoDB and Redis, so more than the cores)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: info or debug")
	fs.StringVar(&c.workers.Image, "worker-image", "", "default image of worker Deployments (campaigns may override)")
	fs.Func("allowed-worker-images", "comma-separated worker images campaigns may name: exact references or prefixes (a prefix ending in / or : allows what follows; one without allows its repository with any tag or digest); default: only --worker-image", func(v string) error {
		c.workers.AllowedImages = nil
		for _, img := range strings.Split(v, ",") {
			if img = strings.TrimSpace(img); img != "" {
				c.workers.AllowedImages = append(c.workers.AllowedImages, img)
			}
		}
		return nil
	})
	fs.StringVar(&c.workers.StoresSecret, "worker-stores-secret", controllers.DefaultStoresSecret, "Secret each campaign's namespace must hold with where the workers' stores are and how to log in ("+
		stores.EnvRedisURL+" or "+stores.EnvRedisAddrs+" and "+stores.EnvRedisPassword+", "+stores.EnvMongoURI+"); the operator never hands the workers its own")
	fs.StringVar(&c.workers.TwilioBaseURL, "worker-twilio-base-url", "", "for tests and demos only: point every worker at this Twilio API base URL (the Twilio simulator) instead of Twilio; empty (the default) is Twilio")
	fs.BoolVar(&c.workers.RelayAllowPrivate, "worker-relay-allow-private", false, "for tests, demos and dispatch systems inside the cluster: let every worker's relay webhook use plain http and private or loopback addresses (the workers' --relay-allow-private); off by default")
	fs.Func("worker-ops-peers", "who besides the operator may reach the workers' ops port (metrics, probes, drain), as a JSON list of NetworkPolicy peers, e.g. "+
		`[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}},"podSelector":{"matchLabels":{"app.kubernetes.io/name":"prometheus"}}}]`+
		"; default: pods labelled app.kubernetes.io/name=prometheus in any namespace", func(v string) error {
		peers, err := controllers.ParseOpsPeers(v)
		c.workers.OpsPeers = peers
		return err
	})
	fs.DurationVar(&c.statusInterval, "status-interval", 10*time.Second, "how often campaign status (queue figures, totals) is refreshed")
	fs.StringVar(&c.finalizerPolicy, "finalizer-policy", controllers.DefaultFinalizerPolicy, "MutatingAdmissionPolicy (and binding of the same name) that sets the finalizer on new Deliveries; when it is installed the operator writes nothing for the finalizer, else (or when empty) it patches each new Delivery")
	c.conn.RegisterEnv(fs, getenv)
	c.retention.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := c.retention.validate(); err != nil {
		return nil, err
	}
	if c.concurrency < 1 {
		return nil, fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", c.concurrency)
	}
	if c.workers.StoresSecret == "" {
		return nil, fmt.Errorf("--worker-stores-secret must name a Secret: workers get their store credentials only from it")
	}
	if c.workers.TwilioBaseURL != "" {
		if u, err := url.Parse(c.workers.TwilioBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--worker-twilio-base-url %q must be an http(s) URL", c.workers.TwilioBaseURL)
		}
	}
	if err := c.conn.Validate(); err != nil {
		return nil, err
	}
	c.workers.Stores = c.conn
	return c, nil
}

// runOperator starts the controller-runtime manager.
func runOperator(args []string) error {
	cfg, err := parseOperatorConfig(args, os.Getenv)
	if err != nil {
		return err
	}
	conn := cfg.conn
	zopts := zap.Options{}
	switch cfg.logLevel {
	case "info":
	case "debug":
		zopts.Development = true
	default:
		return fmt.Errorf("--log-level must be info or debug, got %q", cfg.logLevel)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := delautov1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	owned, err := labels.Parse(managedByLabel)
	if err != nil {
		return err
	}
	metricsOpts := metricsserver.Options{BindAddress: cfg.metricsAddr, SecureServing: cfg.secureMetrics}
	if cfg.secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  cfg.probeAddr,
		PprofBindAddress:        cfg.pprofAddr,
		LeaderElection:          cfg.leaderElect,
		LeaderElectionID:        "operator.delauto.io",
		LeaderElectionNamespace: cfg.leaderNamespace,
		Cache: cache.Options{
			DefaultTransform: controllers.CacheTransform(),
			ByObject: map[client.Object]cache.ByObject{
				&appsv1.Deployment{}: {Label: owned},
				&corev1.Service{}:    {Label: owned},
				&corev1.ConfigMap{}:  {Label: owned},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()
	rdb, err := conn.Redis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	callLog, err := conn.StoreRetrying(ctx, func(err error, in time.Duration) {
		ctrl.Log.WithName("operator").Error(err, "the call log is unreachable; retrying", "in", in.String())
	})
	if err != nil {
		return err
	}
	defer callLog.Close(context.Background())
	callLog.SetInsightsNotify(func(namespaces []string) { insights.Bump(rdb, slog.Default(), namespaces...) })
	q := queue.New(rdb, queue.Options{})
	metrics := controllers.NewMetrics(ctrlmetrics.Registry)
	ctrlmetrics.Registry.MustRegister(&controllers.CampaignCollector{Reader: mgr.GetCache()})

	if err := controllers.IndexDeliveryPhases(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	hostname, _ := os.Hostname()
	outcomes := controllers.NewOutcomeSource(rdb, "operator-"+hostname, metrics)
	if err := mgr.Add(outcomes); err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	finalizerMode, why := controllers.DetectFinalizerMode(ctx, disc, mgr.GetAPIReader(), cfg.finalizerPolicy)
	metrics.SetFinalizerMode(finalizerMode)
	ctrl.Log.WithName("operator").Info("finalizer of new Deliveries", "mode", finalizerMode, "why", why)
	deliveries := &controllers.DeliveryReconciler{
		Client:                  mgr.GetClient(),
		Store:                   callLog,
		Queue:                   q,
		Recorder:                mgr.GetEventRecorder(controllers.FieldOwner),
		Outcomes:                outcomes.Events,
		MaxConcurrentReconciles: cfg.concurrency,
		Metrics:                 metrics,
		CallLogRetention:        conn.Retention,
		FinalizerMode:           finalizerMode,
	}
	if err := deliveries.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the Delivery controller: %w", err)
	}
	// The autoscaler sizes the fleet by the queues and by the length of
	// recent calls, which the workers' callback servers record in Redis.
	autoscaler := &controllers.Autoscaler{Figures: controllers.RedisQueueStats{Queue: q}, Durations: controllers.RedisRates{Redis: rdb},
		Metrics: controllers.NewScaleMetrics(ctrlmetrics.Registry)}
	campaigns := &controllers.CallCampaignReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Workers:                 cfg.workers,
		Queues:                  controllers.RedisQueueStats{Queue: q},
		CallLog:                 callLog,
		Rates:                   controllers.RedisRates{Redis: rdb},
		Autoscaler:              autoscaler,
		StatusInterval:          cfg.statusInterval,
		Recorder:                mgr.GetEventRecorder(controllers.FieldOwner),
		MaxConcurrentReconciles: cfg.concurrency,
	}
	if err := campaigns.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the CallCampaign controller: %w", err)
	}
	if err := cfg.retention.addJanitor(mgr, callLog); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("redis", func(req *http.Request) error { return rdb.Ping(req.Context()).Err() }); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("mongo", func(req *http.Request) error { return callLog.Ping(req.Context()) }); err != nil {
		return err
	}
	ctrl.Log.WithName("operator").Info("starting", "leaderElect", cfg.leaderElect, "maxConcurrentReconciles", cfg.concurrency)
	return mgr.Start(ctx)
}
