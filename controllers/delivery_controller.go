package controllers

import (
	"context"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

// Finalizer makes deletion of a Delivery wait until its attempts are
// cancelled and none may still place a call (dialing or unknown).
const Finalizer = "delauto.io/cancel-calls"

// Indexes of Deliveries in the operator's cache.
const (
	campaignIndex  = "campaign"
	phaseOnlyIndex = "status.phase"
)

// DeliveryReconciler plans each Delivery's calls: it creates the attempt in
// MongoDB and schedules it in the shard's Redis queue, follows outcomes to
// the Delivery's phase, plans retries, cancels on cancellation or deletion,
// and deletes finished Deliveries after the campaign's retention.
type DeliveryReconciler struct {
	client.Client
	// Store is the call log (attempts, opt-outs).
	Store *store.Store
	// Queue schedules attempts in Redis.
	Queue *queue.Queue
	// Recorder emits the Events a person acts on (see deliveryEvents) and
	// each campaign's periodic summary of the rest.
	Recorder events.EventRecorder
	// PhaseSummaryInterval is how often the summary is written
	// (DefaultPhaseSummaryInterval when 0).
	PhaseSummaryInterval time.Duration
	// FinalizerMode says how new Deliveries are expected to get the
	// Finalizer: from the admission policy, or from this reconciler's patch.
	// A Delivery without it is patched either way.
	FinalizerMode FinalizerMode
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Outcomes, when set, receives a request per outcome event (see OutcomeSource).
	Outcomes <-chan event.GenericEvent
	// MaxConcurrentReconciles bounds parallel reconciles.
	MaxConcurrentReconciles int
	// Metrics counts planning decisions (nil: not counted).
	Metrics *Metrics
	// CallLogRetention is how long a finished attempt stays in the call log
	// when its campaign sets no retention; 0 keeps it forever.
	CallLogRetention time.Duration

	summary *phaseSummary

	// beforeReplan, when set (tests), is called just before a queued
	// attempt is cancelled to be re-planned.
	beforeReplan func(attemptID string)
}

// retention is how long the attempts of campaign c are kept once finished,
// stamped on each attempt when it is created; nil keeps them forever.
func (r *DeliveryReconciler) retention(c *v1.CallCampaign) *time.Duration {
	switch {
	case c != nil && c.Spec.Retention != nil:
		return &c.Spec.Retention.Duration
	case r.CallLogRetention > 0:
		return &r.CallLogRetention
	}
	return nil
}

func (r *DeliveryReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// deliveryScope is one reconcile's state, passed between the phases.
type deliveryScope struct {
	d        *v1.Delivery
	campaign *v1.CallCampaign
	policy   *schedule.Policy
	input    schedule.Input
	shard    string
	attempts []store.Attempt
	// fresh says the Delivery was never planned, so attempts were not read.
	fresh bool
	// done ends the phase list early (the phase set the outcome).
	done bool
	// requeue is when to look again without an event.
	requeue time.Duration
	// ready is the Ready condition to stamp.
	ready metav1.Condition
}

// Reconcile moves one Delivery forward. Status is written once, at the end,
// only when it changed.
func (r *DeliveryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	d := &v1.Delivery{}
	if err := r.Get(ctx, req.NamespacedName, d); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !d.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, d)
	}
	if !controllerutil.ContainsFinalizer(d, Finalizer) {
		// With the admission policy installed, Deliveries are created with
		// the finalizer and this write is skipped; without it (or for one
		// created before the policy), it costs a round trip of its own.
		if r.FinalizerMode == FinalizerByAdmissionPolicy {
			ctrl.LoggerFrom(ctx).V(1).Info("the Delivery was created without the finalizer; adding it")
		}
		patch := client.MergeFrom(d.DeepCopy())
		controllerutil.AddFinalizer(d, Finalizer)
		if err := r.Patch(ctx, d, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
		r.Metrics.finalizerPatched()
	}

	// The shard the status names, until resolveCampaign picks it (a
	// call-off in Redis needs it when the campaign cannot be resolved).
	s := &deliveryScope{d: d, shard: d.Status.Shard}
	before := d.Status.DeepCopy()
	// A spec change (a new window) not carried out yet: the queued attempt
	// may be on the old plan, in the shard the status names.
	changing := d.Status.ObservedGeneration != 0 && d.Generation != d.Status.ObservedGeneration
	defer func() {
		if changing {
			err = r.holdWhileChanging(ctx, d, before.Shard, err)
		}
		// A generation is observed once every phase ran on it: after a
		// failed phase the next reconcile still sees the spec as changed
		// (a new window re-plans the queued attempt; changePending).
		if err == nil {
			d.Status.ObservedGeneration = d.Generation
		}
		s.ready.ObservedGeneration = d.Status.ObservedGeneration
		if s.ready.Type != "" {
			setCondition(&d.Status.Conditions, s.ready)
		}
		if s.campaign != nil {
			r.stampLanguage(d, s.campaign)
		}
		// The summary first, then the Events and the status, back to back
		// as before the summary was written.
		if recErr := r.recordInsights(ctx, d, before); recErr != nil {
			err = joinErr(err, recErr)
			return
		}
		r.deliveryEvents(d, before, s)
		base := d.DeepCopy()
		base.Status = *before
		err = joinErr(err, patchStatus(ctx, r.Client, d, base, before, &d.Status))
	}()

	if err := runPhases(ctx, s, func(s *deliveryScope) bool { return s.done },
		r.resolveCampaign,
		r.loadAttempts,
		r.cancelIfAsked,
		r.followAttempt,
		r.planNext,
		r.expireFinished,
	); err != nil {
		return ctrl.Result{}, err
	}
	// A later recheck goes in line with the rest, whatever brought this
	// reconcile ahead (deliveryQueueing).
	return ctrl.Result{RequeueAfter: s.requeue, Priority: ptr.To(0)}, nil
}

// cancelRecheck is how often a deleted Delivery whose attempt a worker
// still holds is looked at again (the worker's outcome event comes sooner).
const cancelRecheck = 10 * time.Second

// finalize cancels the Delivery's attempts and lets it go once none may
// still place a call: an attempt a worker holds (dialing) or whose dial is
// in doubt (unknown) is marked for cancellation, and the finalizer stays
// until it was released (then cancelled) or its call is known.
func (r *DeliveryReconciler) finalize(ctx context.Context, d *v1.Delivery) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(d, Finalizer) {
		return ctrl.Result{}, nil
	}
	attempts, err := r.Store.ForDelivery(ctx, string(d.UID))
	if err != nil {
		r.callOff(ctx, d, d.Status.Shard, err)
		return ctrl.Result{}, fmt.Errorf("read attempts: %w", err)
	}
	held, err := r.cancelQueued(ctx, d, attempts, "delivery deleted")
	if err != nil {
		r.callOff(ctx, d, d.Status.Shard, err)
		return ctrl.Result{}, err
	}
	if held > 0 {
		ctrl.LoggerFrom(ctx).Info("deleted delivery waits for its held attempts to be released or dialed", "held", held)
		return ctrl.Result{RequeueAfter: cancelRecheck}, nil
	}
	if err := r.Store.ForgetDelivery(ctx, d.Namespace, string(d.UID)); err != nil {
		return ctrl.Result{}, err
	}
	// Nothing is left to call: the hold holdOnSight placed goes (it would
	// otherwise expire with the call-offs).
	if d.Status.Shard != "" {
		if _, err := r.Queue.Unhold(ctx, r.shardOf(d, d.Status.Shard), string(d.UID), d.Generation); err != nil {
			ctrl.LoggerFrom(ctx).Info("could not lift the hold of a deleted Delivery; it expires", "error", err.Error())
		}
	}
	patch := client.MergeFrom(d.DeepCopy())
	controllerutil.RemoveFinalizer(d, Finalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, d, patch))
}

