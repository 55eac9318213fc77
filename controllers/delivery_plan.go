package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/internal/sharding"
	"github.com/delauto/delauto/workers/store"
)

// How long the operator waits for an outcome event before it looks at an
// attempt again on its own (events are a hint; MongoDB is the truth).
const (
	scheduledRecheck = 2 * time.Minute
	callingRecheck   = time.Minute
	// staleRecheck is how soon a Delivery is looked at again after a
	// reconcile saw a status older than its call log.
	staleRecheck = 5 * time.Second
)

func setCondition(conds *[]metav1.Condition, c metav1.Condition) { meta.SetStatusCondition(conds, c) }

// sec is t at the second precision the apiserver keeps, so a status read
// back compares equal to the one computed and no write is wasted.
func sec(t time.Time) *metav1.Time { return &metav1.Time{Time: t.Truncate(time.Second)} }

func readyCondition(status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: v1.ConditionReady, Status: status, Reason: reason, Message: msg}
}

// stop marks a reconcile that cannot plan (yet): Pending with the reason.
func (s *deliveryScope) stop(reason, msg string) {
	s.ready = readyCondition(metav1.ConditionFalse, reason, msg)
	if s.d.Status.Phase == "" {
		s.d.Status.Phase = v1.DeliveryPending
	}
	s.done = true
}

// noCampaign is stop for a Delivery whose campaign cannot be resolved or
// cannot plan it. A cancelled one goes on to cancelIfAsked, which needs no
// campaign: its queued attempts are cancelled and it ends Cancelled, even
// when its campaign was deleted or changed under it.
func (s *deliveryScope) noCampaign(reason, msg string) {
	s.stop(reason, msg)
	s.done = !s.d.Spec.Cancelled
}

// resolveCampaign finds the campaign (explicit reference, else the one
// whose selector matches), compiles its plan and picks the shard.
func (r *DeliveryReconciler) resolveCampaign(ctx context.Context, s *deliveryScope) error {
	d := s.d
	var campaign *v1.CallCampaign
	if ref := d.Spec.CampaignRef; ref != nil {
		c := &v1.CallCampaign{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: d.Namespace, Name: ref.Name}, c); apierrors.IsNotFound(err) {
			s.noCampaign("CampaignNotFound", fmt.Sprintf("CallCampaign %q does not exist in namespace %s", ref.Name, d.Namespace))
			return nil
		} else if err != nil {
			return err
		}
		campaign = c
	} else {
		var list v1.CallCampaignList
		if err := r.List(ctx, &list, client.InNamespace(d.Namespace)); err != nil {
			return err
		}
		var matches []*v1.CallCampaign
		for i := range list.Items {
			c := &list.Items[i]
			if c.Spec.DeliverySelector == nil {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(c.Spec.DeliverySelector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Labels)) {
				continue
			}
			if c.Name == d.Status.Campaign && d.Status.Attempts > 0 {
				// Calls began under this campaign: it stays.
				matches = []*v1.CallCampaign{c}
				break
			}
			matches = append(matches, c)
		}
		switch len(matches) {
		case 0:
			s.noCampaign("NoMatchingCampaign", "no CallCampaign in namespace "+d.Namespace+" selects this Delivery's labels; set spec.campaignRef or label it for a campaign")
			return nil
		case 1:
			campaign = matches[0]
		default:
			names := make([]string, len(matches))
			for i, m := range matches {
				names[i] = m.Name
			}
			sort.Strings(names)
			s.noCampaign("AmbiguousCampaign", "CallCampaigns "+strings.Join(names, ", ")+" all select this Delivery; set spec.campaignRef to choose one")
			return nil
		}
	}
	policy, err := schedule.Compile(&campaign.Spec)
	if err != nil {
		s.noCampaign("InvalidCampaign", fmt.Sprintf("CallCampaign %s cannot plan calls: %v", campaign.Name, err))
		return nil
	}
	input, err := policy.InputFor(&d.Spec)
	if err != nil {
		s.noCampaign("InvalidDelivery", err.Error())
		return nil
	}
	s.campaign, s.policy, s.input = campaign, policy, input
	if d.Status.Campaign != campaign.Name || d.Status.Shard == "" || !sharding.Has(campaign.Spec.Sharding, d.Status.Shard) {
		// New, moved to another campaign, or on a shard the campaign no
		// longer has (its count or regions changed; no worker reads that
		// queue): the next attempts go where the Delivery belongs now, as
		// the campaign moves the queued ones of a removed shard.
		d.Status.Shard = sharding.For(campaign.Spec.Sharding, string(d.UID), d.Spec.Region)
	}
	d.Status.Campaign = campaign.Name
	s.shard = d.Status.Shard
	return nil
}

