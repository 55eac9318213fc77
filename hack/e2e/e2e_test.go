//go:build e2e

// Package e2e runs the whole system on a local cluster (`make test-e2e`):
// the chart-installed operator with two replicas, workers started by the
// pod runner from the Deployments the operator writes, Redis, FerretDB and
// the Twilio simulator, and checks what a user relies on at the end.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/relay"
)

// scenarios maps a recipient number's last digit to the callee's behaviour
// and the Delivery phase it must end in (one attempt per Delivery).
var scenarios = []struct {
	name  string
	phase v1.DeliveryPhase
	relay bool // the agent is told: SMS and dispatch webhook
}{
	{"press1", v1.DeliveryConfirmed, false},
	{"say-yes", v1.DeliveryConfirmed, false},
	{"press2", v1.DeliveryRescheduleRequested, true},
	{"press3", v1.DeliveryInstructionsRecorded, true},
	{"press9", v1.DeliveryOptedOut, false},
	{"no-answer", v1.DeliveryUnreachable, false},
	{"busy", v1.DeliveryUnreachable, false},
	{"voicemail", v1.DeliveryUnreachable, false},
	{"say-reschedule", v1.DeliveryRescheduleRequested, true},
	{"press1", v1.DeliveryConfirmed, false},
}

// timeScale 1 runs the simulated calls in real time, as Twilio does. The
// simulator scales a call's time limit (60 s by default) and ring timeout
// with everything else, but the workers answer its webhooks in real time,
// up to its 15 s webhook timeout; only at real time do those keep Twilio's
// proportions on a loaded machine. Faster scales broke this run: at 0.02 (a
// 1.2 s limit) a one-second FerretDB stall, and at 0.1 (6 s) a machine with
// a load average of 30, ended answered calls on their time limit before the
// callee chose, and their Deliveries became Unreachable. Real time costs
// about a minute: the calls overlap.
const timeScale = 1

const (
	deliveries  = 200
	agentPrefix = "+1628555"
	recipPrefix = "+1415555"
	hoursStart  = "00:00"
	hoursEnd    = "23:59"
)