// cancelQueued calls off every attempt that has not placed a call: a queued
// one is cancelled in MongoDB (the worker's claim then fails) and in the
// Redis queue; one a worker holds (dialing, unknown) is marked so its
// release cancels it and no claim takes it again. It returns how many
// attempts are still held, and may still place a call.
func (r *DeliveryReconciler) cancelQueued(ctx context.Context, d *v1.Delivery, attempts []store.Attempt, reason string) (held int, err error) {
	for _, a := range attempts {
		if a.State.Terminal() || a.State.Rank() >= store.StateDialed.Rank() {
			continue // ended, or its call exists
		}
		b, err := r.Store.RequestCancel(ctx, a.ID, reason)
		if err != nil {
			return held, fmt.Errorf("cancel attempt %s: %w", a.ID, err)
		}
		if b.State == store.StateDialing || b.State == store.StateUnknown {
			held++
			continue
		}
		if b.State != store.StateCancelled {
			continue
		}
		if _, err := r.Queue.Cancel(ctx, r.shardOf(d, a.Shard), a.ID); err != nil {
			// The MongoDB state is what counts: a worker that still gets the
			// entry finds the attempt cancelled and acknowledges it.
			ctrl.LoggerFrom(ctx).Info("could not remove a cancelled attempt from the queue", "attempt", a.ID, "error", err.Error())
		}
	}
	return held, nil
}