// loadAttempts reads the Delivery's attempts from the call log. A Delivery
// never planned has none (at most attempt 1, which planNext's idempotent
// create finds), so the read is skipped: planning a new Delivery costs one
// insert, not a query.
func (r *DeliveryReconciler) loadAttempts(ctx context.Context, s *deliveryScope) error {
	if p := s.d.Status.Phase; (p == "" || p == v1.DeliveryPending) && !s.d.Spec.Cancelled {
		s.fresh = true
		return nil
	}
	return r.readAttempts(ctx, s)
}

func (r *DeliveryReconciler) readAttempts(ctx context.Context, s *deliveryScope) error {
	s.fresh = false
	attempts, err := r.Store.ForDelivery(ctx, string(s.d.UID))
	if err != nil {
		if s.d.Spec.Cancelled {
			r.callOff(ctx, s.d, s.shard, err)
		}
		s.ready = readyCondition(metav1.ConditionFalse, "StoreUnavailable", "cannot read the call log: "+err.Error())
		return fmt.Errorf("read attempts: %w", err)
	}
	s.attempts = attempts
	return nil
}

// cancelIfAsked stops all calls of a cancelled Delivery.
func (r *DeliveryReconciler) cancelIfAsked(ctx context.Context, s *deliveryScope) error {
	if !s.d.Spec.Cancelled {
		return nil
	}
	held, err := r.cancelQueued(ctx, s.d, s.attempts, "delivery cancelled")
	if err != nil {
		r.callOff(ctx, s.d, s.shard, err)
		return err
	}
	if held > 0 {
		// Marked: released, they end cancelled; dialed, their calls are
		// followed into the call log.
		s.requeue = cancelRecheck
	}
	s.d.Status.Phase = v1.DeliveryCancelled
	s.d.Status.NextCallTime = nil
	s.ready = readyCondition(metav1.ConditionTrue, "Finished", "the delivery was cancelled; no more calls")
	// Without its campaign a call still held is not followed (no plan to
	// follow it with); the recheck above cancels it once it is released.
	s.done = s.campaign == nil
	return nil
}

// live are the attempts that count: not cancelled by a re-plan.
func live(attempts []store.Attempt) []store.Attempt {
	out := attempts[:0:0]
	for _, a := range attempts {
		if a.State != store.StateCancelled {
			out = append(out, a)
		}
	}
	return out
}

// callsMade counts attempts a worker took up (claimed or beyond).
func callsMade(attempts []store.Attempt) int {
	n := 0
	for _, a := range live(attempts) {
		if !a.State.Claimable() {
			n++
		}
	}
	return n
}

func nextNumber(attempts []store.Attempt) int32 {
	var n int32
	for _, a := range attempts {
		n = max(n, a.Number)
	}
	return n + 1
}

