package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/script"
)

// campaignStatus is the CallCampaign status controller: it reports each
// campaign's shards, replicas, queues, rate, Delivery totals and conditions,
// written once per reconcile and only when they changed, with the field
// manager StatusFieldOwner. It changes nothing else.
type campaignStatus struct{ *CallCampaignReconciler }

// Reconcile refreshes the campaign's status; it runs again every
// StatusInterval while nothing changes.
func (r *campaignStatus) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	s, err := r.newCampaignScope(ctx, req)
	if s == nil || err != nil {
		return ctrl.Result{}, err
	}
	c := s.campaign
	before := c.Status.DeepCopy()
	defer func() {
		if err != nil {
			// What a failed phase would have read is unknown: the status
			// stays as it was until the retry.
			return
		}
		r.computeStatus(ctx, s)
		base := c.DeepCopy()
		base.Status = *before
		err = joinErr(err, patchStatus(ctx, r.Client, c, base, before, &c.Status, client.FieldOwner(StatusFieldOwner)))
	}()
	if err := runPhases(ctx, s, nil,
		r.checkCampaign,
		r.readDeployments,
		r.readQueues,
		r.pingCallLog,
		r.countPhases,
	); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.StatusInterval}, nil
}

// readDeployments reads the campaign's worker Deployments, by shard, from
// the cache; a shard without one yet is left out.
func (r *campaignStatus) readDeployments(ctx context.Context, s *campaignScope) error {
	s.deployments = map[string]*appsv1.Deployment{}
	for _, shard := range s.shards {
		d := &appsv1.Deployment{}
		err := r.Get(ctx, types.NamespacedName{Namespace: s.campaign.Namespace, Name: WorkerDeploymentName(s.campaign.Name, shard)}, d)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("read the worker Deployment of shard %s: %w", shard, err)
		default:
			s.deployments[shard] = d
		}
	}
	return nil
}

// readQueues reads every shard's queue figures.
func (r *campaignStatus) readQueues(ctx context.Context, s *campaignScope) error {
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
func (r *campaignStatus) pingCallLog(ctx context.Context, s *campaignScope) error {
	if r.CallLog != nil {
		s.storeErr = r.CallLog.Ping(ctx)
	}
	return nil
}

// ShardQueueStats are the queue figures of one shard.
type ShardQueueStats struct {
	// DueNow is attempts due and not yet picked up.
	DueNow int64
	// Scheduled is attempts planned for later.
	Scheduled int64
	// InFlight is attempts workers hold now.
	InFlight int64
	// OldestPending is how long the oldest in-flight attempt has been held.
	OldestPending time.Duration
}

// RateReader reads a campaign's recent calls per second and whether its
// dials wait on the account's limiter.
type RateReader interface {
	Read(ctx context.Context, namespace, campaign string) (callsPerSecond float64, limited bool, err error)
}

// DialErrorReader reads the latest configuration error Twilio answered the
// campaign's dials with (caller ID not verified or invalid, no geographic
// permission, credentials), flagged by the workers; nil when none is recent.
// A RateReader that is also a DialErrorReader (RedisRates) is asked.
type DialErrorReader interface {
	DialError(ctx context.Context, namespace, campaign string) (*callrate.DialError, error)
}

// QueueStats reads the queue figures of a campaign's shards (from Redis).
type QueueStats interface {
	ShardStats(ctx context.Context, namespace, campaign string, shards []string) (map[string]ShardQueueStats, error)
}

// ValidateGreeting reports whether a campaign's greeting template renders.
func ValidateGreeting(greeting string) error {
	if greeting == "" {
		return nil
	}
	return script.Validate(greeting)
}

// phaseIndex indexes Deliveries by "<campaign>/<phase>" so a campaign's
// totals are counted from the cache without listing every Delivery.
const phaseIndex = "status.campaignPhase"

// DeliveryPhaseIndexKey is the phase index key of a delivery.
func DeliveryPhaseIndexKey(campaign string, phase v1.DeliveryPhase) string {
	return campaign + "/" + string(phase)
}

// IndexDeliveryPhases registers the index the campaign totals use.
func IndexDeliveryPhases(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &v1.Delivery{}, phaseIndex, func(o client.Object) []string {
		d := o.(*v1.Delivery)
		if d.Status.Campaign == "" || d.Status.Phase == "" {
			return nil
		}
		return []string{DeliveryPhaseIndexKey(d.Status.Campaign, d.Status.Phase)}
	})
}

