package dialer

import (
	"context"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/calltest"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

func TestDialsOncePerAttemptWithItsURLs(t *testing.T) {
	h := newHarness(t)
	h.Consume(h.dialer("w1").Handle, "c1", 4)
	a1 := h.Create(calltest.Attempt{To: "+14155550123"}, true)
	a2 := h.Create(calltest.Attempt{To: "+14155550123"}, true)
	a3 := h.Create(calltest.Attempt{To: "+14155550177"}, true)
	// One attempt per number at a time: a1 and a2 call one number, so
	// whichever is claimed second waits for the first one's call to end.
	first := map[string]*store.Attempt{}
	var ended time.Time
	for len(first) < 2 {
		var next *store.Attempt
		deadline := time.Now().Add(60 * time.Second)
		for next == nil {
			for _, a := range []*store.Attempt{a1, a2} {
				if b := h.Get(a.ID); first[a.ID] == nil && b.State == store.StateDialed {
					next = b
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("attempts to one number not dialed one after the other: %d of 2", len(first))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if next.DialedAt.Before(ended) {
			t.Errorf("attempt %s dialed at %s, before the other call to its number ended (%s)", next.ID, next.DialedAt, ended)
		}
		first[next.ID] = next
		done, _, err := h.St.ApplyCallStatus(context.Background(), store.CallRef{AttemptID: next.ID},
			store.StatusUpdate{Status: "completed", Seq: 9, CallSID: next.CallSID})
		if err != nil {
			t.Fatal(err)
		}
		ended = *done.EndedAt
	}
	got := []*store.Attempt{first[a1.ID], first[a2.ID], h.WaitState(a3.ID, 20*time.Second, store.StateDialed)}
	h.Idle(5 * time.Second)
	if got[0].From != got[1].From {
		t.Errorf("two attempts to one number used caller IDs %s and %s; want the same", got[0].From, got[1].From)
	}
	for i, a := range got {
		if n := h.Sim.CallsForAttempt(a.ID); n != 1 {
			t.Errorf("attempt %d: %d calls, want 1", i, n)
		}
		if a.CallSID == "" || a.Fence != 1 || a.LeaseUntil != nil {
			t.Errorf("attempt %d recorded as %+v", i, a)
		}
		if _, ok := h.DueScore(a.ID); ok {
			t.Errorf("attempt %d is still in the due set", i)
		}
		// The operator hears of the call when it is placed, not when it ends.
		if ev := h.OutcomeEvents(a.ID); !slices.Contains(ev, string(store.StateDialed)) {
			t.Errorf("attempt %d: outcome events %v, want one for the dial", i, ev)
		}
	}
	var form url.Values
	for _, c := range h.Sim.Creates() {
		if c.AttemptID == a1.ID {
			form = c.Form
		}
	}
	if form == nil {
		t.Fatal("no create request for the first attempt")
	}
	for key, path := range map[string]string{"Url": callurls.VoicePath, "StatusCallback": callurls.StatusPath, "AsyncAmdStatusCallback": callurls.AMDPath} {
		u, err := url.Parse(form.Get(key))
		if err != nil || !strings.HasPrefix(form.Get(key), h.Callback.URL+path+"?") {
			t.Errorf("%s = %q, want %s%s?...", key, form.Get(key), h.Callback.URL, path)
			continue
		}
		ref, err := callurls.Parse(u.Query())
		if err != nil || ref.AttemptID != a1.ID || ref.Fence != 1 {
			t.Errorf("%s carries %+v, %v; want attempt %s fence 1", key, ref, err, a1.ID)
		}
	}
	want := map[string]string{"To": "+14155550123", "From": got[0].From, "Timeout": "25", "TimeLimit": "90",
		"MachineDetection": "Enable", "AsyncAmd": "true", "Method": "POST", "StatusCallbackMethod": "POST"}
	for k, v := range want {
		if form.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, form.Get(k), v)
		}
	}
	if ev := form["StatusCallbackEvent"]; !slices.Equal(ev, StatusEvents) {
		t.Errorf("StatusCallbackEvent = %v, want %v", ev, StatusEvents)
	}
	if n := h.Counter("delauto_worker_dials_total", map[string]string{"result": "dialed"}); n != 3 {
		t.Errorf("dials_total{dialed} = %v, want 3", n)
	}
}

func TestNoMachineDetectionWithoutAnsweringMachineHandling(t *testing.T) {
	h := newHarness(t, calltest.WithSpec(func(s *v1.CallCampaignSpec) { s.Script.AnsweringMachine = "" }))
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	a := h.Create(calltest.Attempt{}, true)
	h.WaitState(a.ID, 20*time.Second, store.StateDialed)
	for _, c := range h.Sim.Creates() {
		if c.Form.Get("MachineDetection") != "" || c.Form.Get("AsyncAmdStatusCallback") != "" {
			t.Errorf("machine detection requested: %v", c.Form)
		}
	}
}

// Each class of create-call failure, driven by the simulator, ends in the
// right state in the call log and the right state in the queue.
func TestTwilioFailureClasses(t *testing.T) {
	type want struct {
		state    store.State
		calls    int // calls the simulator created for the attempt
		creates  int // create requests it received (0: not checked)
		code     int32
		requeued time.Duration // > 0: back in the due set about this far ahead
		releases int32
		event    string // outcome event published
	}
	cases := []struct {
		name    string
		to      string
		faults  []twiliosim.FaultKind
		opts    []calltest.Opt
		edit    func(*Options)
		twilio  func(h *harness) TwilioCalls
		want    want
		metric  string // a dials_total result counted once
		errCode string // a twilio_errors_total code counted
	}{
		{name: "429 once, then accepted", faults: []twiliosim.FaultKind{twiliosim.FaultRateLimit},
			want: want{state: store.StateDialed, calls: 1, creates: 2}, metric: "dialed", errCode: "20429"},
		{name: "429 until released, then accepted on the next run", faults: []twiliosim.FaultKind{twiliosim.FaultRateLimit, twiliosim.FaultRateLimit, twiliosim.FaultRateLimit},
			edit: func(o *Options) { o.RateLimitRetries = 2 },
			want: want{state: store.StateDialed, calls: 1, creates: 4, releases: 1}, metric: "released", errCode: "20429"},
		{name: "invalid number 21211", to: "+19999999999",
			want: want{state: store.StateFailed, code: 21211, creates: 1, event: "failed"}, metric: "rejected", errCode: "21211"},
		{name: "unreachable number 21214", to: "+14155550166",
			opts: []calltest.Opt{calltest.WithSim(func(o *twiliosim.Options) {
				o.Scenarios = map[string]twiliosim.Scenario{"+14155550166": twiliosim.MustNamed("unreachable")}
			})},
			want: want{state: store.StateFailed, code: 21214, creates: 1, event: "failed"}, metric: "rejected", errCode: "21214"},
		{name: "500", faults: []twiliosim.FaultKind{twiliosim.FaultServerError},
			want: want{state: store.StateUnknown, creates: 1}, metric: "ambiguous", errCode: "20500"},
		{name: "503", faults: []twiliosim.FaultKind{twiliosim.FaultUnavailable},
			want: want{state: store.StateUnknown, creates: 1}, metric: "ambiguous", errCode: "20503"},
		{name: "502 page of a proxy", faults: []twiliosim.FaultKind{twiliosim.FaultBadGateway},
			want: want{state: store.StateUnknown, creates: 1}, metric: "ambiguous", errCode: "http_502"},
		{name: "no response after the call was created", faults: []twiliosim.FaultKind{twiliosim.FaultHangAfterCreate},
			opts: []calltest.Opt{calltest.WithTwilioTimeout(time.Second)},
			want: want{state: store.StateUnknown, calls: 1, creates: 1}, metric: "ambiguous", errCode: "timeout"},
		{name: "connection reset after the call was created", faults: []twiliosim.FaultKind{twiliosim.FaultResetAfterCreate},
			want: want{state: store.StateUnknown, calls: 1, creates: 1}, metric: "ambiguous", errCode: "reset"},
		{name: "500 after the call was created", faults: []twiliosim.FaultKind{twiliosim.FaultServerErrorAfterCreate},
			want: want{state: store.StateUnknown, calls: 1, creates: 1}, metric: "ambiguous", errCode: "20500"},
		{name: "connection refused", twilio: func(h *harness) TwilioCalls { return closedPortClient(h) },
			want: want{state: store.StateRetry, requeued: storeRetry, releases: 1, event: "retry"}, metric: "released", errCode: "connect"},
		{name: "bad credentials", twilio: func(h *harness) TwilioCalls {
			hc, _ := twilioclient.HTTPClient(h.Sim.URL(), time.Second)
			rc, _ := twilioclient.New(h.Sim.AccountSID(), "wrongtoken", hc)
			return rc.Api
		}, want: want{state: store.StateRetry, requeued: time.Minute, releases: 1, creates: 0, event: "retry"}, metric: "released", errCode: "20003"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, c.opts...)
			if len(c.faults) > 0 {
				h.Sim.QueueFaults(twiliosim.EndpointCreateCall, c.faults...)
			}
			if c.twilio != nil {
				h.twilio = c.twilio(h)
			}
			h.Consume(h.dialer("w1", func(o *Options) {
				if c.edit != nil {
					c.edit(o)
				}
			}).Handle, "c1", 2)
			a := h.Create(calltest.Attempt{To: c.to}, true)
			got := h.WaitState(a.ID, 20*time.Second, c.want.state)
			if c.want.requeued == 0 {
				h.Idle(5 * time.Second)
				time.Sleep(300 * time.Millisecond) // no second run comes
				got = h.Get(a.ID)
			}
			if got.State != c.want.state || got.ErrorCode != c.want.code || got.Releases != c.want.releases {
				t.Errorf("attempt: state %s code %d releases %d (reason %q); want %s, %d, %d",
					got.State, got.ErrorCode, got.Releases, got.Reason, c.want.state, c.want.code, c.want.releases)
			}
			if n := h.Sim.CallsForAttempt(a.ID); n != c.want.calls {
				t.Errorf("%d calls for the attempt, want %d", n, c.want.calls)
			}
			if c.want.creates > 0 {
				n := 0
				for _, cr := range h.Sim.Creates() {
					if cr.AttemptID == a.ID || cr.To == got.To {
						n++
					}
				}
				if n != c.want.creates {
					t.Errorf("%d create requests, want %d", n, c.want.creates)
				}
			}
			score, queued := h.DueScore(a.ID)
			for end := time.Now().Add(2 * time.Second); c.want.requeued > 0 && !queued && time.Now().Before(end); {
				time.Sleep(20 * time.Millisecond) // the acknowledgement is on its way
				score, queued = h.DueScore(a.ID)
			}
			switch {
			case c.want.requeued > 0:
				if !queued {
					t.Errorf("released attempt not back in the due set")
				} else if d := time.Until(score); d < c.want.requeued-3*time.Second || d > c.want.requeued+time.Second {
					t.Errorf("released attempt due in %s, want about %s", d, c.want.requeued)
				}
				if !got.Due.Equal(score.UTC()) && got.Due.Sub(score).Abs() > 100*time.Millisecond {
					t.Errorf("call log due %s, queue due %s", got.Due, score)
				}
			case queued:
				t.Errorf("finished attempt still in the due set")
			}
			if n := h.Counter("delauto_worker_dials_total", map[string]string{"result": c.metric}); n < 1 {
				t.Errorf("dials_total{result=%q} = %v", c.metric, n)
			}
			if n := h.Counter("delauto_worker_twilio_errors_total", map[string]string{"code": c.errCode}); n < 1 {
				t.Errorf("twilio_errors_total{code=%q} = %v", c.errCode, n)
			}
			if c.want.event != "" && !slices.Contains(h.OutcomeEvents(a.ID), c.want.event) {
				t.Errorf("outcome events %v, want one with state %s", h.OutcomeEvents(a.ID), c.want.event)
			}
			if c.want.state == store.StateUnknown {
				if n := h.Counter("delauto_worker_ambiguous_total", map[string]string{"source": "dial"}); n != 1 {
					t.Errorf("ambiguous_total{dial} = %v, want 1", n)
				}
			}
		})
	}
}