// followAttempt reflects the latest attempt in the status, re-plans a queued
// attempt whose plan changed, and settles the phase of a finished call.
func (r *DeliveryReconciler) followAttempt(ctx context.Context, s *deliveryScope) error {
	d := s.d
	calls := live(s.attempts)
	d.Status.Attempts = int32(callsMade(s.attempts))
	fillResponse(d, s.attempts)
	if d.Status.Phase.Finished() || len(calls) == 0 {
		return nil
	}
	latest := calls[len(calls)-1]
	fillLastAttempt(d, &latest)
	switch {
	case latest.State.Claimable():
		return r.followQueued(ctx, s, &latest, calls)
	case !latest.State.Terminal():
		if err := r.callOffTaken(ctx, s, &latest, calls); err != nil {
			return err
		}
		d.Status.Phase = v1.DeliveryCalling
		d.Status.NextCallTime = nil
		s.ready = readyCondition(metav1.ConditionTrue, "Calling", fmt.Sprintf("attempt %d is %s", latest.Number, latest.State))
		s.requeue = callingRecheck
		return nil
	}
	// The latest call ended: a decisive answer or a refusal finishes the
	// delivery; anything else is for planNext.
	if phase, ok := answerPhase(latest.Response); ok {
		d.Status.Phase = phase
		d.Status.NextCallTime = nil
		s.ready = readyCondition(metav1.ConditionTrue, "Finished", "the recipient answered: "+string(latest.Response.Choice))
		return nil
	}
	if latest.State == store.StateFailed {
		d.Status.Phase = v1.DeliveryFailed
		d.Status.NextCallTime = nil
		s.ready = readyCondition(metav1.ConditionTrue, "NumberRejected", fmt.Sprintf("Twilio refused the call (error %d: %s); the number will not be called again", latest.ErrorCode, latest.ErrorMessage))
		return nil
	}
	return nil
}

// callOffTaken calls off an attempt a worker holds (dialing, or unknown
// after an ambiguous dial) when the Delivery's spec changed and the new
// plan would not call now: a window moved to another day. The attempt is
// marked (store.RequestCancel): a call already placed goes on and is
// followed, but a release (a rate-limit wait, a drain, the reconciler
// finding no call after an ambiguous dial) cancels it instead of dialing
// it again on the old plan, and the next attempt is planned from the new
// spec. Without the mark only a queued attempt was re-planned, and one
// taken at the moment of the change was dialed again later on its old
// due time.
func (r *DeliveryReconciler) callOffTaken(ctx context.Context, s *deliveryScope, a *store.Attempt, calls []store.Attempt) error {
	d := s.d
	if d.Generation == d.Status.ObservedGeneration || d.Status.ObservedGeneration == 0 || a.CancelRequested {
		return nil
	}
	if a.State != store.StateDialing && a.State != store.StateUnknown {
		return nil // the call exists: it goes on
	}
	now := r.now()
	// The plan as if the attempt held had not been made.
	dec := s.decide(calls[:len(calls)-1], callsMade(s.attempts)-1, now)
	if dec.Call() && !dec.At.After(now.Add(s.policy.Grace())) {
		return nil // the new plan calls now too
	}
	b, err := r.Store.RequestCancel(ctx, a.ID, "re-planned while taken: "+dec.String())
	if err != nil {
		return fmt.Errorf("call off attempt %s to re-plan it: %w", a.ID, err)
	}
	*a = *b
	return nil
}

