// Command chaos runs the whole DelAuto system on a local cluster under a
// steady stream of Deliveries while it injects faults on a seeded schedule
// (`make chaos`, and its short CI profile, `make test-chaos`): SIGKILL of
// workers mid-dial and of the leading operator, SIGTERM of workers, Redis
// restarted empty, PostgreSQL under FerretDB stopped for 15 s, Twilio's bad
// days at the simulator (429 bursts, 5xx, HTML 502s, timeouts after the
// call was created; duplicated, reordered and minute-late callbacks all
// along), Deliveries given a new window, cancelled and deleted while their
// calls are due, forged webhooks at a steady rate, and recipients in time
// zones whose calling hours open and close during the run. At the end it
// checks the invariants from the simulator's log, MongoDB and the
// apiserver, prints a table and one summary line, and exits 1 on any
// violation, keeping every log in the run's folder.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profile is a named set of defaults.
type profile struct {
	deliveries int
	length     time.Duration
	drain      time.Duration
}

var profiles = map[string]profile{
	// The default: 5,000 Deliveries over 10 minutes.
	"default": {deliveries: 5000, length: 10 * time.Minute, drain: 10 * time.Minute},
	// The short CI profile (make test-chaos): 500 over 2 minutes.
	"ci": {deliveries: 500, length: 2 * time.Minute, drain: 6 * time.Minute},
	// The load profile (make load): no faults, a rising rate until the
	// pickup p99 exceeds a second (see load.go).
	"load": {},
}

// config is what a run does.
type config struct {
	deliveries int
	length     time.Duration
	drain      time.Duration
	seed       uint64
	dir        string
	repo       string
	keep       bool
}

func main() {
	prof := flag.String("profile", envOr("CHAOS_PROFILE", "default"), "default (5,000 Deliveries over 10 min), ci (500 over 2 min) or load (no faults, a rising rate: the whole system's ceiling) (env CHAOS_PROFILE)")
	n := flag.Int("deliveries", 0, "Deliveries created over the run (default: the profile's) (env CHAOS_DELIVERIES)")
	length := flag.Duration("duration", 0, "how long Deliveries are created and faults injected (default: the profile's) (env CHAOS_DURATION)")
	drain := flag.Duration("drain", 0, "how long to wait after the stream for every Delivery to settle (default: the profile's)")
	seed := flag.Uint64("seed", 0, "seed of the fault schedule and every random pick; 0 draws one (printed, to replay a run) (env CHAOS_SEED)")
	dir := flag.String("dir", "", "run folder (default: a new folder in the temp dir)")
	keep := flag.Bool("keep", false, "keep the run folder even when every invariant held")
	rates := flag.String("rates", envOr("LOAD_RATES", "1,2,3,4,5,6,8,12,16"), "load profile: Deliveries per second of each step, rising (env LOAD_RATES)")
	step := flag.Duration("step", time.Minute, "load profile: how long each rate is held")
	limit := flag.Duration("limit", time.Second, "load profile: the pickup p99 (create request to call) a step must stay within")
	flag.Parse()
	p, ok := profiles[*prof]
	if !ok {
		fmt.Fprintf(os.Stderr, "chaos: unknown profile %q (default, ci, load)\n", *prof)
		os.Exit(2)
	}
	lo := loadOptions{step: *step, limit: *limit}
	for _, f := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 || (len(lo.rates) > 0 && r <= lo.rates[len(lo.rates)-1]) {
			fmt.Fprintf(os.Stderr, "chaos: -rates %q: want rising positive numbers, e.g. 2,4,8\n", *rates)
			os.Exit(2)
		}
		lo.rates = append(lo.rates, r)
	}
	if lo.step < 10*time.Second || lo.limit <= 0 {
		fmt.Fprintln(os.Stderr, "chaos: -step must be at least 10s and -limit positive")
		os.Exit(2)
	}
	cfg := config{deliveries: p.deliveries, length: p.length, drain: p.drain, seed: *seed, dir: *dir, keep: *keep}
	if v := os.Getenv("CHAOS_DELIVERIES"); v != "" && *n == 0 {
		*n, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("CHAOS_DURATION"); v != "" && *length == 0 {
		*length, _ = time.ParseDuration(v)
	}
	if v := os.Getenv("CHAOS_SEED"); v != "" && cfg.seed == 0 {
		cfg.seed, _ = strconv.ParseUint(v, 10, 64)
	}
	if *n > 0 {
		cfg.deliveries = *n
	}
	if *length > 0 {
		cfg.length = *length
	}
	if *drain > 0 {
		cfg.drain = *drain
	}
	if cfg.seed == 0 {
		cfg.seed = uint64(time.Now().UnixNano()%1_000_000) + 1
	}
	var err error
	if cfg.repo, err = os.Getwd(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	if cfg.dir == "" {
		// The e2e's prefix: one cleanup pattern finds the leftovers of both.
		if cfg.dir, err = os.MkdirTemp("", "delauto-e2e-chaos-"); err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *prof == "load" {
		ok, err = runLoad(ctx, cfg, lo)
	} else {
		ok, err = run(ctx, cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
	}
	if err != nil || !ok {
		fmt.Printf("chaos: FAILED; every component's log is kept in %s (pods: pods/logs, control plane: cluster/clusters/delauto/logs, pod runner: pod-runner.log, this run: chaos.log); replay with -seed %d\n", cfg.dir, cfg.seed)
		os.Exit(1)
	}
	if cfg.keep {
		fmt.Println("chaos: the run's folder is kept in", cfg.dir)
	} else {
		os.RemoveAll(cfg.dir)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// logPath is this run's own event log in the run folder.
func logPath(dir string) string { return filepath.Join(dir, "chaos.log") }

// createRunLog makes the run folder and creates the run's log in it.
func createRunLog(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.Create(logPath(dir))
}
