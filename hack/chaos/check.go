package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

// changeGrace is how long after a Delivery was given a new window,
// cancelled or deleted a worker may still claim its attempt: the
// operator's reaction (it sees the change and marks the attempt). A claim
// before that is a call already under way, which the product lets finish.
const changeGrace = 10 * time.Second

// settled reports whether a Delivery is done with for the run: finished,
// or its next attempt well in the future (a retry back-off, closed hours,
// a new window).
func settled(d *v1.Delivery, now time.Time) bool {
	return d.Status.Phase.Finished() || d.Status.NextCallTime != nil && d.Status.NextCallTime.After(now.Add(90*time.Second))
}

// settle waits until every Delivery is settled or the drain time passed.
func (s *state) settle(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.drain)
	for ctx.Err() == nil {
		var list v1.DeliveryList
		if err := s.sys.Client.List(ctx, &list); err == nil {
			open := 0
			for i := range list.Items {
				if !settled(&list.Items[i], time.Now()) {
					open++
				}
			}
			if open == 0 {
				fmt.Printf(">> %s: every Delivery settled\n", time.Now().Format("15:04:05"))
				return
			}
			if time.Now().After(deadline) {
				fmt.Printf(">> %s: %d Deliveries still unsettled after the drain time\n", time.Now().Format("15:04:05"), open)
				return
			}
		}
		time.Sleep(5 * time.Second)
	}
}

// invariant is one checked property and what broke it.
type invariant struct {
	name       string
	violations []string
}

// report is the run's outcome.
type report struct {
	invariants []invariant
	stats      [][2]string
	lost       int
	duplicates int
	offHours   int
	recovery   []time.Duration // worker kills: the kill to the first call of its queue
	// recoveryDue is the same from the later of the kill and the called
	// attempt falling due; kills says what each kill's first call was.
	recoveryDue []time.Duration
	kills       []string
	failover    []time.Duration // operator kills
	notes       []string
}

func (r *report) ok() bool {
	for _, inv := range r.invariants {
		if len(inv.violations) > 0 {
			return false
		}
	}
	return true
}

func (r *report) add(name string, violations []string) {
	r.invariants = append(r.invariants, invariant{name: name, violations: violations})
}

func (r *report) stat(name string, format string, args ...any) {
	r.stats = append(r.stats, [2]string{name, fmt.Sprintf(format, args...)})
}

