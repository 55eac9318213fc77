package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/sharding"
	"github.com/delauto/delauto/internal/stores"
)

// FieldOwner is the operator's name: the server-side-apply field manager of
// the campaign workload (worker Deployments, campaign ConfigMap, callback
// Service, NetworkPolicy) and the reporting controller of its Events.
const FieldOwner = "delauto-operator"

// StatusFieldOwner is the field manager of the CallCampaign status writes
// (the campaign status controller's).
const StatusFieldOwner = FieldOwner + "-status"

// CallCampaignReconciler configures the two CallCampaign controllers
// SetupWithManager registers: the workload controller applies each
// campaign's per-shard worker Deployments, campaign ConfigMap, callback
// Service and NetworkPolicy (field manager FieldOwner), and moves the queues
// of removed shards; the status controller reports the campaign's status
// (StatusFieldOwner) every StatusInterval and when its Deployments or the
// autoscaler's decisions change.
type CallCampaignReconciler struct {
	client.Client
	// APIReader reads Secrets directly, one namespaced get each: the
	// operator may not list or watch Secrets, so a Secret's change is seen
	// at the next status refresh.
	APIReader client.Reader
	// Workers configures the worker Deployments.
	Workers WorkerDefaults
	// Queues reads per-shard queue figures; nil leaves them out of the status.
	Queues QueueStats
	// CallLog is pinged to report an unreachable MongoDB; nil skips the check.
	CallLog Pinger
	// Rates reads the campaign's calls per second and whether dials wait on
	// the account's limit; nil leaves them out of the status.
	Rates RateReader
	// StatusInterval is how often status is refreshed while nothing changes.
	StatusInterval time.Duration
	// Recorder emits Events.
	Recorder events.EventRecorder
	// MaxConcurrentReconciles bounds parallel reconciles.
	MaxConcurrentReconciles int
	// Autoscaler decides each shard's replicas; nil runs every shard at
	// the campaign's minimum (at least one).
	Autoscaler *Autoscaler

	// checks are the latest checkCampaign results, shared by both controllers.
	checks checkResults
}

// campaignScope is one reconcile's state, passed between the phases.
type campaignScope struct {
	campaign *v1.CallCampaign
	shards   []string
	// deployments are the campaign's worker Deployments by shard, after apply.
	deployments map[string]*appsv1.Deployment
	// degraded, when set, says why calling cannot work.
	degraded *metav1.Condition
	// held leaves the campaign's worker Deployments as they are: what they
	// would run is not allowed.
	held bool
	// queueErr is set when the queue figures could not be read.
	queueErr error
	// storeErr is set when the call log (MongoDB) is unreachable.
	storeErr error
	// rate is the campaign's recent calls per second, when known.
	rate        *float64
	rateLimited bool
	queue       map[string]ShardQueueStats
	// dialErr is the configuration error Twilio recently answered the
	// campaign's dials with, if any.
	dialErr *callrate.DialError
	// totals are the campaign's Deliveries by phase.
	totals v1.PhaseTotals
}

// newCampaignScope reads the campaign; nil when it is gone or being
// deleted (its Deployments, Service and ConfigMap go with it, by owner
// references; the call log stays in MongoDB).
func (r *CallCampaignReconciler) newCampaignScope(ctx context.Context, req ctrl.Request) (*campaignScope, error) {
	campaign := &v1.CallCampaign{}
	if err := r.Get(ctx, req.NamespacedName, campaign); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if !campaign.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return &campaignScope{campaign: campaign, shards: sharding.Names(campaign.Spec.Sharding)}, nil
}

// Reconcile runs the workload controller's reconcile and then the status
// controller's, once: for tools and tests that reconcile a campaign
// without a manager. SetupWithManager runs each in its own controller.
func (r *CallCampaignReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if _, err := (&campaignWorkload{r}).Reconcile(ctx, req); err != nil {
		return ctrl.Result{}, err
	}
	return (&campaignStatus{r}).Reconcile(ctx, req)
}

