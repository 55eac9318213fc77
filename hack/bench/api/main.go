// Command api-bench measures DelAuto's delivery insights API (`delauto
// api`, internal/insightsapi) on real stores: envtest's kube-apiserver
// checks the tokens (TokenReview, SubjectAccessReview), redis-server caches
// the answers, and FerretDB on PostgreSQL holds a call log seeded with -n
// attempts (100,000 by default) and their rollups.
//
// Three parts, in order:
//
//  1. cache misses: an API without Redis answers -miss-requests requests of
//     the mix below, once for each -miss-concurrency (1,4) at a time, after
//     PostgreSQL has vacuumed and analyzed the seeded call log (as one in
//     use would be); their p50/p95/p99 is what a miss costs at this size
//     of call log, alone and among others (the seed system's DB target is
//     p95 <= 100 ms);
//
//  2. artillery (npm, pinned in package.json, run offline from
//     node_modules) with the seed system's profile: warm-up 10/s, load 50/s,
//     stress 100/s (durations -warmup, -load, -stress), scenarios 60 %
//     delivery lists, 20 % overview, 20 % breakdown, each with a valid
//     token; its own `ensure` thresholds p95 < 500 ms and errors < 0.1 %
//     decide pass or fail;
//
//  3. the ceiling with vegeta: the same mix at rising rates (-rates, each for
//     -step) until p95 passes -slo (50 ms). The last line is
//
//     api rps=<x> p95_ms=<x> cache_hit=<x> errors=<n>
//
//     for the highest step with p95 <= -slo and no errors.
//
// `make bench-api` runs it; `make bench-api N=2000 BENCH_API_FLAGS="-warmup
// 5s -load 10s -stress 5s -rates 200,400 -step 3s -miss-requests 100"`
// smoke-runs it in about a minute.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"k8s.io/client-go/kubernetes"

	"github.com/delauto/delauto/hack/bench/internal/benchlog"
	"github.com/delauto/delauto/hack/internal/procs"
	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/internal/insightsapi"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/workers/store"
)

func main() {
	n := flag.Int("n", 100000, "attempts in the seeded call log")
	namespace := flag.String("namespace", "bench", "namespace of the seeded Deliveries")
	missRequests := flag.Int("miss-requests", 1000, "requests of the cache-miss part")
	missConcFlag := flag.String("miss-concurrency", "1,4", "requests in flight at once in the cache-miss part: one run per value")
	missPaths := flag.Bool("miss-paths", false, "print the cache-miss part's median per request path")
	warmup := flag.Duration("warmup", 60*time.Second, "artillery's warm-up phase (10 arrivals/s)")
	load := flag.Duration("load", 120*time.Second, "artillery's load phase (50 arrivals/s)")
	stress := flag.Duration("stress", 60*time.Second, "artillery's stress phase (100 arrivals/s)")
	skipArtillery := flag.Bool("skip-artillery", false, "leave out the artillery part")
	ratesFlag := flag.String("rates", "500,1000,2000,3000,4000,5000,6000,8000", "request rates of the ceiling's steps, per second")
	step := flag.Duration("step", 10*time.Second, "duration of each ceiling step")
	slo := flag.Duration("slo", 50*time.Millisecond, "p95 a ceiling step must meet")
	conns := flag.Int("conns", 256, "vegeta's connections")
	cacheTTL := flag.Duration("cache-ttl", insightsapi.DefaultCacheTTL, "the API's --cache-ttl")
	flag.Parse()
	rates, err := positiveInts(*ratesFlag)
	if err != nil {
		fail(fmt.Errorf("-rates: %w", err))
	}
	missConc, err := positiveInts(*missConcFlag)
	if err != nil {
		fail(fmt.Errorf("-miss-concurrency: %w", err))
	}
	b := &bench{n: *n, ns: *namespace, cacheTTL: *cacheTTL, missPaths: *missPaths}
	// Interrupting the bench still stops the services it started.
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := b.run(sigCtx, func(ctx context.Context) error {
		for _, conc := range missConc {
			if err := b.misses(ctx, *missRequests, conc); err != nil {
				return err
			}
		}
		artilleryErr := error(nil)
		if !*skipArtillery {
			artilleryErr = b.artillery(ctx, *warmup, *load, *stress)
		}
		if err := b.ceiling(ctx, rates, *step, *slo, *conns); err != nil {
			return err
		}
		return artilleryErr
	}); err != nil {
		fail(err)
	}
}

