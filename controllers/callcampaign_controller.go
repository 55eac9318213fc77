package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
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
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/sharding"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/workerpod"
)

// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;create;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete

// FieldOwner is the server-side-apply field manager of everything the
// operator owns.
const FieldOwner = "delauto-operator"

// CallCampaignReconciler owns each campaign's per-shard worker Deployments
// and callback Service, and reports the campaign's status.
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
}

// Reconcile applies the campaign's worker Deployments and Service and
// writes its status once, at the end, only when it changed.
func (r *CallCampaignReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	campaign := &v1.CallCampaign{}
	if err := r.Get(ctx, req.NamespacedName, campaign); err != nil {
		if apierrors.IsNotFound(err) && r.Autoscaler != nil {
			r.Autoscaler.Forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !campaign.DeletionTimestamp.IsZero() {
		if r.Autoscaler != nil {
			r.Autoscaler.Forget(req.NamespacedName)
		}
		// Owned Deployments and the Service go with the campaign (owner
		// references); the call log stays in MongoDB.
		return ctrl.Result{}, nil
	}
	scope := &campaignScope{campaign: campaign, shards: sharding.Names(campaign.Spec.Sharding)}
	before := campaign.Status.DeepCopy()
	defer func() {
		r.computeStatus(ctx, scope)
		base := campaign.DeepCopy()
		base.Status = *before
		err = joinErr(err, patchStatus(ctx, r.Client, campaign, base, before, &campaign.Status))
	}()

	if err := runPhases(ctx, scope, nil,
		r.checkCredentials,
		r.checkScript,
		r.checkWorkerImage,
		r.checkStoresSecret,
		r.ensureDrainSecret,
		r.applyCampaignConfig,
		r.applyWorkers,
		r.removeStaleShards,
		r.applyCallbackService,
		r.applyNetworkPolicy,
		r.readQueues,
		r.pingCallLog,
	); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.StatusInterval}, nil
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
func (r *CallCampaignReconciler) checkWorkerImage(ctx context.Context, s *campaignScope) error {
	image := r.Workers.WorkerImage(s.campaign)
	if r.Workers.ImageAllowed(image) {
		return nil
	}
	s.hold(degradedCondition(s.campaign, "ImageNotAllowed", fmt.Sprintf("worker image %q is not allowed by the operator (--allowed-worker-images)", image)))
	log.FromContext(ctx).Info("worker image not allowed; worker Deployments left as they are", "image", image)
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

// ensureDrainSecret creates the campaign's drain Secret, owned by the
// campaign, with a random token the worker's /drain requires; an existing
// one is kept (workers already hold its token). Only get and create: the
// operator may not list, watch or change Secrets.
func (r *CallCampaignReconciler) ensureDrainSecret(ctx context.Context, s *campaignScope) error {
	c := s.campaign
	key := types.NamespacedName{Namespace: c.Namespace, Name: DrainSecretName(c.Name)}
	err := r.APIReader.Get(ctx, key, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		return err
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
			Labels: map[string]string{LabelName: "delauto", LabelComponent: "drain-token", LabelManagedBy: ManagedBy, LabelCampaign: c.Name}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{workerpod.DrainTokenFile: []byte(hex.EncodeToString(tok))},
	}
	if err := controllerutil.SetControllerReference(c, secret, r.Scheme()); err != nil {
		return err
	}
	if err := r.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create drain Secret: %w", err)
	}
	log.FromContext(ctx).Info("created the campaign's drain token", "secret", key.Name)
	return nil
}

// applyCampaignConfig server-side applies the ConfigMap the workers read
// the campaign from.
func (r *CallCampaignReconciler) applyCampaignConfig(ctx context.Context, s *campaignScope) error {
	cm, err := campaignConfigMap(s.campaign)
	if err != nil {
		return err
	}
	if err := r.Apply(ctx, cm, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply campaign ConfigMap: %w", err)
	}
	return nil
}

// applyWorkers server-side applies one worker Deployment per shard.
func (r *CallCampaignReconciler) applyWorkers(ctx context.Context, s *campaignScope) error {
	s.deployments = map[string]*appsv1.Deployment{}
	stopped := s.held || s.degraded != nil || s.campaign.Spec.Suspend
	if r.Autoscaler != nil {
		r.Autoscaler.Track(s.campaign, s.shards, stopped)
	}
	if s.held {
		return nil
	}
	key := client.ObjectKeyFromObject(s.campaign)
	for _, shard := range s.shards {
		current := &appsv1.Deployment{}
		err := r.Get(ctx, types.NamespacedName{Namespace: s.campaign.Namespace, Name: WorkerDeploymentName(s.campaign.Name, shard)}, current)
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if apierrors.IsNotFound(err) {
			current = nil
		}
		var cur *int32
		if current != nil && r.Autoscaler != nil {
			cur = current.Spec.Replicas
		}
		apply := func(decided int32, ok bool) error {
			replicas := InitialReplicas(s.campaign, s.degraded != nil, cur)
			if ok && !stopped {
				replicas = decided
			}
			ac := r.Workers.Deployment(s.campaign, shard, replicas)
			if s.campaign.Spec.Workers.Autoscaling == v1.AutoscaleExternal && !stopped {
				// An HPA or KEDA owns replicas; a new Deployment starts at
				// the API's default (1).
				ac.Spec.Replicas = nil
			}
			if err := r.Apply(ctx, ac, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
				return fmt.Errorf("apply worker Deployment for shard %s: %w", shard, err)
			}
			return nil
		}
		if r.Autoscaler != nil {
			err = r.Autoscaler.WithReplicas(key, shard, apply)
		} else {
			err = apply(0, false)
		}
		if err != nil {
			return err
		}
		ac := r.Workers.Deployment(s.campaign, shard, 0)
		applied := &appsv1.Deployment{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: s.campaign.Namespace, Name: *ac.Name}, applied); err == nil {
			s.deployments[shard] = applied
		}
	}
	return nil
}

// removeStaleShards deletes the Deployments of shards the campaign no longer has.
func (r *CallCampaignReconciler) removeStaleShards(ctx context.Context, s *campaignScope) error {
	if s.held {
		return nil
	}
	var list appsv1.DeploymentList
	if err := r.List(ctx, &list, client.InNamespace(s.campaign.Namespace), client.MatchingLabels{LabelCampaign: s.campaign.Name, LabelComponent: ComponentWorker}); err != nil {
		return err
	}
	keep := map[string]bool{}
	current := map[string]bool{}
	for _, sh := range s.shards {
		keep[WorkerDeploymentName(s.campaign.Name, sh)] = true
		current[sh] = true
	}
	// The queues of removed shards (those with a Deployment, and those the
	// last status still lists) move to the shards that own their attempts
	// now, before the old workers go.
	removed := map[string]bool{}
	for _, sh := range s.campaign.Status.Shards {
		if !current[sh.Name] {
			removed[sh.Name] = true
		}
	}
	for _, d := range list.Items {
		if sh := d.Labels[LabelShard]; sh != "" && !current[sh] && metav1.IsControlledBy(&d, s.campaign) {
			removed[sh] = true
		}
	}
	if err := r.moveRemovedShards(ctx, s, removed); err != nil {
		return err
	}
	for i := range list.Items {
		d := &list.Items[i]
		if keep[d.Name] || !metav1.IsControlledBy(d, s.campaign) {
			continue
		}
		if err := r.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete Deployment %s of a removed shard: %w", d.Name, err)
		}
		log.FromContext(ctx).Info("removed the worker Deployment of a removed shard", "deployment", d.Name)
		r.Recorder.Eventf(s.campaign, nil, corev1.EventTypeNormal, "ShardRemoved", "DeleteDeployment", "removed worker Deployment %s", d.Name)
	}
	return nil
}

