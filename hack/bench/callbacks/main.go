// Command callbacks-bench measures DelAuto's Twilio callback server: signed
// status callbacks at increasing rates against the server, with real Redis
// (appendonly, fsync every second) and FerretDB behind it, on loopback.
//
// Each step sends rate x duration requests open-loop (each request has a
// scheduled send time; latency runs from that time, so a slow server cannot
// hide queueing) and prints throughput, p50 and p99 (client side), the
// server's own p99 bucket and Redis's PING p99 meanwhile. Every call is an
// attempt created in FerretDB beforehand, its context primed into the cache
// at "dial" time as the worker does, and gets four status callbacks.
//
// The steps run twice, side by side: with the journal drainer paused (the
// journal fills; FerretDB idle: the webhook path alone), then with the
// drainer writing the journal to FerretDB on the same cores (-drain picks
// one). FerretDB and PostgreSQL run in SCHED_IDLE (-db-priority), so they
// get the CPU the server leaves, as a database on its own hosts would. The
// last line, for the last phase run, is
//
//	callbacks rps=<x> p99_ms=<x> cache_hit=<x>
//
// with the highest throughput reached with p99 <= -slo and no errors.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/hack/bench/internal/benchlog"
	"github.com/delauto/delauto/hack/internal/procs"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/callbacks"
	"github.com/delauto/delauto/workers/store"
)

// schedIdle is Linux's SCHED_IDLE policy.
const schedIdle = 5

var (
	profile     *os.File
	traceOut    *os.File
	modes       []bool
	dbPriority  string
	appendfsync string
)

const (
	authToken = "benchauthtoken00000000000000000a"
	base      = "https://calls.example.test"
)

func main() {
	ratesFlag := flag.String("rates", "1000,2500,5000,7500", "request rates to step through, per second")
	dur := flag.Duration("step", 4*time.Second, "duration of each step")
	conns := flag.Int("conns", 256, "concurrent client connections (in-flight requests)")
	mode := flag.String("drain", "both", "journal drainer during the steps: both (paused, then running, side by side), paused, or running")
	drainConc := flag.Int("drain-concurrency", 0, "the drainer's MongoDB writers (0: the server's default)")
	prime := flag.Bool("prime", true, "prime each call's context at dial time, as the worker does")
	slo := flag.Duration("slo", 20*time.Millisecond, "p99 a step must meet to count")
	settle := flag.Duration("settle", 20*time.Second, "after the steps, wait this long for the journal to drain")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the steps to this file")
	traceFile := flag.String("trace", "", "write an execution trace of the steps to this file")
	aof := flag.String("redis-appendfsync", "everysec", "Redis AOF fsync policy: everysec, always, or no (AOF off)")
	dbPrio := flag.String("db-priority", "idle", "CPU priority of FerretDB and PostgreSQL, which share the cores with the server under test: idle (SCHED_IDLE: only CPU the server does not use), nice (nice 19), or normal")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		profile = f
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			fail(err)
		}
		traceOut = f
	}
	var rates []int
	for _, s := range strings.Split(*ratesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fail(fmt.Errorf("bad rate %q", s))
		}
		rates = append(rates, n)
	}
	switch *dbPrio {
	case "idle", "nice", "normal":
		dbPriority = *dbPrio
	default:
		fail(fmt.Errorf("-db-priority %q: want idle, nice or normal", *dbPrio))
	}
	appendfsync = *aof
	switch *mode {
	case "both":
		modes = []bool{false, true}
	case "paused":
		modes = []bool{false}
	case "running":
		modes = []bool{true}
	default:
		fail(fmt.Errorf("-drain %q: want both, paused or running", *mode))
	}
	if err := run(rates, *dur, *conns, *drainConc, *prime, *slo, *settle); err != nil {
		fail(err)
	}
}

func fail(err error) { benchlog.Fail("callbacks-bench", err) }

// logf writes a progress line (benchlog.Logf).
var logf = benchlog.Logf

// req is one prepared status callback.
type req struct {
	target string // path and query
	body   string
	sig    string
}

// result is one step's measurements.
type result struct {
	rate           int
	sent, ok, errs int
	achieved       float64
	p50, p99, max  time.Duration
	ping           []time.Duration
}