func TestWholeSystem(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "delauto-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the logs of every component are kept in %s (pods: pods/logs, control plane: cluster/clusters/delauto/logs, pod runner: pod-runner.log)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	suffixes := map[string]twiliosim.Scenario{}
	for i, sc := range scenarios {
		suffixes[fmt.Sprint(i)] = twiliosim.MustNamed(sc.name)
	}
	// Start-up, the 10 minutes for the phases, the relay's bound and the
	// totals fit in it; `go test -timeout` is above it.
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	sys, err := localcluster.StartSystem(ctx, localcluster.SystemOptions{
		Repo: repo, Bin: filepath.Join(repo, "bin"), Dir: dir, OperatorReplicas: 2,
		Sim:      twiliosim.Options{TimeScale: timeScale, Suffixes: suffixes, CPS: 50},
		Progress: testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Stop()

	campaigns := []struct{ ns, name string }{{"team-a", "evening"}, {"team-b", "express"}}
	regions := []string{"north", "south", "west"}
	for _, c := range campaigns {
		yaml := sys.Campaign(localcluster.CampaignOptions{Namespace: c.ns, Name: c.name,
			HoursStart: hoursStart, HoursEnd: hoursEnd, MaxAttempts: 1, Regions: regions})
		if err := sys.Apply(ctx, yaml); err != nil {
			t.Fatal(err)
		}
		if err := sys.RouteCallbacks(c.ns, c.name); err != nil {
			t.Fatal(err)
		}
	}
	// Deliveries whose window opens within the lead time: due at once.
	start := time.Now().Add(3 * time.Minute)
	var b strings.Builder
	want := map[string]int{} // namespace/name -> scenario
	for i := range deliveries {
		c := campaigns[i%len(campaigns)]
		name := fmt.Sprintf("parcel-%04d", i)
		want[c.ns+"/"+name] = i % len(scenarios)
		b.WriteString(localcluster.Delivery(c.ns, c.name, name, regions[i%len(regions)],
			fmt.Sprintf("%s%04d", recipPrefix, i), fmt.Sprintf("%s%04d", agentPrefix, i), start))
	}
	t.Logf("creating %d Deliveries over %d campaigns and %d regions", deliveries, len(campaigns), len(regions))
	if err := sys.Apply(ctx, b.String()); err != nil {
		t.Fatal(err)
	}
	created := time.Now()

	// Every Delivery ends in the phase its number's scenario implies.
	var list v1.DeliveryList
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if err := sys.Client.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		done, phases := 0, map[v1.DeliveryPhase]int{}
		for _, d := range list.Items {
			phases[d.Status.Phase]++
			if d.Status.Phase.Finished() {
				done++
			}
		}
		t.Logf("%d/%d Deliveries finished: %v; %d calls at the simulator", done, len(list.Items), phases, len(sys.Sim.Calls()))
		if done == deliveries {
			t.Logf("every Delivery finished %s after they were created", time.Since(created).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			byNumber := map[string][]twiliosim.Call{}
			for _, c := range sys.Sim.Calls() {
				byNumber[c.To] = append(byNumber[c.To], c)
			}
			for _, d := range list.Items {
				if !d.Status.Phase.Finished() {
					var calls []string
					for _, c := range byNumber[string(d.Spec.Recipient.Phone)] {
						calls = append(calls, fmt.Sprintf("%s attempt %s %s created %s ended %s", c.Sid, c.AttemptID, c.Status, c.Created.Format("15:04:05.000"), c.Ended.Format("15:04:05.000")))
					}
					t.Logf("unfinished %s/%s: phase %s, attempts %d, next call %v, conditions %+v; calls at the simulator: %v",
						d.Namespace, d.Name, d.Status.Phase, d.Status.Attempts, d.Status.NextCallTime, d.Status.Conditions, calls)
				}
			}
			t.Fatalf("only %d of %d Deliveries finished in time: %v", done, deliveries, phases)
		}
		time.Sleep(5 * time.Second)
	}
	relayed := map[string]bool{}
	for _, d := range list.Items {
		sc := scenarios[want[d.Namespace+"/"+d.Name]]
		if d.Status.Phase != sc.phase {
			t.Errorf("%s/%s (%s) ended %s, want %s; its status: %+v", d.Namespace, d.Name, sc.name, d.Status.Phase, sc.phase, d.Status.Conditions)
			explainCalls(t, sys.Sim, string(d.Spec.Recipient.Phone))
			continue
		}
		if sc.relay {
			relayed[string(d.Spec.Agent.Phone)] = true
		}
	}

	// Exactly one call per attempt and per number; none outside the hours.
	for _, p := range localcluster.DuplicateCalls(sys.Sim) {
		t.Error(p)
	}
	for i := range deliveries {
		if n := sys.Sim.CallsTo(fmt.Sprintf("%s%04d", recipPrefix, i)); n != 1 {
			t.Errorf("recipient %d was called %d times, want 1", i, n)
		}
	}
	hours, err := localcluster.ParseHours(hoursStart, hoursEnd, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range localcluster.CallsOutsideHours(sys.Sim, func(string) (localcluster.Hours, bool) { return hours, true }) {
		t.Error(p)
	}

	// The agents were told: an SMS and a signed dispatch webhook each. Every
	// answer was given before the last Delivery finished, and the relay
	// promises each notification within relay.MaxDelay of its answer (recorded
	// instructions first wait for their transcription up to the time limit
	// plus the transcription wait; a stopped sender's leases and a lost queue
	// entry's sweep come on top). The campaigns set no time limit. The margin
	// is for the sends themselves on a loaded machine.
	finished := time.Now()
	relayBound := relay.MaxDelay(0) + time.Minute
	agentOf := map[string]string{} // agent -> recipient
	for i := range deliveries {
		agentOf[fmt.Sprintf("%s%04d", agentPrefix, i)] = fmt.Sprintf("%s%04d", recipPrefix, i)
	}
	relayOK := waitFor(t, relayBound, "relay", func() error {
		sms := map[string]bool{}
		for _, m := range sys.Sim.Messages() {
			sms[m.To] = true
		}
		for agent := range relayed {
			if !sms[agent] {
				return fmt.Errorf("agent %s got no SMS", agent)
			}
		}
		hooks := 0
		for _, r := range sys.Dispatch.Requests() {
			if err := relay.Verify([]byte(localcluster.DispatchKey), r.Timestamp, r.Signature, r.Body, time.Now(), time.Hour); err != nil {
				return fmt.Errorf("a dispatch webhook failed its signature check: %v", err)
			}
			hooks++
		}
		if hooks < len(relayed) {
			return fmt.Errorf("%d dispatch webhooks for %d relayed answers", hooks, len(relayed))
		}
		return nil
	})
	if relayOK {
		slowest, which := relayLatency(sys.Sim, relayed, agentOf)
		t.Logf("relay: every agent told %s after the last Delivery finished (the relay's bound: %s); the slowest SMS came %s after its call ended (%s)",
			time.Since(finished).Round(100*time.Millisecond), relay.MaxDelay(0), slowest.Round(100*time.Millisecond), which)
	} else {
		explainRelay(t, sys.Sim, relayed, agentOf)
	}

	// Campaign totals equal the per-Delivery phases.
	for _, c := range campaigns {
		if err := localcluster.WaitFor(ctx, 2*time.Minute, func() error { return localcluster.CampaignTotals(ctx, sys.Client, c.ns, c.name) }); err != nil {
			t.Errorf("campaign totals (waited 2m): %v", err)
		}
	}

	// Every component's log: no "forbidden" (RBAC), no phone number.
	checked, problems := localcluster.LogProblems(dir, regexp.MustCompile(`\+1(415|628)555\d{4}`))
	for _, p := range problems {
		t.Error(p)
	}
	if checked < 8 {
		t.Errorf("only %d logs found under %s; expected the operators', the workers', the control plane's", checked, dir)
	}
}

// waitFor calls f until it succeeds or d passes (then the test fails with
// f's last error); it reports whether f succeeded.
func waitFor(t *testing.T, d time.Duration, what string, f func() error) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("%s (waited %s): %v", what, d, err)
			return false
		}
		time.Sleep(2 * time.Second)
	}
}

