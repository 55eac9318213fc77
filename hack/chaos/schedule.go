package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"time"
)

// The kinds of fault the schedule holds.
const (
	kindWorkerKill   = "worker-sigkill"
	kindOperatorKill = "operator-leader-sigkill"
	kindWorkerTerm   = "worker-sigterm"
	kindRedis        = "redis-restart-data-lost"
	kindPostgres     = "postgres-stop-15s"
	kindSim429       = "twilio-429-burst"
	kindSim5xx       = "twilio-5xx"
	kindSim502       = "twilio-html-502"
	kindSimTimeout   = "twilio-timeout-after-create"
	kindEdit         = "delivery-new-window"
	kindDelete       = "delivery-deleted-while-due"
	kindCancel       = "delivery-cancelled-while-due"
)

// kinds is every kind, in the order the table prints them.
var kinds = []string{kindWorkerKill, kindOperatorKill, kindWorkerTerm, kindRedis, kindPostgres,
	kindSim429, kindSim5xx, kindSim502, kindSimTimeout, kindEdit, kindDelete, kindCancel}

// fault is one entry of the schedule: a kind at an offset from the start of
// the stream of Deliveries.
type fault struct {
	At   time.Duration
	Kind string
}

// simWindow is how long a simulator fault stays in force.
const simWindow = 10 * time.Second

// postgresOutage is how long PostgreSQL stays stopped.
const postgresOutage = 15 * time.Second

// plan draws the schedule for a stream of the given length from seed: each
// kind a number of times that grows with the length, at random offsets
// between 5% and 90% of it (so each fault meets calls before and after it).
// The same seed and length give the same schedule.
func plan(seed uint64, length time.Duration) []fault {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	minutes := length.Minutes()
	count := func(perMinute float64, least int) int {
		return max(least, int(perMinute*minutes+0.5))
	}
	counts := map[string]int{
		kindWorkerKill:   count(1, 2),
		kindOperatorKill: count(0.3, 1),
		kindWorkerTerm:   count(0.5, 1),
		kindRedis:        count(0.2, 1),
		kindPostgres:     count(0.2, 1),
		kindSim429:       count(0.4, 1),
		kindSim5xx:       count(0.4, 1),
		kindSim502:       count(0.4, 1),
		kindSimTimeout:   count(0.4, 1),
		kindEdit:         count(1, 2),
		kindDelete:       count(1, 2),
		kindCancel:       count(0.5, 1),
	}
	var out []fault
	for _, k := range kinds {
		for range counts[k] {
			at := time.Duration((0.05 + 0.85*rng.Float64()) * float64(length)).Round(time.Second)
			out = append(out, fault{At: at, Kind: k})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	// Two PostgreSQL outages never overlap: a later one waits for the
	// earlier to end.
	var pgFree time.Duration
	for i := range out {
		if out[i].Kind == kindPostgres {
			if out[i].At < pgFree {
				out[i].At = pgFree
			}
			pgFree = out[i].At + postgresOutage + 5*time.Second
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// printPlan writes the schedule, one fault a line.
func printPlan(w io.Writer, seed uint64, faults []fault) {
	fmt.Fprintf(w, ">> fault schedule (seed %d; replay with -seed %d):\n", seed, seed)
	for _, f := range faults {
		fmt.Fprintf(w, "   +%-6s %s\n", f.At, f.Kind)
	}
}
