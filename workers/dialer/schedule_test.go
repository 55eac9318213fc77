package dialer

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/calltest"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

// A recipient in Tokyo and one in Los Angeles with the same UTC due time:
// the calling hours are chosen around one's local time now, so that one is
// dialed and the other (7 or 8 hours away on the clock) is put back to its
// next allowed time, in the call log and in the queue.
func TestCallingHoursAcrossTimeZones(t *testing.T) {
	now := time.Now()
	type recipient struct{ tz, to string }
	tokyo := recipient{"Asia/Tokyo", "+819012345678"}
	la := recipient{"America/Los_Angeles", "+13105550100"}
	inside, outside := tokyo, la
	tod := func(r recipient) time.Duration {
		loc, _ := time.LoadLocation(r.tz)
		l := now.In(loc)
		return time.Duration(l.Hour())*time.Hour + time.Duration(l.Minute())*time.Minute
	}
	if t := tod(tokyo); t < 2*time.Hour || t >= 22*time.Hour {
		inside, outside = la, tokyo
	}
	hhmm := func(d time.Duration) v1.ClockTime {
		return v1.ClockTime(fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute)))
	}
	hours := v1.CallingHours{Start: hhmm(tod(inside) - time.Hour), End: hhmm(tod(inside) + time.Hour)}
	h := newHarness(t, calltest.WithSpec(func(s *v1.CallCampaignSpec) { s.Schedule.CallingHours = hours }))
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	in := h.Create(calltest.Attempt{To: inside.to, TZ: inside.tz, Due: now}, true)
	out := h.Create(calltest.Attempt{To: outside.to, TZ: outside.tz, Due: now}, true)

	h.WaitState(in.ID, 20*time.Second, store.StateDialed)
	got := h.WaitState(out.ID, 20*time.Second, store.StateRetry)
	policy, err := schedule.Compile(&h.Campaign.Spec)
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := time.LoadLocation(outside.tz)
	want := policy.NextAllowed(loc, now)
	if d := got.Due.Sub(want).Abs(); d > 5*time.Second {
		t.Errorf("%s recipient put back to %s, want %s (%s, hours %s-%s)", outside.tz, got.Due, want.UTC(), loc, hours.Start, hours.End)
	}
	if want.Sub(now) < time.Hour {
		t.Errorf("next allowed time %s is not hours away: the test's hours are wrong", want)
	}
	var score time.Time
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var ok bool
		if score, ok = h.DueScore(out.ID); ok {
			break
		}
	}
	if d := score.Sub(got.Due).Abs(); d > time.Second {
		t.Errorf("queued for %s, call log says %s", score, got.Due)
	}
	if n := h.Sim.CallsTo(outside.to); n != 0 {
		t.Errorf("%d calls outside the calling hours", n)
	}
	if n := h.Sim.CallsForAttempt(in.ID); n != 1 {
		t.Errorf("%d calls inside the calling hours, want 1", n)
	}
	if got.Releases != 1 || got.Fence != 1 {
		t.Errorf("put-back attempt: releases %d fence %d", got.Releases, got.Fence)
	}
	if !slices.Contains(h.OutcomeEvents(out.ID), "retry") {
		t.Errorf("no outcome event for the put-back attempt")
	}
	if n := h.Counter("delauto_worker_checks_total", map[string]string{"outcome": "outside_hours"}); n != 1 {
		t.Errorf("checks_total{outside_hours} = %v", n)
	}
}

// An attempt whose delivery window ends before the next calling hours is
// cancelled instead of being put back.
func TestNoCallingHoursBeforeTheWindowEnds(t *testing.T) {
	now := time.Now()
	loc, _ := time.LoadLocation(testservices.NoonZone())
	l := now.In(loc)
	// Hours start two hours from now; the window ends in one.
	start := time.Duration(l.Hour()+2) * time.Hour
	h := newHarness(t, calltest.WithSpec(func(s *v1.CallCampaignSpec) {
		s.Schedule.CallingHours = v1.CallingHours{Start: v1.ClockTime(fmt.Sprintf("%02d:00", int(start/time.Hour))), End: "23:00"}
	}))
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	a := h.Create(calltest.Attempt{TZ: testservices.NoonZone(), Due: now, WindowEnd: now.Add(time.Hour)}, true)
	got := h.WaitState(a.ID, 20*time.Second, store.StateCancelled)
	h.Idle(5 * time.Second)
	if h.Sim.CallsForAttempt(a.ID) != 0 {
		t.Error("called although no calling hours are left before the window ends")
	}
	if _, ok := h.DueScore(a.ID); ok {
		t.Error("cancelled attempt is still queued")
	}
	if got.Reason == "" || !slices.Contains(h.OutcomeEvents(a.ID), "cancelled") {
		t.Errorf("reason %q, events %v", got.Reason, h.OutcomeEvents(a.ID))
	}
}