// relayLatency is the longest time from a relayed recipient's call ending at
// the simulator to the first SMS to its agent, and which scenario it was.
func relayLatency(sim *twiliosim.Sim, relayed map[string]bool, agentOf map[string]string) (time.Duration, string) {
	ended := map[string]twiliosim.Call{}
	for _, c := range sim.Calls() {
		ended[c.To] = c
	}
	first := map[string]time.Time{}
	for _, m := range sim.Messages() {
		if f, ok := first[m.To]; !ok || m.Created.Before(f) {
			first[m.To] = m.Created
		}
	}
	var slowest time.Duration
	which := ""
	for agent := range relayed {
		c := ended[agentOf[agent]]
		if d := first[agent].Sub(c.Ended); d > slowest {
			slowest, which = d, c.Scenario
		}
	}
	return slowest, which
}

// explainRelay logs, for each agent still without an SMS, its recipient's
// calls, so a lost recording or transcription shows.
func explainRelay(t *testing.T, sim *twiliosim.Sim, relayed map[string]bool, agentOf map[string]string) {
	t.Helper()
	sms := map[string]bool{}
	for _, m := range sim.Messages() {
		sms[m.To] = true
	}
	for agent := range relayed {
		if !sms[agent] {
			t.Logf("agent %s got no SMS; its recipient's calls:", agent)
			explainCalls(t, sim, agentOf[agent])
		}
	}
}

// explainCalls logs the simulator's view of the calls to number: how each
// went (what the callee gave, how long it lasted) and each webhook sent for
// it with its answer, in order.
func explainCalls(t *testing.T, sim *twiliosim.Sim, number string) {
	t.Helper()
	for _, c := range sim.Calls() {
		if c.To != number {
			continue
		}
		t.Logf("  call %s (attempt %s, %s): %s, answered %s, ended %s, %d s, inputs %v; its webhooks:",
			c.Sid, c.AttemptID, c.Scenario, c.Status, c.Answered.Format("15:04:05.000"), c.Ended.Format("15:04:05.000"), c.Duration, c.Inputs)
		for _, cb := range sim.CallbacksFor(c.Sid, "") {
			t.Logf("    %s %s %s try %d: HTTP %d %s", cb.Time.Format("15:04:05.000"), cb.Kind, cb.Event, cb.Attempt, cb.StatusCode, cb.Err)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
