package schedule

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

func TestCompileDefaults(t *testing.T) {
	p, err := Compile(&v1alpha1.CallCampaignSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultLocation().String() != "UTC" || p.LeadTime() != 2*time.Hour || p.MaxAttempts() != 3 || p.Grace() != DefaultGrace {
		t.Errorf("defaults: zone %s, lead %s, max %d, grace %s", p.DefaultLocation(), p.LeadTime(), p.MaxAttempts(), p.Grace())
	}
	for n, want := range map[int]time.Duration{0: 15 * time.Minute, 1: 15 * time.Minute, 2: time.Hour, 3: time.Hour, 9: time.Hour} {
		if got := p.Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, want)
		}
	}
	for _, r := range allResults {
		want := r == v1alpha1.CallNoAnswer || r == v1alpha1.CallBusy || r == v1alpha1.CallFailed
		if p.Retryable(r) != want {
			t.Errorf("Retryable(%q) = %v, want %v", r, !want, want)
		}
	}
	utc := loc(t, "UTC")
	for s, want := range map[string]bool{"08:59": false, "09:00": true, "19:59": true, "20:00": false} {
		at := wall(t, "UTC", "2026-05-16 "+s) // a Saturday: every day is allowed
		if p.InCallingHours(utc, at) != want {
			t.Errorf("default calling hours at %s: in = %v, want %v", s, !want, want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	d := func(x time.Duration) metav1.Duration { return metav1.Duration{Duration: x} }
	cases := []struct {
		name string
		spec *v1alpha1.CallCampaignSpec
		want []string
	}{
		{name: "nil spec", spec: nil, want: []string{"no campaign spec"}},
		{name: "unknown default time zone", spec: campaign{tz: "Mars/Olympus_Mons"}.spec(),
			want: []string{`schedule.defaultTimeZone: unknown time zone "Mars/Olympus_Mons"`}},
		{name: "Local is machine-dependent", spec: campaign{tz: "Local"}.spec(),
			want: []string{`unknown time zone "Local"`}},
		{name: "start after end", spec: campaign{start: "21:00", end: "08:00"}.spec(),
			want: []string{"start 21:00 must be before end 08:00"}},
		{name: "start equals end", spec: campaign{start: "09:00", end: "09:00"}.spec(),
			want: []string{"start 09:00 must be before end 09:00"}},
		{name: "start after the default end", spec: campaign{start: "21:00"}.spec(),
			want: []string{"start 21:00 must be before end 20:00"}},
		{name: "every problem at once", spec: func() *v1alpha1.CallCampaignSpec {
			s := campaign{start: "9:00", end: "24:00", days: []v1alpha1.Weekday{"Monday", "Funday"}, tz: "Nowhere/City",
				lead: -time.Minute, max: -1, retryOn: []v1alpha1.CallResult{"no-answer", "completed", "unknown"}}.spec()
			s.Retry.Backoff = []metav1.Duration{d(time.Minute), d(0), d(-time.Second)}
			return s
		}(), want: []string{
			"schedule.leadTime -1m0s must not be negative",
			`schedule.callingHours.start: "9:00" is not a time of day`,
			`schedule.callingHours.end: "24:00" is not a time of day`,
			`schedule.callingHours.days: "Funday" is not a day of the week`,
			`schedule.defaultTimeZone: unknown time zone "Nowhere/City"`,
			"retry.maxAttempts -1 must be at least 1",
			"retry.backoff[1] 0s must be positive",
			"retry.backoff[2] -1s must be positive",
			`retry.retryOn: "completed" cannot be retried`,
			`retry.retryOn: "unknown" cannot be retried`,
		}},
		{name: "malformed clocks", spec: campaign{start: "+9:00", end: "12:60"}.spec(),
			want: []string{`start: "+9:00" is not`, `end: "12:60" is not`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.spec)
			if err == nil {
				t.Fatalf("Compile succeeded (%+v), want an error", p)
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *SpecError", err)
			}
			if len(se.Problems) != len(tc.want) {
				t.Errorf("%d problems, want %d: %v", len(se.Problems), len(tc.want), err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "invalid schedule: ") {
				t.Errorf("message is not one line with the prefix: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestInputFor(t *testing.T) {
	p := campaign{tz: "Europe/Berlin"}.policy(t)
	ws := time.Date(2026, 5, 12, 8, 0, 0, 0, time.UTC)
	spec := func(tz string, start, end time.Time) *v1alpha1.DeliverySpec {
		s := &v1alpha1.DeliverySpec{}
		s.Recipient.TimeZone = v1alpha1.TimeZone(tz)
		s.Window = v1alpha1.DeliveryWindow{Start: metav1.NewTime(start), End: metav1.NewTime(end)}
		return s
	}

	in, err := p.InputFor(spec("Asia/Tokyo", ws, ws.Add(4*time.Hour)))
	if err != nil || in.Location.String() != "Asia/Tokyo" || !in.WindowStart.Equal(ws) || !in.WindowEnd.Equal(ws.Add(4*time.Hour)) {
		t.Errorf("InputFor(Tokyo) = %+v, %v", in, err)
	}
	if in, err := p.InputFor(spec("", ws, ws.Add(time.Hour))); err != nil || in.Location.String() != "Europe/Berlin" {
		t.Errorf("InputFor(no zone) = %+v, %v; want the campaign default Europe/Berlin", in, err)
	}

	for _, tz := range []string{"Mars/Olympus_Mons", "Local", "Europe/../../etc/passwd"} {
		_, err := p.InputFor(spec(tz, ws, ws.Add(time.Hour)))
		if !errors.Is(err, ErrUnknownTimeZone) || !strings.Contains(err.Error(), "recipient.timeZone") {
			t.Errorf("InputFor(%q) error = %v, want ErrUnknownTimeZone naming recipient.timeZone", tz, err)
		}
	}
	bad := []*v1alpha1.DeliverySpec{nil, spec("UTC", ws, ws), spec("UTC", ws, ws.Add(-time.Hour)), spec("UTC", time.Time{}, ws)}
	for i, s := range bad {
		if _, err := p.InputFor(s); err == nil {
			t.Errorf("bad delivery %d: no error", i)
		}
	}
}

func TestLoadLocationCaches(t *testing.T) {
	a, err := LoadLocation("Australia/Lord_Howe")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := LoadLocation("Australia/Lord_Howe")
	if a != b {
		t.Errorf("LoadLocation returned a new *Location for the same name")
	}
	if _, err := LoadLocation(""); !errors.Is(err, ErrUnknownTimeZone) {
		t.Errorf(`LoadLocation("") error = %v`, err)
	}
}