// followQueued keeps a queued attempt scheduled, and re-plans it when the
// Delivery's spec changed (a new window).
func (r *DeliveryReconciler) followQueued(ctx context.Context, s *deliveryScope, a *store.Attempt, calls []store.Attempt) error {
	d := s.d
	if d.Generation != d.Status.ObservedGeneration && d.Status.ObservedGeneration != 0 {
		var dec schedule.Decision
		if len(calls) == 1 {
			dec = s.policy.First(s.input, r.now())
		} else {
			prev := calls[len(calls)-2]
			dec = s.policy.Next(s.input, callsMade(s.attempts), prev.Result, endOf(&prev), r.now())
		}
		if dec.Final() || !dec.At.Equal(a.Due) {
			if r.beforeReplan != nil {
				r.beforeReplan(a.ID)
			}
			b, err := r.Store.RequestCancel(ctx, a.ID, "re-planned: "+dec.String())
			if err != nil {
				return fmt.Errorf("cancel attempt %s to re-plan it: %w", a.ID, err)
			}
			if b.State != store.StateCancelled {
				// A worker claimed it first: it may be calling. Follow it;
				// the next attempt is planned from its outcome (released, it
				// ends cancelled and is planned again from the new spec).
				return r.followTaken(ctx, s, b)
			}
			if _, err := r.Queue.Cancel(ctx, r.shardOf(d, a.Shard), a.ID); err != nil {
				ctrl.LoggerFrom(ctx).Info("could not remove a cancelled attempt from the queue", "attempt", a.ID, "error", err.Error())
			}
			r.Metrics.replanned()
			// Planning starts over from the attempts that count.
			s.attempts = append(s.attempts[:0:0], s.attempts...)
			for i := range s.attempts {
				if s.attempts[i].ID == a.ID {
					s.attempts[i].State = store.StateCancelled
				}
			}
			d.Status.Phase = v1.DeliveryPending
			d.Status.NextCallTime = nil
			d.Status.LastAttempt = nil
			return nil
		}
	}
	// First sight of this attempt since it was created (or the operator
	// stopped in between): make sure it is queued. Idempotent.
	requeue := d.Status.Phase != v1.DeliveryScheduled || d.Status.NextCallTime == nil || !d.Status.NextCallTime.Time.Equal(sec(a.Due).Time)
	if !sharding.Has(s.campaign.Spec.Sharding, a.Shard) {
		// Planned on a shard the campaign no longer has: it moves to the
		// Delivery's shard in the call log (where the sweeper and the
		// dialer's reconciler look) and is queued there.
		b, err := r.Store.MoveToShard(ctx, a.ID, s.shard)
		if err != nil {
			s.ready = readyCondition(metav1.ConditionFalse, "StoreUnavailable", "cannot move the attempt off a removed shard: "+err.Error())
			return fmt.Errorf("move attempt %s to shard %s: %w", a.ID, s.shard, err)
		}
		if !b.State.Claimable() {
			return r.followTaken(ctx, s, b)
		}
		a.Shard, requeue = b.Shard, true
	}
	if requeue {
		if _, err := r.Queue.Schedule(ctx, r.shardOf(d, a.Shard), a.ID, a.Due); err != nil {
			s.ready = readyCondition(metav1.ConditionFalse, "QueueUnavailable", "cannot schedule in Redis: "+err.Error())
			return fmt.Errorf("schedule attempt %s: %w", a.ID, err)
		}
	}
	r.scheduled(s, a.Number, a.Due)
	return nil
}

// followTaken follows attempt b, which a worker took up (or the operator
// cancelled) while this reconcile was changing it.
func (r *DeliveryReconciler) followTaken(ctx context.Context, s *deliveryScope, b *store.Attempt) error {
	for i := range s.attempts {
		if s.attempts[i].ID == b.ID {
			s.attempts[i] = *b
		}
	}
	return r.followAttempt(ctx, s)
}

// scheduled records a planned attempt in the status.
func (r *DeliveryReconciler) scheduled(s *deliveryScope, number int32, due time.Time) {
	s.d.Status.Phase = v1.DeliveryScheduled
	s.d.Status.NextCallTime = sec(due)
	s.ready = readyCondition(metav1.ConditionTrue, "Planned", fmt.Sprintf("attempt %d planned for %s", number, due.UTC().Format(time.RFC3339)))
	s.requeue = max(time.Until(due), 0) + scheduledRecheck
}

func endOf(a *store.Attempt) time.Time {
	switch {
	case a.EndedAt != nil:
		return *a.EndedAt
	case a.DialedAt != nil:
		return *a.DialedAt
	}
	return a.Due
}

// answerPhase maps a decisive answer to the Delivery's final phase.
func answerPhase(r *store.Response) (v1.DeliveryPhase, bool) {
	if r == nil {
		return "", false
	}
	switch r.Choice {
	case v1.ChoiceConfirm:
		return v1.DeliveryConfirmed, true
	case v1.ChoiceReschedule:
		return v1.DeliveryRescheduleRequested, true
	case v1.ChoiceInstructions:
		return v1.DeliveryInstructionsRecorded, true
	case v1.ChoiceOptOut:
		return v1.DeliveryOptedOut, true
	}
	return "", false
}

// decide asks the campaign's policy for the next call after the attempts
// ended so far (in order; none: the first call), of which made were dialed
// (callsMade).
func (s *deliveryScope) decide(ended []store.Attempt, made int, now time.Time) schedule.Decision {
	if len(ended) == 0 {
		return s.policy.First(s.input, now)
	}
	last := ended[len(ended)-1]
	return s.policy.Next(s.input, made, last.Result, endOf(&last), now)
}

