package dialer

// Call safety (issue 13): a second call, an off-hours call, a lost entry, a
// campaign's configuration blamed on the recipient. Each test here failed
// on the code before its fix; the failure is quoted above the test.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/calltest"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

// Scenario 2: the calling hours and the delivery window are checked right
// before each CreateCall, after the rate-limit wait and after every 429
// retry. The recipient's clock runs 125 times faster than the test's, so a
// wait of 2 s is the 250 claims ahead on a 1 call/s account: an attempt due
// at 19:59:30 (hours end 20:00) reaches its slot around 20:03.
//
// Before the fix (the hours were checked once, before the wait):
//
//	after_the_limiter_wait,_hours_over: 1 calls at 20:03:58 (hours end 20:00), want none
//	after_the_limiter_wait,_window_over: 1 calls at 20:03:52 (hours end 20:00), want none
//	after_a_429_retry: 1 calls at 20:07:08 (hours end 20:00), want none
func TestCallingHoursCheckedRightBeforeTheCall(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2030, 6, 3, 0, 0, 0, 0, ny)
	cases := []struct {
		name      string
		start     time.Duration // the recipient's time of day when the handler starts
		windowEnd time.Time
		setup     func(h *harness, tw *calltest.Scripted, o *Options)
		want      store.State
		wantDue   time.Time // retry: put back to this
	}{
		{name: "after the limiter wait, hours over", start: 19*time.Hour + 59*time.Minute + 30*time.Second,
			windowEnd: day.Add(44 * time.Hour),
			setup:     func(h *harness, _ *calltest.Scripted, _ *Options) { h.Prebook(2) },
			want:      store.StateRetry, wantDue: day.Add(32 * time.Hour)}, // 08:00 the next day
		{name: "after the limiter wait, window over", start: 19*time.Hour + 59*time.Minute + 30*time.Second,
			windowEnd: day.Add(20*time.Hour + 2*time.Minute),
			setup:     func(h *harness, _ *calltest.Scripted, _ *Options) { h.Prebook(2) },
			want:      store.StateCancelled},
		{name: "in the last seconds of the hours: the request would reach Twilio after them", start: 19*time.Hour + 59*time.Minute + 57*time.Second,
			windowEnd: day.Add(44 * time.Hour),
			setup:     func(*harness, *calltest.Scripted, *Options) {},
			want:      store.StateRetry, wantDue: day.Add(32 * time.Hour)},
		{name: "after a 429 retry", start: 19*time.Hour + 59*time.Minute + 50*time.Second,
			windowEnd: day.Add(44 * time.Hour),
			setup: func(_ *harness, tw *calltest.Scripted, o *Options) {
				tw.Errs = []error{calltest.TwilioError(429, 20429)}
				o.RateLimitBackoff = 4 * time.Second // 2-4 s: 250-500 s for the recipient
			},
			want: store.StateRetry, wantDue: day.Add(32 * time.Hour)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, calltest.WithSpec(func(s *v1.CallCampaignSpec) {
				s.Twilio.CallsPerSecond = 1
				s.Schedule.CallingHours = v1.CallingHours{Start: "08:00", End: "20:00"}
				s.Schedule.DefaultTimeZone = "America/New_York"
			}))
			tw := &calltest.Scripted{TwilioCalls: h.twilio}
			base := day.Add(c.start)
			var once sync.Once
			var t0 time.Time
			fake := func() time.Time {
				once.Do(func() { t0 = time.Now() })
				return base.Add(125 * time.Since(t0))
			}
			d := h.dialer("w1", func(o *Options) {
				o.Twilio, o.Now = tw, fake
				c.setup(h, tw, o)
			})
			a := h.Create(calltest.Attempt{TZ: "America/New_York", WindowEnd: c.windowEnd}, false)
			_ = d.Handle(context.Background(), h.Message(a))
			got := h.Get(a.ID)
			if n := h.Sim.CallsForAttempt(a.ID); n != 0 {
				t.Fatalf("%d calls at %s (hours end 20:00), want none", n, fake().In(ny).Format(time.TimeOnly))
			}
			if got.State != c.want {
				t.Fatalf("attempt is %s (%q), want %s", got.State, got.Reason, c.want)
			}
			if c.want == store.StateRetry && !got.Due.Equal(c.wantDue) {
				t.Errorf("put back to %s, want %s (the next calling hours)", got.Due.In(ny), c.wantDue)
			}
		})
	}
}

