package controllers

import (
	"context"

	"github.com/go-logr/logr"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

// ChangePriority is the Delivery queue's priority for a Delivery whose spec
// changed (a new window, a cancellation, another number) or that is being
// deleted. Such a change can stop a call that is due, so it is reconciled
// ahead of the backlog of new Deliveries and outcomes, which run at the
// default priority (0). A worker learns that an attempt was called off only
// from this reconcile; behind a backlog of minutes it could still dial after
// the window moved or the Delivery was deleted.
const ChangePriority = 100

// deliveryQueueing enqueues a Delivery's reconcile at the priority its event
// deserves: ChangePriority for a spec change or a deletion, the default for
// a new Delivery, and handler.LowPriority for the initial list and for
// updates that changed nothing (a resync). A Delivery of the initial list
// or of a resync whose change was not acted on yet (changePending) keeps
// ChangePriority: the operator that saw the change may have failed to
// call its attempts off (the call log unreachable) and then lost its
// leadership, and its successor must not get to it last.
//
// Before it enqueues such a change, it calls hold (nil: none) with the
// changed Delivery: workers must not dial on the old plan while its
// reconcile waits in line.
func deliveryQueueing(hold func(context.Context, *v1.Delivery)) handler.EventHandler {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], o client.Object, priority *int) {
		req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)}
		if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
			pq.AddWithOpts(priorityqueue.AddOpts{Priority: priority}, req)
			return
		}
		q.Add(req)
	}
	low, change := handler.LowPriority, ChangePriority
	holdFor := func(ctx context.Context, o client.Object) {
		if d, ok := o.(*v1.Delivery); ok && hold != nil {
			hold(ctx, d)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			var p *int
			switch {
			case changePending(e.Object):
				holdFor(ctx, e.Object)
				p = &change
			case e.IsInInitialList:
				p = &low
			}
			add(q, e.Object, p)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			var p *int
			switch {
			case e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration(),
				e.ObjectOld.GetDeletionTimestamp().IsZero() && !e.ObjectNew.GetDeletionTimestamp().IsZero(),
				changePending(e.ObjectNew):
				holdFor(ctx, e.ObjectNew)
				p = &change
			case e.ObjectOld.GetResourceVersion() == e.ObjectNew.GetResourceVersion():
				p = &low
			}
			add(q, e.ObjectNew, p)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object, &change)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object, nil)
		},
	}
}

// changePending reports whether o is a Delivery with a change its
// reconciles have not carried out: being deleted, cancelled without the
// Cancelled phase, or a spec generation the status has not observed.
func changePending(o client.Object) bool {
	d, ok := o.(*v1.Delivery)
	if !ok {
		return false
	}
	return !d.DeletionTimestamp.IsZero() ||
		d.Spec.Cancelled && d.Status.Phase != v1.DeliveryCancelled ||
		d.Status.ObservedGeneration != 0 && d.Generation != d.Status.ObservedGeneration
}

// deliveryLog gives each Delivery reconcile's logger the keys a controller
// built with For has: the controller, its group and kind, and the Delivery.
func deliveryLog(base logr.Logger) func(*reconcile.Request) logr.Logger {
	l := base.WithValues("controller", "delivery", "controllerGroup", v1.GroupVersion.Group, "controllerKind", "Delivery")
	return func(req *reconcile.Request) logr.Logger {
		if req == nil {
			return l
		}
		return l.WithValues("Delivery", req.NamespacedName, "namespace", req.Namespace, "name", req.Name)
	}
}