func run(rates []int, dur time.Duration, conns int, drainConc int, prime bool, slo, settle time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	os.Setenv("DELAUTO_TESTSERVICES_VERBOSE", "1")
	redisArgs := []string{"--appendonly", "no"}
	if appendfsync != "no" {
		redisArgs = []string{"--appendonly", "yes", "--appendfsync", appendfsync}
	}
	logf("starting redis-server (%s) and FerretDB on PostgreSQL", strings.Join(redisArgs, " "))
	rs, err := testservices.StartRedis(redisArgs...)
	if err != nil {
		return err
	}
	defer rs.Stop()
	mg, err := testservices.StartMongo()
	if err != nil {
		return err
	}
	defer mg.Stop()
	if dbPriority != "normal" {
		n := deprioritize(dbPriority)
		logf("FerretDB and PostgreSQL (%d processes) at CPU priority %s", n, dbPriority)
	}
	// go-redis's default pool, as the worker has: the server pipelines its
	// webhooks' commands over a few connections.
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()

	// Redis commands slower than 1 ms are logged, and summarized at the end.
	_ = rdb.ConfigSet(ctx, "slowlog-log-slower-than", "1000").Err()
	_ = rdb.ConfigSet(ctx, "slowlog-max-len", "1000").Err()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, store.Config{URI: mg.URI, Database: "bench", Logger: quiet, MaxPoolSize: 64})
	if err != nil {
		return err
	}
	defer st.Close(context.Background())

	camp := &campaignfile.Config{Namespace: "shop", Name: "bench", Spec: v1.CallCampaignSpec{
		Schedule: v1.ScheduleSpec{DefaultTimeZone: "UTC"},
		Script:   v1.CallScript{CompanyName: "Example Logistics", Greeting: "Hello {{.Name}}, this is {{.Company}}. Your parcel arrives on {{.Date}} between {{.WindowStart}} and {{.WindowEnd}}."},
		Twilio:   v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{"+14155550100"}, CallbackURL: base},
	}}
	srv, err := callbacks.New(callbacks.Config{
		Campaign: campaignfile.Static{Config: camp}, Store: st, Redis: rdb,
		AuthTokens: []string{authToken}, Consumer: "bench", Logger: quiet, JournalConcurrency: drainConc,
	})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	// The calls: one attempt each, created in FerretDB, four status
	// callbacks (initiated, ringing, in-progress, completed).
	calls := 0
	for _, r := range rates {
		calls += int(math.Ceil(float64(r) * dur.Seconds() / 4))
	}
	logf("creating %d attempts", calls)
	t0 := time.Now()
	ids, err := createAttempts(ctx, st, srv, calls, prime)
	if err != nil {
		return err
	}
	logf("created in %s", time.Since(t0).Round(time.Millisecond))
	if dbPriority != "normal" {
		deprioritize(dbPriority) // the backends opened since
	}

	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	hc := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	url0 := "http://" + ln.Addr().String()

	// Warm up connections and code paths (not measured).
	warm := prepare(ids[:min(200, len(ids))], 1)
	_ = step(hc, url0, warm[:min(len(warm), 400)], 500, conns)

	fmt.Printf("machine: %d cores, %s, %s, load %s; %d calls (attempts in FerretDB), %d status callbacks per phase\n",
		runtime.NumCPU(), procs.MemGiB(), runtime.Version(), procs.LoadAvg(), len(ids), 4*len(ids))
	if profile != nil {
		_ = pprof.StartCPUProfile(profile)
	}
	if traceOut != nil {
		_ = trace.Start(traceOut)
	}
	// Side by side in one run: the same calls' callbacks, first while the
	// journal only fills (FerretDB idle: the webhook path alone), then with
	// the drainer writing to FerretDB (the backlog of the first phase, then
	// the new entries) on the same cores.
	var phases []phaseResult
	for _, drain := range modes {
		if drain {
			go func() { _ = srv.Run(ctx) }()
		}
		ph := runPhase(ctx, drain, rates, dur, conns, ids, hc, url0, srv, reg, rs.Addr, settle)
		phases = append(phases, ph)
	}
	if profile != nil {
		pprof.StopCPUProfile()
		profile.Close()
	}
	if traceOut != nil {
		trace.Stop()
		traceOut.Close()
	}
	stats := srv.Stats()
	fmt.Printf("cache: %d hits, %d misses, %d shared, hit rate %.3f\n", stats.CacheHits, stats.CacheMisses, stats.CacheShared, stats.HitRate())
	if slow, err := rdb.SlowLogGet(ctx, 1000).Result(); err == nil && len(slow) > 0 {
		byCmd := map[string][]time.Duration{}
		for _, e := range slow {
			if len(e.Args) > 0 {
				byCmd[strings.ToUpper(e.Args[0])] = append(byCmd[strings.ToUpper(e.Args[0])], e.Duration)
			}
		}
		var parts []string
		for c, ds := range byCmd {
			slices.Sort(ds)
			parts = append(parts, fmt.Sprintf("%s x%d (max %.1f ms)", c, len(ds), ms(ds[len(ds)-1])))
		}
		slices.Sort(parts)
		fmt.Printf("redis commands over 1 ms: %s\n", strings.Join(parts, ", "))
	}
	for i, ph := range phases {
		b := ph.best(slo)
		if b == nil {
			fmt.Printf("%s: no step met p99 <= %s without errors; the fastest step below\n", ph.name, slo)
			b = &ph.steps[0]
			for j := range ph.steps {
				if ph.steps[j].achieved > b.achieved {
					b = &ph.steps[j]
				}
			}
		}
		line := fmt.Sprintf("callbacks rps=%.0f p99_ms=%.2f cache_hit=%.3f", b.achieved, ms(b.p99), stats.HitRate())
		if i < len(phases)-1 {
			fmt.Printf("%s: %s\n", ph.name, line)
		} else {
			fmt.Printf("%s: highest rate with p99 <= %s below\n%s\n", ph.name, slo, line)
		}
	}
	return nil
}