// Scenario 8: Twilio 21210 (caller ID not verified), 21212 (invalid caller
// ID) and 21215 (no geographic permission) are the campaign's configuration,
// not the recipient's number: the attempt waits and is tried again, and the
// campaign is flagged with the code for the operator (Degraded).
//
// Before the fix (the codes were in RejectedCodes):
//
//	21210_caller_ID_not_verified: attempt is failed (code 21210), want retry: the number is not at fault
//	21212_invalid_caller_ID: attempt is failed (code 21212), want retry: the number is not at fault
//	21215_no_geographic_permission: attempt is failed (code 21215), want retry: the number is not at fault
func TestCampaignConfigurationErrorsDoNotFailTheDelivery(t *testing.T) {
	cases := []struct {
		name string
		code int
		sim  bool // the simulator answers it (a From it does not own); else scripted
	}{
		{name: "21210 caller ID not verified", code: 21210, sim: true},
		{name: "21212 invalid caller ID", code: 21212},
		{name: "21215 no geographic permission", code: 21215},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []calltest.Opt
			if c.sim {
				opts = append(opts, calltest.WithSim(func(o *twiliosim.Options) { o.Numbers = []string{"+14155550999"} }))
			}
			h := newHarness(t, opts...)
			tw := &calltest.Scripted{TwilioCalls: h.twilio}
			if !c.sim {
				tw.Errs = []error{calltest.TwilioError(400, c.code)}
			}
			d := h.dialer("w1", func(o *Options) { o.Twilio = tw })
			a := h.Create(calltest.Attempt{}, false)
			err := d.Handle(context.Background(), h.Message(a))
			got := h.Get(a.ID)
			if got.State != store.StateRetry {
				t.Fatalf("attempt is %s (code %d), want retry: the number is not at fault", got.State, got.ErrorCode)
			}
			if wait := time.Until(got.Due); wait < 30*time.Second {
				t.Errorf("put back to %s from now, want it to wait (a minute)", wait.Round(time.Second))
			}
			if err == nil || errors.Is(err, store.ErrInvalidInput) {
				t.Errorf("handler returned %v, want a retry", err)
			}
			if n := h.Sim.CallsForAttempt(a.ID); n != 0 {
				t.Errorf("%d calls", n)
			}
			// The operator reads the flag and turns the campaign Degraded with the code.
			flag, err := callrate.ReadDialError(context.Background(), h.Rdb, h.Campaign.Namespace, h.Campaign.Name)
			if err != nil || flag == nil || flag.Code != c.code {
				t.Errorf("campaign's dial error flag %+v, %v; want code %d", flag, err, c.code)
			}
			if flag != nil && strings.Contains(flag.Message, "+1415") {
				t.Errorf("flag message shows a phone number: %q", flag.Message)
			}
			if !slices.Contains(h.OutcomeEvents(a.ID), string(store.StateRetry)) {
				t.Errorf("no outcome event for the put-back attempt")
			}
		})
	}
}

