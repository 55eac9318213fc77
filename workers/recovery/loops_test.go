package recovery

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/calltest"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

func (h *harness) resolver(edit ...func(*ResolverOptions)) *Resolver {
	h.t.Helper()
	o := ResolverOptions{Store: h.St, Queue: h.Q, Redis: h.Rdb, Twilio: h.twilio, Campaign: campaignfile.Static{Config: h.Campaign},
		Grace: time.Hour, StaleAfter: 100 * time.Millisecond, Metrics: h.metrics, Logger: h.Log}
	for _, e := range edit {
		e(&o)
	}
	r, err := NewResolver(o)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// TestResolverFindsTheCallOfAnAmbiguousDial: two parcels to one number
// are due together and the first one's dial is ambiguous (the call was
// created, the response lost). The second is not dialed while the first is
// in doubt (the recipient is never rung twice at once, and a call to the
// number can only be the first one's), the resolver finds the first one's
// call, and the second is dialed, once, when that call has ended.
func TestResolverFindsTheCallOfAnAmbiguousDial(t *testing.T) {
	h := newHarness(t, calltest.WithTwilioTimeout(time.Second))
	h.Sim.QueueFaults(twiliosim.EndpointCreateCall, twiliosim.FaultHangAfterCreate)
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	x := h.Create(calltest.Attempt{To: "+14155550123"}, true)
	h.WaitState(x.ID, 20*time.Second, store.StateUnknown)
	y := h.Create(calltest.Attempt{To: "+14155550123"}, true)
	deadline := time.Now().Add(20 * time.Second)
	for h.Counter("delauto_worker_checks_total", map[string]string{"outcome": "line_busy"}) < 1 {
		if got := h.Get(y.ID); got.State != store.StateQueued && got.State != store.StateRetry {
			t.Fatalf("the second parcel's attempt is %s while the first one's dial is in doubt: the recipient is rung twice at once, and the resolver may take one call for the other", got.State)
		}
		if time.Now().After(deadline) {
			t.Fatal("the second parcel's attempt was never tried")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := h.Sim.CallsTo("+14155550123"); n != 1 {
		t.Fatalf("%d calls to the number while the first dial is in doubt, want 1", n)
	}
	if err := h.resolver().RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := h.Get(x.ID)
	var simSID string
	for _, c := range h.Sim.Calls() {
		if c.AttemptID == x.ID {
			simSID = c.Sid
		}
	}
	if got.State != store.StateDialed || got.CallSID != simSID || simSID == "" {
		t.Fatalf("reconciled attempt: %s with SID %q; want dialed with the simulator's %q", got.State, got.CallSID, simSID)
	}
	if n := h.Counter("delauto_worker_ambiguous_resolved_total", map[string]string{"how": "found"}); n != 1 {
		t.Errorf("ambiguous_resolved_total{found} = %v", n)
	}
	if !slices.Contains(h.OutcomeEvents(x.ID), "dialed") {
		t.Errorf("no outcome event for the reconciled attempt")
	}
	// The first call ends: the second parcel's attempt is dialed, once.
	if _, _, err := h.St.ApplyCallStatus(context.Background(), store.CallRef{AttemptID: x.ID}, store.StatusUpdate{Status: "completed", Seq: 9, CallSID: simSID}); err != nil {
		t.Fatal(err)
	}
	gy := h.WaitState(y.ID, 60*time.Second, store.StateDialed, store.StateRinging, store.StateInProgress, store.StateCompleted)
	if gy.CallSID == "" || gy.CallSID == got.CallSID {
		t.Fatalf("second attempt's call SID %q (first %q)", gy.CallSID, got.CallSID)
	}
	for _, id := range []string{x.ID, y.ID} {
		if n := h.Sim.CallsForAttempt(id); n != 1 {
			t.Errorf("attempt %s: %d calls, want 1", id, n)
		}
	}
}

func TestResolverReleasesOnlyAfterTheGracePeriod(t *testing.T) {
	h := newHarness(t)
	h.Sim.QueueFaults(twiliosim.EndpointCreateCall, twiliosim.FaultServerError) // no call made
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	a := h.Create(calltest.Attempt{}, true)
	h.WaitState(a.ID, 20*time.Second, store.StateUnknown)
	ctx := context.Background()
	// Within the grace period nothing happens: absence is not proven yet.
	if err := h.resolver().RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.Get(a.ID); got.State != store.StateUnknown {
		t.Fatalf("released within the grace period: %s", got.State)
	}
	time.Sleep(300 * time.Millisecond)
	if err := h.resolver(func(o *ResolverOptions) { o.Grace = 200 * time.Millisecond }).RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// Released, queued again, and dialed once.
	got := h.WaitState(a.ID, 20*time.Second, store.StateDialed)
	if got.Releases != 1 || got.Fence != 2 {
		t.Errorf("attempt releases %d fence %d, want 1 and 2", got.Releases, got.Fence)
	}
	if n := h.Sim.CallsForAttempt(a.ID); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
	if n := h.Counter("delauto_worker_ambiguous_resolved_total", map[string]string{"how": "absent"}); n != 1 {
		t.Errorf("ambiguous_resolved_total{absent} = %v", n)
	}
}

func TestResolverTakesOverAbandonedClaims(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.Create(calltest.Attempt{}, false)
	// A worker claimed it and died before (or while) dialing.
	if _, err := h.St.Claim(ctx, a.ID, "dead-worker", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	r := h.resolver(func(o *ResolverOptions) { o.Grace = 300 * time.Millisecond })
	if err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.Get(a.ID); got.State != store.StateUnknown {
		t.Fatalf("abandoned claim is %s, want unknown", got.State)
	}
	if n := h.Counter("delauto_worker_ambiguous_total", map[string]string{"source": "stale_lease"}); n != 1 {
		t.Errorf("ambiguous_total{stale_lease} = %v", n)
	}
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	time.Sleep(400 * time.Millisecond)
	if err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	h.WaitState(a.ID, 20*time.Second, store.StateDialed)
	if n := h.Sim.CallsForAttempt(a.ID); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// RestoreShard (after a new Redis incarnation) queues a shard's whole queue
// again, future attempts included, page by page, and only what is missing.
func TestRepublisherRestoresEveryShardsWholeQueue(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	other := h.Shard
	other.Name = "shard-1"
	now := time.Now()
	var future *store.Attempt
	for i := range 23 { // pages of 10; some share a due time
		a := h.Create(calltest.Attempt{Due: now.Add(time.Duration(i/4-2) * time.Hour)}, i < 3)
		if i == 22 {
			future = a
		}
	}
	for range 4 {
		h.Create(calltest.Attempt{Due: now.Add(-time.Minute), Shard: other.Name}, false)
	}
	s, err := NewRepublisher(RepublisherOptions{Store: h.St, Queue: h.Q, Campaign: h.Campaign.Namespace + "/" + h.Campaign.Name,
		Shards: []queue.Shard{h.Shard, other}, Batch: 1, Metrics: h.metrics, Logger: h.Log})
	if err != nil {
		t.Fatal(err)
	}
	restore := func() (int, error) {
		total := 0
		for _, sh := range []queue.Shard{h.Shard, other} {
			n, err := s.RestoreShard(ctx, sh)
			if total += n; err != nil {
				return total, err
			}
		}
		return total, nil
	}
	if n, err := restore(); err != nil || n != 24 {
		t.Fatalf("restore queued %d, %v; want 24 (20 missing in one shard, 4 in the other)", n, err)
	}
	if n, err := restore(); err != nil || n != 0 {
		t.Fatalf("second restore queued %d, %v; want 0", n, err)
	}
	if res, err := h.Q.Schedule(ctx, h.Shard, future.ID, future.Due); err != nil || res != queue.Unchanged {
		t.Fatalf("the attempt due in %s is not queued: scheduling it again gave %v, %v", time.Until(future.Due).Round(time.Hour), res, err)
	}
}

func TestRepublisherRepublishesAttemptsRedisLost(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var lost []*store.Attempt
	for range 5 {
		lost = append(lost, h.Create(calltest.Attempt{Due: time.Now().Add(-2 * time.Minute)}, false))
	}
	later := h.Create(calltest.Attempt{Due: time.Now().Add(time.Hour)}, false)
	s, err := NewRepublisher(RepublisherOptions{Store: h.St, Queue: h.Q, Campaign: h.Campaign.Namespace + "/" + h.Campaign.Name,
		Shards: []queue.Shard{h.Shard}, Overdue: 30 * time.Second, Metrics: h.metrics, Logger: h.Log})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.RunOnce(ctx)
	if err != nil || n != 5 {
		t.Fatalf("first sweep queued %d, %v; want 5", n, err)
	}
	if n, err := s.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep queued %d, %v; want 0 (they are queued now)", n, err)
	}
	h.Consume(h.dialer("w1").Handle, "c1", 4)
	for _, a := range lost {
		h.WaitState(a.ID, 20*time.Second, store.StateDialed)
		if n := h.Sim.CallsForAttempt(a.ID); n != 1 {
			t.Errorf("%d calls for %s, want 1", n, a.ID)
		}
	}
	if got := h.Get(later.ID); got.State != store.StateQueued {
		t.Errorf("attempt due later is %s", got.State)
	}
	if n := h.Counter("delauto_worker_swept_total", nil); n != 5 {
		t.Errorf("swept_total = %v", n)
	}
}

func TestResolverFinishesCallsWhoseFinalStatusWasLost(t *testing.T) {
	h := newHarness(t)
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	// The harness's callback server drops every status callback, as an
	// endpoint that was down would: the call ends at the simulator, the call
	// log still says dialed, and Twilio does not send the callback again.
	a := h.Create(calltest.Attempt{}, true)
	h.WaitState(a.ID, 20*time.Second, store.StateDialed)
	var sim twiliosim.Call
	deadline := time.Now().Add(20 * time.Second)
	for sim.Ended.IsZero() {
		for _, c := range h.Sim.Calls() {
			if c.AttemptID == a.ID {
				sim = c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the simulator's call did not end: %+v", sim)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := context.Background()
	// Within ring timeout (25s) + time limit (90s) + margin the call may
	// still go on: nothing is asked.
	if err := h.resolver().RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.Get(a.ID); got.State != store.StateDialed {
		t.Fatalf("attempt moved to %s before its call could have ended", got.State)
	}
	later := time.Now().Add(25*time.Second + 90*time.Second + 2*time.Minute + time.Second)
	if err := h.resolver(func(o *ResolverOptions) { o.Now = func() time.Time { return later } }).RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	got := h.Get(a.ID)
	if got.State != store.StateCompleted || got.TwilioStatus != sim.Status || got.DurationSec != int32(sim.Duration) {
		t.Fatalf("attempt is %s (Twilio status %q, %ds); want completed with the simulator's %q, %ds",
			got.State, got.TwilioStatus, got.DurationSec, sim.Status, sim.Duration)
	}
	if n := h.Counter("delauto_worker_final_status_lookups_total", map[string]string{"outcome": "finished"}); n != 1 {
		t.Errorf("final_status_lookups_total{finished} = %v, want 1", n)
	}
	if !slices.Contains(h.OutcomeEvents(a.ID), string(store.StateCompleted)) {
		t.Errorf("no outcome event for the finished attempt: the Delivery would stay Calling")
	}
	if n := h.Sim.CallsForAttempt(a.ID); n != 1 {
		t.Errorf("%d calls for the attempt, want 1", n)
	}
	// A second round changes nothing.
	if err := h.resolver(func(o *ResolverOptions) { o.Now = func() time.Time { return later } }).RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.Counter("delauto_worker_final_status_lookups_total", nil); n != 1 {
		t.Errorf("final_status_lookups_total = %v after a second round, want 1", n)
	}
}

// TestRepublisherCancelsCalledOffAttempts: Redis lost an overdue attempt
// whose delivery the operator then called off (cancelled or deleted while
// it could not reach the call log). The sweep must not queue it again; it
// cancels it in the call log instead.
func TestRepublisherCancelsCalledOffAttempts(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	off := h.Create(calltest.Attempt{Due: time.Now().Add(-2 * time.Minute)}, false)
	kept := h.Create(calltest.Attempt{Due: time.Now().Add(-2 * time.Minute)}, false)
	if err := h.Q.CallOff(ctx, h.Shard, queue.GroupOf(off.ID)); err != nil {
		t.Fatal(err)
	}
	s, err := NewRepublisher(RepublisherOptions{Store: h.St, Queue: h.Q, Campaign: h.Campaign.Namespace + "/" + h.Campaign.Name,
		Shards: []queue.Shard{h.Shard}, Overdue: 30 * time.Second, Metrics: h.metrics, Logger: h.Log})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("sweep queued %d, %v; want 1 (the attempt not called off)", n, err)
	}
	if got := h.Get(off.ID); got.State != store.StateCancelled {
		t.Errorf("called-off attempt is %s, want cancelled", got.State)
	}
	st, err := h.Q.Stats(ctx, []queue.Shard{h.Shard}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n := st[0].Ready + st[0].Scheduled; n != 1 {
		t.Errorf("%d attempts in the queue, want 1 (the one not called off)", n)
	}
	if got := h.Get(kept.ID); got.State != store.StateQueued {
		t.Errorf("other attempt is %s, want queued", got.State)
	}
}
