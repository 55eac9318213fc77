// Package schedule computes when DelAuto calls a recipient: the first call a
// lead time before the delivery window, retries after the campaign's backoff,
// always inside the calling hours of the recipient's time zone and never at or
// after the end of the delivery window.
//
// It is pure: no I/O beyond loading time zone data (cached), and the clock is
// passed in. The operator is its only caller when planning; workers use
// InCallingHours and NextAllowed to put back an attempt that comes due outside
// the calling hours.
package schedule

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	// The time zone database is embedded so that planning does not depend on
	// the zoneinfo files of the image the operator or the workers run in.
	_ "time/tzdata"

	v1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

// DefaultGrace is how far in the past a planned call may lie and still be
// returned unchanged (see WithGrace).
const DefaultGrace = time.Minute

// The defaults the CRD applies at admission, used when a field is empty.
var (
	defaultLead        = 2 * time.Hour
	defaultStart       = 9 * time.Hour
	defaultEnd         = 20 * time.Hour
	defaultMaxAttempts = 3
	defaultBackoff     = []time.Duration{15 * time.Minute, time.Hour}
	defaultRetryOn     = []v1alpha1.CallResult{v1alpha1.CallNoAnswer, v1alpha1.CallBusy, v1alpha1.CallFailed}
)

// retryable lists the results a campaign may retry on.
var retryable = map[v1alpha1.CallResult]bool{
	v1alpha1.CallNoAnswer: true,
	v1alpha1.CallBusy:     true,
	v1alpha1.CallFailed:   true,
	v1alpha1.CallMachine:  true,
	v1alpha1.CallCanceled: true,
}

var weekdays = map[v1alpha1.Weekday]time.Weekday{
	"Sunday":    time.Sunday,
	"Monday":    time.Monday,
	"Tuesday":   time.Tuesday,
	"Wednesday": time.Wednesday,
	"Thursday":  time.Thursday,
	"Friday":    time.Friday,
	"Saturday":  time.Saturday,
}

// ErrUnknownTimeZone is wrapped by the errors of time zone names that this
// build's time zone database does not know.
var ErrUnknownTimeZone = errors.New("unknown time zone")

// SpecError lists what is wrong with a campaign's schedule or retry policy.
type SpecError struct {
	// Problems are the individual findings, each naming the field.
	Problems []string
}

// Error joins the problems into one line, fit for a condition message.
func (e *SpecError) Error() string {
	return "invalid schedule: " + strings.Join(e.Problems, "; ")
}

// Policy is a campaign's schedule and retry policy, checked and compiled.
// It is immutable and safe for concurrent use. Make one with Compile.
type Policy struct {
	lead        time.Duration
	start, end  time.Duration // since local midnight; start inclusive, end exclusive
	days        [7]bool       // indexed by time.Weekday
	defaultLoc  *time.Location
	maxAttempts int
	backoff     []time.Duration
	retryOn     map[v1alpha1.CallResult]bool
	grace       time.Duration
}

// Option adjusts how Compile builds a Policy.
type Option func(*Policy)

// WithGrace sets how far in the past a planned call time may lie and still be
// returned as is (so planning again a moment later gives the same instant).
// A planned time further in the past becomes "now". Negative values count as
// zero. The default is DefaultGrace.
func WithGrace(d time.Duration) Option {
	return func(p *Policy) { p.grace = max(d, 0) }
}

