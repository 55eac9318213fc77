package schedule

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	v1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

// propertyZones mix ordinary zones with odd ones: 30- and 45-minute offsets,
// 30-minute DST, southern-hemisphere DST, a zone that skipped a whole day.
var propertyZones = []string{
	"UTC", "Asia/Tokyo", "America/Los_Angeles", "America/New_York", "Europe/Berlin", "Europe/London",
	"Australia/Lord_Howe", "Australia/Sydney", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns",
	"Pacific/Chatham", "America/Santiago", "Africa/Casablanca", "Pacific/Apia",
}

// oracle is a brute-force model of the calling hours, written independently of
// the planner: wall times are compared as strings, and the next allowed
// instant is found by walking minute by minute (calling hours, and the offset
// changes of these zones, fall on whole minutes).
type oracle struct {
	start, end string // HH:MM
	days       map[time.Weekday]bool
	loc        *time.Location
}

func (o oracle) in(t time.Time) bool {
	lt := t.In(o.loc)
	if len(o.days) > 0 && !o.days[lt.Weekday()] {
		return false
	}
	w := lt.Format("15:04:05.000000000")
	return w >= o.start && w < o.end
}

// next returns the earliest allowed instant at or after t and before limit.
func (o oracle) next(t, limit time.Time) (time.Time, bool) {
	if o.in(t) {
		return t, t.Before(limit)
	}
	for m := t.Truncate(time.Minute).Add(time.Minute); m.Before(limit); m = m.Add(time.Minute) {
		if o.in(m) {
			return m, true
		}
	}
	return time.Time{}, false
}

// expect models the planner's rules for a call due at due.
func (o oracle) expect(due, now, end time.Time, grace time.Duration) (time.Time, Reason) {
	if !now.Before(end) {
		return time.Time{}, WindowEnded
	}
	base := due
	if due.Before(now.Add(-grace)) {
		base = now
	}
	if !base.Before(end) {
		return time.Time{}, WindowEnded
	}
	at, ok := o.next(base, end)
	if ok && at.Before(now) && !o.in(now) {
		at, ok = o.next(now, end)
	}
	if !ok {
		return time.Time{}, NoCallingHoursBeforeWindowEnd
	}
	return at, Planned
}

var dayNames = []v1alpha1.Weekday{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}

