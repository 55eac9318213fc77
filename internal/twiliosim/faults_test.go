package twiliosim_test

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/delauto/delauto/internal/twiliosim"
)

func TestRESTFaultsAsTwilioGoSeesThem(t *testing.T) {
	cases := []struct {
		fault   twiliosim.FaultKind
		status  int // TwilioRestError status; 0 when not a TwilioRestError
		code    int
		created bool   // the call was made despite the error
		errHas  string // for non-Twilio errors
	}{
		{twiliosim.FaultRateLimit, 429, 20429, false, ""},
		{twiliosim.FaultServerError, 500, 20500, false, ""},
		{twiliosim.FaultUnavailable, 503, 20503, false, ""},
		{twiliosim.FaultBadGateway, 0, 0, false, "502"},
		{twiliosim.FaultHangBeforeCreate, 0, 0, false, "timeout"},
		{twiliosim.FaultHangAfterCreate, 0, 0, true, "timeout"},
		{twiliosim.FaultResetAfterCreate, 0, 0, true, "EOF"},
		{twiliosim.FaultServerErrorAfterCreate, 500, 20500, true, ""},
	}
	sim, _ := startSim(t, twiliosim.Options{})
	rc := restClient(t, sim, 300*time.Millisecond)
	a := newApp(t, sim)
	for i, tc := range cases {
		t.Run(string(tc.fault), func(t *testing.T) {
			attempt := fmt.Sprintf("fault-%d", i)
			to := fmt.Sprintf("+1415555%04d", 700+i)
			sim.QueueFaults(twiliosim.EndpointCreateCall, tc.fault)
			_, err := rc.Api.CreateCall(a.callParams(to, attempt))
			if err == nil {
				t.Fatalf("no error")
			}
			var re *client.TwilioRestError
			isRest := errors.As(err, &re)
			if tc.status != 0 {
				if !isRest || re.Status != tc.status || re.Code != tc.code {
					t.Errorf("error %v, want TwilioRestError %d/%d", err, tc.status, tc.code)
				}
			} else {
				if isRest {
					t.Errorf("error %v decoded as a TwilioRestError", err)
				}
				var ne net.Error
				if tc.errHas == "timeout" {
					if !errors.As(err, &ne) || !ne.Timeout() {
						t.Errorf("error %v is not a timeout", err)
					}
				} else if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("error %q does not mention %q", err, tc.errHas)
				}
			}
			if got := sim.CallsForAttempt(attempt); got != map[bool]int{true: 1, false: 0}[tc.created] {
				t.Errorf("calls for the attempt: %d, created %v", got, tc.created)
			}
			if tc.created {
				// The ambiguous case: reconcile through the call list.
				calls, err := rc.Api.ListCall(&api.ListCallParams{To: &to})
				if err != nil || len(calls) != 1 {
					t.Errorf("ListCall after an ambiguous create: %d calls, %v", len(calls), err)
				}
			}
			recs := sim.Creates()
			last := recs[len(recs)-1]
			if last.Fault != tc.fault || last.AttemptID != attempt || last.Created() != tc.created {
				t.Errorf("create record %+v", last)
			}
		})
	}
	// A queued fault is used once: the next create goes through.
	if _, err := rc.Api.CreateCall(a.callParams("+14155550799", "after")); err != nil {
		t.Errorf("create after the faults: %v", err)
	}
}

