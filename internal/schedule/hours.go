package schedule

import "time"

// Calling hours are a set of instants: those whose wall-clock time in the
// recipient's zone lies in [start, end) on an allowed day of the week. This
// settles daylight saving time without special cases: when the clocks spring
// forward over the start (02:30 on a day that skips 02:00-03:00), calling
// begins at the jump (03:00); when they fall back, a repeated wall time is
// reached first in its earlier occurrence, and the hour that repeats before
// the start is outside the hours both times.

// InCallingHours reports whether t lies inside the policy's calling hours in
// loc (nil: the policy's default time zone).
func (p *Policy) InCallingHours(loc *time.Location, t time.Time) bool {
	lt := t.In(p.loc(loc))
	if !p.days[lt.Weekday()] {
		return false
	}
	tod := time.Duration(lt.Hour())*time.Hour + time.Duration(lt.Minute())*time.Minute +
		time.Duration(lt.Second())*time.Second + time.Duration(lt.Nanosecond())
	return tod >= p.start && tod < p.end
}

// NextAllowed returns the earliest instant at or after t inside the calling
// hours in loc (nil: the policy's default time zone), expressed in loc. It is
// t itself when t is inside them.
func (p *Policy) NextAllowed(loc *time.Location, t time.Time) time.Time {
	at, _ := p.nextAllowed(p.loc(loc), t)
	return at
}

// maxSegments bounds the walk over time zone offset periods. A week holds at
// least one calling day and real zones change offset a few times a year, so
// a handful of periods is ever visited.
const maxSegments = 64

// nextAllowed walks the periods of constant UTC offset from t. Within one
// period the wall clock is the instant plus a fixed offset, so the earliest
// allowed wall time is found by plain calendar arithmetic; if it falls past
// the period's end, the search continues at the start of the next period.
// ok is false only if no allowed instant was found in maxSegments periods.
func (p *Policy) nextAllowed(loc *time.Location, t time.Time) (at time.Time, ok bool) {
	cur := t.Round(0) // drop any monotonic clock reading
	for range maxSegments {
		lt := cur.In(loc)
		_, off := lt.Zone()
		_, periodEnd := lt.ZoneBounds()
		wall := time.Date(lt.Year(), lt.Month(), lt.Day(), lt.Hour(), lt.Minute(), lt.Second(), lt.Nanosecond(), time.UTC)
		u := p.nextAllowedWall(wall).Add(-time.Duration(off) * time.Second)
		if periodEnd.IsZero() || u.Before(periodEnd) {
			return u.In(loc), true
		}
		cur = periodEnd
	}
	return cur.In(loc), false
}

// nextAllowedWall returns the earliest wall-clock time (carried in a UTC
// time.Time) at or after wall that is inside the calling hours.
func (p *Policy) nextAllowedWall(wall time.Time) time.Time {
	midnight := time.Date(wall.Year(), wall.Month(), wall.Day(), 0, 0, 0, 0, time.UTC)
	for d := range 8 {
		day := midnight.AddDate(0, 0, d)
		if !p.days[day.Weekday()] {
			continue
		}
		if s := day.Add(p.start); wall.Before(s) {
			return s
		}
		if wall.Before(day.Add(p.end)) {
			return wall
		}
	}
	// Unreachable: Compile guarantees at least one calling day a week.
	return wall
}
