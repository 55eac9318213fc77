package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
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
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

// managedByLabel marks the objects the operator owns (worker Deployments and
// Services); the cache holds only those, not every Deployment of the cluster.
const managedByLabel = controllers.LabelManagedBy + "=" + controllers.ManagedBy

// runOperator starts the controller-runtime manager.
func runOperator(args []string) error {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	metricsAddr := fs.String("metrics-bind-address", ":8443", "address of the metrics endpoint (HTTPS, Kubernetes authn/authz); 0 disables it")
	secureMetrics := fs.Bool("metrics-secure", true, "serve metrics over HTTPS behind authentication and authorization")
	probeAddr := fs.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	pprofAddr := fs.String("pprof-bind-address", "", "address of Go's /debug/pprof endpoints (empty: off)")
	leaderElect := fs.Bool("leader-elect", false, "elect a leader so only one operator replica acts")
	leaderNamespace := fs.String("leader-election-namespace", "", "namespace of the leader Lease (default: the pod's namespace)")
	concurrency := fs.Int("max-concurrent-reconciles", 32, "reconciles run at once per controller (the Delivery reconcile waits on the apiserver, MongoDB and Redis, so more than the cores)")
	logLevel := fs.String("log-level", "info", "log level: info or debug")
	workerImage := fs.String("worker-image", "", "default image of worker Deployments (campaigns may override)")
	workerStores := fs.String("worker-stores-secret", "", "Secret in each campaign's namespace with REDIS_URL and MONGO_URI for its workers; empty passes the operator's own REDIS_URL and MONGO_URI")
	statusInterval := fs.Duration("status-interval", 10*time.Second, "how often campaign status (queue figures, totals) is refreshed")
	var conn stores.Settings
	conn.Register(fs)
	var ret retentionFlags
	ret.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := ret.validate(); err != nil {
		return err
	}
	if *concurrency < 1 {
		return fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", *concurrency)
	}
	if err := conn.Validate(); err != nil {
		return err
	}
	zopts := zap.Options{}
	switch *logLevel {
	case "info":
	case "debug":
		zopts.Development = true
	default:
		return fmt.Errorf("--log-level must be info or debug, got %q", *logLevel)
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
	metricsOpts := metricsserver.Options{BindAddress: *metricsAddr, SecureServing: *secureMetrics}
	if *secureMetrics {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  *probeAddr,
		PprofBindAddress:        *pprofAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "operator.delauto.io",
		LeaderElectionNamespace: *leaderNamespace,
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
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
	callLog, err := openStoreRetrying(ctx, &conn)
	if err != nil {
		return err
	}
	defer callLog.Close(context.Background())
	q := queue.New(rdb, queue.Options{})
	metrics := controllers.NewMetrics(ctrlmetrics.Registry)

	if err := controllers.IndexDeliveryPhases(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	hostname, _ := os.Hostname()
	outcomes := controllers.NewOutcomeSource(rdb, "operator-"+hostname, metrics)
	if err := mgr.Add(outcomes); err != nil {
		return err
	}
	deliveries := &controllers.DeliveryReconciler{
		Client:                  mgr.GetClient(),
		Store:                   callLog,
		Queue:                   q,
		Recorder:                mgr.GetEventRecorder(controllers.FieldOwner),
		Outcomes:                outcomes.Events,
		MaxConcurrentReconciles: *concurrency,
		Metrics:                 metrics,
		CallLogRetention:        conn.Retention,
	}
	if err := deliveries.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the Delivery controller: %w", err)
	}
	campaigns := &controllers.CallCampaignReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Workers: controllers.WorkerDefaults{
			Image:        *workerImage,
			StoresSecret: *workerStores,
			RedisURL:     os.Getenv("REDIS_URL"),
			MongoURI:     os.Getenv("MONGO_URI"),
		},
		Queues:                  controllers.RedisQueueStats{Queue: q},
		CallLog:                 callLog,
		Rates:                   controllers.RedisRates{Redis: rdb},
		StatusInterval:          *statusInterval,
		Recorder:                mgr.GetEventRecorder(controllers.FieldOwner),
		MaxConcurrentReconciles: *concurrency,
	}
	if err := campaigns.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the CallCampaign controller: %w", err)
	}
	if err := ret.addJanitor(mgr, callLog); err != nil {
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
	ctrl.Log.WithName("operator").Info("starting", "leaderElect", *leaderElect, "maxConcurrentReconciles", *concurrency)
	return mgr.Start(ctx)
}

// openStoreRetrying opens the call log, retrying with backoff while MongoDB
// is unreachable: an outage at start-up delays the operator, it does not
// crash-loop it.
func openStoreRetrying(ctx context.Context, conn *stores.Settings) (*store.Store, error) {
	logger := ctrl.Log.WithName("operator")
	backoff := time.Second
	for {
		st, err := conn.Store(ctx)
		if err == nil {
			return st, nil
		}
		logger.Error(err, "the call log is unreachable; retrying", "in", backoff.String())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
