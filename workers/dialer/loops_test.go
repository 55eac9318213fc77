package dialer

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

func (h *harness) reconciler(edit ...func(*ReconcilerOptions)) *Reconciler {
	h.t.Helper()
	o := ReconcilerOptions{Store: h.st, Queue: h.q, Redis: h.rdb, Twilio: h.twilio, Campaign: campaignfile.Static{Config: h.campaign},
		Grace: time.Hour, StaleAfter: 100 * time.Millisecond, Metrics: h.metrics, Logger: h.log}
	for _, e := range edit {
		e(&o)
	}
	r, err := NewReconciler(o)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// TestReconcilerFindsTheCallOfAnAmbiguousDial: two parcels to one number
// are due together and the first one's dial is ambiguous (the call was
// created, the response lost). The second is not dialed while the first is
// in doubt (the recipient is never rung twice at once, and a call to the
// number can only be the first one's), the reconciler finds the first one's
// call, and the second is dialed, once, when that call has ended.
func TestReconcilerFindsTheCallOfAnAmbiguousDial(t *testing.T) {
	h := newHarness(t, withTwilioTimeout(time.Second))
	h.sim.QueueFaults(twiliosim.EndpointCreateCall, twiliosim.FaultHangAfterCreate)
	h.consume(h.dialer("w1"), "c1", 2)
	x := h.create(attempt{to: "+14155550123"}, true)
	h.waitState(x.ID, 20*time.Second, store.StateUnknown)
	y := h.create(attempt{to: "+14155550123"}, true)
	deadline := time.Now().Add(20 * time.Second)
	for h.counter("delauto_worker_checks_total", map[string]string{"outcome": "line_busy"}) < 1 {
		if got := h.get(y.ID); got.State != store.StateQueued && got.State != store.StateRetry {
			t.Fatalf("the second parcel's attempt is %s while the first one's dial is in doubt: the recipient is rung twice at once, and the reconciler may take one call for the other", got.State)
		}
		if time.Now().After(deadline) {
			t.Fatal("the second parcel's attempt was never tried")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := h.sim.CallsTo("+14155550123"); n != 1 {
		t.Fatalf("%d calls to the number while the first dial is in doubt, want 1", n)
	}
	if err := h.reconciler().RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := h.get(x.ID)
	var simSID string
	for _, c := range h.sim.Calls() {
		if c.AttemptID == x.ID {
			simSID = c.Sid
		}
	}
	if got.State != store.StateDialed || got.CallSID != simSID || simSID == "" {
		t.Fatalf("reconciled attempt: %s with SID %q; want dialed with the simulator's %q", got.State, got.CallSID, simSID)
	}
	if n := h.counter("delauto_worker_ambiguous_resolved_total", map[string]string{"how": "found"}); n != 1 {
		t.Errorf("ambiguous_resolved_total{found} = %v", n)
	}
	if !slices.Contains(h.outcomeEvents(x.ID), "dialed") {
		t.Errorf("no outcome event for the reconciled attempt")
	}
	// The first call ends: the second parcel's attempt is dialed, once.
	if _, _, err := h.st.ApplyCallStatus(context.Background(), store.CallRef{AttemptID: x.ID}, store.StatusUpdate{Status: "completed", Seq: 9, CallSID: simSID}); err != nil {
		t.Fatal(err)
	}
	gy := h.waitState(y.ID, 60*time.Second, store.StateDialed, store.StateRinging, store.StateInProgress, store.StateCompleted)
	if gy.CallSID == "" || gy.CallSID == got.CallSID {
		t.Fatalf("second attempt's call SID %q (first %q)", gy.CallSID, got.CallSID)
	}
	for _, id := range []string{x.ID, y.ID} {
		if n := h.sim.CallsForAttempt(id); n != 1 {
			t.Errorf("attempt %s: %d calls, want 1", id, n)
		}
	}
}

func TestReconcilerReleasesOnlyAfterTheGracePeriod(t *testing.T) {
	h := newHarness(t)
	h.sim.QueueFaults(twiliosim.EndpointCreateCall, twiliosim.FaultServerError) // no call made
	h.consume(h.dialer("w1"), "c1", 2)
	a := h.create(attempt{}, true)
	h.waitState(a.ID, 20*time.Second, store.StateUnknown)
	ctx := context.Background()
	// Within the grace period nothing happens: absence is not proven yet.
	if err := h.reconciler().RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.get(a.ID); got.State != store.StateUnknown {
		t.Fatalf("released within the grace period: %s", got.State)
	}
	time.Sleep(300 * time.Millisecond)
	if err := h.reconciler(func(o *ReconcilerOptions) { o.Grace = 200 * time.Millisecond }).RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// Released, queued again, and dialed once.
	got := h.waitState(a.ID, 20*time.Second, store.StateDialed)
	if got.Releases != 1 || got.Fence != 2 {
		t.Errorf("attempt releases %d fence %d, want 1 and 2", got.Releases, got.Fence)
	}
	if n := h.sim.CallsForAttempt(a.ID); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
	if n := h.counter("delauto_worker_ambiguous_resolved_total", map[string]string{"how": "absent"}); n != 1 {
		t.Errorf("ambiguous_resolved_total{absent} = %v", n)
	}
}

func TestReconcilerTakesOverAbandonedClaims(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.create(attempt{}, false)
	// A worker claimed it and died before (or while) dialing.
	if _, err := h.st.Claim(ctx, a.ID, "dead-worker", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	r := h.reconciler(func(o *ReconcilerOptions) { o.Grace = 300 * time.Millisecond })
	if err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.get(a.ID); got.State != store.StateUnknown {
		t.Fatalf("abandoned claim is %s, want unknown", got.State)
	}
	if n := h.counter("delauto_worker_ambiguous_total", map[string]string{"source": "stale_lease"}); n != 1 {
		t.Errorf("ambiguous_total{stale_lease} = %v", n)
	}
	h.consume(h.dialer("w1"), "c1", 2)
	time.Sleep(400 * time.Millisecond)
	if err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	h.waitState(a.ID, 20*time.Second, store.StateDialed)
	if n := h.sim.CallsForAttempt(a.ID); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// RestoreShard (after a new Redis incarnation) queues a shard's whole queue
// again, future attempts included, page by page, and only what is missing.
func TestSweeperRestoreRepublishesEveryShardsWholeQueue(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	other := h.shard
	other.Name = "shard-1"
	now := time.Now()
	var future *store.Attempt
	for i := range 23 { // pages of 10; some share a due time
		a := h.create(attempt{due: now.Add(time.Duration(i/4-2) * time.Hour)}, i < 3)
		if i == 22 {
			future = a
		}
	}
	for range 4 {
		h.create(attempt{due: now.Add(-time.Minute), shard: other.Name}, false)
	}
	s, err := NewSweeper(SweeperOptions{Store: h.st, Queue: h.q, Campaign: h.campaign.Namespace + "/" + h.campaign.Name,
		Shards: []queue.Shard{h.shard, other}, Batch: 1, Metrics: h.metrics, Logger: h.log})
	if err != nil {
		t.Fatal(err)
	}
	restore := func() (int, error) {
		total := 0
		for _, sh := range []queue.Shard{h.shard, other} {
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
	if res, err := h.q.Schedule(ctx, h.shard, future.ID, future.Due); err != nil || res != queue.Unchanged {
		t.Fatalf("the attempt due in %s is not queued: scheduling it again gave %v, %v", time.Until(future.Due).Round(time.Hour), res, err)
	}
}

func TestSweeperRepublishesAttemptsRedisLost(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var lost []*store.Attempt
	for range 5 {
		lost = append(lost, h.create(attempt{due: time.Now().Add(-2 * time.Minute)}, false))
	}
	later := h.create(attempt{due: time.Now().Add(time.Hour)}, false)
	s, err := NewSweeper(SweeperOptions{Store: h.st, Queue: h.q, Campaign: h.campaign.Namespace + "/" + h.campaign.Name,
		Shards: []queue.Shard{h.shard}, Overdue: 30 * time.Second, Metrics: h.metrics, Logger: h.log})
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
	h.consume(h.dialer("w1"), "c1", 4)
	for _, a := range lost {
		h.waitState(a.ID, 20*time.Second, store.StateDialed)
		if n := h.sim.CallsForAttempt(a.ID); n != 1 {
			t.Errorf("%d calls for %s, want 1", n, a.ID)
		}
	}
	if got := h.get(later.ID); got.State != store.StateQueued {
		t.Errorf("attempt due later is %s", got.State)
	}
	if n := h.counter("delauto_worker_swept_total", nil); n != 5 {
		t.Errorf("swept_total = %v", n)
	}
}

func TestReconcilerFinishesCallsWhoseFinalStatusWasLost(t *testing.T) {
	h := newHarness(t)
	h.consume(h.dialer("w1"), "c1", 2)
	// The harness's callback server drops every status callback, as an
	// endpoint that was down would: the call ends at the simulator, the call
	// log still says dialed, and Twilio does not send the callback again.
	a := h.create(attempt{}, true)
	h.waitState(a.ID, 20*time.Second, store.StateDialed)
	var sim twiliosim.Call
	deadline := time.Now().Add(20 * time.Second)
	for sim.Ended.IsZero() {
		for _, c := range h.sim.Calls() {
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
	if err := h.reconciler().RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.get(a.ID); got.State != store.StateDialed {
		t.Fatalf("attempt moved to %s before its call could have ended", got.State)
	}
	later := time.Now().Add(25*time.Second + 90*time.Second + 2*time.Minute + time.Second)
	if err := h.reconciler(func(o *ReconcilerOptions) { o.Now = func() time.Time { return later } }).RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	got := h.get(a.ID)
	if got.State != store.StateCompleted || got.TwilioStatus != sim.Status || got.DurationSec != int32(sim.Duration) {
		t.Fatalf("attempt is %s (Twilio status %q, %ds); want completed with the simulator's %q, %ds",
			got.State, got.TwilioStatus, got.DurationSec, sim.Status, sim.Duration)
	}
	if n := h.counter("delauto_worker_final_status_lookups_total", map[string]string{"outcome": "finished"}); n != 1 {
		t.Errorf("final_status_lookups_total{finished} = %v, want 1", n)
	}
	if !slices.Contains(h.outcomeEvents(a.ID), string(store.StateCompleted)) {
		t.Errorf("no outcome event for the finished attempt: the Delivery would stay Calling")
	}
	if n := h.sim.CallsForAttempt(a.ID); n != 1 {
		t.Errorf("%d calls for the attempt, want 1", n)
	}
	// A second round changes nothing.
	if err := h.reconciler(func(o *ReconcilerOptions) { o.Now = func() time.Time { return later } }).RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.counter("delauto_worker_final_status_lookups_total", nil); n != 1 {
		t.Errorf("final_status_lookups_total = %v after a second round, want 1", n)
	}
}