// moveRemovedShards moves the queued attempts of removed shards to the
// shards that own them now: a hash shard's attempt goes where its
// delivery's UID hashes to, a removed region's to the first region, as
// sharding.For places new deliveries.
func (r *CallCampaignReconciler) moveRemovedShards(ctx context.Context, s *campaignScope, removed map[string]bool) error {
	mover, ok := r.Queues.(ShardMover)
	if !ok {
		return nil
	}
	spec := s.campaign.Spec.Sharding
	for from := range removed {
		owner := func(id string) string {
			uid := id
			if i := strings.LastIndex(id, "-"); i > 0 {
				uid = id[:i]
			}
			return sharding.For(spec, uid, from)
		}
		n, err := mover.MoveQueued(ctx, s.campaign.Namespace, s.campaign.Name, from, owner)
		if err != nil {
			return fmt.Errorf("move the queue of removed shard %s: %w", from, err)
		}
		if n > 0 {
			log.FromContext(ctx).Info("moved the queued attempts of a removed shard", "shard", from, "attempts", n)
			r.Recorder.Eventf(s.campaign, nil, corev1.EventTypeNormal, "ShardQueueMoved", "MoveQueue", "moved %d queued attempts of removed shard %s", n, from)
		}
	}
	return nil
}

// applyCallbackService server-side applies the Service Twilio's webhooks reach.
func (r *CallCampaignReconciler) applyCallbackService(ctx context.Context, s *campaignScope) error {
	if err := r.Apply(ctx, callbackService(s.campaign), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply callback Service: %w", err)
	}
	return nil
}

