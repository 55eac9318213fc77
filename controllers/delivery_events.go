package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

// DefaultPhaseSummaryInterval is how often the phase changes no one needs to
// see one by one are reported, as one Event per campaign.
const DefaultPhaseSummaryInterval = time.Minute

// Event reasons of a Delivery (the ones a person acts on) and of the
// campaign's summary.
const (
	ReasonAgentNotified = "AgentNotified"
	ReasonPhaseSummary  = "DeliveryPhases"
)

// deliveryEvents decides which Delivery changes get an Event of their own and
// counts the rest for the campaign's periodic summary. An Event is an API
// write; one per Delivery and phase would triple what planning a Delivery
// costs the apiserver (create, status, Event), for Events nobody reads.
//
// Own Events: the Delivery failed or ran out of attempts (Warning), could not
// be planned (Pending with a reason, Warning), the recipient opted out, and
// the recipient's answer was relayed to the agent. Everything else (Scheduled,
// Calling, Confirmed, ...) is in the status and in the summary.
func (r *DeliveryReconciler) deliveryEvents(d *v1.Delivery, before *v1.DeliveryStatus, s *deliveryScope) {
	if r.Recorder == nil {
		return
	}
	from, to := before.Phase, d.Status.Phase
	if to != from && to != "" {
		switch {
		case to == v1.DeliveryFailed || to == v1.DeliveryUnreachable:
			r.Recorder.Eventf(d, nil, corev1.EventTypeWarning, string(to), "Transition", "phase %s -> %s: %s", orNone(string(from)), to, s.ready.Message)
		case to == v1.DeliveryOptedOut:
			r.Recorder.Eventf(d, nil, corev1.EventTypeNormal, string(to), "Transition", "phase %s -> %s: the recipient asked not to be called again", orNone(string(from)), to)
		case to == v1.DeliveryPending && s.ready.Reason != "":
			// No campaign, an invalid one, or a Delivery it cannot plan:
			// someone has to fix a spec.
			r.Recorder.Eventf(d, nil, corev1.EventTypeWarning, s.ready.Reason, "Plan", "%s", s.ready.Message)
		default:
			r.summary.count(d, to)
		}
	}
	if before.AgentNotifiedTime == nil && d.Status.AgentNotifiedTime != nil {
		choice := ""
		if d.Status.Response != nil {
			choice = string(d.Status.Response.Choice)
		}
		r.Recorder.Eventf(d, nil, corev1.EventTypeNormal, ReasonAgentNotified, "Relay", "the recipient's answer (%s) was relayed to agent %s at %s",
			orNone(choice), d.Spec.Agent.Name, d.Status.AgentNotifiedTime.UTC().Format(time.RFC3339))
	}
}

// phaseSummary counts the phase changes of each campaign's Deliveries and
// reports them as one Event on the campaign per interval. The Event is
// created directly, not through the recorder: the recorder folds Events of
// one object and reason into a series that keeps the first note, and each
// summary's note is its content.
type phaseSummary struct {
	client   client.Client
	interval time.Duration
	// instance names this operator in the Events (reportingInstance).
	instance string

	mu     sync.Mutex
	counts map[types.NamespacedName]map[v1.DeliveryPhase]int
}

func (p *phaseSummary) count(d *v1.Delivery, to v1.DeliveryPhase) {
	if p == nil || d.Status.Campaign == "" {
		return
	}
	k := types.NamespacedName{Namespace: d.Namespace, Name: d.Status.Campaign}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts == nil {
		p.counts = map[types.NamespacedName]map[v1.DeliveryPhase]int{}
	}
	if p.counts[k] == nil {
		p.counts[k] = map[v1.DeliveryPhase]int{}
	}
	p.counts[k][to]++
}

// NeedLeaderElection: only the leader reconciles, so only it has counts.
func (p *phaseSummary) NeedLeaderElection() bool { return true }

// Start reports every interval until ctx ends.
func (p *phaseSummary) Start(ctx context.Context) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			p.flush(ctx)
		}
	}
}

func (p *phaseSummary) flush(ctx context.Context) {
	p.mu.Lock()
	counts := p.counts
	p.counts = nil
	p.mu.Unlock()
	for k, phases := range counts {
		c := &v1.CallCampaign{}
		if err := p.client.Get(ctx, k, c); err != nil {
			// A campaign deleted meanwhile has no one to tell.
			log.FromContext(ctx).V(1).Info("phase summary: campaign not found", "campaign", k.String(), "error", err.Error())
			continue
		}
		now := time.Now()
		ev := &eventsv1.Event{
			ObjectMeta:          metav1.ObjectMeta{Namespace: c.Namespace, Name: fmt.Sprintf("%s.%x", c.Name, now.UnixNano())},
			EventTime:           metav1.NewMicroTime(now),
			ReportingController: FieldOwner,
			ReportingInstance:   p.instance,
			Action:              "Summary",
			Reason:              ReasonPhaseSummary,
			Type:                corev1.EventTypeNormal,
			Note:                summaryNote(phases, p.interval),
			Regarding: corev1.ObjectReference{APIVersion: v1.GroupVersion.String(), Kind: "CallCampaign",
				Namespace: c.Namespace, Name: c.Name, UID: c.UID, ResourceVersion: c.ResourceVersion},
		}
		if err := p.client.Create(ctx, ev); err != nil {
			log.FromContext(ctx).Error(err, "phase summary Event", "campaign", k.String())
		}
	}
}

// summaryNote reads "in the last 1m0s, Deliveries moved to Scheduled: 412, Confirmed: 3".
func summaryNote(phases map[v1.DeliveryPhase]int, interval time.Duration) string {
	names := make([]string, 0, len(phases))
	for ph := range phases {
		names = append(names, string(ph))
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s: %d", n, phases[v1.DeliveryPhase(n)])
	}
	return fmt.Sprintf("in the last %s, Deliveries moved to %s", interval, strings.Join(parts, ", "))
}