// phaseResult is one phase's steps.
type phaseResult struct {
	name  string
	steps []result
}

// best is the step with the highest throughput that met the p99 target
// without errors, or nil.
func (p phaseResult) best(slo time.Duration) *result {
	var b *result
	for i, r := range p.steps {
		if r.errs == 0 && r.p99 <= slo && (b == nil || r.achieved > b.achieved) {
			b = &p.steps[i]
		}
	}
	return b
}

// runPhase sends the steps and prints them, and, with the drainer running,
// what it wrote meanwhile and afterwards.
func runPhase(ctx context.Context, drain bool, rates []int, dur time.Duration, conns int, ids []string, hc *http.Client,
	url0 string, srv *callbacks.Server, reg *prometheus.Registry, redisAddr string, settle time.Duration) phaseResult {
	ph := phaseResult{name: "drainer paused (journal fills, FerretDB idle)"}
	if drain {
		ph.name = "drainer running (FerretDB writes on the same cores)"
	}
	fmt.Printf("\n%s\n", ph.name)
	fmt.Printf("%-8s %8s %8s %6s %10s %9s %9s %9s %14s %14s\n", "rate/s", "sent", "ok", "errors", "achieved/s", "p50_ms", "p99_ms", "max_ms", "server_p99_ms", "redis_ping_p99")
	appliedBefore := counter(reg, "delauto_callbacks_journal_applied_total")
	backlogBefore, _ := srv.JournalBacklog(ctx)
	start := time.Now()
	next := 0
	for i, r := range rates {
		n := int(math.Ceil(float64(r)*dur.Seconds()/4)) * 4
		reqs := prepare(ids[next:next+n/4], int64(i+1))
		next += n / 4
		before := histogram(reg)
		pings := make(chan []time.Duration, 1)
		pctx, stopPing := context.WithCancel(ctx)
		go func() { pings <- pingLoop(pctx, redisAddr) }()
		res := step(hc, url0, reqs, r, conns)
		stopPing()
		res.ping = <-pings
		res.rate = r
		ph.steps = append(ph.steps, res)
		fmt.Printf("%-8d %8d %8d %6d %10.0f %9.2f %9.2f %9.2f %14s %14.2f\n", r, res.sent, res.ok, res.errs, res.achieved,
			ms(res.p50), ms(res.p99), ms(res.max), serverP99(before, histogram(reg)), ms(quantile(res.ping, 0.99)))
	}
	elapsed := time.Since(start)
	backlog, _ := srv.JournalBacklog(ctx)
	applied := counter(reg, "delauto_callbacks_journal_applied_total") - appliedBefore
	fmt.Printf("journal: backlog %d -> %d; %.0f writes to FerretDB during the steps (%.0f/s)\n",
		backlogBefore, backlog, applied, applied/elapsed.Seconds())
	if drain && settle > 0 {
		t0 := time.Now()
		a0 := counter(reg, "delauto_callbacks_journal_applied_total")
		deadline := t0.Add(settle)
		for backlog > 0 && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			backlog, _ = srv.JournalBacklog(ctx)
		}
		a1 := counter(reg, "delauto_callbacks_journal_applied_total")
		fmt.Printf("journal: %.0f writes in %s with no webhook load (%.0f/s), backlog %d\n",
			a1-a0, time.Since(t0).Round(time.Second), (a1-a0)/time.Since(t0).Seconds(), backlog)
	}
	return ph
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// createAttempts inserts n attempts and, with prime, caches their call
// context as the worker does after its claim (fence 1).
func createAttempts(ctx context.Context, st *store.Store, srv *callbacks.Server, n int, prime bool) ([]string, error) {
	ids := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				var b [16]byte
				_, _ = rand.Read(b[:])
				uid := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
				a, _, err := st.CreateAttempt(ctx, store.NewAttempt{
					Delivery: store.DeliveryRef{UID: uid, Namespace: "shop", Name: "parcel-" + uid[:8]},
					Campaign: "shop/bench", Shard: "s0", Number: 1, Due: time.Now(), To: "+14155550123",
					Context: &store.CallContext{RecipientName: "Anna Schmidt", TimeZone: "Europe/Berlin",
						WindowStart: start, WindowEnd: start.Add(2 * time.Hour), Address: "12 Main Street", AgentPhone: "+14155550199"},
				})
				if err == nil && prime {
					a.Fence = 1 // as claimed by the worker, which primes right after its claim
					err = srv.Prime(ctx, a)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				ids[i] = a.ID
			}
		}()
	}
	wg.Wait()
	return ids, firstErr
}

