package schedule

import (
	"fmt"
	"strings"
	"time"

	v1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

// Input is what the planner needs to know about one delivery.
type Input struct {
	// Location is the recipient's time zone; nil means the policy's default.
	Location *time.Location
	// WindowStart and WindowEnd are the promised delivery window. No call is
	// planned at or after WindowEnd.
	WindowStart, WindowEnd time.Time
}

// InputFor builds the planner input of a delivery, resolving the recipient's
// time zone (empty: the policy's default). It fails when the time zone is
// unknown to this build (the error wraps ErrUnknownTimeZone) or the window is
// missing or does not end after it starts.
func (p *Policy) InputFor(spec *v1alpha1.DeliverySpec) (Input, error) {
	if spec == nil {
		return Input{}, fmt.Errorf("no delivery spec")
	}
	loc, err := p.Location(spec.Recipient.TimeZone)
	if err != nil {
		return Input{}, fmt.Errorf("recipient.timeZone: %w", err)
	}
	in := Input{Location: loc, WindowStart: spec.Window.Start.Time, WindowEnd: spec.Window.End.Time}
	if in.WindowStart.IsZero() || in.WindowEnd.IsZero() {
		return Input{}, fmt.Errorf("window: start and end are both required")
	}
	if !in.WindowEnd.After(in.WindowStart) {
		return Input{}, fmt.Errorf("window: end %s must be after start %s",
			in.WindowEnd.UTC().Format(time.RFC3339), in.WindowStart.UTC().Format(time.RFC3339))
	}
	return in, nil
}

// Reason says why a Decision plans no call; Planned when it does.
type Reason int

// The reasons of a Decision.
const (
	// Planned: a call is planned at Decision.At.
	Planned Reason = iota
	// MaxAttemptsReached: the campaign's maximum number of attempts was made.
	MaxAttemptsReached
	// WindowEnded: the window has ended, or the next call would be due at or after its end.
	WindowEnded
	// NoCallingHoursBeforeWindowEnd: the calling hours have no moment between
	// the due time and the window end.
	NoCallingHoursBeforeWindowEnd
	// ResultNotRetryable: the last call ended with a result the campaign does
	// not retry (completed, rejected, or one not in retryOn).
	ResultNotRetryable
	// ResultPending: the last call has no final result yet (in progress or
	// being reconciled); plan again once it is known. The only non-final reason.
	ResultPending
)

var reasonNames = [...]string{
	Planned:                       "Planned",
	MaxAttemptsReached:            "MaxAttemptsReached",
	WindowEnded:                   "WindowEnded",
	NoCallingHoursBeforeWindowEnd: "NoCallingHoursBeforeWindowEnd",
	ResultNotRetryable:            "ResultNotRetryable",
	ResultPending:                 "ResultPending",
}

// String returns the reason's name, usable as a Kubernetes condition reason.
func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Decision is the planner's answer: call attempt Attempt at At, or no call
// for Reason, explained in Message.
type Decision struct {
	// Reason is Planned when a call is planned, otherwise why none is.
	Reason Reason
	// At is when to call, in the recipient's time zone; zero unless Planned.
	At time.Time
	// Attempt is the number (from 1) of the attempt this decision is about.
	Attempt int
	// Message explains the decision to a person.
	Message string
}

// Call reports whether a call is planned.
func (d Decision) Call() bool { return d.Reason == Planned }

// Final reports whether no more calls will be made for the delivery, whatever
// happens later. A pending result is not final.
func (d Decision) Final() bool { return d.Reason != Planned && d.Reason != ResultPending }

// String returns the reason and the message.
func (d Decision) String() string { return d.Reason.String() + ": " + d.Message }

// First plans the first call of a delivery: the lead time before the window
// opens, moved forward into the calling hours. See Earliest for how the
// clock, the grace period and the window end apply.
func (p *Policy) First(in Input, now time.Time) Decision {
	due := in.WindowStart.Add(-p.lead)
	return p.plan(in, 1, due, now, dur(p.lead)+" before the window opens")
}

// Next plans the call after attemptsMade attempts (the first included), the
// last of which ended at lastEnd (zero: now) with lastResult. A retryable
// result is tried again after the campaign's backoff step for that attempt
// (the last step repeats), but not before the lead time before the window
// opens, moved into the calling hours; other results, the
// maximum number of attempts and the window end stop calling. With
// attemptsMade below 1 it is First.
func (p *Policy) Next(in Input, attemptsMade int, lastResult v1alpha1.CallResult, lastEnd, now time.Time) Decision {
	if attemptsMade < 1 {
		return p.First(in, now)
	}
	n := attemptsMade + 1
	switch {
	case lastResult == "" || lastResult == v1alpha1.CallUnknown:
		return Decision{Reason: ResultPending, Attempt: n,
			Message: fmt.Sprintf("attempt %d has no final result yet; the next call is planned once it is known", attemptsMade)}
	case !p.retryOn[lastResult]:
		return Decision{Reason: ResultNotRetryable, Attempt: n,
			Message: fmt.Sprintf("attempt %d ended %s, which is not retried", attemptsMade, lastResult)}
	case attemptsMade >= p.maxAttempts:
		return Decision{Reason: MaxAttemptsReached, Attempt: n,
			Message: fmt.Sprintf("all %d attempts were made (the last ended %s)", p.maxAttempts, lastResult)}
	}
	if lastEnd.IsZero() {
		lastEnd = now
	}
	step := p.Backoff(attemptsMade)
	why := fmt.Sprintf("%s after attempt %d ended %s", dur(step), attemptsMade, lastResult)
	// A retry is no earlier than a first call would be: the lead time
	// before the window opens. A window moved to a later day while an
	// attempt was calling re-times the retry with it, instead of calling
	// the recipient a day early.
	due := lastEnd.Add(step)
	if first := in.WindowStart.Add(-p.lead); due.Before(first) {
		due = first
		why += fmt.Sprintf(", not before %s before the window opens", dur(p.lead))
	}
	return p.plan(in, n, due, now, why)
}

// Earliest plans attempt number attempt at the first moment at or after due
// that is inside the calling hours and before the window end. Workers use it
// to put back an attempt that came due outside the calling hours. The same
// rules apply as for First and Next:
//   - a due time up to the policy's grace period in the past is kept (so
//     planning again a moment later yields the same instant), unless now is
//     outside the calling hours; an older one is replaced by now;
//   - the result is inside the calling hours, not before now minus the
//     grace, and before the window end; otherwise no call is planned.
func (p *Policy) Earliest(in Input, attempt int, due, now time.Time) Decision {
	return p.plan(in, attempt, due, now, "")
}

func (p *Policy) plan(in Input, attempt int, due, now time.Time, why string) Decision {
	loc := p.loc(in.Location)
	due, now = due.Round(0), now.Round(0)
	end := in.WindowEnd
	no := func(r Reason, format string, args ...any) Decision {
		return Decision{Reason: r, Attempt: attempt, Message: fmt.Sprintf(format, args...)}
	}
	if !now.Before(end) {
		return no(WindowEnded, "the delivery window ended at %s (%s)", stamp(end, loc), loc)
	}
	base, late := due, false
	if due.Before(now.Add(-p.grace)) {
		base, late = now, true
	}
	if !base.Before(end) {
		return no(WindowEnded, "attempt %d would be due at %s (%s), not before the window ends at %s",
			attempt, stamp(base, loc), loc, stamp(end, loc))
	}
	at, ok := p.nextAllowed(loc, base)
	if ok && at.Before(now) && !p.InCallingHours(loc, now) {
		at, ok = p.nextAllowed(loc, now)
	}
	if !ok || !at.Before(end) {
		return no(NoCallingHoursBeforeWindowEnd,
			"no calling hours (%s-%s%s, %s) between %s and the window end at %s",
			clock(p.start), clock(p.end), p.daysText(), loc, stamp(base, loc), stamp(end, loc))
	}
	msg := fmt.Sprintf("attempt %d at %s (%s)", attempt, stamp(at, loc), loc)
	if why != "" {
		msg += ", " + why
	}
	switch {
	case late:
		msg += fmt.Sprintf(" (due %s had passed)", stamp(due, loc))
	case !at.Equal(base):
		msg += fmt.Sprintf(" (due %s, moved into calling hours %s-%s%s)", stamp(due, loc), clock(p.start), clock(p.end), p.daysText())
	}
	return Decision{Reason: Planned, At: at, Attempt: attempt, Message: msg}
}

// daysText lists the calling days, or nothing when every day is allowed.
func (p *Policy) daysText() string {
	s, all := "", true
	for d := time.Sunday; d <= time.Saturday; d++ {
		if !p.days[d] {
			all = false
			continue
		}
		if s != "" {
			s += ","
		}
		s += d.String()[:3]
	}
	if all {
		return ""
	}
	return " " + s
}

// stamp formats t for messages as its wall time and zone abbreviation in loc,
// with seconds only when there are any.
func stamp(t time.Time, loc *time.Location) string {
	t = t.In(loc)
	if t.Second() != 0 || t.Nanosecond() != 0 {
		return t.Format("2006-01-02 15:04:05 MST")
	}
	return t.Format("2006-01-02 15:04 MST")
}

// dur formats d without zero trailing units: 2h, 15m, 1h30m, 90s.
func dur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
