package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

// While the operator works through a backlog of new Deliveries, a Delivery
// that gets a new window or is deleted is reconciled next, not after the
// backlog: only that reconcile calls its attempt off, and a worker would
// otherwise dial it in the old window or after the deletion.
func TestChangedAndDeletedDeliveriesJumpTheBacklog(t *testing.T) {
	if !ptr.Deref(controllerOptions(1).UsePriorityQueue, true) {
		t.Fatal("the controllers must run on controller-runtime's priority queue")
	}
	ctx := context.Background()
	q := priorityqueue.New[reconcile.Request]("delivery", func(o *priorityqueue.Opts[reconcile.Request]) {
		o.RateLimiter = controllerOptions(1).RateLimiter
	})
	defer q.ShutDown()
	h := deliveryQueueing(nil)

	delivery := func(i int) *v1.Delivery {
		return &v1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: fmt.Sprintf("parcel-%d", i), Generation: 1, ResourceVersion: "1"}}
	}
	// The operator restarted (its initial list), then a stream of new ones.
	for i := range 10 {
		h.Create(ctx, event.CreateEvent{Object: delivery(i), IsInInitialList: true}, q)
	}
	for i := 10; i < 200; i++ {
		h.Create(ctx, event.CreateEvent{Object: delivery(i)}, q)
	}
	// A resync of one: nothing changed.
	h.Update(ctx, event.UpdateEvent{ObjectOld: delivery(150), ObjectNew: delivery(150)}, q)
	// Parcel 120 gets a new window, parcel 170 is deleted (the finalizer
	// holds it: an update that sets the deletion timestamp).
	edited := delivery(120)
	edited.Generation, edited.ResourceVersion = 2, "2"
	h.Update(ctx, event.UpdateEvent{ObjectOld: delivery(120), ObjectNew: edited}, q)
	deleted := delivery(170)
	deleted.ResourceVersion = "2"
	now := metav1.Now()
	deleted.DeletionTimestamp = &now
	h.Update(ctx, event.UpdateEvent{ObjectOld: delivery(170), ObjectNew: deleted}, q)

	order := drainOrder(q)
	if len(order) != 200 {
		t.Fatalf("%d reconciles queued, want one per Delivery (200)", len(order))
	}
	if order[0] != fmt.Sprintf("parcel-120@%d", ChangePriority) || order[1] != fmt.Sprintf("parcel-170@%d", ChangePriority) {
		t.Fatalf("first reconciles %v, want the edited and the deleted Delivery first", order[:3])
	}
	if order[2] != "parcel-10@0" {
		t.Fatalf("third reconcile %s, want the oldest new Delivery (parcel-10)", order[2])
	}
	for i, o := range order[190:] {
		if want := fmt.Sprintf("parcel-%d@%d", i, -100); i < 10 && o != want {
			t.Fatalf("reconcile %d is %s, want %s: the initial list comes last", 190+i, o, want)
		}
	}
}

// An operator that takes over the leadership lists every Delivery at the
// lowest priority, except those with a change not carried out yet: its
// predecessor may have seen a cancel or a delete and failed to call the
// attempts off (the call log unreachable) before it died. Those come first.
func TestNewLeaderTakesUnfinishedChangesFirst(t *testing.T) {
	ctx := context.Background()
	q := priorityqueue.New[reconcile.Request]("delivery", func(o *priorityqueue.Opts[reconcile.Request]) {
		o.RateLimiter = controllerOptions(1).RateLimiter
	})
	defer q.ShutDown()
	h := deliveryQueueing(nil)
	pending := map[string]bool{}
	for i := range 200 {
		d := &v1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: fmt.Sprintf("parcel-%d", i), Generation: 2, ResourceVersion: "5"}}
		d.Status.ObservedGeneration, d.Status.Phase = 2, v1.DeliveryScheduled
		switch i {
		case 40: // cancelled; the reconcile that saw it failed
			d.Spec.Cancelled = true
		case 41: // cancelled and carried out
			d.Spec.Cancelled, d.Status.Phase = true, v1.DeliveryCancelled
		case 120: // deleted; the finalizer holds it
			now := metav1.Now()
			d.DeletionTimestamp = &now
		case 170: // a new window not observed yet
			d.Generation = 3
		case 180: // never reconciled: new, not a change
			d.Status = v1.DeliveryStatus{}
		}
		if i == 40 || i == 120 || i == 170 {
			pending[d.Name] = true
		}
		h.Create(ctx, event.CreateEvent{Object: d, IsInInitialList: true}, q)
	}
	order := drainOrder(q)
	if len(order) != 200 {
		t.Fatalf("%d reconciles queued, want 200", len(order))
	}
	for i, o := range order[:3] {
		name, priority, _ := strings.Cut(o, "@")
		if !pending[name] || priority != fmt.Sprint(ChangePriority) {
			t.Fatalf("reconcile %d is %s; want the cancelled, the deleted and the edited Delivery first, at %d: %v", i, o, ChangePriority, order[:5])
		}
	}
	for _, o := range order[3:] {
		if !strings.HasSuffix(o, fmt.Sprintf("@%d", handler.LowPriority)) {
			t.Fatalf("%s: the rest of the initial list runs at the lowest priority", o)
		}
	}
}

// drainOrder takes every request off q, highest priority first, as
// "name@priority".
func drainOrder(q priorityqueue.PriorityQueue[reconcile.Request]) []string {
	var order []string
	for q.Len() > 0 {
		req, priority, _ := q.GetWithPriority()
		order = append(order, fmt.Sprintf("%s@%d", req.Name, priority))
		q.Done(req)
	}
	return order
}