// Compile checks the schedule and retry policy of spec and compiles them.
// Empty fields take the defaults the CRD applies at admission (lead time 2h,
// calling hours 09:00-20:00 every day, time zone UTC, 3 attempts, backoff 15m
// then 1h, retry on no-answer, busy and failed); an empty retryOn list also
// means the default (maxAttempts 1 turns retries off). It returns a
// *SpecError listing every problem found, including what admission cannot
// catch, such as a time zone this build does not know.
func Compile(spec *v1alpha1.CallCampaignSpec, opts ...Option) (*Policy, error) {
	if spec == nil {
		return nil, &SpecError{Problems: []string{"no campaign spec"}}
	}
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }

	s, r := spec.Schedule, spec.Retry
	p := &Policy{grace: DefaultGrace, retryOn: map[v1alpha1.CallResult]bool{}}

	p.lead = defaultLead
	if s.LeadTime != nil {
		p.lead = s.LeadTime.Duration
	}
	if p.lead < 0 {
		bad("schedule.leadTime %s must not be negative", p.lead)
	}

	var err, errStart, errEnd error
	if p.start, errStart = parseClock(string(s.CallingHours.Start), defaultStart); errStart != nil {
		bad("schedule.callingHours.start: %v", errStart)
	}
	if p.end, errEnd = parseClock(string(s.CallingHours.End), defaultEnd); errEnd != nil {
		bad("schedule.callingHours.end: %v", errEnd)
	}
	if errStart == nil && errEnd == nil && p.start >= p.end {
		bad("schedule.callingHours.start %s must be before end %s (calling hours cannot span midnight)",
			clock(p.start), clock(p.end))
	}

	if len(s.CallingHours.Days) == 0 {
		p.days = [7]bool{true, true, true, true, true, true, true}
	}
	for _, d := range s.CallingHours.Days {
		wd, ok := weekdays[d]
		if !ok {
			bad("schedule.callingHours.days: %q is not a day of the week (Monday ... Sunday)", d)
			continue
		}
		p.days[wd] = true
	}

	tz := string(s.DefaultTimeZone)
	if tz == "" {
		tz = "UTC"
	}
	if p.defaultLoc, err = LoadLocation(tz); err != nil {
		bad("schedule.defaultTimeZone: %v", err)
	}

	p.maxAttempts = int(r.MaxAttempts)
	switch {
	case p.maxAttempts == 0:
		p.maxAttempts = defaultMaxAttempts
	case p.maxAttempts < 0:
		bad("retry.maxAttempts %d must be at least 1", r.MaxAttempts)
	}

	for i, b := range r.Backoff {
		if b.Duration <= 0 {
			bad("retry.backoff[%d] %s must be positive", i, b.Duration)
		}
		p.backoff = append(p.backoff, b.Duration)
	}
	if len(p.backoff) == 0 {
		p.backoff = append(p.backoff, defaultBackoff...)
	}

	retryOn := r.RetryOn
	if len(retryOn) == 0 {
		retryOn = defaultRetryOn
	}
	for _, res := range retryOn {
		if !retryable[res] {
			bad("retry.retryOn: %q cannot be retried (only no-answer, busy, failed, machine and canceled)", res)
			continue
		}
		p.retryOn[res] = true
	}

	if len(probs) > 0 {
		return nil, &SpecError{Problems: probs}
	}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// LeadTime is how long before the window opens the first call is planned.
func (p *Policy) LeadTime() time.Duration { return p.lead }

// MaxAttempts is the most calls placed for one delivery, the first included.
func (p *Policy) MaxAttempts() int { return p.maxAttempts }

// Grace is how far in the past a returned call time may lie.
func (p *Policy) Grace() time.Duration { return p.grace }

// DefaultLocation is the time zone of recipients that give none.
func (p *Policy) DefaultLocation() *time.Location { return p.defaultLoc }

// Backoff is the wait after attempt n (from 1) before attempt n+1; the last
// configured step repeats.
func (p *Policy) Backoff(n int) time.Duration {
	i := min(max(n-1, 0), len(p.backoff)-1)
	return p.backoff[i]
}

// Retryable reports whether an attempt that ended with r is tried again.
func (p *Policy) Retryable(r v1alpha1.CallResult) bool { return p.retryOn[r] }

// Location resolves a recipient's time zone name; empty means the policy's
// default time zone.
func (p *Policy) Location(tz v1alpha1.TimeZone) (*time.Location, error) {
	if tz == "" {
		return p.defaultLoc, nil
	}
	return LoadLocation(string(tz))
}

// loc returns l, or the default location when l is nil.
func (p *Policy) loc(l *time.Location) *time.Location {
	if l == nil {
		return p.defaultLoc
	}
	return l
}

var locations sync.Map // name -> *time.Location

// LoadLocation loads an IANA time zone by name, caching it. Unlike
// time.LoadLocation it refuses "" and "Local", whose meaning depends on the
// machine; its errors wrap ErrUnknownTimeZone.
func LoadLocation(name string) (*time.Location, error) {
	if l, ok := locations.Load(name); ok {
		return l.(*time.Location), nil
	}
	if name == "" || name == "Local" || strings.ContainsAny(name, "\x00\\") || strings.Contains(name, "..") {
		return nil, fmt.Errorf("%w %q: use an IANA name such as Europe/Berlin or UTC", ErrUnknownTimeZone, name)
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%w %q: use an IANA name such as Europe/Berlin or UTC", ErrUnknownTimeZone, name)
	}
	locations.Store(name, l)
	return l, nil
}

// FirstLocation is the first of names that LoadLocation loads, else UTC:
// the recipient's time zone, else the campaign's default, for the times a
// call or a message speaks of.
func FirstLocation(names ...string) *time.Location {
	for _, n := range names {
		if l, err := LoadLocation(n); err == nil {
			return l
		}
	}
	return time.UTC
}

// parseClock parses HH:MM on a 24-hour clock into the time since midnight.
func parseClock(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	digit := func(i int) (int, bool) { return int(s[i] - '0'), s[i] >= '0' && s[i] <= '9' }
	if len(s) == 5 && s[2] == ':' {
		h1, ok1 := digit(0)
		h2, ok2 := digit(1)
		m1, ok3 := digit(3)
		m2, ok4 := digit(4)
		h, m := h1*10+h2, m1*10+m2
		if ok1 && ok2 && ok3 && ok4 && h <= 23 && m <= 59 {
			return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
		}
	}
	return 0, fmt.Errorf("%q is not a time of day as HH:MM on a 24-hour clock", s)
}

// clock formats a time since midnight as HH:MM.
func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}