// callOff stops the calls of a cancelled or deleted Delivery through Redis
// alone, when its attempts could not be cancelled in the call log (cause:
// MongoDB unreachable). Until the reconcile, retried with back-off, cancels
// them there, a worker that reaches MongoDB first could claim a queued
// attempt and call; workers check the call-off before they dial
// (queue.CallOff), and the queue refuses the delivery's attempts.
func (r *DeliveryReconciler) callOff(ctx context.Context, d *v1.Delivery, shard string, cause error) {
	log := ctrl.LoggerFrom(ctx)
	if shard == "" {
		log.Info("the call log is unreachable and the Delivery has no shard yet: nothing to call off in the queue", "error", cause.Error())
		return
	}
	if err := r.Queue.CallOff(ctx, r.shardOf(d, shard), string(d.UID)); err != nil {
		log.Error(err, "the call log is unreachable and the calls could not be called off in the queue either", "cause", cause.Error())
		return
	}
	log.Info("the call log is unreachable: the Delivery's calls were called off in the queue", "shard", shard, "cause", cause.Error())
}

// holdWhileChanging keeps workers from dialing the Delivery's attempts
// while a reconcile of its spec change failed with cause (queue.Hold): a
// worker that claimed the queued attempt when the call log came back dialed
// it on the old plan before the reconcile, retried with back-off, re-planned
// it (make chaos: a call 16 s after a new window given during a PostgreSQL
// stop). The reconcile that carries the change out lifts the hold, and the
// one holdOnSight placed, unless a later generation holds it; when the lift
// fails, so does the reconcile, and the next one lifts it. It returns the
// reconcile's error.
func (r *DeliveryReconciler) holdWhileChanging(ctx context.Context, d *v1.Delivery, shard string, cause error) error {
	if shard == "" {
		return cause // never planned: nothing queued
	}
	if cause == nil {
		if _, err := r.Queue.Unhold(ctx, r.shardOf(d, shard), string(d.UID), d.Generation); err != nil {
			return fmt.Errorf("the spec change was carried out but the hold on its calls was not lifted: %w", err)
		}
		return nil
	}
	log := ctrl.LoggerFrom(ctx)
	if err := r.Queue.Hold(ctx, r.shardOf(d, shard), string(d.UID), d.Generation); err != nil {
		log.Error(err, "the spec change could not be carried out and the Delivery's calls could not be held either", "cause", cause.Error())
		return cause
	}
	log.Info("the spec change could not be carried out: the Delivery's calls are held until it is", "shard", shard, "cause", cause.Error())
	return cause
}

// holdTimeout bounds holdOnSight's Redis request: it runs in the watch's
// event handler, ahead of every later event of the Delivery controller.
const holdTimeout = 2 * time.Second

// holdOnSight holds a planned Delivery's calls in Redis (queue.Hold at its
// new generation) the moment the operator sees a change to its plan: a new
// window or number, a cancellation, a deletion. It runs before the
// reconcile that carries the change out is queued, and that reconcile lifts
// it (holdWhileChanging, finalize). Before, a worker learnt of the change
// only from that reconcile: behind an overloaded call log (make chaos at
// twice this machine's capacity) the operator was up to 90 s behind, and
// workers called Deliveries after their new window or their deletion. A
// Delivery that was never planned, or whose calls are over, has nothing to
// hold. When Redis cannot be reached the reconcile still carries the change
// out and holds on failure.
func (r *DeliveryReconciler) holdOnSight(ctx context.Context, d *v1.Delivery) {
	if d.Status.Shard == "" || d.Status.Phase.Finished() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, holdTimeout)
	defer cancel()
	log := ctrl.LoggerFrom(ctx).WithValues("controller", "delivery", "Delivery", client.ObjectKeyFromObject(d))
	if err := r.Queue.Hold(ctx, r.shardOf(d, d.Status.Shard), string(d.UID), d.Generation); err != nil {
		log.Error(err, "could not hold the calls of a changed Delivery ahead of its reconcile")
		return
	}
	log.V(1).Info("held the calls of a changed Delivery until its reconcile carries the change out", "generation", d.Generation)
}