// checkCampaign runs the checks both controllers act on: the workload
// holds the workers on a failed one, the status reports it as Degraded.
// The checks read Secrets from the apiserver; what one controller found is
// reused by the other for half a StatusInterval (for the same generation),
// so two controllers cost no more reads than one.
func (r *CallCampaignReconciler) checkCampaign(ctx context.Context, s *campaignScope) error {
	key := client.ObjectKeyFromObject(s.campaign)
	if res, ok := r.checks.get(key, s.campaign.UID, s.campaign.Generation, r.StatusInterval/2); ok {
		s.degraded, s.held = res.degraded, res.held
		return nil
	}
	if err := runPhases(ctx, s, nil,
		r.checkCredentials,
		r.checkScript,
		r.checkWorkerImage,
		r.checkStoresSecret,
	); err != nil {
		return err
	}
	r.checks.put(key, checkResult{uid: s.campaign.UID, generation: s.campaign.Generation, at: time.Now(), degraded: s.degraded, held: s.held})
	return nil
}

// checkResult is what checkCampaign found for a campaign's generation.
type checkResult struct {
	uid        types.UID
	generation int64
	at         time.Time
	degraded   *metav1.Condition
	held       bool
}

// checkResults keeps the latest checkResult of each campaign.
type checkResults struct {
	mu sync.Mutex
	m  map[types.NamespacedName]checkResult
}

// get returns the result for the campaign (uid) and generation when it is
// younger than maxAge: a campaign deleted and created again under its name
// is checked anew.
func (c *checkResults) get(key types.NamespacedName, uid types.UID, generation int64, maxAge time.Duration) (checkResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res, ok := c.m[key]
	if !ok || res.uid != uid || res.generation != generation || time.Since(res.at) >= maxAge {
		return checkResult{}, false
	}
	return res, true
}

func (c *checkResults) put(key types.NamespacedName, res checkResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[types.NamespacedName]checkResult{}
	}
	c.m[key] = res
}

// forget drops a deleted campaign's result.
func (c *checkResults) forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// checkCredentials makes sure the Twilio Secret (and the relay webhook's)
// exists with the keys the workers read.
func (r *CallCampaignReconciler) checkCredentials(ctx context.Context, s *campaignScope) error {
	c := s.campaign
	ref := c.Spec.Twilio.CredentialsSecretRef
	need := []struct{ name, key string }{
		{ref.Name, ref.AccountSIDKey},
		{ref.Name, ref.AuthTokenKey},
	}
	if wh := c.Spec.Relay.Webhook; wh != nil {
		need = append(need, struct{ name, key string }{wh.SecretRef.Name, wh.SecretRef.Key})
	}
	for _, n := range need {
		secret := &corev1.Secret{}
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: n.name}, secret)
		switch {
		case apierrors.IsNotFound(err):
			s.degraded = degradedCondition(c, "SecretMissing", fmt.Sprintf("Secret %q does not exist in namespace %s", n.name, c.Namespace))
			return nil
		case err != nil:
			return fmt.Errorf("read Secret %s: %w", n.name, err)
		case len(secret.Data[n.key]) == 0:
			s.degraded = degradedCondition(c, "SecretKeyMissing", fmt.Sprintf("Secret %q has no key %q", n.name, n.key))
			return nil
		}
	}
	return nil
}

// checkScript makes sure the greeting templates (the default language's
// and each of script.languages) render.
func (r *CallCampaignReconciler) checkScript(_ context.Context, s *campaignScope) error {
	if s.degraded != nil {
		return nil
	}
	if err := ValidateGreeting(s.campaign.Spec.Script.Greeting); err != nil {
		s.degraded = degradedCondition(s.campaign, "InvalidScriptTemplate", err.Error())
		return nil
	}
	for _, l := range s.campaign.Spec.Script.Languages {
		if err := ValidateGreeting(l.Greeting); err != nil {
			s.degraded = degradedCondition(s.campaign, "InvalidScriptTemplate", "script.languages["+l.Code+"].greeting: "+err.Error())
			return nil
		}
	}
	return nil
}