// check reads the simulator's log, MongoDB and the apiserver and checks
// every invariant.
func (s *state) check(ctx context.Context) *report {
	r := &report{}
	now := time.Now()
	var list v1.DeliveryList
	if err := s.sys.Client.List(ctx, &list); err != nil {
		r.add("the apiserver answers", []string{err.Error()})
		return r
	}
	st, err := store.Open(ctx, store.Config{URI: s.sys.Services.Mongo.URI, Database: stores.DefaultMongoDatabase})
	if err != nil {
		r.add("MongoDB answers", []string{err.Error()})
		return r
	}
	defer st.Close(context.Background())

	s.mu.Lock()
	defer s.mu.Unlock()
	byUID := map[string]*tracked{}
	live := map[string]*v1.Delivery{}
	for i := range list.Items {
		d := &list.Items[i]
		live[d.Namespace+"/"+d.Name] = d
	}
	for _, t := range s.byName {
		if t.uid != "" {
			byUID[t.uid] = t
		}
	}

	// Every Delivery finished, or has a future attempt with a stated reason.
	var lost []string
	phases := map[v1.DeliveryPhase]int{}
	future, emptyPhase, retries := 0, 0, 0
	for key, t := range s.byName {
		if t.change == kindDelete {
			continue
		}
		d := live[key]
		if d == nil {
			lost = append(lost, fmt.Sprintf("%s: gone from the apiserver though never deleted", key))
			continue
		}
		phases[d.Status.Phase]++
		retries += int(max(0, d.Status.Attempts-1))
		if d.Status.Phase.Finished() {
			continue
		}
		ready := meta.FindStatusCondition(d.Status.Conditions, v1.ConditionReady)
		if d.Status.NextCallTime != nil && d.Status.NextCallTime.After(now) && ready != nil && ready.Reason != "" {
			future++
			continue
		}
		if d.Status.Phase == "" {
			emptyPhase++
		}
		next := "none"
		if d.Status.NextCallTime != nil {
			next = d.Status.NextCallTime.Format("15:04:05")
		}
		reason := "no Ready condition"
		if ready != nil {
			reason = ready.Reason + ": " + ready.Message
		}
		lost = append(lost, fmt.Sprintf("%s (zone %s, created %s): phase %q, attempts %d, next call %s, %s",
			key, t.zone, t.created.Format("15:04:05"), d.Status.Phase, d.Status.Attempts, next, reason))
	}
	sort.Strings(lost)
	r.lost = len(lost)
	r.add("every Delivery finished, or its next attempt is in the future with a stated reason", lost)
	if emptyPhase > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%d Deliveries kept an empty phase (the open bug of a Delivery with an empty phase after a leader change?)", emptyPhase))
	}

	// No attempt produced more than one call.
	dups := localcluster.DuplicateCalls(s.sys.Sim)
	r.duplicates = len(dups)
	r.add("no attempt produced more than one call", dups)

	// No call outside the recipient's calling hours.
	hoursOf := func(to string) (localcluster.Hours, bool) {
		ts := s.byNumber[to]
		if len(ts) == 0 {
			return localcluster.Hours{}, false
		}
		return ts[0].hours, true
	}
	off := localcluster.CallsOutsideHours(s.sys.Sim, hoursOf)
	r.offHours = len(off)
	r.add("no call outside the recipient's calling hours", off)

	// No call after the window, after a new window, a cancel or a delete,
	// after an opt-out.
	creates := s.sys.Sim.Creates()
	var afterWindow, afterChange, afterOptOut []string
	inFlight := 0
	optedOut := map[string]time.Time{}
	for _, c := range s.sys.Sim.Calls() {
		if contains(c.Inputs, "digits:9") && !c.Ended.IsZero() {
			if t, ok := optedOut[c.To]; !ok || c.Ended.Before(t) {
				optedOut[c.To] = c.Ended
			}
		}
	}
	calls, retryCalls := 0, 0
	var ambiguous, resolved int
	for _, c := range creates {
		if !c.Created() {
			continue
		}
		calls++
		if n := attemptNumber(c.AttemptID); n > 1 {
			retryCalls++
		}
		t := byUID[attemptUID(c.AttemptID)]
		if t == nil {
			continue
		}
		if c.Time.After(t.windowEnd) {
			afterWindow = append(afterWindow, fmt.Sprintf("call %s to %s/%s at %s, its window ended %s", c.CallSid, t.ns, t.name, c.Time.Format("15:04:05"), t.windowEnd.Format("15:04:05")))
		}
		if t.change != "" && c.Time.After(t.changed) {
			a, err := st.Get(ctx, c.AttemptID)
			switch {
			case err != nil:
				afterChange = append(afterChange, fmt.Sprintf("call %s to %s/%s at %s after %s at %s; its attempt: %v", c.CallSid, t.ns, t.name, c.Time.Format("15:04:05.000"), t.change, t.changed.Format("15:04:05.000"), err))
			case a.ClaimedAt == nil || a.ClaimedAt.After(t.changed.Add(changeGrace)):
				afterChange = append(afterChange, fmt.Sprintf("call %s to %s/%s at %s after %s at %s; attempt %s claimed %v", c.CallSid, t.ns, t.name, c.Time.Format("15:04:05.000"), t.change, t.changed.Format("15:04:05.000"), a.ID, a.ClaimedAt))
			default:
				inFlight++
			}
		}
		if at, ok := optedOut[c.To]; ok && c.Time.After(at) {
			afterOptOut = append(afterOptOut, fmt.Sprintf("call %s to %s/%s at %s; the number opted out in a call that ended %s", c.CallSid, t.ns, t.name, c.Time.Format("15:04:05"), at.Format("15:04:05")))
		}
	}
	for _, c := range creates {
		if c.Created() && (c.Fault == twiliosim.FaultHangAfterCreate || c.Fault == twiliosim.FaultResetAfterCreate || c.Fault == twiliosim.FaultServerErrorAfterCreate) {
			ambiguous++
			if a, err := st.Get(ctx, c.AttemptID); err == nil && a.State != store.StateUnknown && a.CallSID == c.CallSid {
				resolved++
			}
		}
	}
	r.add("no call after the Delivery's window", afterWindow)
	r.add(fmt.Sprintf("no call after a new window, a cancel or a delete (claims more than %s later)", changeGrace), afterChange)
	r.add("no call after the number opted out", afterOptOut)

	// Forged webhooks: all refused, none changed anything.
	var forged []string
	for code, n := range s.forged.byStatus {
		if code != 403 {
			forged = append(forged, fmt.Sprintf("%d forged webhooks answered %d, not 403", n, code))
		}
	}
	for key, t := range s.byName {
		if !t.forged {
			continue
		}
		if d := live[key]; d != nil && d.Status.Phase == v1.DeliveryOptedOut {
			forged = append(forged, fmt.Sprintf("%s (who confirms) is OptedOut", key))
		}
		if out, err := st.IsOptedOut(ctx, t.ns, t.number); err != nil || out {
			forged = append(forged, fmt.Sprintf("the number of %s (who confirms) is on the opt-out list (err %v)", key, err))
		}
	}
	sort.Strings(forged)
	r.add("forged webhooks all refused (403), none changed state", forged)

	// Campaign totals equal the per-Delivery phases.
	var totals []string
	for _, c := range campaigns {
		if err := localcluster.WaitFor(ctx, 2*time.Minute, func() error { return localcluster.CampaignTotals(ctx, s.sys.Client, c.ns, c.name) }); err != nil {
			totals = append(totals, err.Error())
		}
	}
	r.add("campaign totals equal the per-Delivery phases", totals)

	// Every component's log: no "forbidden", no phone number.
	checked, problems := localcluster.LogProblems(s.cfg.dir, regexp.MustCompile(`\+1(415|628)555\d{4}`))
	if checked < 8 {
		problems = append(problems, fmt.Sprintf("only %d logs found", checked))
	}
	r.add("no log says forbidden or holds a phone number", problems)

	// Recovery after each kill.
	for _, k := range s.kills {
		if k.Operator {
			if k.Failover >= 0 {
				r.failover = append(r.failover, k.Failover)
			} else {
				r.notes = append(r.notes, fmt.Sprintf("no new operator leader within 3 minutes of the kill at %s", k.At.Format("15:04:05")))
			}
			continue
		}
		found := false
		for _, c := range creates {
			if !c.Created() || !c.Time.After(k.At) {
				continue
			}
			if t := byUID[attemptUID(c.AttemptID)]; t != nil && t.shard() == k.Shard {
				r.recovery = append(r.recovery, c.Time.Sub(k.At))
				found = true
				// What the wait was made of: an attempt that fell due after
				// the kill did not wait for the worker from the kill on.
				detail := "its due time unknown"
				if a, err := st.Get(ctx, c.AttemptID); err == nil {
					detail = fmt.Sprintf("due %s", signed(a.Due.Sub(k.At)))
					if a.Due.After(k.At) {
						r.recoveryDue = append(r.recoveryDue, c.Time.Sub(a.Due))
					} else {
						r.recoveryDue = append(r.recoveryDue, c.Time.Sub(k.At))
					}
				}
				r.kills = append(r.kills, fmt.Sprintf("%s %s: its first call +%.1f s (attempt %s, %s)",
					k.At.Format("15:04:05"), k.Shard, c.Time.Sub(k.At).Seconds(), c.AttemptID, detail))
				break
			}
		}
		if !found {
			r.notes = append(r.notes, fmt.Sprintf("no call of queue %s after the worker kill at %s (nothing was due there)", k.Shard, k.At.Format("15:04:05")))
		}
	}

	if s.panics > 0 {
		r.add("the run itself did not panic", []string{fmt.Sprintf("%d of its goroutines panicked (chaos.log)", s.panics)})
	}

	// The figures.
	byKind := map[string]int{}
	for _, e := range s.events {
		if !strings.HasPrefix(e.Detail, "no ") && !strings.HasPrefix(e.Detail, "could not") {
			byKind[e.Kind]++
		}
	}
	var kindsLine []string
	for _, k := range kinds {
		kindsLine = append(kindsLine, fmt.Sprintf("%s %d", k, byKind[k]))
	}
	r.stat("faults injected", "%s", strings.Join(kindsLine, ", "))
	simStats := s.sys.Sim.Stats()
	var simFaultsLine []string
	for _, k := range twiliosim.FaultKinds() {
		if n := simStats.FaultsInjected[string(k)]; n > 0 {
			simFaultsLine = append(simFaultsLine, fmt.Sprintf("%s %d", k, n))
		}
	}
	dupCB, lateCB := 0, 0
	for _, cb := range s.sys.Sim.Callbacks() {
		if cb.Duplicate {
			dupCB++
		}
		if cb.Late {
			lateCB++
		}
	}
	simFaultsLine = append(simFaultsLine, fmt.Sprintf("callbacks duplicated %d, late by 1m %d (and reordered)", dupCB, lateCB))
	r.stat("Twilio faults (simulator)", "%s", strings.Join(simFaultsLine, ", "))
	deleted := 0
	for _, t := range s.byName {
		if t.change == kindDelete {
			deleted++
		}
	}
	var phaseLine []string
	for p, n := range phases {
		name := string(p)
		if name == "" {
			name = "(empty)"
		}
		phaseLine = append(phaseLine, fmt.Sprintf("%s %d", name, n))
	}
	sort.Strings(phaseLine)
	r.stat("Deliveries", "%d created (%d to opted-out numbers), %d deleted; %d with a future attempt; %s", len(s.byName), len(s.reused), deleted, future, strings.Join(phaseLine, ", "))
	r.stat("calls", "%d placed, %d create requests, %d of them retries (attempt 2+); Delivery attempts beyond the first %d", calls, simStats.CreateRequests, retryCalls, retries)
	r.stat("ambiguous dials", "%d (the call created, the response lost), %d resolved to their call", ambiguous, resolved)
	r.stat("changed while due", "%d calls under way at the change (claimed before it) went ahead", inFlight)
	r.stat("forged webhooks", "%d sent, answered %v, %d not delivered (no worker of the Service reachable)", s.forged.sent, s.forged.byStatus, s.forged.errors)
	r.stat("recovery after a worker SIGKILL", "%s (kill -> first call from its queue, n=%d)", pcts(r.recovery), len(r.recovery))
	r.stat("  from the attempt falling due", "%s (the later of the kill and the called attempt's due time -> the call)", pcts(r.recoveryDue))
	for _, k := range r.kills {
		r.stat("  worker kill", "%s", k)
	}
	r.stat("operator failover after SIGKILL", "%s (kill -> another replica leads, n=%d)", pcts(r.failover), len(r.failover))
	return r
}