func TestRandomFaultFractions(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Instant: true, Seed: 3, Faults: twiliosim.Faults{RateLimit: 0.3, Unavailable: 0.2}})
	a := newApp(t, sim)
	counts := map[int]int{}
	for i := range 60 {
		_, err := rc.Api.CreateCall(a.callParams("+14155550123", fmt.Sprint("r", i)))
		var re *client.TwilioRestError
		switch {
		case err == nil:
			counts[201]++
		case errors.As(err, &re):
			counts[re.Status]++
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if counts[201] == 0 || counts[429] == 0 || counts[503] == 0 || counts[201]+counts[429]+counts[503] != 60 {
		t.Errorf("outcomes %v", counts)
	}
	// Other endpoints are untouched unless AllEndpoints is set.
	for range 10 {
		if _, err := rc.Api.ListCall(nil); err != nil {
			t.Fatalf("ListCall got a fault meant for creates: %v", err)
		}
	}
	if err := sim.SetFaults(twiliosim.Faults{AllEndpoints: true, ServerError: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := rc.Api.ListCall(nil)
	var re *client.TwilioRestError
	if !errors.As(err, &re) || re.Status != 500 {
		t.Errorf("ListCall with AllEndpoints ServerError=1: %v", err)
	}
	if err := sim.SetFaults(twiliosim.Faults{RateLimit: 2}); err == nil {
		t.Errorf("a fraction of 2 was accepted")
	}
}

func TestConcurrencyLimit(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Instant: true, Faults: twiliosim.Faults{MaxConcurrent: 2, Latency: 400 * time.Millisecond}})
	a := newApp(t, sim)
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[int]int{}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := rc.Api.CreateCall(a.callParams("+14155550123", fmt.Sprint("c", i)))
			var re *client.TwilioRestError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				outcomes[201]++
			case errors.As(err, &re) && re.Code == 20429:
				outcomes[429]++
			default:
				t.Errorf("unexpected error %v", err)
			}
		}()
	}
	wg.Wait()
	if outcomes[429] == 0 || outcomes[201] == 0 {
		t.Errorf("8 concurrent creates over a limit of 2: %v", outcomes)
	}
	if len(sim.Calls()) != outcomes[201] {
		t.Errorf("%d calls for %d successful creates", len(sim.Calls()), outcomes[201])
	}
}

func TestDuplicateCallbacks(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Faults: twiliosim.Faults{DuplicateCallback: 1}})
	a := newApp(t, sim)
	c, err := rc.Api.CreateCall(a.callParams("+14155550123", "dup"))
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, sim, *c.Sid)
	got := a.statusEvents(*c.Sid)
	want := []string{"initiated/0", "initiated/0", "ringing/1", "ringing/1", "in-progress/2", "in-progress/2", "completed/3", "completed/3"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("status callbacks %v, want %v", got, want)
	}
	st := a.hitsTo("/status", *c.Sid)
	if st[0].Header.Get("I-Twilio-Idempotency-Token") == "" || st[0].Header.Get("I-Twilio-Idempotency-Token") != st[1].Header.Get("I-Twilio-Idempotency-Token") {
		t.Errorf("a duplicate should carry the same idempotency token")
	}
	dups := 0
	for _, cb := range sim.CallbacksFor(*c.Sid, "status") {
		if cb.Duplicate {
			dups++
		}
	}
	if dups != 4 {
		t.Errorf("%d deliveries marked duplicate, want 4", dups)
	}
}

func TestOutOfOrderCallbacks(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Faults: twiliosim.Faults{OutOfOrderCallback: 1}})
	a := newApp(t, sim)
	c, err := rc.Api.CreateCall(a.callParams("+14155550123", "ooo"))
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, sim, *c.Sid)
	got := a.statusEvents(*c.Sid)
	want := []string{"ringing/1", "initiated/0", "completed/3", "in-progress/2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("status callbacks arrived %v, want %v", got, want)
	}
}

func TestLateCallbacks(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Faults: twiliosim.Faults{LateCallback: 1, LateCallbackDelay: 60 * time.Second}})
	a := newApp(t, sim)
	c, err := rc.Api.CreateCall(a.callParams("+14155550123", "late"))
	if err != nil {
		t.Fatal(err)
	}
	final := waitCall(t, sim, *c.Sid)
	st := a.hitsTo("/status", *c.Sid)
	if len(st) != 4 {
		t.Fatalf("%d status callbacks, want 4", len(st))
	}
	// Delivered 60 s (simulated) after the events, so even "initiated"
	// arrives after the call (about 20 s) has ended.
	for _, h := range st {
		if !h.Received.After(final.Ended) {
			t.Errorf("%s callback arrived before the call ended", h.Params.Get("CallStatus"))
		}
	}
	for _, cb := range sim.CallbacksFor(*c.Sid, "status") {
		if !cb.Late {
			t.Errorf("callback %s not marked late", cb.Event)
		}
	}
}