// TestCalledOffAttemptIsNotDialed: the operator called a Delivery off in
// Redis (cancelled or deleted while it could not reach MongoDB, so the
// attempt is still queued in the call log). A worker that claims the
// attempt must not call: the attempt ends cancelled, with an outcome event.
func TestCalledOffAttemptIsNotDialed(t *testing.T) {
	h := newHarness(t)
	d := h.dialer("w1")
	a := h.Create(calltest.Attempt{}, false)
	other := h.Create(calltest.Attempt{}, false)
	if err := h.Q.CallOff(context.Background(), h.Shard, queue.GroupOf(a.ID)); err != nil {
		t.Fatal(err)
	}
	if err := d.Handle(context.Background(), h.Message(a)); err != nil {
		t.Fatalf("handler: %v", err)
	}
	if got := h.Get(a.ID); got.State != store.StateCancelled {
		t.Errorf("called-off attempt is %s, want cancelled", got.State)
	}
	if n := h.Sim.CallsForAttempt(a.ID); n != 0 {
		t.Errorf("the called-off attempt placed %d calls", n)
	}
	if !slices.Contains(h.OutcomeEvents(a.ID), string(store.StateCancelled)) {
		t.Errorf("no outcome event for the cancelled attempt")
	}
	// Another delivery's attempt on the shard is called as usual.
	if err := d.Handle(context.Background(), h.Message(other)); err != nil {
		t.Fatalf("handler: %v", err)
	}
	if n := h.Sim.CallsForAttempt(other.ID); n != 1 {
		t.Errorf("another delivery's attempt placed %d calls, want 1", n)
	}
}

// TestHeldAttemptIsPutBack: the operator holds a Delivery in Redis while it
// cannot carry out its new window (MongoDB unreachable), so the queued
// attempt is still on the old plan. A worker that claims it must neither
// call it nor cancel it: it is put back for a few seconds, and the
// operator re-plans it (or lifts the hold) meanwhile.
func TestHeldAttemptIsPutBack(t *testing.T) {
	h := newHarness(t)
	d := h.dialer("w1")
	a := h.Create(calltest.Attempt{}, false)
	ctx := context.Background()
	if err := h.Q.Hold(ctx, h.Shard, queue.GroupOf(a.ID), 1); err != nil {
		t.Fatal(err)
	}
	err := d.Handle(ctx, h.Message(a))
	if err == nil || !errors.Is(err, errHeld) {
		t.Errorf("handler returned %v, want a retry for the hold", err)
	}
	got := h.Get(a.ID)
	if got.State != store.StateRetry || !got.Due.After(time.Now()) {
		t.Errorf("held attempt is %s due %s, want put back (retry) for later", got.State, got.Due)
	}
	if n := h.Sim.CallsForAttempt(a.ID); n != 0 {
		t.Errorf("the held attempt placed %d calls", n)
	}
}

// TestOptOutPendingAttemptIsNotDialed: the number opted out while MongoDB
// was unreachable, so the opt-out waits in a worker's journal and the claim
// does not see it. A worker must not call: the attempt ends cancelled, and
// an attempt to another number is called as usual.
func TestOptOutPendingAttemptIsNotDialed(t *testing.T) {
	h := newHarness(t)
	d := h.dialer("w1")
	a := h.Create(calltest.Attempt{}, false)
	other := h.Create(calltest.Attempt{}, false)
	if a.To == other.To {
		t.Fatal("both attempts call one number")
	}
	ctx := context.Background()
	if err := queue.MarkOptOutPending(ctx, h.Rdb, a.Delivery.Namespace, a.To); err != nil {
		t.Fatal(err)
	}
	if err := d.Handle(ctx, h.Message(a)); err != nil {
		t.Fatalf("handler: %v", err)
	}
	if got := h.Get(a.ID); got.State != store.StateCancelled {
		t.Errorf("attempt to a number whose opt-out is pending is %s, want cancelled", got.State)
	}
	if n := h.Sim.CallsForAttempt(a.ID); n != 0 {
		t.Errorf("the attempt placed %d calls", n)
	}
	if err := d.Handle(ctx, h.Message(other)); err != nil {
		t.Fatalf("handler: %v", err)
	}
	if n := h.Sim.CallsForAttempt(other.ID); n != 1 {
		t.Errorf("an attempt to another number placed %d calls, want 1", n)
	}
}
