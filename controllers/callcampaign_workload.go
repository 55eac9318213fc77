package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/sharding"
	"github.com/delauto/delauto/internal/workerpod"
)

// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;create;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch;delete

// campaignWorkload is the CallCampaign workload controller: it applies what
// a campaign's workers run on (drain Secret, campaign ConfigMap, one worker
// Deployment per shard, callback Service, NetworkPolicy) with the field
// manager FieldOwner, and moves the queues of removed shards. It writes no
// status. A campaign that fails a check (checkCampaign) gets no workers, or
// keeps the ones it has as they are when what they would run is not
// allowed (held).
type campaignWorkload struct{ *CallCampaignReconciler }

// Reconcile applies the campaign's workload. It runs again every
// StatusInterval, to see a Secret created or fixed since.
func (r *campaignWorkload) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s, err := r.newCampaignScope(ctx, req)
	if s == nil || err != nil {
		if err == nil {
			r.checks.forget(req.NamespacedName)
			if r.Autoscaler != nil {
				r.Autoscaler.Forget(req.NamespacedName)
			}
		}
		return ctrl.Result{}, err
	}
	if err := runPhases(ctx, s, nil,
		r.checkCampaign,
		r.logHold,
		r.ensureDrainSecret,
		r.moveRemovedShards,
		r.applyCampaignConfig,
		r.applyWorkers,
		r.removeStaleShards,
		r.applyCallbackService,
		r.applyNetworkPolicy,
	); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.StatusInterval}, nil
}

// logHold says why a held campaign's worker Deployments are left as they are.
func (r *campaignWorkload) logHold(ctx context.Context, s *campaignScope) error {
	if s.held {
		log.FromContext(ctx).Info("worker Deployments left as they are", "reason", s.degraded.Reason, "message", s.degraded.Message)
	}
	return nil
}

// ensureDrainSecret creates the campaign's drain Secret, owned by the
// campaign, with a random token the worker's /drain requires; an existing
// one is kept (workers already hold its token). Only get and create: the
// operator may not list, watch or change Secrets.
func (r *campaignWorkload) ensureDrainSecret(ctx context.Context, s *campaignScope) error {
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
func (r *campaignWorkload) applyCampaignConfig(ctx context.Context, s *campaignScope) error {
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
func (r *campaignWorkload) applyWorkers(ctx context.Context, s *campaignScope) error {
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
	}
	return nil
}

// workerDeployments lists the campaign's worker Deployments (from the cache).
func (r *campaignWorkload) workerDeployments(ctx context.Context, c *v1.CallCampaign) ([]appsv1.Deployment, error) {
	var list appsv1.DeploymentList
	if err := r.List(ctx, &list, client.InNamespace(c.Namespace), client.MatchingLabels{LabelCampaign: c.Name, LabelComponent: ComponentWorker}); err != nil {
		return nil, fmt.Errorf("list worker Deployments: %w", err)
	}
	return list.Items, nil
}

// appliedShards reads the shards of the campaign its workers were last
// given, from the campaign's ConfigMap as found (none before the first
// apply, or when the ConfigMap is not the campaign's own).
func (r *campaignWorkload) appliedShards(ctx context.Context, c *v1.CallCampaign) ([]string, error) {
	cm := &corev1.ConfigMap{}
	err := r.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: CampaignConfigMapName(c.Name)}, cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read campaign ConfigMap: %w", err)
	}
	if !metav1.IsControlledBy(cm, c) {
		return nil, nil
	}
	applied, err := campaignfile.Parse([]byte(cm.Data[workerpod.CampaignFile]), "ConfigMap "+cm.Name)
	if err != nil {
		// Not ours to fail on: the apply replaces it.
		log.FromContext(ctx).Info("the campaign ConfigMap does not parse; its shards are not moved from", "error", err.Error())
		return nil, nil
	}
	return sharding.Names(applied.Spec.Sharding), nil
}

// moveRemovedShards moves the queued attempts of the shards the campaign
// no longer has (those its workers were last given, those with a worker
// Deployment, and those the status still lists) to the shards that own
// them now: a hash shard's attempt goes where its Delivery's UID hashes
// to, a removed region's to the first region, as sharding.For places new
// Deliveries. It runs before the campaign's ConfigMap is applied (which
// forgets the old shards) and before the old workers go, also while the
// workers are held, so that no attempt waits in a queue no worker reads.
// Moving a queue again is harmless.
func (r *campaignWorkload) moveRemovedShards(ctx context.Context, s *campaignScope) error {
	mover, ok := r.Queues.(ShardMover)
	if !ok {
		return nil
	}
	c := s.campaign
	current := map[string]bool{}
	for _, sh := range s.shards {
		current[sh] = true
	}
	removed := map[string]bool{}
	applied, err := r.appliedShards(ctx, c)
	if err != nil {
		return err
	}
	for _, sh := range applied {
		removed[sh] = !current[sh]
	}
	for _, sh := range c.Status.Shards {
		removed[sh.Name] = removed[sh.Name] || !current[sh.Name]
	}
	deployments, err := r.workerDeployments(ctx, c)
	if err != nil {
		return err
	}
	for _, d := range deployments {
		if sh := d.Labels[LabelShard]; sh != "" && metav1.IsControlledBy(&d, c) {
			removed[sh] = removed[sh] || !current[sh]
		}
	}
	spec := c.Spec.Sharding
	for from, gone := range removed {
		if !gone {
			continue
		}
		owner := func(id string) string {
			uid := id
			if i := strings.LastIndex(id, "-"); i > 0 {
				uid = id[:i]
			}
			return sharding.For(spec, uid, from)
		}
		n, err := mover.MoveQueued(ctx, c.Namespace, c.Name, from, owner)
		if err != nil {
			return fmt.Errorf("move the queue of removed shard %s: %w", from, err)
		}
		if n > 0 {
			log.FromContext(ctx).Info("moved the queued attempts of a removed shard", "shard", from, "attempts", n)
			r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, "ShardQueueMoved", "MoveQueue", "moved %d queued attempts of removed shard %s", n, from)
		}
	}
	return nil
}

// removeStaleShards deletes the worker Deployments of shards the campaign
// no longer has (their queues were moved by moveRemovedShards); a held
// campaign's are left as they are.
func (r *campaignWorkload) removeStaleShards(ctx context.Context, s *campaignScope) error {
	if s.held {
		return nil
	}
	deployments, err := r.workerDeployments(ctx, s.campaign)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, sh := range s.shards {
		keep[WorkerDeploymentName(s.campaign.Name, sh)] = true
	}
	for i := range deployments {
		d := &deployments[i]
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

// applyCallbackService server-side applies the Service Twilio's webhooks reach.
func (r *campaignWorkload) applyCallbackService(ctx context.Context, s *campaignScope) error {
	if err := r.Apply(ctx, callbackService(s.campaign), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply callback Service: %w", err)
	}
	return nil
}

// applyNetworkPolicy server-side applies the NetworkPolicy of the
// campaign's workers.
func (r *campaignWorkload) applyNetworkPolicy(ctx context.Context, s *campaignScope) error {
	if err := r.Apply(ctx, r.Workers.NetworkPolicy(s.campaign), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply worker NetworkPolicy: %w", err)
	}
	return nil
}
