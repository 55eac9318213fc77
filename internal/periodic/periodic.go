// Package periodic runs a function on a fixed interval until its context
// ends: the loop behind every poll and sweep of the workers.
package periodic

import (
	"context"
	"time"
)

// Every calls fn every interval, the first time one interval from now,
// until ctx ends. A call still running when ctx ends is not interrupted
// (fn gets ctx to stop itself); Every returns after it.
func Every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn(ctx)
	}
}

// Sleep waits d; it reports false, at once, when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
