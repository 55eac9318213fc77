package dialer

// Call safety (issue 13): a second call, an off-hours call, a lost entry, a
// campaign's configuration blamed on the recipient. Each test here failed
// on the code before its fix; the failure is quoted above the test.

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"
	twilioapi "github.com/twilio/twilio-go/rest/api/v2010"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/ratelimit"
	"github.com/delauto/delauto/workers/store"
)

// storeVia opens the harness's call log through a proxy, with short
// timeouts so that an outage shows quickly.
func (h *harness) storeVia(p *testservices.Proxy) *store.Store {
	h.t.Helper()
	st, err := store.Open(context.Background(), store.Config{URI: p.URL(h.t, env.Mongo.URI), Database: h.db, Logger: h.log,
		ConnectTimeout: 500 * time.Millisecond, ServerSelectionTimeout: 500 * time.Millisecond, OperationTimeout: time.Second})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = st.Close(context.Background()) })
	return st
}

func mongoHost(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(env.Mongo.URI)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// scripted is a Twilio client whose first create-call requests fail with
// the given errors (without reaching Twilio); later ones go through.
type scripted struct {
	TwilioCalls
	mu   sync.Mutex
	errs []error
	sent []time.Time // when each create request was made, failed or not
}

func (s *scripted) CreateCall(p *twilioapi.CreateCallParams) (*twilioapi.ApiV2010Call, error) {
	s.mu.Lock()
	s.sent = append(s.sent, time.Now())
	var err error
	if len(s.errs) > 0 {
		err, s.errs = s.errs[0], s.errs[1:]
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.TwilioCalls.CreateCall(p)
}

func (s *scripted) creates() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.sent...)
}

func twilioError(status, code int) error {
	return &client.TwilioRestError{Status: status, Code: code, Message: fmt.Sprintf("error %d", code)}
}

// message is the queue message of an attempt of the harness's shard.
func (h *harness) message(a *store.Attempt) queue.Message {
	return queue.Message{Shard: h.shard, ID: a.ID, Due: a.Due, EntryID: "0-1", Deliveries: 1}
}

// prebook books n slots on the account's limiter at the dialer's rate, so
// the next dial waits about n intervals: the claims of other workers ahead.
func (h *harness) prebook(n int) {
	h.t.Helper()
	cps := float64(h.campaign.Spec.Twilio.CallsPerSecond) * 0.95 // less the dialer's headroom
	l, err := ratelimit.New(h.rdb, h.sim.AccountSID(), cps, ratelimit.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	for range n {
		if _, err := l.Reserve(context.Background()); err != nil {
			h.t.Fatal(err)
		}
	}
}

// waitFor waits until cond holds.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting: %s", what)
		}
	}
}

// booked is the account limiter's state.
func (h *harness) booked() string {
	v, _ := h.rdb.Get(context.Background(), ratelimit.Key(h.sim.AccountSID())).Result()
	return v
}