// closedPortClient is a Twilio client whose server refuses connections.
func closedPortClient(h *harness) TwilioCalls {
	h.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	hc, err := twilioclient.HTTPClient("http://"+addr, time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	rc, err := twilioclient.New(h.Sim.AccountSID(), h.Sim.AuthToken(), hc)
	if err != nil {
		h.t.Fatal(err)
	}
	return rc.Api
}

func TestOptOutAndCancellationAreHonoured(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	optedOut := h.Create(calltest.Attempt{To: "+14155550177"}, false)
	if _, err := h.St.AddOptOut(ctx, h.Campaign.Namespace, "+14155550177", "", "said stop"); err != nil {
		t.Fatal(err)
	}
	cancelled := h.Create(calltest.Attempt{To: "+14155550123"}, false)
	// The operator cancels the delivery after the attempt reached Redis.
	if _, err := h.Q.Schedule(ctx, h.Shard, cancelled.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.St.MarkCancelled(ctx, cancelled.ID, store.AnyFence, "delivery cancelled"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Q.Schedule(ctx, h.Shard, optedOut.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	got := h.WaitState(optedOut.ID, 20*time.Second, store.StateCancelled)
	if got.Reason != "opted out" {
		t.Errorf("opted-out attempt reason %q", got.Reason)
	}
	h.Idle(10 * time.Second)
	if n := h.Sim.CallsTo("+14155550177") + h.Sim.CallsTo("+14155550123"); n != 0 {
		t.Errorf("%d calls placed, want none", n)
	}
	if c := h.Get(cancelled.ID); c.State != store.StateCancelled || c.Fence != 0 {
		t.Errorf("cancelled attempt is %s with fence %d; want cancelled, never claimed", c.State, c.Fence)
	}
	if !slices.Contains(h.OutcomeEvents(optedOut.ID), "cancelled") {
		t.Errorf("no outcome event for the opted-out attempt")
	}
	if n := h.Counter("delauto_worker_claim_conflicts_total", map[string]string{"state": "cancelled"}); n != 1 {
		t.Errorf("claim_conflicts_total{cancelled} = %v, want 1", n)
	}
}

// A claim taken over while its call was being placed: the late record
// changes nothing, is counted, and the queue entry is acknowledged.
func TestStaleFenceChangesNothing(t *testing.T) {
	h := newHarness(t)
	if err := h.Sim.SetFaults(twiliosim.Faults{Latency: time.Second}); err != nil {
		t.Fatal(err)
	}
	h.Consume(h.dialer("w1").Handle, "c1", 2)
	a := h.Create(calltest.Attempt{}, true)
	claimed := h.WaitState(a.ID, 10*time.Second, store.StateDialing)
	ctx := context.Background()
	// Meanwhile the attempt was put back and claimed again (fence 2).
	if _, err := h.St.Release(ctx, a.ID, claimed.Fence, time.Now(), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.St.Claim(ctx, a.ID, "w2", time.Minute); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.Counter("delauto_worker_fence_conflicts_total", nil) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no fence conflict counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.Idle(5 * time.Second)
	got := h.Get(a.ID)
	if got.State != store.StateDialing || got.Fence != 2 || got.Owner != "w2" || got.CallSID != "" {
		t.Errorf("after the stale record: %s fence %d owner %s SID %q; want w2's claim untouched", got.State, got.Fence, got.Owner, got.CallSID)
	}
}
