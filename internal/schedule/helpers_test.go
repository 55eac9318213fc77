package schedule

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

// loc loads a time zone or fails the test.
func loc(t testing.TB, name string) *time.Location {
	t.Helper()
	l, err := LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v", name, err)
	}
	return l
}

// wall parses a local wall time in zone: "2006-01-02 15:04", optionally with
// seconds, and with a UTC offset ("2026-11-01 01:30 -0700") to pick one
// occurrence of a repeated wall time. A wall time that does not exist, or that
// is repeated and given without an offset, fails the test, so every expected
// instant in the tables is unambiguous.
func wall(t testing.TB, zone, s string) time.Time {
	t.Helper()
	l := loc(t, zone)
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{"2006-01-02 15:04 -0700", "2006-01-02 15:04:05 -0700"} {
		if v, err := time.Parse(layout, s); err == nil {
			_, want := v.Zone()
			if _, got := v.In(l).Zone(); got != want {
				t.Fatalf("wall %q: %s has offset %d s then, not %d s", s, zone, got, want)
			}
			return v.In(l)
		}
	}
	layout := "2006-01-02 15:04"
	if strings.Count(s, ":") == 2 {
		layout = "2006-01-02 15:04:05"
	}
	v, err := time.ParseInLocation(layout, s, l)
	if err != nil {
		t.Fatalf("wall %q: %v", s, err)
	}
	if v.Format(layout) != s {
		t.Fatalf("wall %q does not exist in %s (clocks jump over it)", s, zone)
	}
	for _, d := range []time.Duration{30 * time.Minute, time.Hour, 2 * time.Hour} {
		for _, o := range []time.Time{v.Add(d), v.Add(-d)} {
			if o.Format(layout) == s {
				t.Fatalf("wall %q is repeated in %s; give its UTC offset", s, zone)
			}
		}
	}
	return v
}

// campaign is a spec with the given schedule and retry fields; empty strings
// and zero values are left to the defaults, except the lead time, which is
// always set (zero: call at the window start).
type campaign struct {
	start, end string
	days       []v1alpha1.Weekday
	lead       time.Duration
	tz         string
	max        int32
	backoff    []time.Duration
	retryOn    []v1alpha1.CallResult
}

func (c campaign) spec() *v1alpha1.CallCampaignSpec {
	s := &v1alpha1.CallCampaignSpec{}
	s.Schedule.LeadTime = &metav1.Duration{Duration: c.lead}
	s.Schedule.CallingHours = v1alpha1.CallingHours{Start: v1alpha1.ClockTime(c.start), End: v1alpha1.ClockTime(c.end), Days: c.days}
	s.Schedule.DefaultTimeZone = v1alpha1.TimeZone(c.tz)
	s.Retry.MaxAttempts = c.max
	for _, b := range c.backoff {
		s.Retry.Backoff = append(s.Retry.Backoff, metav1.Duration{Duration: b})
	}
	s.Retry.RetryOn = c.retryOn
	return s
}

func (c campaign) policy(t testing.TB) *Policy {
	t.Helper()
	p, err := Compile(c.spec())
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

// checkDecision compares a decision with the expected instant (zero: no call)
// and reason.
func checkDecision(t *testing.T, got Decision, want time.Time, wantReason Reason, wantAttempt int) {
	t.Helper()
	if got.Reason != wantReason {
		t.Fatalf("reason = %s, want %s (%s)", got.Reason, wantReason, got)
	}
	if wantReason == Planned {
		if !got.At.Equal(want) {
			t.Fatalf("at = %s, want %s (%s)", got.At.Format(time.RFC3339), want.Format(time.RFC3339), got)
		}
		if got.At.Location() != want.Location() {
			t.Errorf("at is in %s, want the recipient's zone %s", got.At.Location(), want.Location())
		}
	} else if !got.At.IsZero() {
		t.Errorf("at = %s for a decision without a call", got.At)
	}
	if got.Attempt != wantAttempt {
		t.Errorf("attempt = %d, want %d", got.Attempt, wantAttempt)
	}
	if got.Message == "" {
		t.Errorf("empty message")
	}
}

var (
	weekdaysOnly = []v1alpha1.Weekday{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}
	allResults   = []v1alpha1.CallResult{
		v1alpha1.CallCompleted, v1alpha1.CallNoAnswer, v1alpha1.CallBusy, v1alpha1.CallFailed,
		v1alpha1.CallCanceled, v1alpha1.CallMachine, v1alpha1.CallRejected, v1alpha1.CallUnknown, "",
	}
)
