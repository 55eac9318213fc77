package controllers

import (
	"context"
	"fmt"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/workers/store"
)

// deliveryRecord is what the delivery list and the insights rollups know
// of d (its status as this reconcile leaves it).
func deliveryRecord(d *v1.Delivery) store.DeliveryRecord {
	r := store.DeliveryRecord{
		UID: string(d.UID), Namespace: d.Namespace, Name: d.Name,
		Campaign: d.Status.Campaign, Phase: d.Status.Phase,
		Region: d.Spec.Region, Agent: d.Spec.Agent.Name,
		WindowStart: d.Spec.Window.Start.Time, WindowEnd: d.Spec.Window.End.Time,
		Attempts: d.Status.Attempts,
	}
	if la := d.Status.LastAttempt; la != nil {
		r.LastResult = string(la.Result)
	}
	return r
}

// recordInsights writes the Delivery's summary to the call log when what
// the delivery list shows changed in this reconcile (or its spec did), and
// counts its end once it has one. It runs before the status is written: a
// failure leaves the status as it was, so the next reconcile records again.
func (r *DeliveryReconciler) recordInsights(ctx context.Context, d *v1.Delivery, before *v1.DeliveryStatus) error {
	if r.Store == nil || d.Status.Phase == "" {
		return nil
	}
	var lastBefore, lastAfter v1.CallResult
	if before.LastAttempt != nil {
		lastBefore = before.LastAttempt.Result
	}
	if d.Status.LastAttempt != nil {
		lastAfter = d.Status.LastAttempt.Result
	}
	if before.Phase == d.Status.Phase && before.Attempts == d.Status.Attempts && before.Campaign == d.Status.Campaign &&
		lastBefore == lastAfter && before.ObservedGeneration == d.Generation {
		return nil
	}
	if err := r.Store.RecordDelivery(ctx, deliveryRecord(d)); err != nil {
		return fmt.Errorf("record the delivery's insights: %w", err)
	}
	return nil
}
