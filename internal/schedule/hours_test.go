package schedule

import (
	"testing"
	"time"

	v1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

func TestCallingHours(t *testing.T) {
	std := campaign{}
	hours := func(start, end string) campaign { return campaign{start: start, end: end} }
	cases := []struct {
		name     string
		c        campaign
		zone     string // "" passes a nil location: the campaign default (UTC)
		t        string
		plus     time.Duration // added to t, for sub-minute edges
		wantIn   bool
		wantNext string // "" means t itself
	}{
		{name: "nil location is the default zone (UTC)", c: std, t: "2026-05-12 08:59:59", wantNext: "2026-05-12 09:00"},
		{name: "exactly at start", c: std, zone: "Asia/Tokyo", t: "2026-05-12 09:00", wantIn: true},
		{name: "one minute before end", c: std, zone: "Asia/Tokyo", t: "2026-05-12 19:59", wantIn: true},
		{name: "one nanosecond before end", c: std, zone: "Asia/Tokyo", t: "2026-05-12 19:59:59", plus: 999999999, wantIn: true},
		{name: "exactly at end", c: std, zone: "Asia/Tokyo", t: "2026-05-12 20:00", wantNext: "2026-05-13 09:00"},
		{name: "just after midnight", c: std, zone: "Asia/Tokyo", t: "2026-05-12 00:00", wantNext: "2026-05-12 09:00"},
		{name: "US spring forward: before the skipped start", c: hours("02:30", "20:00"), zone: "America/Los_Angeles",
			t: "2026-03-08 01:59", wantNext: "2026-03-08 03:00"},
		{name: "US spring forward: right after the jump", c: hours("02:30", "20:00"), zone: "America/Los_Angeles",
			t: "2026-03-08 03:00", wantIn: true},
		{name: "US fall back: first pass of the repeated hour after the start", c: hours("01:30", "20:00"), zone: "America/Los_Angeles",
			t: "2026-11-01 01:45 -0700", wantIn: true},
		{name: "US fall back: second pass before the start", c: hours("01:30", "20:00"), zone: "America/Los_Angeles",
			t: "2026-11-01 01:15 -0800", wantNext: "2026-11-01 01:30 -0800"},
		{name: "US fall back: second pass after the start", c: hours("01:30", "20:00"), zone: "America/Los_Angeles",
			t: "2026-11-01 01:45 -0800", wantIn: true},
		{name: "US fall back: an end inside the repeated hour opens again on its second pass", c: hours("00:00", "01:30"),
			zone: "America/Los_Angeles", t: "2026-11-01 01:45 -0700", wantNext: "2026-11-01 01:00 -0800"},
		{name: "EU spring forward on a Sunday-only campaign", zone: "Europe/Berlin",
			c: campaign{start: "02:15", end: "20:00", days: []v1alpha1.Weekday{"Sunday"}},
			t: "2026-03-28 21:00", wantNext: "2026-03-29 03:00"},
		{name: "EU fall back: the repeated hour after the start is inside both times", c: hours("02:00", "20:00"), zone: "Europe/Berlin",
			t: "2026-10-25 02:10 +0100", wantIn: true},
		{name: "Lord Howe spring forward: the skipped half hour", c: hours("02:10", "20:00"), zone: "Australia/Lord_Howe",
			t: "2026-10-04 01:59", wantNext: "2026-10-04 02:30"},
		{name: "Lord Howe fall back: the repeated half hour before the start", c: hours("01:45", "20:00"), zone: "Australia/Lord_Howe",
			t: "2026-04-05 01:35 +1030", wantNext: "2026-04-05 01:45 +1030"},
		{name: "Sunday only, from a Monday", c: campaign{days: []v1alpha1.Weekday{"Sunday"}}, zone: "Europe/Berlin",
			t: "2026-05-11 12:00", wantNext: "2026-05-17 09:00"},
		{name: "days are local days: Monday 07:30 in Tokyo is Sunday in UTC",
			c:    campaign{start: "07:00", end: "20:00", days: []v1alpha1.Weekday{"Monday"}},
			zone: "Asia/Tokyo", t: "2026-05-18 07:30", wantIn: true},
		{name: "days are local days: Sunday 23:30 in Tokyo is outside",
			c:    campaign{start: "07:00", end: "23:59", days: []v1alpha1.Weekday{"Monday"}},
			zone: "Asia/Tokyo", t: "2026-05-17 23:30", wantNext: "2026-05-18 07:00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.c.policy(t)
			zone := tc.zone
			var l *time.Location
			if zone == "" {
				zone = "UTC"
			} else {
				l = loc(t, zone)
			}
			at := wall(t, zone, tc.t).Add(tc.plus)
			if got := p.InCallingHours(l, at); got != tc.wantIn {
				t.Errorf("InCallingHours(%s) = %v, want %v", at.Format(time.RFC3339Nano), got, tc.wantIn)
			}
			want := at
			if tc.wantNext != "" {
				want = wall(t, zone, tc.wantNext)
			}
			got := p.NextAllowed(l, at)
			if !got.Equal(want) {
				t.Errorf("NextAllowed(%s) = %s, want %s", at.Format(time.RFC3339Nano), got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
			}
			if got.Location().String() != zone {
				t.Errorf("NextAllowed is in %s, want %s", got.Location(), zone)
			}
			if !p.InCallingHours(l, got) {
				t.Errorf("NextAllowed(%s) = %s is outside calling hours", at, got)
			}
		})
	}
}
