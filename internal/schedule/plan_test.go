package schedule

import (
	"strings"
	"testing"
	"time"

	v1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

// Calendar notes for the tables: 2026-05-16 is a Saturday; DST starts in the
// US on Sunday 2026-03-08 (02:00 -> 03:00) and ends on 2026-11-01 (02:00 ->
// 01:00); in the EU it starts on 2026-03-29 (02:00 -> 03:00 in Berlin) and
// ends on 2026-10-25 (03:00 -> 02:00); Lord Howe Island moves 30 minutes, on
// 2026-04-05 (02:00 -> 01:30) and 2026-10-04 (02:00 -> 02:30).

func TestFirst(t *testing.T) {
	std := campaign{lead: 2 * time.Hour}
	with := func(c campaign, f func(*campaign)) campaign { f(&c); return c }
	lead := func(d time.Duration) campaign { return with(std, func(c *campaign) { c.lead = d }) }
	hours := func(start, end string, lead time.Duration) campaign {
		return campaign{start: start, end: end, lead: lead}
	}

	cases := []struct {
		name        string
		c           campaign
		zone        string
		useDefault  bool // leave Input.Location nil; the campaign's default zone is zone
		ws, we, now string
		want        string // local wall time in zone; "" when no call
		reason      Reason
	}{
		// Plain planning and calling-hours edges.
		{name: "Tokyo: lead time before the window", c: std, zone: "Asia/Tokyo",
			ws: "2026-05-12 14:00", we: "2026-05-12 18:00", now: "2026-05-11 10:00", want: "2026-05-12 12:00"},
		{name: "Tokyo: before calling hours moves to their start", c: std, zone: "Asia/Tokyo",
			ws: "2026-05-12 09:00", we: "2026-05-12 12:00", now: "2026-05-11 10:00", want: "2026-05-12 09:00"},
		{name: "exactly at the start of calling hours is inside", c: std, zone: "Asia/Tokyo",
			ws: "2026-05-12 11:00", we: "2026-05-12 13:00", now: "2026-05-11 10:00", want: "2026-05-12 09:00"},
		{name: "one minute before the end of calling hours is inside", c: std, zone: "Asia/Tokyo",
			ws: "2026-05-12 21:59", we: "2026-05-12 23:00", now: "2026-05-11 10:00", want: "2026-05-12 19:59"},
		{name: "exactly at the end of calling hours is outside: next morning", c: std, zone: "Asia/Tokyo",
			ws: "2026-05-12 22:00", we: "2026-05-13 12:00", now: "2026-05-11 10:00", want: "2026-05-13 09:00"},
		{name: "exactly at the end of calling hours, window over that night", c: std, zone: "Asia/Tokyo",
			ws: "2026-05-12 22:00", we: "2026-05-12 23:00", now: "2026-05-11 10:00", reason: NoCallingHoursBeforeWindowEnd},
		{name: "lead time puts the call on the previous day", c: lead(16 * time.Hour), zone: "Asia/Tokyo",
			ws: "2026-05-12 10:00", we: "2026-05-12 14:00", now: "2026-05-10 10:00", want: "2026-05-11 18:00"},
		{name: "lead time puts the call on the previous night: moved to the morning", c: lead(12 * time.Hour), zone: "Asia/Tokyo",
			ws: "2026-05-12 10:00", we: "2026-05-12 14:00", now: "2026-05-10 10:00", want: "2026-05-12 09:00"},
		{name: "zero lead time calls at the window start", c: lead(0), zone: "Asia/Tokyo",
			ws: "2026-05-12 10:30", we: "2026-05-12 14:00", now: "2026-05-10 10:00", want: "2026-05-12 10:30"},
		{name: "recipient without a zone uses the campaign default", c: with(std, func(c *campaign) { c.tz = "Asia/Tokyo" }),
			zone: "Asia/Tokyo", useDefault: true,
			ws: "2026-05-12 14:00", we: "2026-05-12 18:00", now: "2026-05-11 10:00", want: "2026-05-12 12:00"},
		{name: "Los Angeles: calling hours apply in the recipient's zone", c: std, zone: "America/Los_Angeles",
			ws: "2026-05-12 10:00", we: "2026-05-12 14:00", now: "2026-05-11 10:00", want: "2026-05-12 09:00"},

		// Days of the week.
		{name: "weekdays only: Saturday moves to Monday", c: with(std, func(c *campaign) { c.days = weekdaysOnly }),
			zone: "Europe/Berlin", ws: "2026-05-16 12:00", we: "2026-05-18 18:00", now: "2026-05-15 12:00", want: "2026-05-18 09:00"},
		{name: "weekdays only: window over the weekend gets no call", c: with(std, func(c *campaign) { c.days = weekdaysOnly }),
			zone: "Europe/Berlin", ws: "2026-05-16 12:00", we: "2026-05-17 18:00", now: "2026-05-15 12:00", reason: NoCallingHoursBeforeWindowEnd},
		{name: "days are the recipient's local days (Monday 07:00 Tokyo is Sunday in UTC)",
			c:    campaign{start: "07:00", end: "20:00", days: []v1alpha1.Weekday{"Monday"}, lead: 9 * time.Hour},
			zone: "Asia/Tokyo", ws: "2026-05-18 08:00", we: "2026-05-18 12:00", now: "2026-05-15 12:00", want: "2026-05-18 07:00"},

		// The window end.
		{name: "now exactly at the window end", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 10:00", we: "2026-05-12 12:00", now: "2026-05-12 12:00", reason: WindowEnded},
		{name: "now after the window end", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 10:00", we: "2026-05-12 12:00", now: "2026-05-12 15:00", reason: WindowEnded},
		{name: "moved into calling hours lands exactly on the window end", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 06:00", we: "2026-05-12 09:00", now: "2026-05-11 12:00", reason: NoCallingHoursBeforeWindowEnd},
		{name: "moved into calling hours lands one minute before the window end", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 06:00", we: "2026-05-12 09:01", now: "2026-05-11 12:00", want: "2026-05-12 09:00"},

		// The grace period (1 minute) and planning late.
		{name: "planned 30 s ago is kept", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 14:00", we: "2026-05-12 18:00", now: "2026-05-12 12:00:30", want: "2026-05-12 12:00"},
		{name: "planned exactly the grace ago is kept", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 14:00", we: "2026-05-12 18:00", now: "2026-05-12 12:01", want: "2026-05-12 12:00"},
		{name: "planned more than the grace ago: call now", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 14:00", we: "2026-05-12 18:00", now: "2026-05-12 12:01:01", want: "2026-05-12 12:01:01"},
		{name: "delivery created inside its window: call now", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 14:00", we: "2026-05-12 18:00", now: "2026-05-12 15:30", want: "2026-05-12 15:30"},
		{name: "passed within the grace but now is after hours: next morning", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 21:59:45", we: "2026-05-13 12:00", now: "2026-05-12 20:00:10", want: "2026-05-13 09:00"},
		{name: "passed long ago and now is after hours: next morning", c: std, zone: "Europe/Berlin",
			ws: "2026-05-12 10:00", we: "2026-05-13 18:00", now: "2026-05-12 21:00", want: "2026-05-13 09:00"},

		// US daylight saving time (America/Los_Angeles).
		{name: "US spring forward: a start in the skipped hour begins at the jump", c: hours("02:30", "20:00", 5*time.Hour),
			zone: "America/Los_Angeles", ws: "2026-03-08 06:00", we: "2026-03-08 10:00", now: "2026-03-07 12:00", want: "2026-03-08 03:00"},
		{name: "US spring forward: lead time is elapsed time, not wall time", c: hours("01:00", "20:00", 10*time.Hour),
			zone: "America/Los_Angeles", ws: "2026-03-08 12:00", we: "2026-03-08 16:00", now: "2026-03-07 12:00", want: "2026-03-08 01:00"},
		{name: "US spring forward: an end in the skipped hour ends at the jump", c: hours("00:00", "02:30", 0),
			zone: "America/Los_Angeles", ws: "2026-03-08 03:05", we: "2026-03-09 12:00", now: "2026-03-07 12:00", want: "2026-03-09 00:00"},
		{name: "US fall back: a start in the repeated hour, first occurrence", c: hours("01:30", "20:00", 10*time.Hour),
			zone: "America/Los_Angeles", ws: "2026-11-01 10:00", we: "2026-11-01 12:00", now: "2026-10-31 12:00", want: "2026-11-01 01:30 -0700"},
		{name: "US fall back: due in the repeated hour's second pass, before the start", c: hours("01:30", "20:00", 9*time.Hour),
			zone: "America/Los_Angeles", ws: "2026-11-01 10:00", we: "2026-11-01 12:00", now: "2026-10-31 12:00", want: "2026-11-01 01:30 -0800"},
		{name: "US fall back: ordinary morning call", c: std,
			zone: "America/Los_Angeles", ws: "2026-11-01 11:00", we: "2026-11-01 13:00", now: "2026-10-31 12:00", want: "2026-11-01 09:00"},

		// EU daylight saving time (Europe/Berlin).
		{name: "EU spring forward: a start in the skipped hour begins at the jump", c: hours("02:15", "20:00", 7*time.Hour),
			zone: "Europe/Berlin", ws: "2026-03-29 08:00", we: "2026-03-29 12:00", now: "2026-03-28 12:00", want: "2026-03-29 03:00"},
		{name: "EU spring forward: lead time over the jump", c: hours("01:00", "20:00", 2*time.Hour),
			zone: "Europe/Berlin", ws: "2026-03-29 04:00", we: "2026-03-29 12:00", now: "2026-03-28 12:00", want: "2026-03-29 01:00"},
		{name: "EU fall back: a start in the repeated hour, first occurrence", c: hours("02:30", "20:00", 5*time.Hour),
			zone: "Europe/Berlin", ws: "2026-10-25 06:00", we: "2026-10-25 10:00", now: "2026-10-24 12:00", want: "2026-10-25 02:30 +0200"},
		{name: "EU fall back: due in the repeated hour's second pass", c: hours("02:30", "20:00", 4*time.Hour),
			zone: "Europe/Berlin", ws: "2026-10-25 06:00", we: "2026-10-25 10:00", now: "2026-10-24 12:00", want: "2026-10-25 02:30 +0100"},

		// Lord Howe Island: 30-minute DST.
		{name: "Lord Howe spring forward: a start in the skipped half hour", c: hours("02:10", "20:00", 8*time.Hour),
			zone: "Australia/Lord_Howe", ws: "2026-10-04 08:00", we: "2026-10-04 12:00", now: "2026-10-03 12:00", want: "2026-10-04 02:30"},
		{name: "Lord Howe fall back: a start in the repeated half hour, first occurrence", c: hours("01:45", "20:00", 7*time.Hour+30*time.Minute),
			zone: "Australia/Lord_Howe", ws: "2026-04-05 08:00", we: "2026-04-05 12:00", now: "2026-04-04 12:00", want: "2026-04-05 01:45 +1100"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			in := Input{WindowStart: wall(t, tc.zone, tc.ws), WindowEnd: wall(t, tc.zone, tc.we)}
			if tc.useDefault {
				c.tz = tc.zone
			} else {
				in.Location = loc(t, tc.zone)
			}
			got := c.policy(t).First(in, wall(t, tc.zone, tc.now))
			checkDecision(t, got, wall(t, tc.zone, tc.want), tc.reason, 1)
		})
	}
}

func TestNext(t *testing.T) {
	std := campaign{lead: 2 * time.Hour, max: 5, backoff: []time.Duration{15 * time.Minute, time.Hour}}
	with := func(f func(*campaign)) campaign { c := std; f(&c); return c }
	allDay := func(backoff time.Duration) campaign {
		return campaign{start: "00:00", end: "23:59", max: 3, backoff: []time.Duration{backoff}}
	}

	cases := []struct {
		name          string
		c             campaign
		zone          string // default Europe/Berlin
		ws, we        string // default 2026-05-12 10:00 to 2026-05-13 18:00
		attempts      int
		result        v1alpha1.CallResult
		lastEnd, now  string // now defaults to lastEnd
		want          string
		reason        Reason
		wantAttemptNo int // default attempts+1
	}{
		{name: "no-answer: first backoff step", c: std, attempts: 1, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-05-12 10:00:40", now: "2026-05-12 10:00:45", want: "2026-05-12 10:15:40"},
		{name: "busy after attempt 2: second step", c: std, attempts: 2, result: v1alpha1.CallBusy,
			lastEnd: "2026-05-12 10:20", want: "2026-05-12 11:20"},
		{name: "failed after attempt 3: the last step repeats", c: std, attempts: 3, result: v1alpha1.CallFailed,
			lastEnd: "2026-05-12 11:30", want: "2026-05-12 12:30"},
		{name: "attempt 5 of 5 is still planned", c: std, attempts: 4, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-05-12 12:30", want: "2026-05-12 13:30"},
		{name: "max attempts reached", c: std, attempts: 5, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-05-12 13:30", reason: MaxAttemptsReached},
		{name: "max attempts 1: no retry", c: with(func(c *campaign) { c.max = 1 }), attempts: 1, result: v1alpha1.CallBusy,
			lastEnd: "2026-05-12 10:00", reason: MaxAttemptsReached},
		{name: "completed ends it", c: std, attempts: 1, result: v1alpha1.CallCompleted,
			lastEnd: "2026-05-12 10:00", reason: ResultNotRetryable},
		{name: "completed on the last attempt is not retryable rather than max attempts", c: std, attempts: 5, result: v1alpha1.CallCompleted,
			lastEnd: "2026-05-12 10:00", reason: ResultNotRetryable},
		{name: "rejected ends it", c: std, attempts: 1, result: v1alpha1.CallRejected,
			lastEnd: "2026-05-12 10:00", reason: ResultNotRetryable},
		{name: "machine is not retried by default", c: std, attempts: 1, result: v1alpha1.CallMachine,
			lastEnd: "2026-05-12 10:00", reason: ResultNotRetryable},
		{name: "canceled is not retried by default", c: std, attempts: 1, result: v1alpha1.CallCanceled,
			lastEnd: "2026-05-12 10:00", reason: ResultNotRetryable},
		{name: "machine is retried when listed",
			c:        with(func(c *campaign) { c.retryOn = []v1alpha1.CallResult{v1alpha1.CallMachine, v1alpha1.CallCanceled} }),
			attempts: 1, result: v1alpha1.CallMachine, lastEnd: "2026-05-12 10:00", want: "2026-05-12 10:15"},
		{name: "canceled is retried when listed",
			c:        with(func(c *campaign) { c.retryOn = []v1alpha1.CallResult{v1alpha1.CallMachine, v1alpha1.CallCanceled} }),
			attempts: 2, result: v1alpha1.CallCanceled, lastEnd: "2026-05-12 10:00", want: "2026-05-12 11:00"},
		{name: "no-answer is not retried when the list leaves it out",
			c:        with(func(c *campaign) { c.retryOn = []v1alpha1.CallResult{v1alpha1.CallMachine} }),
			attempts: 1, result: v1alpha1.CallNoAnswer, lastEnd: "2026-05-12 10:00", reason: ResultNotRetryable},
		{name: "a call in progress has no result yet", c: std, attempts: 1, result: "",
			lastEnd: "2026-05-12 10:00", reason: ResultPending},
		{name: "an ambiguous dial is never redialled blindly", c: std, attempts: 1, result: v1alpha1.CallUnknown,
			lastEnd: "2026-05-12 10:00", reason: ResultPending},
		{name: "retry after calling hours moves to the next morning", c: std, attempts: 1, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-05-12 19:50", want: "2026-05-13 09:00"},
		{name: "retry after calling hours, window over that night", c: std, we: "2026-05-12 22:00", attempts: 1,
			result: v1alpha1.CallNoAnswer, lastEnd: "2026-05-12 19:50", reason: NoCallingHoursBeforeWindowEnd},
		{name: "retry due exactly at the window end", c: std, we: "2026-05-12 12:00", attempts: 1,
			result: v1alpha1.CallNoAnswer, lastEnd: "2026-05-12 11:45", reason: WindowEnded},
		{name: "retry due after the window end", c: std, we: "2026-05-12 12:00", attempts: 1,
			result: v1alpha1.CallBusy, lastEnd: "2026-05-12 11:50", reason: WindowEnded},
		{name: "a window moved to the next day while attempt 1 called: the retry waits for its lead time", c: std,
			ws: "2026-05-13 12:00", we: "2026-05-13 14:00", attempts: 1, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-05-12 10:00:40", want: "2026-05-13 10:00"},
		{name: "a backoff that ends after the lead time point is kept", c: std,
			ws: "2026-05-12 10:10", attempts: 1, result: v1alpha1.CallBusy,
			lastEnd: "2026-05-12 08:00", want: "2026-05-12 09:00"},
		{name: "retry due one minute before the window end", c: std, we: "2026-05-12 12:00", attempts: 1,
			result: v1alpha1.CallBusy, lastEnd: "2026-05-12 11:44", want: "2026-05-12 11:59"},
		{name: "planned late: a retry due long ago calls now", c: std, attempts: 1, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-05-12 10:00", now: "2026-05-12 10:40", want: "2026-05-12 10:40"},
		{name: "planned late after the window end", c: std, attempts: 1, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-05-12 10:00", now: "2026-05-13 18:00", reason: WindowEnded},
		{name: "zero last end counts from now", c: std, attempts: 1, result: v1alpha1.CallNoAnswer,
			now: "2026-05-12 10:00", want: "2026-05-12 10:15"},
		{name: "no attempt made yet is the first call", c: std, attempts: 0,
			now: "2026-05-11 10:00", want: "2026-05-12 09:00", wantAttemptNo: 1},
		{name: "EU fall back: backoff is elapsed time", c: allDay(time.Hour),
			ws: "2026-10-25 01:00", we: "2026-10-25 12:00", attempts: 1, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-10-25 02:50 +0200", want: "2026-10-25 02:50 +0100"},
		{name: "US spring forward: backoff over the jump", c: allDay(time.Hour), zone: "America/Los_Angeles",
			ws: "2026-03-08 01:00", we: "2026-03-08 12:00", attempts: 1, result: v1alpha1.CallBusy,
			lastEnd: "2026-03-08 01:30", want: "2026-03-08 03:30"},
		{name: "Tokyo: retry the next morning on weekdays only skips the weekend",
			c:    with(func(c *campaign) { c.days = weekdaysOnly }),
			zone: "Asia/Tokyo", ws: "2026-05-15 18:00", we: "2026-05-18 12:00", attempts: 2, result: v1alpha1.CallNoAnswer,
			lastEnd: "2026-05-15 19:30", want: "2026-05-18 09:00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			zone := tc.zone
			if zone == "" {
				zone = "Europe/Berlin"
			}
			ws, we := tc.ws, tc.we
			if ws == "" {
				ws = "2026-05-12 10:00"
			}
			if we == "" {
				we = "2026-05-13 18:00"
			}
			now := tc.now
			if now == "" {
				now = tc.lastEnd
			}
			in := Input{Location: loc(t, zone), WindowStart: wall(t, zone, ws), WindowEnd: wall(t, zone, we)}
			got := tc.c.policy(t).Next(in, tc.attempts, tc.result, wall(t, zone, tc.lastEnd), wall(t, zone, now))
			n := tc.wantAttemptNo
			if n == 0 {
				n = tc.attempts + 1
			}
			checkDecision(t, got, wall(t, zone, tc.want), tc.reason, n)
		})
	}
}

func TestWithGrace(t *testing.T) {
	p, err := Compile(campaign{lead: 2 * time.Hour}.spec(), WithGrace(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	const z = "Europe/Berlin"
	in := Input{Location: loc(t, z), WindowStart: wall(t, z, "2026-05-12 14:00"), WindowEnd: wall(t, z, "2026-05-12 18:00")}
	checkDecision(t, p.First(in, wall(t, z, "2026-05-12 12:04")), wall(t, z, "2026-05-12 12:00"), Planned, 1)
	checkDecision(t, p.First(in, wall(t, z, "2026-05-12 12:06")), wall(t, z, "2026-05-12 12:06"), Planned, 1)
	if p.Grace() != 5*time.Minute {
		t.Errorf("Grace() = %s, want 5m", p.Grace())
	}
}

func TestEarliest(t *testing.T) {
	// A worker finds attempt 2 due at 20:03 local (it was delayed): it goes
	// back to the next morning, or is dropped when the window ends first.
	p := campaign{}.policy(t)
	const z = "America/Los_Angeles"
	in := Input{Location: loc(t, z), WindowStart: wall(t, z, "2026-05-12 16:00"), WindowEnd: wall(t, z, "2026-05-13 12:00")}
	now := wall(t, z, "2026-05-12 20:03")
	checkDecision(t, p.Earliest(in, 2, now, now), wall(t, z, "2026-05-13 09:00"), Planned, 2)
	in.WindowEnd = wall(t, z, "2026-05-12 23:00")
	checkDecision(t, p.Earliest(in, 2, now, now), time.Time{}, NoCallingHoursBeforeWindowEnd, 2)
}

func TestDecisionMessages(t *testing.T) {
	p := campaign{lead: 2 * time.Hour, days: weekdaysOnly, backoff: []time.Duration{15 * time.Minute}}.policy(t)
	const z = "Europe/Berlin"
	in := Input{Location: loc(t, z), WindowStart: wall(t, z, "2026-05-16 12:00"), WindowEnd: wall(t, z, "2026-05-18 18:00")}
	d := p.First(in, wall(t, z, "2026-05-15 12:00"))
	for _, want := range []string{"attempt 1 at 2026-05-18 09:00 CEST (Europe/Berlin)", "2h before the window opens",
		"moved into calling hours 09:00-20:00 Mon,Tue,Wed,Thu,Fri"} {
		if !strings.Contains(d.Message, want) {
			t.Errorf("message %q lacks %q", d.Message, want)
		}
	}
	d = p.Next(in, 1, v1alpha1.CallBusy, wall(t, z, "2026-05-18 10:00:30"), wall(t, z, "2026-05-18 10:00:31"))
	if want := "attempt 2 at 2026-05-18 10:15:30 CEST (Europe/Berlin), 15m after attempt 1 ended busy"; d.Message != want {
		t.Errorf("message %q, want %q", d.Message, want)
	}
	in.WindowEnd = wall(t, z, "2026-05-17 18:00")
	d = p.First(in, wall(t, z, "2026-05-15 12:00"))
	if want := "no calling hours (09:00-20:00 Mon,Tue,Wed,Thu,Fri, Europe/Berlin)"; !strings.Contains(d.Message, want) {
		t.Errorf("message %q lacks %q", d.Message, want)
	}
	if !strings.HasPrefix(d.String(), "NoCallingHoursBeforeWindowEnd: ") {
		t.Errorf("String() = %q", d.String())
	}
}

func TestReasonAndDecision(t *testing.T) {
	names := map[Reason]string{
		Planned: "Planned", MaxAttemptsReached: "MaxAttemptsReached", WindowEnded: "WindowEnded",
		NoCallingHoursBeforeWindowEnd: "NoCallingHoursBeforeWindowEnd", ResultNotRetryable: "ResultNotRetryable",
		ResultPending: "ResultPending", Reason(99): "Reason(99)", Reason(-1): "Reason(-1)",
	}
	for r, want := range names {
		if got := r.String(); got != want {
			t.Errorf("Reason(%d).String() = %q, want %q", int(r), got, want)
		}
	}
	for r := Planned; r <= ResultPending; r++ {
		d := Decision{Reason: r}
		if d.Call() != (r == Planned) {
			t.Errorf("%s: Call() = %v", r, d.Call())
		}
		if d.Final() != (r != Planned && r != ResultPending) {
			t.Errorf("%s: Final() = %v", r, d.Final())
		}
	}
}