// prepare signs the four status callbacks of each attempt, ordered as
// concurrent calls produce them: interleaved, and shuffled within windows
// of 400 requests (so some arrive out of order).
func prepare(ids []string, seed int64) []req {
	statuses := []string{"initiated", "ringing", "in-progress", "completed"}
	var out []req
	for round, status := range statuses {
		for i, id := range ids {
			q := url.Values{callurls.ParamAttempt: {id}, callurls.ParamFence: {"1"}}.Encode()
			form := url.Values{
				"AccountSid": {twiliosim.DefaultAccountSID}, "CallSid": {fmt.Sprintf("CA%032x", seed<<32|int64(i))},
				"CallStatus": {status}, "SequenceNumber": {strconv.Itoa(round)}, "CallbackSource": {"call-progress-events"},
				"Timestamp": {time.Now().UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700")}, "Direction": {"outbound-api"},
				"From": {"+14155550100"}, "To": {"+14155550123"}, "ApiVersion": {"2010-04-01"},
			}
			if status == "completed" {
				form.Set("CallDuration", "31")
				form.Set("Duration", "1")
			}
			target := callurls.StatusPath + "?" + q
			out = append(out, req{target: target, body: form.Encode(), sig: twiliosim.Sign(authToken, base+target, form)})
		}
	}
	// Calls overlap: interleave rounds in blocks so each call's callbacks
	// come close together, then shuffle within windows.
	block := 100
	var mixed []req
	for s := 0; s < len(ids); s += block {
		e := min(s+block, len(ids))
		for round := range statuses {
			mixed = append(mixed, out[round*len(ids)+s:round*len(ids)+e]...)
		}
	}
	rng := mrand.New(mrand.NewPCG(uint64(seed), 7))
	for s := 0; s < len(mixed); s += 400 {
		w := mixed[s:min(s+400, len(mixed))]
		rng.Shuffle(len(w), func(i, j int) { w[i], w[j] = w[j], w[i] })
	}
	return mixed
}

// step sends reqs at rate per second, open loop, through at most conns
// concurrent requests, and measures each from its scheduled time.
func step(hc *http.Client, url0 string, reqs []req, rate, conns int) result {
	lat := make([]time.Duration, len(reqs))
	var ok, errs atomic.Int64
	work := make(chan int, len(reqs))
	start := time.Now().Add(20 * time.Millisecond)
	interval := time.Second / time.Duration(rate)
	var wg sync.WaitGroup
	var firstDone, lastDone atomic.Int64
	firstDone.Store(math.MaxInt64)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sched := start.Add(time.Duration(i) * interval)
				if d := time.Until(sched); d > 0 {
					time.Sleep(d)
				}
				r := reqs[i]
				hr, _ := http.NewRequest(http.MethodPost, url0+r.target, strings.NewReader(r.body))
				hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				hr.Header.Set("X-Twilio-Signature", r.sig)
				resp, err := hc.Do(hr)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				now := time.Now()
				lat[i] = now.Sub(sched)
				if err == nil && resp.StatusCode == http.StatusNoContent {
					ok.Add(1)
				} else {
					errs.Add(1)
				}
				for {
					prev := lastDone.Load()
					if now.UnixNano() <= prev || lastDone.CompareAndSwap(prev, now.UnixNano()) {
						break
					}
				}
				for {
					prev := firstDone.Load()
					if now.UnixNano() >= prev || firstDone.CompareAndSwap(prev, now.UnixNano()) {
						break
					}
				}
			}
		}()
	}
	for i := range reqs {
		work <- i
	}
	close(work)
	wg.Wait()
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	// Throughput is successful responses per second between the first
	// response and the last: n responses span n-1 intervals. (Counting from
	// the first send would charge one request's latency to the whole step.)
	// The span is at least the schedule's, so a slow first response cannot
	// make the rest look faster than they were sent.
	span := max(time.Duration(lastDone.Load()-firstDone.Load()), time.Duration(len(reqs)-1)*interval)
	achieved := 0.0
	if n := ok.Load(); n > 1 && span > 0 {
		achieved = float64(n-1) / span.Seconds()
	}
	return result{sent: len(reqs), ok: int(ok.Load()), errs: int(errs.Load()),
		achieved: achieved, p50: q(0.50), p99: q(0.99), max: lat[len(lat)-1]}
}