// computeStatus fills the campaign's status from what the phases found.
func (r *campaignStatus) computeStatus(ctx context.Context, s *campaignScope) {
	c := s.campaign
	st := &c.Status
	st.ObservedGeneration = c.Generation
	st.ShardCount = int32(len(s.shards))
	st.Replicas, st.ReadyReplicas, st.Queued = 0, 0, 0
	shards := make([]v1.ShardStatus, 0, len(s.shards))
	progressing := false
	var ceilingHit *ScaleTarget
	key := client.ObjectKeyFromObject(c)
	for _, name := range s.shards {
		ss := v1.ShardStatus{Name: name}
		if prev := findShard(st.Shards, name); prev != nil {
			ss.LastScale = prev.LastScale
		}
		if r.Autoscaler != nil {
			if rep, ok := r.Autoscaler.Report(key, name); ok {
				if rep.Last != nil {
					ss.LastScale = rep.Last
				}
				if rep.Target.RateLimited && ceilingHit == nil {
					t := rep.Target
					ceilingHit = &t
				}
				if rep.RedisErr != nil && s.queueErr == nil {
					s.queueErr = rep.RedisErr
				}
			}
		}
		if d := s.deployments[name]; d != nil {
			if d.Spec.Replicas != nil {
				ss.Replicas = *d.Spec.Replicas
			}
			ss.ReadyReplicas = d.Status.ReadyReplicas
			if rollingOut(d) {
				progressing = true
			}
		}
		if q, ok := s.queue[name]; ok {
			ss.DueNow, ss.Scheduled, ss.InFlight = q.DueNow, q.Scheduled, q.InFlight
			if q.OldestPending > 0 {
				ss.OldestPendingAge = &metav1.Duration{Duration: q.OldestPending.Truncate(time.Second)}
			}
		} else if prev := findShard(st.Shards, name); prev != nil {
			// Keep the last known figures while the queue cannot be read.
			ss.DueNow, ss.Scheduled, ss.InFlight, ss.OldestPendingAge = prev.DueNow, prev.Scheduled, prev.InFlight, prev.OldestPendingAge
		}
		st.Replicas += ss.Replicas
		st.ReadyReplicas += ss.ReadyReplicas
		st.Queued += ss.DueNow + ss.InFlight
		shards = append(shards, ss)
	}
	st.Shards = shards
	if s.rate != nil {
		st.CallsPerSecond = fmt.Sprintf("%.1f", *s.rate)
	}
	st.Totals = s.totals

	gen := c.Generation
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	switch {
	case s.degraded != nil:
		meta.SetStatusCondition(&st.Conditions, *s.degraded)
	case s.queueErr != nil:
		set(v1.ConditionDegraded, metav1.ConditionTrue, "RedisUnreachable", "cannot read the queues, worker replicas held at their current count: "+s.queueErr.Error())
	case s.storeErr != nil:
		set(v1.ConditionDegraded, metav1.ConditionTrue, "MongoUnreachable", "cannot reach the call log: "+s.storeErr.Error())
	case s.dialErr != nil:
		// The campaign's configuration, not the recipients: the attempts
		// wait (tried again every minute) and the workers keep running.
		set(v1.ConditionDegraded, metav1.ConditionTrue, "TwilioRefusedCalls", fmt.Sprintf(
			"Twilio refused the campaign's calls with error %d at %s (%s): check the caller IDs (twilio.fromNumbers) and the account's voice geographic permissions and credentials; attempts wait and are retried",
			s.dialErr.Code, s.dialErr.At.UTC().Format(time.RFC3339), s.dialErr.Message))
	default:
		set(v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected", "credentials, script and queues are in order")
	}
	if progressing {
		set(v1.ConditionProgressing, metav1.ConditionTrue, "RollingOut", "worker Deployments are rolling out or scaling")
	} else {
		set(v1.ConditionProgressing, metav1.ConditionFalse, "Stable", "every worker Deployment is up to date")
	}
	if ceilingHit != nil && !c.Spec.Suspend && s.degraded == nil {
		set(v1.ConditionRateLimited, metav1.ConditionTrue, "RateCeiling", fmt.Sprintf("workers capped at %d pods per shard, the load asks for %d: %s", ceilingHit.Ceiling, ceilingHit.Needed, ceilingHit.Message))
	} else if s.rate != nil {
		if s.rateLimited {
			set(v1.ConditionRateLimited, metav1.ConditionTrue, "AccountLimit", fmt.Sprintf("calls wait on the account's limit of %d per second", c.Spec.Twilio.CallsPerSecond))
		} else {
			set(v1.ConditionRateLimited, metav1.ConditionFalse, "BelowLimit", "calls are not waiting on the account's limit")
		}
	} else if r.Autoscaler != nil && !c.Spec.Suspend && s.degraded == nil {
		set(v1.ConditionRateLimited, metav1.ConditionFalse, "BelowCeiling", "the load asks for no more workers than the account's rate keeps busy")
	}

	switch {
	case s.degraded != nil || s.queueErr != nil || s.storeErr != nil || s.dialErr != nil:
		set(v1.ConditionReady, metav1.ConditionFalse, "Degraded", "see the Degraded condition")
	case c.Spec.Suspend:
		set(v1.ConditionReady, metav1.ConditionFalse, "Suspended", "the campaign is suspended: workers drained, queued calls kept")
	case !allShardsReady(shards):
		set(v1.ConditionReady, metav1.ConditionFalse, "WorkersNotReady", "some shards have no ready worker yet")
	default:
		set(v1.ConditionReady, metav1.ConditionTrue, "WorkersReady", fmt.Sprintf("%d shards have ready workers", len(shards)))
	}
}

func findShard(list []v1.ShardStatus, name string) *v1.ShardStatus {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func allShardsReady(shards []v1.ShardStatus) bool {
	for _, s := range shards {
		if s.ReadyReplicas < 1 {
			return false
		}
	}
	return true
}

// rollingOut reports whether a Deployment is still converging.
func rollingOut(d *appsv1.Deployment) bool {
	if d.Status.ObservedGeneration < d.Generation {
		return true
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return d.Status.UpdatedReplicas != want || d.Status.Replicas != want || d.Status.AvailableReplicas != want
}

// countPhases counts the campaign's Deliveries per phase, from the cache's
// phase index (IndexDeliveryPhases). A reader without that index (a
// client without a cache, in tools and tests) counts from one list of the
// namespace instead. A failed count fails the reconcile: totals of zero
// would be wrong.
func (r *campaignStatus) countPhases(ctx context.Context, s *campaignScope) error {
	c := s.campaign
	phases := []struct {
		p v1.DeliveryPhase
		n *int32
	}{
		{v1.DeliveryPending, &s.totals.Pending},
		{v1.DeliveryScheduled, &s.totals.Scheduled},
		{v1.DeliveryCalling, &s.totals.Calling},
		{v1.DeliveryConfirmed, &s.totals.Confirmed},
		{v1.DeliveryRescheduleRequested, &s.totals.RescheduleRequested},
		{v1.DeliveryInstructionsRecorded, &s.totals.InstructionsRecorded},
		{v1.DeliveryUnreachable, &s.totals.Unreachable},
		{v1.DeliveryOptedOut, &s.totals.OptedOut},
		{v1.DeliveryCancelled, &s.totals.Cancelled},
		{v1.DeliveryFailed, &s.totals.Failed},
	}
	var indexErr error
	for _, ph := range phases {
		var dl v1.DeliveryList
		if indexErr = r.List(ctx, &dl, client.InNamespace(c.Namespace), client.MatchingFields{phaseIndex: DeliveryPhaseIndexKey(c.Name, ph.p)}, client.UnsafeDisableDeepCopy); indexErr != nil {
			break
		}
		*ph.n = int32(len(dl.Items))
	}
	if indexErr == nil {
		return nil
	}
	var dl v1.DeliveryList
	if err := r.List(ctx, &dl, client.InNamespace(c.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("count the campaign's Deliveries: %w", errors.Join(indexErr, err))
	}
	s.totals = v1.PhaseTotals{}
	for i := range dl.Items {
		d := &dl.Items[i]
		for _, ph := range phases {
			if d.Status.Campaign == c.Name && d.Status.Phase == ph.p {
				*ph.n++
			}
		}
	}
	return nil
}