// positiveInts reads a comma-separated list of positive whole numbers.
func positiveInts(list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive whole number", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func fail(err error) { benchlog.Fail("api-bench", err) }

// logf writes a progress line (benchlog.Logf).
var logf = benchlog.Logf

// bench is one run: the services, the seeded call log, the API under test.
type bench struct {
	n         int
	ns        string
	cacheTTL  time.Duration
	missPaths bool
	token     string
	url       string // the API with its Redis cache
	source    insights.Source
	auth      *insightsapi.KubeAuth
	reg       *prometheus.Registry
	mix       []string // paths and queries, 60 % lists, 20 % overview, 20 % breakdown
	lists     []string
	overview  []string
	breakdwn  []string
}

// run starts the services, seeds the call log, starts the API and calls
// parts.
func (b *bench) run(ctx context.Context, parts func(context.Context) error) error {
	os.Setenv("DELAUTO_TESTSERVICES_VERBOSE", "1")
	logf("starting redis-server, FerretDB on PostgreSQL and kube-apiserver (envtest)")
	env, err := testservices.Start(testservices.Want{Redis: true, Mongo: true, Kube: true})
	if err != nil {
		return err
	}
	defer env.Stop()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: "bench", Logger: quiet, MaxPoolSize: 64})
	if err != nil {
		return err
	}
	defer st.Close(context.Background())
	if err := st.EnsureIndexes(ctx); err != nil {
		return err
	}
	if b.token, err = env.Kube.ReaderToken(ctx, b.ns, "dashboard", insightsapi.DeliveryReaderRules); err != nil {
		return err
	}
	logf("seeding %d attempts in namespace %s", b.n, b.ns)
	t0 := time.Now()
	if b.source, err = seed(ctx, st, b.ns, b.n); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	logf("seeded in %s", time.Since(t0).Round(time.Millisecond))
	// A call log in use has been vacuumed and analyzed; one just bulk-loaded
	// has not, and autovacuum would do it during the measurement.
	t0 = time.Now()
	if out, err := env.Mongo.SQL("VACUUM ANALYZE"); err != nil {
		return fmt.Errorf("vacuum the seeded call log: %w: %s", err, out)
	}
	logf("vacuumed and analyzed in %s", time.Since(t0).Round(time.Millisecond))
	if err := b.queries(ctx); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(env.Kube.Config)
	if err != nil {
		return err
	}
	b.reg = prometheus.NewRegistry()
	if b.auth, err = insightsapi.NewKubeAuth(cs, insightsapi.AuthOptions{Registerer: b.reg}); err != nil {
		return err
	}
	rdb := env.Redis.Client()
	defer rdb.Close()
	url, stop, err := b.serve(insightsapi.Config{Source: b.source, Auth: b.auth, Redis: rdb, CacheTTL: b.cacheTTL, Logger: quiet}, b.reg)
	if err != nil {
		return err
	}
	defer stop()
	b.url = url
	fmt.Printf("machine: %d cores, %s, %s, load %s; %d attempts seeded in namespace %s; %d distinct queries (%d lists, %d overviews, %d breakdowns)\n",
		runtime.NumCPU(), procs.MemGiB(), runtime.Version(), procs.LoadAvg(), b.n, b.ns, len(b.lists)+len(b.overview)+len(b.breakdwn), len(b.lists), len(b.overview), len(b.breakdwn))
	return parts(ctx)
}

// serve starts an API on a loopback port.
func (b *bench) serve(c insightsapi.Config, reg prometheus.Registerer) (string, func(), error) {
	srv, err := insightsapi.New(c, reg)
	if err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(l) }()
	return "http://" + l.Addr().String(), func() { _ = hs.Close() }, nil
}