func (r *DeliveryReconciler) shardOf(d *v1.Delivery, shard string) queue.Shard {
	campaign := d.Status.Campaign
	if d.Spec.CampaignRef != nil && campaign == "" {
		campaign = d.Spec.CampaignRef.Name
	}
	return queue.Shard{Namespace: d.Namespace, Campaign: campaign, Name: shard}
}

func orNone(s string) string {
	if s == "" {
		return "(new)"
	}
	return s
}

// SetupWithManager registers the controller: Deliveries, CallCampaigns (a
// new or changed campaign re-plans its pending Deliveries) and outcome events.
func (r *DeliveryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1.Delivery{}, campaignIndex, func(o client.Object) []string {
		d := o.(*v1.Delivery)
		var names []string
		if d.Spec.CampaignRef != nil {
			names = append(names, d.Spec.CampaignRef.Name)
		}
		if c := d.Status.Campaign; c != "" && (d.Spec.CampaignRef == nil || c != d.Spec.CampaignRef.Name) {
			names = append(names, c)
		}
		return names
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1.Delivery{}, phaseOnlyIndex, func(o client.Object) []string {
		return []string{string(o.(*v1.Delivery).Status.Phase)}
	}); err != nil {
		return err
	}
	instance, _ := os.Hostname()
	if instance == "" {
		instance = FieldOwner
	}
	r.summary = &phaseSummary{client: mgr.GetClient(), instance: instance, interval: r.PhaseSummaryInterval}
	if r.summary.interval <= 0 {
		r.summary.interval = DefaultPhaseSummaryInterval
	}
	if r.Recorder != nil {
		if err := mgr.Add(r.summary); err != nil {
			return err
		}
	}
	b := ctrl.NewControllerManagedBy(mgr).
		// A Delivery's own status and finalizer writes bump no generation and
		// need no reconcile; spec and label changes (campaign selection) do.
		// Spec changes and deletions jump the queue (deliveryQueueing).
		Named("delivery").
		WithLogConstructor(deliveryLog(mgr.GetLogger())).
		Watches(&v1.Delivery{}, deliveryQueueing(r.holdOnSight), builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		// Only spec changes of a campaign matter here; its status changes
		// every few seconds and must not re-plan every Delivery.
		Watches(&v1.CallCampaign{}, handler.EnqueueRequestsFromMapFunc(r.deliveriesOfCampaign), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controllerOptions(r.MaxConcurrentReconciles))
	if r.Outcomes != nil {
		b = b.WatchesRawSource(source.Channel(r.Outcomes, &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}

// deliveriesOfCampaign maps a campaign to the Deliveries it may now plan:
// those it calls, and those still Pending (waiting for a campaign).
func (r *DeliveryReconciler) deliveriesOfCampaign(ctx context.Context, o client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	seen := map[types.NamespacedName]bool{}
	add := func(list *v1.DeliveryList) {
		for _, d := range list.Items {
			k := types.NamespacedName{Namespace: d.Namespace, Name: d.Name}
			if !seen[k] {
				seen[k] = true
				reqs = append(reqs, reconcile.Request{NamespacedName: k})
			}
		}
	}
	// A map function cannot return an error: a failed list is logged, and
	// the Deliveries it would have found plan with the campaign's change on
	// their own next reconcile (an outcome, a retry, the resync).
	for _, q := range []struct {
		which string
		field client.MatchingFields
	}{
		{"named by the campaign", client.MatchingFields{campaignIndex: o.GetName()}},
		{"pending", client.MatchingFields{phaseOnlyIndex: string(v1.DeliveryPending)}},
		{"not yet planned", client.MatchingFields{phaseOnlyIndex: ""}},
	} {
		var list v1.DeliveryList
		if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), q.field, client.UnsafeDisableDeepCopy); err != nil {
			log.FromContext(ctx).Error(err, "cannot list the Deliveries a campaign change may plan; they follow it on their next reconcile",
				"campaign", o.GetNamespace()+"/"+o.GetName(), "deliveries", q.which)
			continue
		}
		add(&list)
	}
	return reqs
}
