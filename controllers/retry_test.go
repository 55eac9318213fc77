package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// A Delivery whose reconciles failed many times in a row (a long store
// outage) is still retried within RetryMaxDelay once the store is back,
// and the first retry comes quickly.
func TestFailedReconcilesAreRetriedWithinAMinute(t *testing.T) {
	l := controllerOptions(1).RateLimiter
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "team-a", Name: "parcel-1"}}
	if d := l.When(req); d < RetryBaseDelay/2 || d > RetryBaseDelay {
		t.Fatalf("first retry after %v, want about %v", d, RetryBaseDelay)
	}
	for range 40 {
		if d := l.When(req); d > RetryMaxDelay {
			t.Fatalf("a retry waits %v, more than %v", d, RetryMaxDelay)
		}
	}
	l.Forget(req)
	if d := l.When(req); d > RetryBaseDelay {
		t.Fatalf("after a success the next failure waits %v, want at most %v", d, RetryBaseDelay)
	}
}