// queries makes the request mix from what the call log holds: lists by
// region, agent, campaign and phase; overviews of the last day and week,
// per campaign; breakdowns by each dimension.
func (b *bench) queries(ctx context.Context) error {
	to := time.Now().UTC().Truncate(time.Hour).Add(time.Hour)
	week := insights.Range{From: to.Add(-7 * 24 * time.Hour), To: to}
	keys := map[insights.Dimension][]string{}
	for _, d := range []insights.Dimension{insights.ByRegion, insights.ByAgent, insights.ByCampaign} {
		groups, err := b.source.Breakdown(ctx, b.ns, d, week)
		if err != nil {
			return fmt.Errorf("breakdown by %s: %w", d, err)
		}
		for _, g := range groups[:min(len(groups), 10)] {
			keys[d] = append(keys[d], g.Key)
		}
	}
	if len(keys[insights.ByCampaign]) == 0 {
		return errors.New("the seeded call log has no outcomes in the last week")
	}
	base := "/api/v1/namespaces/" + b.ns
	q := func(path string, kv ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return base + path + "?" + v.Encode()
	}
	for _, r := range keys[insights.ByRegion] {
		b.lists = append(b.lists, q("/deliveries", "region", r, "limit", "50"))
	}
	for _, a := range keys[insights.ByAgent] {
		b.lists = append(b.lists, q("/deliveries", "agent", a, "limit", "50"))
	}
	for _, c := range keys[insights.ByCampaign] {
		b.lists = append(b.lists, q("/deliveries", "campaign", c, "limit", "100"))
		for _, p := range []string{"Confirmed", "Unreachable", "RescheduleRequested"} {
			b.lists = append(b.lists, q("/deliveries", "campaign", c, "phase", p, "limit", "50"))
		}
		b.overview = append(b.overview, q("/analytics/overview", "campaign", c), q("/analytics/overview", "campaign", c, "from", week.From.Format(time.RFC3339)))
		b.breakdwn = append(b.breakdwn, q("/analytics/breakdown", "by", "region", "campaign", c))
	}
	b.overview = append(b.overview, q("/analytics/overview"), q("/analytics/overview", "from", week.From.Format(time.RFC3339)))
	for _, d := range []string{"region", "agent", "campaign", "hour"} {
		b.breakdwn = append(b.breakdwn, q("/analytics/breakdown", "by", d), q("/analytics/breakdown", "by", d, "from", week.From.Format(time.RFC3339)))
	}
	// 60/20/20 by interleaving: three lists, one overview, one breakdown.
	for i := range max((len(b.lists)+2)/3, len(b.overview), len(b.breakdwn)) {
		b.mix = append(b.mix, b.lists[(3*i)%len(b.lists)], b.lists[(3*i+1)%len(b.lists)], b.lists[(3*i+2)%len(b.lists)],
			b.overview[i%len(b.overview)], b.breakdwn[i%len(b.breakdwn)])
	}
	return nil
}

// misses measures what a cache miss costs: an API without Redis, so every
// request queries the call log.
func (b *bench) misses(ctx context.Context, requests, conc int) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	url, stop, err := b.serve(insightsapi.Config{Source: b.source, Auth: b.auth, Logger: quiet}, nil)
	if err != nil {
		return err
	}
	defer stop()
	logf("cache misses: %d requests, %d at a time, against an API without a cache", requests, conc)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	lat := make([]time.Duration, requests)
	var next atomic.Int64
	var errs atomic.Int64
	var done atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	stopProgress := make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-tick.C:
				logf("cache misses: %d/%d after %s", done.Load(), requests, time.Since(t0).Round(time.Second))
			}
		}
	}()
	defer close(stopProgress)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= requests || ctx.Err() != nil {
					return
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+b.mix[i%len(b.mix)], nil)
				req.Header.Set("Authorization", "Bearer "+b.token)
				t := time.Now()
				resp, err := hc.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				lat[i] = time.Since(t)
				if err != nil || resp.StatusCode != http.StatusOK {
					errs.Add(1)
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	byKind := map[string][]time.Duration{}
	byPath := map[string][]time.Duration{}
	for i, d := range lat {
		k := requestKind(b.mix[i%len(b.mix)])
		byKind[k] = append(byKind[k], d)
		byPath[b.mix[i%len(b.mix)]] = append(byPath[b.mix[i%len(b.mix)]], d)
	}
	if b.missPaths {
		for _, p := range slices.Sorted(maps.Keys(byPath)) {
			ds := byPath[p]
			slices.Sort(ds)
			fmt.Printf("cache miss path: p50_ms=%.1f max_ms=%.1f n=%d %s\n", ms(quantile(ds, .5)), ms(ds[len(ds)-1]), len(ds), p)
		}
	}
	for _, k := range []string{"list", "overview", "breakdown"} {
		if ds := byKind[k]; len(ds) > 0 {
			slices.Sort(ds)
			fmt.Printf("cache miss %s: concurrency=%d requests=%d p50_ms=%.1f p95_ms=%.1f\n", k, conc, len(ds), ms(quantile(ds, .5)), ms(quantile(ds, .95)))
		}
	}
	slices.Sort(lat)
	fmt.Printf("cache miss: concurrency=%d requests=%d p50_ms=%.1f p95_ms=%.1f p99_ms=%.1f errors=%d (attempts=%d)\n",
		conc, requests, ms(quantile(lat, .5)), ms(quantile(lat, .95)), ms(quantile(lat, .99)), errs.Load(), b.n)
	return nil
}

