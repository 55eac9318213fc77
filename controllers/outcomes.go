package controllers

import (
	"context"

	"github.com/redis/go-redis/v9"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/outcome"
)

// OutcomeSource reads the workers' outcome stream and turns each event into
// a reconcile request of its Delivery. It runs on the leader only (one
// consumer group member per operator process).
type OutcomeSource struct {
	// Redis holds the outcome stream.
	Redis redis.UniversalClient
	// Consumer names this operator in the consumer group (the pod name).
	Consumer string
	// Events receives one GenericEvent per outcome; pass it to
	// DeliveryReconciler.Outcomes.
	Events chan event.GenericEvent
	// Metrics counts events (nil: not counted).
	Metrics *Metrics
}

// NewOutcomeSource makes a source with a buffered event channel.
func NewOutcomeSource(rdb redis.UniversalClient, consumer string, m *Metrics) *OutcomeSource {
	return &OutcomeSource{Redis: rdb, Consumer: consumer, Events: make(chan event.GenericEvent, 1024), Metrics: m}
}

// NeedLeaderElection makes the manager run the source on the leader only.
func (o *OutcomeSource) NeedLeaderElection() bool { return true }

// Start reads until ctx ends. An event is acknowledged once its request is
// queued; a lost request is harmless, since every Delivery is reconciled
// from MongoDB when the operator starts.
func (o *OutcomeSource) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("outcomes")
	c := outcome.NewConsumer(o.Redis, o.Consumer)
	return ignoreCanceled(c.Run(ctx, func(e outcome.Event) error {
		d := &v1.Delivery{}
		d.Namespace, d.Name = e.Namespace, e.Name
		select {
		case o.Events <- event.GenericEvent{Object: d}:
			o.Metrics.outcome()
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, func(err error) {
		logger.Error(err, "reading the outcome stream; retrying")
	}))
}

func ignoreCanceled(err error) error {
	if err == context.Canceled {
		return nil
	}
	return err
}
