package controllers

import (
	"time"

	"golang.org/x/time/rate"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Retries after a failed reconcile (a store or the apiserver briefly
// unreachable) back off per object from RetryBaseDelay, doubling, to at
// most RetryMaxDelay, and across objects to retryPerSecond with bursts of
// retryBurst. controller-runtime's default backs off to 1,000 s: after a
// FerretDB stall of a few seconds under load, a Delivery could wait over a
// quarter of an hour to be planned.
const (
	// RetryBaseDelay is the wait before the first retry of an object.
	RetryBaseDelay = 250 * time.Millisecond
	// RetryMaxDelay bounds the wait before any retry of an object.
	RetryMaxDelay = time.Minute

	retryPerSecond = 50
	retryBurst     = 500
)

// controllerOptions are the options every DelAuto controller runs with.
func controllerOptions(concurrency int) controller.Options {
	return controller.Options{MaxConcurrentReconciles: max(1, concurrency), RateLimiter: retryLimiter()}
}

// retryLimiter paces the retries of failed reconciles (see RetryMaxDelay).
func retryLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](RetryBaseDelay, RetryMaxDelay),
		&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(retryPerSecond, retryBurst)},
	)
}