// randomCase draws a campaign, a delivery and a clock, biased towards the
// offset changes of the chosen zone and towards calling hours around them.
func randomCase(t *testing.T, r *rand.Rand) (*Policy, oracle, Input, time.Time) {
	zone := propertyZones[r.IntN(len(propertyZones))]
	l := loc(t, zone)

	anchor := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(365 * 24 * time.Hour))))
	if r.IntN(2) == 0 {
		if start, _ := anchor.In(l).ZoneBounds(); !start.IsZero() && start.Year() >= 2025 {
			anchor = start.Add(time.Duration(r.Int64N(int64(60*time.Hour))) - 30*time.Hour)
		}
	}

	var sm, em int
	if r.IntN(3) == 0 { // narrow hours around the small hours, where clocks change
		sm = r.IntN(4*60) + 60
		em = sm + 1 + r.IntN(150)
	} else {
		sm = r.IntN(24*60 - 1)
		em = sm + 1 + r.IntN(24*60-1-sm)
	}
	c := campaign{
		start: fmt.Sprintf("%02d:%02d", sm/60, sm%60),
		end:   fmt.Sprintf("%02d:%02d", em/60, em%60),
		lead:  time.Duration(r.Int64N(int64(48 * time.Hour))).Truncate(time.Second),
		max:   int32(1 + r.IntN(10)),
	}
	o := oracle{start: c.start, end: c.end, days: map[time.Weekday]bool{}, loc: l}
	if r.IntN(2) == 0 {
		for len(c.days) == 0 {
			for i, name := range dayNames {
				if r.IntN(3) == 0 {
					c.days = append(c.days, name)
					o.days[time.Weekday(i)] = true
				}
			}
		}
	}
	for range 1 + r.IntN(4) {
		c.backoff = append(c.backoff, time.Duration(1+r.IntN(48*60))*time.Minute)
	}
	for _, res := range []v1alpha1.CallResult{v1alpha1.CallNoAnswer, v1alpha1.CallBusy, v1alpha1.CallFailed, v1alpha1.CallMachine, v1alpha1.CallCanceled} {
		if r.IntN(2) == 0 {
			c.retryOn = append(c.retryOn, res)
		}
	}
	useDefault := r.IntN(4) == 0 // leave the recipient's zone to the campaign default
	if useDefault {
		c.tz = zone
	}
	p := c.policy(t)

	ws := anchor
	switch r.IntN(4) {
	case 0:
		ws = ws.Truncate(time.Minute)
	case 1: // first call due in the last minute before the calling hours end
		lt := anchor.In(l)
		hoursEnd := time.Date(lt.Year(), lt.Month(), lt.Day(), em/60, em%60, 0, 0, l)
		ws = hoursEnd.Add(-time.Duration(1 + r.Int64N(int64(time.Minute)))).Add(c.lead)
	}
	in := Input{Location: l, WindowStart: ws, WindowEnd: ws.Add(time.Duration(1 + r.Int64N(int64(72*time.Hour))))}
	if useDefault {
		in.Location = nil
	}
	due := ws.Add(-c.lead)
	var now time.Time
	switch r.IntN(4) {
	case 0: // just after the due time: the grace period
		now = due.Add(time.Duration(r.Int64N(int64(3 * time.Minute))))
	case 1: // on a whole minute, where calling hours begin and end
		now = due.Add(time.Duration(r.IntN(48*60)-24*60) * time.Minute).Truncate(time.Minute)
	default:
		now = due.Add(time.Duration(r.Int64N(int64(48*time.Hour))) - 24*time.Hour)
	}
	return p, o, in, now
}

// checkInvariants asserts what every planned call must satisfy.
func checkInvariants(t *testing.T, p *Policy, o oracle, in Input, now time.Time, d Decision, desc string) {
	t.Helper()
	if !d.Call() {
		return
	}
	switch {
	case !o.in(d.At):
		t.Fatalf("%s: %s is outside calling hours %s-%s %v in %s", desc, d.At, o.start, o.end, o.days, o.loc)
	case !p.InCallingHours(in.Location, d.At):
		t.Fatalf("%s: InCallingHours(%s) = false for a planned call", desc, d.At)
	case d.At.Before(now.Add(-p.Grace())):
		t.Fatalf("%s: %s is more than the grace before now %s", desc, d.At, now)
	case !d.At.Before(in.WindowEnd):
		t.Fatalf("%s: %s is not before the window end %s", desc, d.At, in.WindowEnd)
	case d.At.Before(now) && !o.in(now):
		t.Fatalf("%s: %s is in the past while now %s is outside calling hours", desc, d.At, now)
	case d.At.Location() != o.loc:
		t.Fatalf("%s: %s is not in the recipient's zone %s", desc, d.At, o.loc)
	}
}

func TestPropertyFirst(t *testing.T) {
	r := rand.New(rand.NewPCG(20260308, 1))
	planned := 0
	for i := range 3000 {
		p, o, in, now := randomCase(t, r)
		d := p.First(in, now)
		desc := fmt.Sprintf("case %d: %s-%s %v %s, window %s..%s, lead %s, now %s", i, o.start, o.end, o.days, o.loc,
			in.WindowStart.In(o.loc), in.WindowEnd.In(o.loc), p.LeadTime(), now.In(o.loc))
		checkInvariants(t, p, o, in, now, d, desc)
		want, reason := o.expect(in.WindowStart.Add(-p.LeadTime()), now, in.WindowEnd, p.Grace())
		if d.Reason != reason || !d.At.Equal(want) {
			t.Fatalf("%s: got %s at %s, want %s at %s", desc, d.Reason, d.At, reason, want.In(o.loc))
		}
		if d.Call() {
			planned++
		}
	}
	if planned < 1000 {
		t.Errorf("only %d of 3000 random cases planned a call; the generator is too narrow", planned)
	}
}

