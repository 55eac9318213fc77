package schedule

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

// The fuzz targets' seed corpora run in every `go test`; `make fuzz`
// fuzzes them for longer.

// FuzzPlan compiles any calling hours, days, time zones and lead time, as a
// campaign's author may write them, and plans the first call and a retry of
// a delivery with any recipient time zone and any window from year 1 to
// 9999. A spec is refused with a SpecError naming each field, or compiles
// to calling hours that read back as written; a delivery is refused with an
// error that names its field; and a planned call lies inside the calling
// hours of the recipient's zone, before the window ends, and not before now
// (less the grace).
func FuzzPlan(f *testing.F) {
	f.Add("08:00", "20:00", uint8(0b0111110), "Europe/Berlin", "Europe/Berlin", int64(2*3600), int64(1796216400), int64(7200), int64(-3600), uint8(1), uint8(0))
	f.Add("", "", uint8(0), "", "", int64(0), int64(1796216400), int64(1), int64(0), uint8(0), uint8(2))
	f.Add("09:00", "09:01", uint8(1), "UTC", "Asia/Kathmandu", int64(48*3600), int64(1796216400), int64(72*3600), int64(86400), uint8(2), uint8(1))
	f.Add("01:30", "03:30", uint8(0), "UTC", "Australia/Lord_Howe", int64(60), int64(1790000000), int64(3600), int64(-30), uint8(1), uint8(3))
	f.Add("00:00", "23:59", uint8(0), "Pacific/Apia", "America/St_Johns", int64(1), int64(-62135596800), int64(1<<40), int64(0), uint8(1), uint8(4))
	f.Add("20:00", "08:00", uint8(0), "Mars/Olympus", "Local", int64(-1), int64(253402300799), int64(-5), int64(0), uint8(0), uint8(0))
	f.Add("24:00", "8:00", uint8(0x80), "../../etc/passwd", "Europe/Berlin\x00", int64(3600), int64(1796216400), int64(3600), int64(0), uint8(0), uint8(0))
	f.Add("08:00", "20:00", uint8(0), "UTC", "", int64(3600), int64(1796216400), int64(3600), int64(0), uint8(9), uint8(1))
	days := []v1alpha1.Weekday{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Funday"}
	results := []v1alpha1.CallResult{"", v1alpha1.CallNoAnswer, v1alpha1.CallBusy, v1alpha1.CallFailed, v1alpha1.CallMachine,
		v1alpha1.CallCanceled, v1alpha1.CallUnknown, v1alpha1.CallCompleted, v1alpha1.CallRejected, "sideways"}
	year1 := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	year9999 := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).Unix()
	clockNow := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, start, end string, dayBits uint8, defaultTZ, recipientTZ string, leadSec, windowStart, windowLen, nowOffset int64, result, attempts uint8) {
		spec := &v1alpha1.CallCampaignSpec{}
		spec.Schedule.LeadTime = &metav1.Duration{Duration: time.Duration(leadSec % (1 << 33) * int64(time.Second))}
		spec.Schedule.CallingHours = v1alpha1.CallingHours{Start: v1alpha1.ClockTime(start), End: v1alpha1.ClockTime(end)}
		for i, d := range days {
			if dayBits&(1<<i) != 0 {
				spec.Schedule.CallingHours.Days = append(spec.Schedule.CallingHours.Days, d)
			}
		}
		spec.Schedule.DefaultTimeZone = v1alpha1.TimeZone(defaultTZ)
		spec.Retry.RetryOn = []v1alpha1.CallResult{v1alpha1.CallNoAnswer, v1alpha1.CallBusy}
		p, err := Compile(spec)
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) || len(se.Problems) == 0 {
				t.Fatalf("Compile error %v is not a SpecError with problems", err)
			}
			for _, pr := range se.Problems {
				if !strings.HasPrefix(pr, "schedule.") && !strings.HasPrefix(pr, "retry.") {
					t.Fatalf("problem %q names no field", pr)
				}
			}
			return
		}
		if start != "" && clock(p.start) != start || end != "" && clock(p.end) != end || p.start >= p.end {
			t.Fatalf("calling hours %q-%q compiled to %s-%s", start, end, clock(p.start), clock(p.end))
		}
		o := oracle{start: clock(p.start), end: clock(p.end), days: map[time.Weekday]bool{}}
		for i := range 7 {
			if dayBits&(1<<i) != 0 {
				o.days[time.Weekday(i)] = true
			}
		}

		ws := year1 + mod(windowStart, year9999-year1)
		we := min(ws+mod(windowLen, 400*24*3600)+1, year9999)
		dspec := &v1alpha1.DeliverySpec{}
		dspec.Recipient.TimeZone = v1alpha1.TimeZone(recipientTZ)
		dspec.Window.Start = metav1.NewTime(time.Unix(ws, 0))
		dspec.Window.End = metav1.NewTime(time.Unix(we, 0))
		in, err := p.InputFor(dspec)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "recipient.timeZone: ") && !strings.HasPrefix(err.Error(), "window: ") {
				t.Fatalf("InputFor error names no field: %v", err)
			}
			if recipientTZ != "" && strings.HasPrefix(err.Error(), "recipient.timeZone: ") && !errors.Is(err, ErrUnknownTimeZone) {
				t.Fatalf("a time zone error does not wrap ErrUnknownTimeZone: %v", err)
			}
			return
		}
		o.loc = in.Location
		now := clockNow.Add(time.Duration(nowOffset%(400*24*3600)) * time.Second)
		first := p.First(in, now)
		checkInvariants(t, p, o, in, now, first, "first call")
		n := 1 + int(attempts)%4
		next := p.Next(in, n, results[int(result)%len(results)], now, now)
		checkInvariants(t, p, o, in, now, next, "retry")
		if next.Attempt != n+1 || (next.Reason == Planned) != next.Call() || next.Message == "" {
			t.Fatalf("retry decision %+v after %d attempts", next, n)
		}
	})
}

// mod is x modulo m, never negative.
func mod(x, m int64) int64 {
	if r := x % m; r >= 0 {
		return r
	}
	return x%m + m
}