// counter sums a counter family of the registry.
func counter(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if name == "delauto_callbacks_journal_applied_total" {
					skip := false
					for _, l := range m.GetLabel() {
						if l.GetName() == "result" && l.GetValue() == "error" {
							skip = true
						}
					}
					if skip {
						continue
					}
				}
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// deprioritize lowers the CPU priority of this process's descendants (the
// services it started and PostgreSQL's backends), except Redis, and returns
// how many it changed: "idle" puts every thread of them in SCHED_IDLE (they
// run only on CPU nobody else wants; with EEVDF a mere nice 19 task still
// finishes its slice before a waking request handler runs), "nice" at nice
// 19. Threads and processes started later inherit it from their creator.
func deprioritize(how string) int {
	self := os.Getpid()
	n := 0
	for _, p := range procs.Descendants(self) {
		if p.PID == self || strings.HasPrefix(p.Command, "redis") {
			continue // Redis is on the request path
		}
		changed := false
		for _, tid := range procs.Threads(p.PID) {
			var err error
			if how == "idle" {
				param := struct{ priority int32 }{0}
				_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), schedIdle, uintptr(unsafe.Pointer(&param)))
				if errno != 0 {
					err = errno
				}
			} else {
				err = syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19)
			}
			changed = changed || err == nil
		}
		if changed {
			n++
		}
	}
	return n
}

// histogram returns the status endpoint's cumulative bucket counts of the
// server's request duration histogram, by upper bound in seconds.
func histogram(reg *prometheus.Registry) map[float64]uint64 {
	out := map[float64]uint64{}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "delauto_callbacks_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, b := range m.GetHistogram().GetBucket() {
				out[b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
	}
	return out
}

// serverP99 is the bucket holding the 99th percentile of the requests
// observed between two snapshots, as "<= x" milliseconds.
func serverP99(before, after map[float64]uint64) string {
	var bounds []float64
	for b := range after {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return "?"
	}
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	for _, b := range bounds {
		if float64(after[b]-before[b]) >= 0.99*float64(total) {
			return fmt.Sprintf("<= %g", b*1000)
		}
	}
	return "> " + fmt.Sprint(bounds[len(bounds)-1]*1000)
}

// pingLoop measures Redis's round trip on its own connection every
// millisecond until ctx ends: how responsive Redis is under the load.
func pingLoop(ctx context.Context, addr string) []time.Duration {
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1})
	defer c.Close()
	var out []time.Duration
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
		start := time.Now()
		if c.Ping(ctx).Err() == nil {
			out = append(out, time.Since(start))
		}
	}
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