// pcts is "p50 x s, p99 y s" of ds.
func pcts(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %.1f s, p99 %.1f s", pct(ds, 0.5).Seconds(), pct(ds, 0.99).Seconds())
}

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// attemptUID and attemptNumber split an attempt id (store.AttemptID).
func attemptUID(id string) string {
	if i := strings.LastIndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return ""
}

func attemptNumber(id string) int {
	i := strings.LastIndexByte(id, '-')
	n, _ := strconv.Atoi(id[i+1:])
	return n
}

// print writes the table and the summary line, at most limit violations of
// each invariant (0: all).
func (r *report) print(w io.Writer, s *state, limit int) {
	fmt.Fprintf(w, "\n== chaos: seed %d, %d Deliveries over %s ==\n", s.cfg.seed, s.cfg.deliveries, s.cfg.length)
	for _, st := range r.stats {
		fmt.Fprintf(w, "  %-34s %s\n", st[0], st[1])
	}
	fmt.Fprintln(w, "  invariants:")
	for _, inv := range r.invariants {
		mark := "ok  "
		if len(inv.violations) > 0 {
			mark = fmt.Sprintf("FAIL (%d)", len(inv.violations))
		}
		fmt.Fprintf(w, "    %-9s %s\n", mark, inv.name)
		for i, v := range inv.violations {
			if limit > 0 && i == limit {
				fmt.Fprintf(w, "              ... and %d more (chaos.log has them all)\n", len(inv.violations)-limit)
				break
			}
			fmt.Fprintf(w, "              %s\n", v)
		}
	}
	for _, n := range r.notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	fmt.Fprintf(w, "chaos deliveries=%d lost=%d duplicate_calls=%d off_hours_calls=%d recovery_p99_s=%.1f\n",
		len(s.byName), r.lost, r.duplicates, r.offHours, pct(r.recovery, 0.99).Seconds())
}

// signed formats d as "+1.5 s" or "-3.0 s" (from an event).
func signed(d time.Duration) string {
	return fmt.Sprintf("%+.1f s", d.Seconds())
}
