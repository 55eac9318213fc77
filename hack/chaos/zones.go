package main

import (
	"fmt"
	"time"

	"github.com/delauto/delauto/internal/localcluster"
)

// zones are the recipients' time zones, chosen from the run's start so that
// the campaigns' calling hours (one start-end for both) open for one zone
// a third into the run, close for another two thirds into it, stay open for
// a third and closed for a fourth. The machine's clock is not touched.
type zones struct {
	start, end                  string // the calling hours, "15:04"
	opens, closes, open, closed string // IANA names (fixed offsets: Etc/GMT-N is UTC+N)
	opensAt, closesAt           time.Time
	hours                       map[string]localcluster.Hours
}

// etcZone is the IANA zone of a fixed whole-hour offset from UTC.
func etcZone(off int) string {
	switch {
	case off == 0:
		return "Etc/UTC"
	case off > 0:
		return fmt.Sprintf("Etc/GMT-%d", off)
	default:
		return fmt.Sprintf("Etc/GMT+%d", -off)
	}
}

// pickZones chooses the zones for a run starting at t0. The zone whose
// hours open has a local time between 06:00 and 12:00 at t0; the hours
// start a third into the run there; the zone 4 h east of it closes two
// thirds into the run, the zone 2 h east is open all along and the one 3 h
// west is closed all along.
func pickZones(t0 time.Time, length time.Duration) (zones, error) {
	t0 = t0.UTC()
	for local := 6; local < 12; local++ {
		off := local - t0.Hour()
		for off < -12 {
			off += 24
		}
		for off > 14 {
			off -= 24
		}
		if off-3 < -12 || off+4 > 14 {
			continue
		}
		z := zones{opens: etcZone(off), closes: etcZone(off + 4), open: etcZone(off + 2), closed: etcZone(off - 3)}
		shift := time.Duration(off) * time.Hour
		// Minute precision: the hours open at the next whole minute after a
		// third of the run, and close at the next after two thirds.
		s := t0.Add(length / 3).Truncate(time.Minute).Add(time.Minute)
		e := t0.Add(2 * length / 3).Truncate(time.Minute).Add(time.Minute)
		if e.Before(s.Add(time.Minute)) {
			// A short run: the two whole minutes would coincide.
			e = s.Add(time.Minute)
		}
		z.opensAt, z.closesAt = s, e
		z.start = s.Add(shift).Format("15:04")
		z.end = e.Add(shift + 4*time.Hour).Format("15:04")
		z.hours = map[string]localcluster.Hours{}
		for _, name := range []string{z.opens, z.closes, z.open, z.closed} {
			loc, err := time.LoadLocation(name)
			if err != nil {
				return zones{}, err
			}
			if z.hours[name], err = localcluster.ParseHours(z.start, z.end, loc); err != nil {
				return zones{}, err
			}
		}
		return z, nil
	}
	return zones{}, fmt.Errorf("no fixed-offset zones fit a run starting %s", t0)
}

// assign gives the i-th Delivery its zone: 3 in 10 where the hours open,
// 3 where they close, 3 open all along, 1 closed all along.
func (z zones) assign(t *tracked, i int) {
	switch i % 10 {
	case 0, 3, 6:
		t.zone = z.opens
	case 1, 4, 7:
		t.zone = z.closes
	case 2, 5, 8:
		t.zone = z.open
	default:
		t.zone = z.closed
	}
	t.hours = z.hours[t.zone]
}

// windowStart is when the Delivery's two-hour window opens: within the
// next spread seconds (its call due at once: the campaigns' lead time is
// 5 minutes), but for recipients whose hours stay closed through the run,
// ten minutes after their hours open (a call planned hours ahead).
func (z zones) windowStart(t *tracked, now time.Time, spread int) time.Time {
	if t.zone == z.closed {
		loc := t.hours.Zone
		lt := now.In(loc)
		open := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, loc).Add(t.hours.Start)
		if open.Before(now) {
			open = open.AddDate(0, 0, 1)
		}
		return open.Add(10 * time.Minute).UTC().Truncate(time.Second)
	}
	return now.Add(time.Duration(spread) * time.Second).UTC().Truncate(time.Second)
}