// applyNetworkPolicy server-side applies the NetworkPolicy of the
// campaign's workers.
func (r *CallCampaignReconciler) applyNetworkPolicy(ctx context.Context, s *campaignScope) error {
	if err := r.Apply(ctx, r.Workers.NetworkPolicy(s.campaign), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply worker NetworkPolicy: %w", err)
	}
	return nil
}

// readQueues reads every shard's queue figures.
func (r *CallCampaignReconciler) readQueues(ctx context.Context, s *campaignScope) error {
	if r.Queues == nil {
		return nil
	}
	st, err := r.Queues.ShardStats(ctx, s.campaign.Namespace, s.campaign.Name, s.shards)
	if err != nil {
		s.queueErr = err
		return nil
	}
	s.queue = st
	if r.Rates != nil {
		// The measured rate and the workers' last Twilio error are extras of
		// the status: a failed read leaves them out until the next refresh.
		if cps, limited, err := r.Rates.Read(ctx, s.campaign.Namespace, s.campaign.Name); err != nil {
			log.FromContext(ctx).Error(err, "cannot read the campaign's call rate; the status goes without it until the next refresh")
		} else {
			s.rate, s.rateLimited = &cps, limited
		}
		if der, ok := r.Rates.(DialErrorReader); ok {
			if e, err := der.DialError(ctx, s.campaign.Namespace, s.campaign.Name); err != nil {
				log.FromContext(ctx).Error(err, "cannot read the workers' last Twilio configuration error; the status goes without it until the next refresh")
			} else {
				s.dialErr = e
			}
		}
	}
	return nil
}

// Pinger checks that a store is reachable.
type Pinger interface {
	Ping(ctx context.Context) error
}

// pingCallLog degrades the campaign while MongoDB is unreachable: workers
// cannot claim or record calls.
func (r *CallCampaignReconciler) pingCallLog(ctx context.Context, s *campaignScope) error {
	if r.CallLog != nil {
		s.storeErr = r.CallLog.Ping(ctx)
	}
	return nil
}

// SetupWithManager registers the controller: it watches campaigns and
// their owned Deployments, Services and ConfigMaps. Secrets are not watched
// (that takes listing every Secret); they are re-read every StatusInterval.
func (r *CallCampaignReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.StatusInterval <= 0 {
		r.StatusInterval = 10 * time.Second
	}
	b := ctrl.NewControllerManagedBy(mgr).
		// The campaign's own status writes must not start another reconcile
		// (a hot loop while its figures change); the figures are refreshed
		// every StatusInterval instead.
		For(&v1.CallCampaign{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{})
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
		Complete(r)
}