func TestPropertyNext(t *testing.T) {
	r := rand.New(rand.NewPCG(20261101, 2))
	planned := 0
	for i := range 3000 {
		p, o, in, now := randomCase(t, r)
		attempts := 1 + r.IntN(p.MaxAttempts())
		result := allResults[r.IntN(len(allResults))]
		lastEnd := now.Add(-time.Duration(r.Int64N(int64(3 * time.Hour))))
		d := p.Next(in, attempts, result, lastEnd, now)
		desc := fmt.Sprintf("case %d: %s-%s %v %s, window %s..%s, attempt %d/%d %q ended %s, now %s", i, o.start, o.end, o.days,
			o.loc, in.WindowStart.In(o.loc), in.WindowEnd.In(o.loc), attempts, p.MaxAttempts(), result, lastEnd.In(o.loc), now.In(o.loc))
		checkInvariants(t, p, o, in, now, d, desc)
		if d.Attempt != attempts+1 {
			t.Fatalf("%s: attempt %d, want %d", desc, d.Attempt, attempts+1)
		}
		var want time.Time
		var reason Reason
		switch {
		case result == "" || result == v1alpha1.CallUnknown:
			reason = ResultPending
		case !p.Retryable(result):
			reason = ResultNotRetryable
		case attempts >= p.MaxAttempts():
			reason = MaxAttemptsReached
		default:
			// The backoff, but never before the first call's due time.
			due := lastEnd.Add(p.Backoff(attempts))
			if first := in.WindowStart.Add(-p.LeadTime()); due.Before(first) {
				due = first
			}
			want, reason = o.expect(due, now, in.WindowEnd, p.Grace())
		}
		if d.Reason != reason || !d.At.Equal(want) {
			t.Fatalf("%s: got %s at %s, want %s at %s", desc, d.Reason, d.At, reason, want.In(o.loc))
		}
		if d.Call() {
			planned++
		}
	}
	if planned < 300 {
		t.Errorf("only %d of 3000 random cases planned a retry; the generator is too narrow", planned)
	}
}

// TestPropertyNextAllowed compares NextAllowed with the minute-by-minute
// model over the next eight days, from random instants near offset changes.
func TestPropertyNextAllowed(t *testing.T) {
	r := rand.New(rand.NewPCG(20260329, 3))
	for i := range 3000 {
		p, o, in, now := randomCase(t, r)
		got := p.NextAllowed(in.Location, now)
		want, ok := o.next(now, now.Add(8*24*time.Hour+time.Hour))
		if !ok || !got.Equal(want) {
			t.Fatalf("case %d: %s-%s %v %s from %s: NextAllowed = %s, model %s (found %v)", i,
				o.start, o.end, o.days, o.loc, now.In(o.loc), got, want.In(o.loc), ok)
		}
		// InCallingHours agrees with the model at and around the edges of
		// the day's calling hours, and at the instants above.
		lt := now.In(o.loc)
		probes := []time.Time{now, got, got.Add(-time.Nanosecond)}
		for _, hm := range []string{o.start, o.end} {
			var h, m int
			fmt.Sscanf(hm, "%d:%d", &h, &m)
			edge := time.Date(lt.Year(), lt.Month(), lt.Day(), h, m, 0, 0, o.loc)
			probes = append(probes, edge, edge.Add(-time.Nanosecond), edge.Add(time.Minute))
		}
		for _, at := range probes {
			if p.InCallingHours(in.Location, at) != o.in(at) {
				t.Fatalf("case %d: %s-%s %v %s: InCallingHours(%s) = %v, model %v", i,
					o.start, o.end, o.days, o.loc, at.In(o.loc), !o.in(at), o.in(at))
			}
		}
	}
}