// planNext plans the first call, or the next after a call that ended
// without a decisive answer, or says why there is none.
func (r *DeliveryReconciler) planNext(ctx context.Context, s *deliveryScope) error {
	d := s.d
	if d.Status.Phase.Finished() {
		return nil
	}
	calls := live(s.attempts)
	if n := len(calls); n > 0 && !calls[n-1].State.Terminal() {
		return nil // followAttempt has it
	}
	optedOut, err := r.Store.IsOptedOut(ctx, d.Namespace, string(d.Spec.Recipient.Phone))
	if err != nil {
		s.ready = readyCondition(metav1.ConditionFalse, "StoreUnavailable", "cannot read opt-outs: "+err.Error())
		return fmt.Errorf("read opt-outs: %w", err)
	}
	if optedOut {
		d.Status.Phase = v1.DeliveryOptedOut
		d.Status.NextCallTime = nil
		s.ready = readyCondition(metav1.ConditionTrue, "Finished", "the number asked not to be called again")
		r.Metrics.decided("OptedOut")
		return nil
	}
	now := r.now()
	dec := s.decide(calls, callsMade(s.attempts), now)
	if !dec.Call() {
		r.Metrics.decided(dec.Reason.String())
		if !dec.Final() {
			d.Status.Phase = v1.DeliveryCalling
			s.requeue = callingRecheck
			return nil
		}
		d.Status.NextCallTime = nil
		if callsMade(s.attempts) == 0 {
			d.Status.Phase = v1.DeliveryFailed
		} else {
			d.Status.Phase = v1.DeliveryUnreachable
		}
		s.ready = readyCondition(metav1.ConditionTrue, dec.Reason.String(), "no more calls: "+dec.Message)
		return nil
	}
	number := nextNumber(s.attempts)
	a, created, err := r.Store.CreateAttempt(ctx, store.NewAttempt{
		Delivery:  store.DeliveryRef{UID: string(d.UID), Namespace: d.Namespace, Name: d.Name},
		Campaign:  d.Namespace + "/" + s.campaign.Name,
		Shard:     s.shard,
		Number:    number,
		Due:       dec.At,
		To:        string(d.Spec.Recipient.Phone),
		Context:   callContext(d, s.policy, s.input),
		Retention: r.retention(s.campaign),
	})
	if err != nil {
		if errors.Is(err, store.ErrInvalidInput) {
			s.stop("InvalidDelivery", err.Error())
			return nil
		}
		s.ready = readyCondition(metav1.ConditionFalse, "StoreUnavailable", "cannot create the attempt: "+err.Error())
		return fmt.Errorf("create attempt %d: %w", number, err)
	}
	if !created && s.fresh && a.State != store.StateQueued {
		// Planned and taken up before this Delivery's status said so (this
		// reconcile saw a status older than the one that planned it): read
		// the call log and follow what happened. Look again soon: the
		// recheck the planning reconcile asked for was folded into this
		// one, and a call that just ended may still be recording its answer.
		if err := r.readAttempts(ctx, s); err != nil {
			return err
		}
		if err := r.followAttempt(ctx, s); err != nil {
			return err
		}
		if d.Status.Phase.Finished() {
			return nil
		}
		if p := d.Status.Phase; p == "" || p == v1.DeliveryPending {
			// The call ended without a decisive answer. The Delivery must
			// leave the never-planned phases: the recheck then reads the
			// call log and plans from the call's outcome, instead of taking
			// the Delivery for a new one again (and again).
			d.Status.Phase = v1.DeliveryCalling
			d.Status.NextCallTime = nil
			s.ready = readyCondition(metav1.ConditionTrue, "Calling", "the last call ended before this status was written; the next call is planned from its outcome")
		}
		if s.requeue == 0 || s.requeue > staleRecheck {
			s.requeue = staleRecheck
		}
		return nil
	}
	if _, err := r.Queue.Schedule(ctx, r.shardOf(d, s.shard), a.ID, a.Due); err != nil {
		s.ready = readyCondition(metav1.ConditionFalse, "QueueUnavailable", "cannot schedule in Redis: "+err.Error())
		return fmt.Errorf("schedule attempt %s: %w", a.ID, err)
	}
	r.Metrics.decided("Planned")
	r.scheduled(s, a.Number, a.Due)
	return nil
}

