package recovery

// Call safety (issue 13) where recovery takes part: a second call, a lost
// entry. Each test here failed on the code before its fix; the failure is
// quoted above the test.

import (
	"context"
	"testing"
	"time"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/calltest"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/workers/dialer"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

// Scenario 1: a worker loses MongoDB (Redis and Twilio stay) while it holds a
// claim. Its renewals fail; another worker's resolver marks the attempt
// unknown once the lease ran out, finds no call after the grace period and
// releases it; a second worker claims it and dials. The first worker must
// not dial as well when its wait ends.
//
// Before the fix (the limiter wait had no bound, failed renewals were only
// logged, the lease was not checked before CreateCall):
//
//	slot_beyond_the_lease: 2 calls for the attempt (fences [1 2]), want 1
//	slot_beyond_the_lease: the first worker dialed (fence 1) though its claim was taken over (fences [1 2])
//	429_retries_beyond_the_lease: 2 calls for the attempt (fences [2 1]), want 1
//	429_retries_beyond_the_lease: the first worker dialed (fence 1) though its claim was taken over (fences [2 1])
func TestNoDialAfterTheConfirmedLeaseRanOut(t *testing.T) {
	const lease = 3 * time.Second
	cases := []struct {
		name string
		// setup prepares the first worker's wait: a far slot, or 429s.
		setup func(h *harness, tw *calltest.Scripted, o *dialer.Options)
	}{
		{name: "slot beyond the lease", setup: func(h *harness, _ *calltest.Scripted, _ *dialer.Options) {
			h.Prebook(6) // the slot is about 6.3 s away, past the 3 s lease
		}},
		{name: "429 retries beyond the lease", setup: func(_ *harness, tw *calltest.Scripted, o *dialer.Options) {
			// Backoffs of 1-2, 2-4 and 4-8 s: the fourth request comes 7 s or
			// more after the first, past the lease.
			tw.Errs = []error{calltest.TwilioError(429, 20429), calltest.TwilioError(429, 20429), calltest.TwilioError(429, 20429)}
			o.RateLimitBackoff, o.RateLimitRetries = 2*time.Second, 3
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, calltest.WithTwilioTimeout(time.Second), calltest.WithSpec(func(s *v1.CallCampaignSpec) { s.Twilio.CallsPerSecond = 1 }))
			p := testservices.StartProxy(t, h.MongoHost())
			tw := &calltest.Scripted{TwilioCalls: h.twilio}
			d1 := h.dialer("w1", func(o *dialer.Options) {
				o.Store, o.Twilio, o.Lease, o.RecordTimeout = h.StoreVia(p), tw, lease, 2*time.Second
				c.setup(h, tw, o)
			})
			// The other worker: its own call log connection, resolver and dialer.
			d2 := h.dialer("w2")
			rec := h.resolver(func(o *ResolverOptions) { o.StaleAfter, o.Grace = 100*time.Millisecond, 500*time.Millisecond })
			a := h.Create(calltest.Attempt{}, false)

			booked := h.Booked()
			first := make(chan error, 1)
			go func() { first <- d1.Handle(context.Background(), h.Message(a)) }()
			claimedBy := time.Now() // the claim's lease ends by claimedBy + lease
			// w1 holds the claim and waits: for its slot, or after a 429 (or
			// it already put the attempt back).
			h.WaitFor("the first worker waits", func() bool {
				return len(tw.Creates()) > 0 || h.Booked() != booked || len(first) > 0 || h.Get(a.ID).State == store.StateRetry
			})
			p.Down() // w1 loses MongoDB
			lost := time.Now()

			// The other worker's resolver takes the attempt over; once it
			// is released, the other worker dials it.
			deadline := time.Now().Add(20 * time.Second)
			var second chan struct{}
			for second == nil || len(first) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the first worker's handler did not return, or the attempt was not released: %s", h.Get(a.ID).State)
				}
				if err := rec.RunOnce(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := h.Get(a.ID); second == nil && got.State.Claimable() {
					second = make(chan struct{})
					go func() { defer close(second); h.handleUntilDialed(d2, a, time.Now().Add(20*time.Second)) }()
				}
				time.Sleep(200 * time.Millisecond)
			}
			<-second
			t.Logf("first worker's handler returned %v; MongoDB lost %s before", <-first, time.Since(lost).Round(time.Millisecond))
			var fences []int64
			for _, cr := range h.Sim.Creates() {
				if cr.AttemptID == a.ID {
					fences = append(fences, calltest.FenceOf(t, cr.Form))
				}
			}
			if n := h.Sim.CallsForAttempt(a.ID); n != 1 {
				t.Errorf("%d calls for the attempt (fences %v), want 1", n, fences)
			}
			for _, f := range fences {
				if f == 1 && h.Get(a.ID).Fence > 1 {
					t.Errorf("the first worker dialed (fence 1) though its claim was taken over (fences %v)", fences)
				}
			}
			// Every request of the first worker was over before its lease.
			for _, at := range tw.Creates() {
				if end := at.Add(h.Timeout); end.After(claimedBy.Add(lease)) {
					t.Errorf("the first worker sent a create request that could last until %s after its lease ended", end.Sub(claimedBy.Add(lease)).Round(time.Millisecond))
				}
			}
		})
	}
}

// Scenario 7: entries Redis lost behind a backlog of overdue attempts still
// in Redis are queued again by the same pass, not after the backlog drained.
//
// Before the fix (a pass stopped at the first page with nothing missing):
//
//	the sweep queued 0 attempts, want the 3 lost behind the backlog
func TestRepublisherCoversTheWholeOverdueRange(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	for i := range 12 { // the backlog: overdue, still queued in Redis
		h.Create(calltest.Attempt{Due: now.Add(-10*time.Minute + time.Duration(i)*time.Second)}, true)
	}
	var lost []*store.Attempt
	for i := range 3 { // due later than the backlog, lost by Redis
		lost = append(lost, h.Create(calltest.Attempt{Due: now.Add(-3*time.Minute + time.Duration(i)*time.Second)}, false))
	}
	s, err := NewRepublisher(RepublisherOptions{Store: h.St, Queue: h.Q, Campaign: h.Campaign.Namespace + "/" + h.Campaign.Name,
		Shards: []queue.Shard{h.Shard}, Overdue: 30 * time.Second, Batch: 1, Metrics: h.metrics, Logger: h.Log}) // pages of 10
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != len(lost) {
		t.Fatalf("the sweep queued %d attempts, want the %d lost behind the backlog", n, len(lost))
	}
	for _, a := range lost {
		if res, err := h.Q.Schedule(context.Background(), h.Shard, a.ID, a.Due); err != nil || res != queue.Unchanged {
			t.Errorf("lost attempt %s is not queued again: scheduling it gave %v, %v", a.ID, res, err)
		}
	}
	if n, err := s.RunOnce(context.Background()); err != nil || n != 0 {
		t.Errorf("a second sweep queued %d, %v; want 0", n, err)
	}
}