// fenceOf is the fence a create request carried in its URL.
func fenceOf(t *testing.T, form url.Values) int64 {
	t.Helper()
	u, err := url.Parse(form.Get("Url"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := callurls.Parse(u.Query())
	if err != nil {
		t.Fatal(err)
	}
	return ref.Fence
}

// handleUntilDialed runs d's handler on the attempt, as the queue would
// deliver it again after each put-back, until it is dialed or the deadline.
func (h *harness) handleUntilDialed(d *Dialer, a *store.Attempt, deadline time.Time) {
	h.t.Helper()
	for time.Now().Before(deadline) {
		_ = d.Handle(context.Background(), h.message(a))
		if got := h.get(a.ID); got.State == store.StateDialed {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := h.get(a.ID)
	h.t.Fatalf("attempt not dialed by %s: %s (%q)", deadline.Format(time.TimeOnly), got.State, got.Reason)
}

// Scenario 1: a worker loses MongoDB (Redis and Twilio stay) while it holds a
// claim. Its renewals fail; another worker's reconciler marks the attempt
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
		setup func(h *harness, tw *scripted, o *Options)
	}{
		{name: "slot beyond the lease", setup: func(h *harness, _ *scripted, _ *Options) {
			h.prebook(6) // the slot is about 6.3 s away, past the 3 s lease
		}},
		{name: "429 retries beyond the lease", setup: func(_ *harness, tw *scripted, o *Options) {
			// Backoffs of 1-2, 2-4 and 4-8 s: the fourth request comes 7 s or
			// more after the first, past the lease.
			tw.errs = []error{twilioError(429, 20429), twilioError(429, 20429), twilioError(429, 20429)}
			o.RateLimitBackoff, o.RateLimitRetries = 2*time.Second, 3
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, withTwilioTimeout(time.Second), withSpec(func(s *v1.CallCampaignSpec) { s.Twilio.CallsPerSecond = 1 }))
			p := testservices.StartProxy(t, mongoHost(t))
			tw := &scripted{TwilioCalls: h.twilio}
			d1 := h.dialer("w1", func(o *Options) {
				o.Store, o.Twilio, o.Lease, o.RecordTimeout = h.storeVia(p), tw, lease, 2*time.Second
				c.setup(h, tw, o)
			})
			// The other worker: its own call log connection, reconciler and dialer.
			d2 := h.dialer("w2")
			rec := h.reconciler(func(o *ReconcilerOptions) { o.StaleAfter, o.Grace = 100*time.Millisecond, 500*time.Millisecond })
			a := h.create(attempt{}, false)

			booked := h.booked()
			first := make(chan error, 1)
			go func() { first <- d1.Handle(context.Background(), h.message(a)) }()
			claimedBy := time.Now() // the claim's lease ends by claimedBy + lease
			// w1 holds the claim and waits: for its slot, or after a 429 (or
			// it already put the attempt back).
			h.waitFor("the first worker waits", func() bool {
				return len(tw.creates()) > 0 || h.booked() != booked || len(first) > 0 || h.get(a.ID).State == store.StateRetry
			})
			p.Down() // w1 loses MongoDB
			lost := time.Now()

			// The other worker's reconciler takes the attempt over; once it
			// is released, the other worker dials it.
			deadline := time.Now().Add(20 * time.Second)
			var second chan struct{}
			for second == nil || len(first) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the first worker's handler did not return, or the attempt was not released: %s", h.get(a.ID).State)
				}
				if err := rec.RunOnce(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := h.get(a.ID); second == nil && got.State.Claimable() {
					second = make(chan struct{})
					go func() { defer close(second); h.handleUntilDialed(d2, a, time.Now().Add(20*time.Second)) }()
				}
				time.Sleep(200 * time.Millisecond)
			}
			<-second
			t.Logf("first worker's handler returned %v; MongoDB lost %s before", <-first, time.Since(lost).Round(time.Millisecond))
			var fences []int64
			for _, cr := range h.sim.Creates() {
				if cr.AttemptID == a.ID {
					fences = append(fences, fenceOf(t, cr.Form))
				}
			}
			if n := h.sim.CallsForAttempt(a.ID); n != 1 {
				t.Errorf("%d calls for the attempt (fences %v), want 1", n, fences)
			}
			for _, f := range fences {
				if f == 1 && h.get(a.ID).Fence > 1 {
					t.Errorf("the first worker dialed (fence 1) though its claim was taken over (fences %v)", fences)
				}
			}
			// Every request of the first worker was over before its lease.
			for _, at := range tw.creates() {
				if end := at.Add(h.timeout); end.After(claimedBy.Add(lease)) {
					t.Errorf("the first worker sent a create request that could last until %s after its lease ended", end.Sub(claimedBy.Add(lease)).Round(time.Millisecond))
				}
			}
		})
	}
}

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
		setup     func(h *harness, tw *scripted, o *Options)
		want      store.State
		wantDue   time.Time // retry: put back to this
	}{
		{name: "after the limiter wait, hours over", start: 19*time.Hour + 59*time.Minute + 30*time.Second,
			windowEnd: day.Add(44 * time.Hour),
			setup:     func(h *harness, _ *scripted, _ *Options) { h.prebook(2) },
			want:      store.StateRetry, wantDue: day.Add(32 * time.Hour)}, // 08:00 the next day
		{name: "after the limiter wait, window over", start: 19*time.Hour + 59*time.Minute + 30*time.Second,
			windowEnd: day.Add(20*time.Hour + 2*time.Minute),
			setup:     func(h *harness, _ *scripted, _ *Options) { h.prebook(2) },
			want:      store.StateCancelled},
		{name: "in the last seconds of the hours: the request would reach Twilio after them", start: 19*time.Hour + 59*time.Minute + 57*time.Second,
			windowEnd: day.Add(44 * time.Hour),
			setup:     func(*harness, *scripted, *Options) {},
			want:      store.StateRetry, wantDue: day.Add(32 * time.Hour)},
		{name: "after a 429 retry", start: 19*time.Hour + 59*time.Minute + 50*time.Second,
			windowEnd: day.Add(44 * time.Hour),
			setup: func(_ *harness, tw *scripted, o *Options) {
				tw.errs = []error{twilioError(429, 20429)}
				o.RateLimitBackoff = 4 * time.Second // 2-4 s: 250-500 s for the recipient
			},
			want: store.StateRetry, wantDue: day.Add(32 * time.Hour)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, withSpec(func(s *v1.CallCampaignSpec) {
				s.Twilio.CallsPerSecond = 1
				s.Schedule.CallingHours = v1.CallingHours{Start: "08:00", End: "20:00"}
				s.Schedule.DefaultTimeZone = "America/New_York"
			}))
			tw := &scripted{TwilioCalls: h.twilio}
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
			a := h.create(attempt{tz: "America/New_York", windowEnd: c.windowEnd}, false)
			_ = d.Handle(context.Background(), h.message(a))
			got := h.get(a.ID)
			if n := h.sim.CallsForAttempt(a.ID); n != 0 {
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

// Scenario 7: entries Redis lost behind a backlog of overdue attempts still
// in Redis are queued again by the same pass, not after the backlog drained.
//
// Before the fix (a pass stopped at the first page with nothing missing):
//
//	the sweep queued 0 attempts, want the 3 lost behind the backlog
func TestSweeperCoversTheWholeOverdueRange(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	for i := range 12 { // the backlog: overdue, still queued in Redis
		h.create(attempt{due: now.Add(-10*time.Minute + time.Duration(i)*time.Second)}, true)
	}
	var lost []*store.Attempt
	for i := range 3 { // due later than the backlog, lost by Redis
		lost = append(lost, h.create(attempt{due: now.Add(-3*time.Minute + time.Duration(i)*time.Second)}, false))
	}
	s, err := NewSweeper(SweeperOptions{Store: h.st, Queue: h.q, Campaign: h.campaign.Namespace + "/" + h.campaign.Name,
		Shards: []queue.Shard{h.shard}, Overdue: 30 * time.Second, Batch: 1, Metrics: h.metrics, Logger: h.log}) // pages of 10
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
		if res, err := h.q.Schedule(context.Background(), h.shard, a.ID, a.Due); err != nil || res != queue.Unchanged {
			t.Errorf("lost attempt %s is not queued again: scheduling it gave %v, %v", a.ID, res, err)
		}
	}
	if n, err := s.RunOnce(context.Background()); err != nil || n != 0 {
		t.Errorf("a second sweep queued %d, %v; want 0", n, err)
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
			var opts []harnessOpt
			if c.sim {
				opts = append(opts, withSim(func(o *twiliosim.Options) { o.Numbers = []string{"+14155550999"} }))
			}
			h := newHarness(t, opts...)
			tw := &scripted{TwilioCalls: h.twilio}
			if !c.sim {
				tw.errs = []error{twilioError(400, c.code)}
			}
			d := h.dialer("w1", func(o *Options) { o.Twilio = tw })
			a := h.create(attempt{}, false)
			err := d.Handle(context.Background(), h.message(a))
			got := h.get(a.ID)
			if got.State != store.StateRetry {
				t.Fatalf("attempt is %s (code %d), want retry: the number is not at fault", got.State, got.ErrorCode)
			}
			if wait := time.Until(got.Due); wait < 30*time.Second {
				t.Errorf("put back to %s from now, want it to wait (a minute)", wait.Round(time.Second))
			}
			if err == nil || errors.Is(err, store.ErrInvalidInput) {
				t.Errorf("handler returned %v, want a retry", err)
			}
			if n := h.sim.CallsForAttempt(a.ID); n != 0 {
				t.Errorf("%d calls", n)
			}
			// The operator reads the flag and turns the campaign Degraded with the code.
			flag, err := callrate.ReadDialError(context.Background(), h.rdb, h.campaign.Namespace, h.campaign.Name)
			if err != nil || flag == nil || flag.Code != c.code {
				t.Errorf("campaign's dial error flag %+v, %v; want code %d", flag, err, c.code)
			}
			if flag != nil && strings.Contains(flag.Message, "+1415") {
				t.Errorf("flag message shows a phone number: %q", flag.Message)
			}
			if !slices.Contains(h.outcomeEvents(a.ID), string(store.StateRetry)) {
				t.Errorf("no outcome event for the put-back attempt")
			}
		})
	}
}
