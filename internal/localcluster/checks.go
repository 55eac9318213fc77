package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/twiliosim"
)

// The invariants a whole-system run checks at its end, from the simulator's
// own records, the apiserver and every component's log. `make test-e2e` and
// `make chaos` share them. Each returns what it found wrong, one line per
// problem, nil when the invariant holds.

// DuplicateCalls lists the attempts the simulator got more than one call for.
func DuplicateCalls(sim *twiliosim.Sim) []string {
	dup := sim.DuplicateAttempts()
	out := make([]string, 0, len(dup))
	for id, n := range dup {
		out = append(out, fmt.Sprintf("attempt %s was called %d times", id, n))
	}
	sort.Strings(out)
	return out
}

// Hours are the calling hours of a recipient: [Start, End) of the wall clock
// in Zone, every day.
type Hours struct {
	Zone       *time.Location
	Start, End time.Duration
}

// ParseHours reads "15:04" calling hours in zone.
func ParseHours(start, end string, zone *time.Location) (Hours, error) {
	h := Hours{Zone: zone}
	for _, p := range []struct {
		s string
		d *time.Duration
	}{{start, &h.Start}, {end, &h.End}} {
		t, err := time.Parse("15:04", p.s)
		if err != nil {
			return Hours{}, fmt.Errorf("calling hours %q: %w", p.s, err)
		}
		*p.d = time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute
	}
	return h, nil
}

// Contains reports whether t is inside the hours.
func (h Hours) Contains(t time.Time) bool {
	lt := t.In(h.Zone)
	tod := time.Duration(lt.Hour())*time.Hour + time.Duration(lt.Minute())*time.Minute + time.Duration(lt.Second())*time.Second
	return tod >= h.Start && tod < h.End
}

// CallsOutsideHours lists the calls created outside their recipient's
// calling hours; hoursOf gives a number's hours (false: not ours, skipped).
func CallsOutsideHours(sim *twiliosim.Sim, hoursOf func(to string) (Hours, bool)) []string {
	var out []string
	for _, c := range sim.Creates() {
		if !c.Created() {
			continue
		}
		h, ok := hoursOf(c.To)
		if !ok || h.Contains(c.Time) {
			continue
		}
		out = append(out, fmt.Sprintf("call %s (attempt %s) placed at %s local time in %s, outside the calling hours %s-%s",
			c.CallSid, c.AttemptID, c.Time.In(h.Zone).Format("15:04:05"), h.Zone, clock(h.Start), clock(h.End)))
	}
	return out
}

func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60)
}

// CampaignTotals compares the campaign's status totals, phase by phase,
// with the phases of its namespace's Deliveries (all of them are the
// campaign's).
func CampaignTotals(ctx context.Context, c client.Client, namespace, name string) error {
	var cc v1.CallCampaign
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &cc); err != nil {
		return err
	}
	var dl v1.DeliveryList
	if err := c.List(ctx, &dl, client.InNamespace(namespace)); err != nil {
		return err
	}
	count := map[v1.DeliveryPhase]int32{}
	for _, d := range dl.Items {
		count[d.Status.Phase]++
	}
	tot := cc.Status.Totals
	got := []struct {
		p v1.DeliveryPhase
		n int32
	}{
		{v1.DeliveryPending, tot.Pending}, {v1.DeliveryScheduled, tot.Scheduled}, {v1.DeliveryCalling, tot.Calling},
		{v1.DeliveryConfirmed, tot.Confirmed}, {v1.DeliveryRescheduleRequested, tot.RescheduleRequested},
		{v1.DeliveryInstructionsRecorded, tot.InstructionsRecorded}, {v1.DeliveryOptedOut, tot.OptedOut},
		{v1.DeliveryUnreachable, tot.Unreachable}, {v1.DeliveryCancelled, tot.Cancelled}, {v1.DeliveryFailed, tot.Failed},
	}
	var bad []string
	for _, g := range got {
		if count[g.p] != g.n {
			bad = append(bad, fmt.Sprintf("%d %s (the Deliveries: %d)", g.n, g.p, count[g.p]))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("campaign %s/%s: its totals say %s", namespace, name, strings.Join(bad, ", "))
	}
	return nil
}

// WaitFor calls f every 2 s until it succeeds or d passes; it returns f's
// last error.
func WaitFor(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(2 * time.Second)
	}
}

// LogProblems reads every component's log under dir: DelAuto's own (the
// pods' and the pod runner's) must not say "forbidden" (a missing RBAC
// verb), and no log may hold a match of number (a phone number). checked is
// how many logs were read.
func LogProblems(dir string, number *regexp.Regexp) (checked int, problems []string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".log") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		checked++
		rel, _ := filepath.Rel(dir, p)
		ours := strings.HasPrefix(rel, "pods"+string(filepath.Separator)) || rel == "pod-runner.log"
		if i := bytes.Index(bytes.ToLower(data), []byte("forbidden")); ours && i >= 0 {
			problems = append(problems, fmt.Sprintf("%s says forbidden: %s", rel, lineAt(data, i)))
		}
		if loc := number.FindIndex(data); loc != nil {
			problems = append(problems, fmt.Sprintf("%s holds a phone number: %s", rel, lineAt(data, loc[0])))
		}
		return nil
	})
	return checked, problems
}

// lineAt is the line of data holding byte i.
func lineAt(data []byte, i int) string {
	s := bytes.LastIndexByte(data[:i], '\n') + 1
	e := bytes.IndexByte(data[i:], '\n')
	if e < 0 {
		e = len(data) - i
	}
	return string(data[s : i+e])
}
