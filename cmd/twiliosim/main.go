// Command twiliosim runs the project's Twilio Voice simulator as a server,
// for demos and load runs. Point DelAuto's workers at it with the Twilio base
// URL knob (see internal/twilioclient and docs/twilio-simulator.md).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/delauto/delauto/internal/twiliosim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "twiliosim:", err)
		os.Exit(2)
	}
}

const usageHead = `twiliosim: a stand-in for Twilio's Voice REST API and its webhooks.

It answers the 2010-04-01 Calls and Messages API (as twilio-go calls it) on
-listen, plays every call through a callee scenario chosen by the destination
number (-rules, else the weighted -mix, seeded by -seed), calls the TwiML and
status callback URLs given in each create request (signed with -auth-token),
and injects the faults asked for. GET /sim/stats returns counters as JSON;
they are also printed when the simulator stops (SIGINT or SIGTERM).

Scenarios: %s

Usage: twiliosim [flags]

`

type config struct {
	listen       string
	opts         twiliosim.Options
	statsEvery   time.Duration
	logLevel     slog.Level
	printSummary bool
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("twiliosim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usageHead, strings.Join(twiliosim.ScenarioNames(), ", "))
		fs.PrintDefaults()
	}
	var (
		cfg       config
		numbers   string
		mix       string
		rules     string
		logLevel  string
		f         twiliosim.Faults
		retries   int
		timeScale float64
	)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8089", "address to serve the API on")
	fs.StringVar(&cfg.opts.AccountSID, "account-sid", "", "the account SID accepted (default: env TWILIO_ACCOUNT_SID, else "+twiliosim.DefaultAccountSID+")")
	fs.StringVar(&cfg.opts.AuthToken, "auth-token", "", "the auth token accepted and used to sign webhooks (default: env TWILIO_AUTH_TOKEN, else the simulator's test token)")
	fs.StringVar(&numbers, "numbers", "", "comma-separated E.164 numbers of the account, the only From values accepted (empty: any valid number)")
	fs.Float64Var(&cfg.opts.CPS, "cps", 1, "calls-per-second limit: faster calls are queued, not refused (0: no limit)")
	fs.StringVar(&mix, "mix", "default", `weighted scenario mix for numbers no rule matches, "name=weight,..." or "default"`)
	fs.StringVar(&rules, "rules", "", `scenario by number suffix, "suffix=scenario,..." (longest suffix wins), e.g. "01=press1,02=busy"`)
	fs.Int64Var(&cfg.opts.Seed, "seed", 1, "seed of the scenario mix (the n-th call to a number gets the same scenario in every run) and of the fault rolls")
	fs.Float64Var(&timeScale, "time-scale", 1, "multiplier of simulated durations (ring, speech, timeouts): 0.1 runs ten times faster")
	fs.BoolVar(&cfg.opts.Instant, "instant", false, "answer at once and take no time at all (load runs); overrides -time-scale")
	fs.Float64Var(&f.RateLimit, "fault-429", 0, "fraction of create requests answered 429 (code 20429)")
	fs.IntVar(&f.MaxConcurrent, "max-concurrent", 0, "answer 429 to requests beyond this many in flight (0: no limit)")
	fs.Float64Var(&f.ServerError, "fault-500", 0, "fraction of create requests answered 500 JSON")
	fs.Float64Var(&f.Unavailable, "fault-503", 0, "fraction of create requests answered 503 JSON")
	fs.Float64Var(&f.BadGateway, "fault-502", 0, "fraction of create requests answered with a 502 HTML page")
	fs.Float64Var(&f.HangAfterCreate, "fault-hang-after-create", 0, "fraction of create requests that create the call and never answer")
	fs.Float64Var(&f.ResetAfterCreate, "fault-reset-after-create", 0, "fraction of create requests that create the call and drop the connection")
	fs.Float64Var(&f.ServerErrorAfterCreate, "fault-500-after-create", 0, "fraction of create requests that create the call and answer 500")
	fs.BoolVar(&f.AllEndpoints, "fault-all-endpoints", false, "apply the 429/5xx fractions to every REST request, not only creates")
	fs.DurationVar(&f.Latency, "latency", 0, "delay every REST response by this much")
	fs.Float64Var(&f.DuplicateCallback, "cb-duplicate", 0, "fraction of callbacks delivered twice")
	fs.Float64Var(&f.OutOfOrderCallback, "cb-out-of-order", 0, "fraction of status callbacks delivered after the next one")
	fs.Float64Var(&f.LateCallback, "cb-late", 0, "fraction of callbacks delivered late")
	fs.DurationVar(&f.LateCallbackDelay, "cb-late-delay", 30*time.Second, "delay of late callbacks (simulated time)")
	fs.IntVar(&retries, "callback-retries", 3, "retries of a callback that failed (connection error or 5xx); 0 for none")
	fs.DurationVar(&cfg.statsEvery, "stats-every", 0, "log the counters at this interval (0: only at exit)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	var routes routeFlag
	fs.Var(&routes, "webhook-route", `send webhooks for a public URL prefix to a local server, "https://calls.example.com=http://127.0.0.1:8080" (repeatable); signatures still cover the public URL`)
	insecure := fs.Bool("webhook-insecure-tls", false, "accept any TLS certificate from webhook servers (self-signed local https)")
	fs.BoolVar(&cfg.opts.Lean, "lean", false, "keep memory flat for long load runs (no request bodies or callback parameters kept)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.opts.WebhookRoutes = routes.m
	if *insecure {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by flag, for local self-signed servers
		cfg.opts.HTTPClient = &http.Client{Transport: tr, Timeout: 15 * time.Second}
	}
	if cfg.opts.AccountSID == "" {
		cfg.opts.AccountSID = envOr("TWILIO_ACCOUNT_SID", twiliosim.DefaultAccountSID)
	}
	if cfg.opts.AuthToken == "" {
		cfg.opts.AuthToken = envOr("TWILIO_AUTH_TOKEN", twiliosim.DefaultAuthToken)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := cfg.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, fmt.Errorf("-log-level: %w", err)
	}
	for _, n := range strings.Split(numbers, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.opts.Numbers = append(cfg.opts.Numbers, n)
		}
	}
	switch strings.TrimSpace(mix) {
	case "", "default":
		cfg.opts.Mix = twiliosim.DefaultMix()
	default:
		m, err := twiliosim.ParseMix(mix)
		if err != nil {
			return cfg, fmt.Errorf("-mix: %w", err)
		}
		cfg.opts.Mix = m
	}
	if rules != "" {
		r, err := twiliosim.ParseSuffixRules(rules)
		if err != nil {
			return cfg, fmt.Errorf("-rules: %w", err)
		}
		cfg.opts.Suffixes = r
	}
	if timeScale <= 0 {
		return cfg, errors.New("-time-scale must be positive (use -instant for no time at all)")
	}
	cfg.opts.TimeScale = timeScale
	if retries < 0 {
		return cfg, errors.New("-callback-retries must not be negative")
	}
	cfg.opts.CallbackRetries = retries
	if retries == 0 {
		cfg.opts.CallbackRetries = -1
	}
	if err := f.Validate(); err != nil {
		return cfg, err
	}
	cfg.opts.Faults = f
	return cfg, nil
}

// routeFlag collects -webhook-route values.
type routeFlag struct{ m map[string]string }

func (r *routeFlag) String() string { return fmt.Sprint(r.m) }

func (r *routeFlag) Set(v string) error {
	from, to, ok := strings.Cut(v, "=")
	if !ok || from == "" || to == "" {
		return fmt.Errorf("want public-prefix=local-base, got %q", v)
	}
	if r.m == nil {
		r.m = map[string]string{}
	}
	r.m[from] = to
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// run serves until ctx ends, then prints the counters as JSON on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	l, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	cfg.opts.Listener = l
	cfg.opts.Logger = log
	sim, err := twiliosim.New(cfg.opts)
	if err != nil {
		l.Close()
		return err
	}
	log.Info("twilio simulator listening", "url", sim.URL(), "account_sid", sim.AccountSID(),
		"cps", cfg.opts.CPS, "time_scale", cfg.opts.TimeScale, "instant", cfg.opts.Instant, "seed", cfg.opts.Seed)
	var tick <-chan time.Time
	if cfg.statsEvery > 0 {
		t := time.NewTicker(cfg.statsEvery)
		defer t.Stop()
		tick = t.C
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick:
			st := sim.Stats()
			log.Info("stats", "creates", st.CreateRequests, "calls", st.CallsCreated, "duplicates", st.DuplicateAttempts,
				"callbacks", st.Callbacks, "callbacks_failed", st.CallbacksFailed, "max_cps", st.MaxStartsPerSecond)
		}
	}
	sim.Close()
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(sim.Stats())
}