func TestCallbackRetries(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{CallbackRetries: 2})
	a := newApp(t, sim)
	a.statusFailures = 2 // initiated fails twice, then gets through
	c, err := rc.Api.CreateCall(a.callParams("+14155550123", "retry"))
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, sim, *c.Sid)
	var attempts []string
	for _, cb := range sim.CallbacksFor(*c.Sid, "status") {
		attempts = append(attempts, fmt.Sprintf("%s#%d=%d", cb.Event, cb.Attempt, cb.StatusCode))
	}
	want := []string{"initiated#1=500", "initiated#2=500", "initiated#3=200", "ringing#1=200", "answered#1=200", "completed#1=200"}
	if !reflect.DeepEqual(attempts, want) {
		t.Errorf("deliveries %v, want %v", attempts, want)
	}

	// An unreachable callback URL is tried 1+retries times, then given up.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/status"
	l.Close()
	p := a.callParams("+14155550124", "dead")
	p.SetStatusCallback(dead)
	p.SetStatusCallbackEvent([]string{"completed"})
	c, err = rc.Api.CreateCall(p)
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, sim, *c.Sid)
	cbs := sim.CallbacksFor(*c.Sid, "status")
	if len(cbs) != 3 || cbs[2].StatusCode != 0 || cbs[2].Err == "" {
		t.Errorf("deliveries to a dead URL: %+v", cbs)
	}
}

func TestCPSQueuing(t *testing.T) {
	const cps = 10
	sim, rc := startSim(t, twiliosim.Options{Instant: true, CPS: cps, Lean: true})
	a := newApp(t, sim)
	start := time.Now()
	var sids []string
	for i := range 25 {
		c, err := rc.Api.CreateCall(a.callParams(fmt.Sprintf("+1415555%04d", 800+i), "cps"))
		if err != nil {
			t.Fatalf("create %d refused (calls over the CPS limit must be queued): %v", i, err)
		}
		if *c.Status != "queued" {
			t.Errorf("status %s", *c.Status)
		}
		sids = append(sids, *c.Sid)
	}
	if time.Since(start) > time.Second {
		t.Logf("creating 25 calls took %v", time.Since(start))
	}
	for _, sid := range sids {
		waitCall(t, sim, sid)
	}
	if m := sim.MaxStartsPerSecond(); m > cps {
		t.Errorf("%d calls started in one second, limit %d (per second: %v)", m, cps, sim.StartsPerSecond())
	}
	first, _ := sim.Call(sids[0])
	last, _ := sim.Call(sids[len(sids)-1])
	if gap := last.Started.Sub(first.Started); gap < 2300*time.Millisecond {
		t.Errorf("25 calls at %d CPS started within %v", cps, gap)
	}
	total := 0
	for _, n := range sim.StartsPerSecond() {
		total += n
	}
	if total != 25 {
		t.Errorf("%d starts counted, want 25", total)
	}
	// Lean mode drops bodies but keeps what duplicate checks need.
	if recs := sim.Creates(); len(recs) != 25 || recs[0].Form != nil || recs[0].AttemptID != "cps" || sim.CallsForAttempt("cps") != 25 {
		t.Errorf("lean create records: %d, first %+v", len(recs), recs[0])
	}
	if cbs := sim.Callbacks(); len(cbs) == 0 || cbs[0].Params != nil || len(sim.Requests()) != 0 {
		t.Errorf("lean mode kept callback parameters or request records")
	}
}