// 200 attempts due at once on a 10 calls-per-second account: about 20 s of
// dialing (21 s with the 5% headroom), never more than 10 call starts in
// any second at the simulator.
func TestAccountRateLimit(t *testing.T) {
	h := newHarness(t, calltest.WithSpec(func(s *v1.CallCampaignSpec) { s.Twilio.CallsPerSecond = 10 }))
	ctx := context.Background()
	var ids []string
	for i := range 200 {
		a := h.Create(calltest.Attempt{To: fmt.Sprintf("+1415555%04d", 1000+i)}, false)
		ids = append(ids, a.ID)
	}
	// All due now, in one batch.
	for _, id := range ids {
		if _, err := h.Q.Schedule(ctx, h.Shard, id, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// A lease long enough for every one of the 50 handlers to wait for its
	// slot (5 s at most; the longest wait is derived from the lease).
	h.Consume(h.dialer("w1", func(o *Options) { o.Lease = 30 * time.Second }).Handle, "c1", 50)
	for _, id := range ids {
		h.WaitState(id, 60*time.Second, store.StateDialed)
	}
	creates := h.Sim.Creates()
	if len(creates) != 200 {
		t.Fatalf("%d create requests, want 200", len(creates))
	}
	span := creates[len(creates)-1].Time.Sub(creates[0].Time)
	// Never faster than the rate (the first slot is free: 199 intervals);
	// how much slower depends on the machine, so only the bound is checked.
	if span < 19*time.Second {
		t.Errorf("200 calls at 10 per second took %s, want at least 19.9s", span)
	}
	// The limiter grants at most 10 slots a second; the simulator sees each
	// request a little later, by however long the request took, so a
	// calendar second can hold one more and the next one less. Over any
	// 5 s, with up to 0.5 s of request latency on a loaded machine: 55.
	if m, at := maxInWindow(creates, 5*time.Second); m > 55 {
		t.Errorf("%d call starts in the 5 s from %s, limit 10/s (per second: %v)", m, at.Format("15:04:05.000"), h.Sim.StartsPerSecond())
	}
	if d := h.Sim.DuplicateAttempts(); len(d) != 0 {
		t.Errorf("attempts called twice: %v", d)
	}
	// The operator's view: calls per second and the RateLimited flag.
	rate, limited, err := callrate.Read(ctx, h.Rdb, h.Campaign.Namespace, h.Campaign.Name, time.Now())
	if err != nil || !limited || rate <= 0 || rate > 11 {
		t.Errorf("callrate = %.1f/s limited=%v (%v); want at most 10/s and limited", rate, limited, err)
	}
	t.Logf("200 calls in %s, at most %d starts in a calendar second", span, h.Sim.MaxStartsPerSecond())
}

// maxInWindow is the largest number of create requests in any window of
// length w, and where it starts.
func maxInWindow(creates []twiliosim.CreateRecord, w time.Duration) (int, time.Time) {
	creates = slices.Clone(creates)
	slices.SortFunc(creates, func(a, b twiliosim.CreateRecord) int { return a.Time.Compare(b.Time) })
	best, at, j := 0, time.Time{}, 0
	for i := range creates {
		for j < len(creates) && creates[j].Time.Sub(creates[i].Time) < w {
			j++
		}
		if j-i > best {
			best, at = j-i, creates[i].Time
		}
	}
	return best, at
}

// Two workers on one shard, every attempt in the ready stream three times:
// one call per attempt.
func TestTwoWorkersAndDuplicatedEntriesMakeOneCallEach(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var ids []string
	for i := range 30 {
		a := h.Create(calltest.Attempt{To: fmt.Sprintf("+1415555%04d", 2000+i)}, true)
		ids = append(ids, a.ID)
		for range 2 {
			if err := h.Rdb.XAdd(ctx, &redis.XAddArgs{Stream: h.Shard.ReadyKey(),
				Values: []any{"id", a.ID, "due", fmt.Sprint(time.Now().UnixMilli())}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	h.Consume(h.dialer("w1").Handle, "c1", 8)
	h.Consume(h.dialer("w2").Handle, "c2", 8)
	for _, id := range ids {
		h.WaitState(id, 30*time.Second, store.StateDialed)
	}
	h.Idle(10 * time.Second)
	for _, id := range ids {
		if n := h.Sim.CallsForAttempt(id); n != 1 {
			t.Errorf("attempt %s: %d calls", id, n)
		}
	}
	if d := h.Sim.DuplicateAttempts(); len(d) != 0 {
		t.Errorf("attempts called twice: %v", d)
	}
	owners := map[string]int{}
	for _, id := range ids {
		owners[h.Get(id).Owner]++
	}
	if n := h.Counter("delauto_worker_claim_conflicts_total", map[string]string{"state": "dialed"}) +
		h.Counter("delauto_worker_claim_conflicts_total", map[string]string{"state": "dialing"}); n < 60 {
		t.Errorf("claim conflicts %v, want one per duplicate entry (60)", n)
	}
	t.Logf("attempts per worker: %v", owners)
}