// quantile is the q-quantile of sorted ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	return ds[max(0, int(math.Ceil(q*float64(len(ds))))-1)]
}

// requestKind names the part of the mix a request path belongs to.
func requestKind(path string) string {
	switch {
	case strings.Contains(path, "/deliveries"):
		return "list"
	case strings.Contains(path, "/overview"):
		return "overview"
	default:
		return "breakdown"
	}
}

// artillery runs the seed system's profile with artillery from
// node_modules (installed by the make target), offline.
func (b *bench) artillery(ctx context.Context, warmup, load, stress time.Duration) error {
	here, err := benchDir()
	if err != nil {
		return err
	}
	bin := filepath.Join(here, "node_modules", ".bin", "artillery")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("artillery is not installed in %s: run `make bench-api` (npm ci there)", here)
	}
	dir, err := os.MkdirTemp("", "delauto-bench-api-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "profile.yaml")
	if err := os.WriteFile(cfg, []byte(b.artilleryProfile(warmup, load, stress)), 0o600); err != nil {
		return err
	}
	report := filepath.Join(dir, "report.json")
	logf("artillery: warm-up 10/s for %s, load 50/s for %s, stress 100/s for %s", warmup, load, stress)
	cmd := exec.CommandContext(ctx, bin, "run", "--output", report, cfg)
	cmd.Dir = here
	cmd.Env = append(os.Environ(), "ARTILLERY_DISABLE_TELEMETRY=true", "DO_NOT_TRACK=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	err = cmd.Run()
	passed := err == nil
	fmt.Printf("artillery: ensure p95 < 500 ms, errors < 0.1 %% and 200s >= 99.9 %%: %s\n", map[bool]string{true: "passed", false: "FAILED"}[passed])
	if !passed {
		return fmt.Errorf("artillery: %w", err)
	}
	return nil
}

// artilleryProfile is the seed system's artillery profile against the API.
func (b *bench) artilleryProfile(warmup, load, stress time.Duration) string {
	secs := func(d time.Duration) int { return max(1, int(d.Round(time.Second)/time.Second)) }
	var s strings.Builder
	fmt.Fprintf(&s, "config:\n  target: %q\n  http:\n    timeout: 10\n  phases:\n", b.url)
	fmt.Fprintf(&s, "    - {name: warm-up, duration: %d, arrivalRate: 10}\n", secs(warmup))
	fmt.Fprintf(&s, "    - {name: load, duration: %d, arrivalRate: 50}\n", secs(load))
	fmt.Fprintf(&s, "    - {name: stress, duration: %d, arrivalRate: 100}\n", secs(stress))
	// maxErrorRate counts only requests that got no response; the condition
	// counts every answer but a 200 (artillery sends no If-None-Match).
	s.WriteString("  plugins:\n    ensure: {}\n  ensure:\n    thresholds:\n      - http.response_time.p95: 500\n    maxErrorRate: 0.1\n" +
		"    conditions:\n      - expression: \"http.codes.200 / http.requests >= 0.999\"\n")
	fmt.Fprintf(&s, "  defaults:\n    headers:\n      Authorization: %q\n      Accept-Encoding: gzip\n", "Bearer "+b.token)
	// Each arrival picks one URL of its scenario's list at random.
	s.WriteString("  variables:\n")
	for _, v := range []struct {
		name string
		urls []string
	}{{"listUrl", b.lists}, {"overviewUrl", b.overview}, {"breakdownUrl", b.breakdwn}} {
		fmt.Fprintf(&s, "    %s:\n", v.name)
		for _, u := range v.urls {
			fmt.Fprintf(&s, "      - %q\n", u)
		}
	}
	s.WriteString("scenarios:\n")
	for _, sc := range []struct {
		name, variable string
		weight         int
	}{{"delivery lists", "listUrl", 60}, {"overview", "overviewUrl", 20}, {"breakdown", "breakdownUrl", 20}} {
		fmt.Fprintf(&s, "  - name: %s\n    weight: %d\n    flow:\n      - get:\n          url: \"{{ %s }}\"\n", sc.name, sc.weight, sc.variable)
	}
	return s.String()
}

// ceiling steps vegeta through rates until p95 passes slo.
// warm asks the API each distinct query of the mix once.
func (b *bench) warm(ctx context.Context, hdr http.Header) error {
	seen := map[string]bool{}
	for _, p := range b.mix {
		if seen[p] {
			continue
		}
		seen[p] = true
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+p, nil)
		if err != nil {
			return err
		}
		req.Header = hdr.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("warming the cache: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("warming the cache: %s answered %d", p, resp.StatusCode)
		}
	}
	logf("cache warmed with the %d distinct queries", len(seen))
	return nil
}