// expireFinished stamps when the Delivery finished and deletes it once the
// campaign's retention has passed (its calls expire from the call log by
// the same retention, counted from each call's end).
func (r *DeliveryReconciler) expireFinished(ctx context.Context, s *deliveryScope) error {
	d := s.d
	if !d.Status.Phase.Finished() {
		d.Status.FinishedTime = nil
		return nil
	}
	if d.Status.FinishedTime == nil {
		d.Status.FinishedTime = sec(r.now())
	}
	if s.campaign == nil || s.campaign.Spec.Retention == nil {
		return nil
	}
	left := d.Status.FinishedTime.Add(s.campaign.Spec.Retention.Duration).Sub(r.now())
	if left > 0 {
		s.requeue = left
		return nil
	}
	if err := r.Delete(ctx, d, client.Preconditions{UID: &d.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete after retention: %w", err)
	}
	s.done = true
	return nil
}

// fillLastAttempt copies the latest attempt into the status.
func fillLastAttempt(d *v1.Delivery, a *store.Attempt) {
	la := &v1.LastAttempt{Number: a.Number, CallSID: a.CallSID, Result: a.Result, AnsweredBy: a.AnsweredBy, ErrorCode: a.ErrorCode}
	if a.DurationSec > 0 {
		la.Duration = &metav1.Duration{Duration: time.Duration(a.DurationSec) * time.Second}
	}
	if a.DialedAt != nil {
		la.StartTime = sec(*a.DialedAt)
	}
	if a.EndedAt != nil {
		la.EndTime = sec(*a.EndedAt)
	}
	if a.State == store.StateUnknown {
		la.Result = v1.CallUnknown
	}
	if a.State == store.StateFailed && la.Result == "" {
		la.Result = v1.CallRejected
	}
	if a.State.Claimable() {
		return // not called yet: keep the previous call's figures
	}
	d.Status.LastAttempt = la
}

// fillResponse copies the recipient's latest answer and when the agent was told.
func fillResponse(d *v1.Delivery, attempts []store.Attempt) {
	for i := len(attempts) - 1; i >= 0; i-- {
		a := &attempts[i]
		r := a.Response
		if r == nil || r.Choice == "" {
			continue
		}
		cr := &v1.CustomerResponse{Choice: r.Choice, Digits: r.Digits, Speech: r.Speech, RecordingURL: r.RecordingURL, Transcription: r.Transcription}
		if r.RecordingDurationSec > 0 {
			cr.RecordingDuration = &metav1.Duration{Duration: time.Duration(r.RecordingDurationSec) * time.Second}
		}
		if r.At != nil {
			cr.Time = sec(*r.At)
		}
		d.Status.Response = cr
		var sent *time.Time
		for _, n := range []store.Notification{a.Notify.SMS, a.Notify.Webhook} {
			if n.SentAt != nil && (sent == nil || n.SentAt.Before(*sent)) {
				sent = n.SentAt
			}
		}
		if sent != nil {
			d.Status.AgentNotifiedTime = sec(*sent)
		}
		return
	}
}

func isNotClaimable(err error) bool {
	return errors.Is(err, store.ErrNotClaimable) || errors.Is(err, store.ErrInvalidTransition)
}

// callContext snapshots what the call and the relay need of the Delivery.
func callContext(d *v1.Delivery, p *schedule.Policy, in schedule.Input) *store.CallContext {
	a := d.Spec.Address
	parts := []string{a.Line1}
	for _, p := range []string{a.Line2, strings.TrimSpace(a.PostalCode + " " + a.City), a.Country} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	loc := in.Location
	if loc == nil {
		loc = p.DefaultLocation()
	}
	return &store.CallContext{
		RecipientName: d.Spec.Recipient.Name,
		Language:      d.Spec.Recipient.Language,
		TimeZone:      loc.String(),
		WindowStart:   d.Spec.Window.Start.UTC(),
		WindowEnd:     d.Spec.Window.End.UTC(),
		Address:       strings.Join(parts, ", "),
		Region:        d.Spec.Region,
		AgentName:     d.Spec.Agent.Name,
		AgentPhone:    string(d.Spec.Agent.Phone),
	}
}
