package controllers

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
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
	h := deliveryQueueing()

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

	var order []string
	for q.Len() > 0 {
		req, priority, _ := q.GetWithPriority()
		order = append(order, fmt.Sprintf("%s@%d", req.Name, priority))
		q.Done(req)
	}
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