func (b *bench) ceiling(ctx context.Context, rates []int, step, slo time.Duration, conns int) error {
	hdr := http.Header{"Authorization": {"Bearer " + b.token}, "Accept-Encoding": {"gzip"}}
	var i atomic.Int64
	targeter := func(t *vegeta.Target) error {
		t.Method = http.MethodGet
		t.URL = b.url + b.mix[int(i.Add(1))%len(b.mix)]
		t.Header = hdr
		return nil
	}
	type result struct {
		rate             int
		achieved         float64
		p50, p95, p99    time.Duration
		hit              float64
		errors, requests uint64
	}
	var best *result
	// A running API has its cache warm (asked-for answers are renewed
	// before they expire): each distinct query once, so the steps measure
	// that, not a cold start.
	if err := b.warm(ctx, hdr); err != nil {
		return err
	}
	logf("ceiling: rates %v, %s each, until p95 > %s", rates, step, slo)
	for _, rate := range rates {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		hits0, misses0 := b.cacheCounts()
		// One attacker per step: an attack stops its attacker when it ends.
		attacker := vegeta.NewAttacker(vegeta.Connections(conns), vegeta.MaxConnections(conns), vegeta.KeepAlive(true), vegeta.Timeout(10*time.Second))
		var m vegeta.Metrics
		var errs uint64
		for res := range attacker.Attack(targeter, vegeta.Rate{Freq: rate, Per: time.Second}, step, fmt.Sprint(rate)) {
			m.Add(res)
			if res.Error != "" || (res.Code != http.StatusOK && res.Code != http.StatusNotModified) {
				errs++
			}
		}
		m.Close()
		hits1, misses1 := b.cacheCounts()
		hit := 0.0
		if d := (hits1 - hits0) + (misses1 - misses0); d > 0 {
			hit = (hits1 - hits0) / d
		}
		r := result{rate: rate, achieved: m.Throughput, p50: m.Latencies.P50, p95: m.Latencies.P95, p99: m.Latencies.P99, hit: hit, errors: errs, requests: m.Requests}
		fmt.Printf("step rate=%d achieved=%.0f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f cache_hit=%.3f errors=%d requests=%d\n",
			r.rate, r.achieved, ms(r.p50), ms(r.p95), ms(r.p99), r.hit, r.errors, r.requests)
		if r.p95 > slo || r.errors > 0 {
			break
		}
		best = &r
	}
	if best == nil {
		fmt.Printf("api rps=0 p95_ms=0 cache_hit=0 errors=0 (no step met p95 <= %s without errors)\n", slo)
		return nil
	}
	fmt.Printf("api rps=%.0f p95_ms=%.2f cache_hit=%.3f errors=%d\n", best.achieved, ms(best.p95), best.hit, best.errors)
	return nil
}

// cacheCounts sums the API's cache hits and misses so far.
func (b *bench) cacheCounts() (hits, misses float64) {
	mfs, _ := b.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "delauto_api_cache_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "hit" {
					hits += m.GetCounter().GetValue()
				} else if l.GetName() == "result" {
					misses += m.GetCounter().GetValue()
				}
			}
		}
	}
	return hits, misses
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchDir is this program's folder in the checkout (for node_modules).
func benchDir() (string, error) {
	root, err := testservices.RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "hack", "bench", "api"), nil
}