// checkWorkerImage holds the campaign's workers when it names an image the
// operator does not allow.
func (r *CallCampaignReconciler) checkWorkerImage(_ context.Context, s *campaignScope) error {
	image := r.Workers.WorkerImage(s.campaign)
	if r.Workers.ImageAllowed(image) {
		return nil
	}
	s.hold(degradedCondition(s.campaign, "ImageNotAllowed", fmt.Sprintf("worker image %q is not allowed by the operator (--allowed-worker-images)", image)))
	return nil
}

// checkStoresSecret holds the campaign's workers until its namespace has
// the stores Secret with where the stores are and how to log in.
func (r *CallCampaignReconciler) checkStoresSecret(ctx context.Context, s *campaignScope) error {
	c := s.campaign
	name := r.Workers.StoresSecretName()
	keys := fmt.Sprintf("%s (or %s and %s) and %s", stores.EnvRedisURL, stores.EnvRedisAddrs, stores.EnvRedisPassword, stores.EnvMongoURI)
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: name}, secret)
	switch {
	case apierrors.IsNotFound(err):
		s.hold(degradedCondition(c, "StoresSecretMissing", fmt.Sprintf("Secret %q does not exist in namespace %s; workers need it with %s", name, c.Namespace, keys)))
		return nil
	case err != nil:
		return fmt.Errorf("read Secret %s: %w", name, err)
	}
	var missing []string
	if len(secret.Data[stores.EnvRedisURL]) == 0 && len(secret.Data[stores.EnvRedisAddrs]) == 0 {
		missing = append(missing, stores.EnvRedisURL+" or "+stores.EnvRedisAddrs)
	}
	if len(secret.Data[stores.EnvMongoURI]) == 0 {
		missing = append(missing, stores.EnvMongoURI)
	}
	if len(missing) > 0 {
		s.hold(degradedCondition(c, "StoresSecretKeyMissing", fmt.Sprintf("Secret %q has no key %s", name, strings.Join(missing, ", no key "))))
	}
	return nil
}

// hold degrades the campaign and leaves its worker Deployments as they are.
func (s *campaignScope) hold(cond *metav1.Condition) {
	s.degraded, s.held = cond, true
}

func degradedCondition(c *v1.CallCampaign, reason, msg string) *metav1.Condition {
	return &metav1.Condition{Type: v1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: reason, Message: msg, ObservedGeneration: c.Generation}
}

// SetupWithManager registers the two CallCampaign controllers and the
// autoscaler. Both watch campaigns' spec, label and annotation changes (not
// their status: the status controller's own writes must not start another
// reconcile) and the owned Deployments; the workload controller also its
// Services and ConfigMaps. Secrets are not watched (that takes listing
// every Secret); both re-read them every StatusInterval.
func (r *CallCampaignReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.StatusInterval <= 0 {
		r.StatusInterval = 10 * time.Second
	}
	specChanged := builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{}))
	if err := ctrl.NewControllerManagedBy(mgr).
		Named("callcampaign-workload").
		For(&v1.CallCampaign{}, specChanged).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		WithOptions(controllerOptions(r.MaxConcurrentReconciles)).
		Complete(&campaignWorkload{r}); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("callcampaign-status").
		For(&v1.CallCampaign{}, specChanged).
		Owns(&appsv1.Deployment{})
	if r.Autoscaler != nil {
		if r.Autoscaler.Client == nil {
			r.Autoscaler.Client = mgr.GetClient()
		}
		if r.Autoscaler.APIReader == nil {
			r.Autoscaler.APIReader = mgr.GetAPIReader()
		}
		if r.Autoscaler.Log.GetSink() == nil {
			r.Autoscaler.Log = mgr.GetLogger().WithName("autoscaler")
		}
		if err := mgr.Add(r.Autoscaler); err != nil {
			return err
		}
		// The autoscaler's decisions reach the status through a reconcile.
		b = b.WatchesRawSource(source.Channel(r.Autoscaler.Events(), &handler.EnqueueRequestForObject{}))
	}
	return b.WithOptions(controllerOptions(r.MaxConcurrentReconciles)).
		Complete(&campaignStatus{r})
}
