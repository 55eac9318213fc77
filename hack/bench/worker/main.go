// Command worker-bench measures the call worker end to end: N attempts
// through the real pipeline (queue consumer, fenced claim, opt-out and
// calling-hours checks, the account rate limiter, twilio-go against the
// Twilio simulator answering at once, the record in the call log) at worker
// concurrency C, against FerretDB; and, in the same run, the store's own
// ceiling for the same MongoDB operations: store.DialSequence with a no-op
// dial, at the same concurrency and collection size. Run it with
// `make bench-worker` (N=20000 C=32 by default). The last line is
//
//	worker calls_per_s=<x> store_ceiling_ratio=<x> duplicates=<n> lost=<n>
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/hack/internal/procs"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
	"github.com/delauto/delauto/workers/worker"
)

// benchProcess names this process in the CPU figures.
const benchProcess = "bench (worker, simulator)"

func main() {
	n := flag.Int("n", 20000, "attempts per phase")
	c := flag.Int("c", 32, "worker concurrency (and the store ceiling's goroutines)")
	redisURL := flag.String("redis-url", "", "Redis to use (default: start a throwaway redis-server)")
	mongoURI := flag.String("mongo-uri", "", "MongoDB/FerretDB to use (default: start FerretDB on a throwaway PostgreSQL)")
	rounds := flag.Int("rounds", 4, "rounds alternating the two sides (ABBA), so a change of load on the machine hits both")
	verbose := flag.Bool("v", false, "log the worker's warnings")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (worker, simulator, store clients) to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker-bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*n, *c, *rounds, *redisURL, *mongoURI, *verbose); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "worker-bench:", err)
		os.Exit(1)
	}
}

func run(n, c, rounds int, redisURL, mongoURI string, verbose bool) error {
	if n < 1 || c < 1 || rounds < 1 || rounds > n {
		return fmt.Errorf("-n, -c and -rounds must be positive, and -rounds at most -n")
	}
	if redisURL == "" {
		r, err := testservices.StartRedis()
		if err != nil {
			return err
		}
		defer r.Stop()
		redisURL = r.URL()
	}
	if mongoURI == "" {
		m, err := testservices.StartMongo()
		if err != nil {
			return err
		}
		defer m.Stop()
		mongoURI = m.URI
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("machine: %d CPUs (GOMAXPROCS %d), %s; load %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(),
		strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("N=%d attempts per side, C=%d, %d rounds alternating the store ceiling and the worker, FerretDB at %s\n", n, c, rounds, mongoURI)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx := context.Background()
	tag := randomHex(4)

	// Direct access for the checks and the clean-up.
	mc, err := mongo.Connect(options.Client().ApplyURI(mongoURI))
	if err != nil {
		return err
	}
	defer mc.Disconnect(context.Background())

	// The store ceiling's call log and the worker's, each of N attempts.
	dbs := []string{"bench_store_" + tag, "bench_worker_" + tag}
	var sts []*store.Store
	var ids [][]string
	for i, db := range dbs {
		st, err := store.Open(ctx, store.Config{URI: mongoURI, Database: db, Logger: logger})
		if err != nil {
			return err
		}
		defer func() { _ = mc.Database(db).Drop(ctx); _ = st.Close(ctx) }()
		ns := "bench-" + tag
		if i == 0 {
			ns = "ceiling-" + tag
		}
		t := time.Now()
		l, err := seed(ctx, st, n, c, ns)
		if err != nil {
			return err
		}
		fmt.Printf("[seed] %s: %d attempts in %s\n", db, n, time.Since(t).Round(time.Millisecond))
		sts, ids = append(sts, st), append(ids, l)
	}

	// The worker, idle until its attempts are queued round by round.
	sim, err := twiliosim.New(twiliosim.Options{Instant: true, Lean: true, AccountSID: "AC" + randomHex(16)})
	if err != nil {
		return err
	}
	defer sim.Close()
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, "<Response/>")
	}))
	defer cb.Close()
	rdb, err := redisClient(redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	ns := "bench-" + tag
	shard := queue.Shard{Namespace: ns, Campaign: "bench", Name: "shard-0"}
	q := queue.New(rdb, queue.Options{Logger: logger})
	// The later rounds' attempts are due in the call log but deliberately
	// not queued yet: mark the shard's queue complete so the worker's
	// sweeper does not restore them at its start.
	incarnation, err := q.Incarnation(ctx)
	if err != nil {
		return err
	}
	if err := q.MarkComplete(ctx, shard, incarnation); err != nil {
		return err
	}
	hc, err := twilioclient.PooledHTTPClient(sim.URL(), 10*time.Second, c)
	if err != nil {
		return err
	}
	rc, err := twilioclient.New(sim.AccountSID(), sim.AuthToken(), hc)
	if err != nil {
		return err
	}
	campaign := &campaignfile.Config{Namespace: ns, Name: "bench", Spec: v1.CallCampaignSpec{
		// Calling hours all day in UTC: the check runs, and passes.
		Schedule: v1.ScheduleSpec{CallingHours: v1.CallingHours{Start: "00:00", End: "23:59"}, DefaultTimeZone: "UTC"},
		Script:   v1.CallScript{CompanyName: "Bench", TimeLimit: &metav1.Duration{Duration: time.Minute}},
		Twilio:   v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{"+14155550100"}, CallsPerSecond: 1000, CallbackURL: cb.URL},
	}}
	reg := prometheus.NewRegistry()
	w, err := worker.New(worker.Options{
		Name: "bench-worker", Shards: []queue.Shard{shard}, Concurrency: c,
		Store: sts[1], Redis: rdb, Twilio: rc.Api, AccountSID: sim.AccountSID(), Campaign: campaignfile.Static{Config: campaign},
		Registry: reg, Logger: logger,
		// The sweeper runs its query as usual but must not queue the
		// attempts of later rounds, which are due in the call log already.
		SweepOverdue: 24 * time.Hour,
		// The callback server here drops the calls' status callbacks, so
		// every call would look as if its final status were lost: the
		// resolver would fetch and finish each one a few minutes after it
		// was placed, work that lands in later rounds of the worker side
		// only (and moves attempts on from dialed). Its queries still run.
		FinalStatusMargin: 24 * time.Hour,
	})
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(wctx) }()
	defer func() { stop(); <-runDone }()
	for counter(reg, "delauto_worker_consuming", "") != 1 {
		time.Sleep(10 * time.Millisecond)
	}
	// The worker's start-up sweep reads every queued attempt of its call
	// log; let it finish so it does not land in the first round's ceiling.
	for t0 := time.Now(); counter(reg, "delauto_worker_sweeps_total", "periodic") < 1; {
		if counter(reg, "delauto_worker_loop_errors_total", "sweeper") > 0 || time.Since(t0) > 5*time.Minute {
			return errors.New("the worker's start-up sweep did not finish (see delauto_worker_loop_errors_total)")
		}
		time.Sleep(50 * time.Millisecond)
	}

	var done [2]atomic.Int64
	var took [2]time.Duration
	var cpu [2]procs.CPU
	for i := range cpu {
		cpu[i] = procs.CPU{}
	}
	var ratios []float64
	size := (n + rounds - 1) / rounds
	for r := 0; r < rounds; r++ {
		lo, hi := r*size, min((r+1)*size, n)
		if lo >= hi {
			break
		}
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		var roundTook [2]time.Duration
		for _, side := range order {
			c0 := procs.CPUSnapshot(benchProcess)
			t0 := time.Now()
			stopProgress := progress(fmt.Sprintf("round %d %s", r+1, sideName[side]), &done[side], lo, hi-lo, t0, func() string {
				if side == 1 {
					return fmt.Sprintf("(in flight %d)", w.Dialer().InFlight())
				}
				return ""
			})
			if side == 0 {
				if err := ceilingRound(ctx, sts[0], ids[0][lo:hi], c, &done[0]); err != nil {
					stopProgress()
					return err
				}
			} else {
				entries := make([]queue.Entry, 0, hi-lo)
				now := time.Now()
				for _, id := range ids[1][lo:hi] {
					entries = append(entries, queue.Entry{Shard: shard, ID: id, Due: now, Mode: queue.AddOnly})
				}
				if _, err := q.ScheduleBatch(ctx, entries); err != nil {
					stopProgress()
					return err
				}
				for done[1].Load() < int64(hi) {
					time.Sleep(5 * time.Millisecond)
					done[1].Store(int64(counter(reg, "delauto_worker_dials_total", "dialed")))
				}
			}
			d := time.Since(t0)
			stopProgress()
			roundTook[side] = d
			took[side] += d
			cpu[side].Add(procs.CPUSnapshot(benchProcess).Minus(c0))
			fmt.Printf("[round %d] %s: %d attempts in %s, %.1f/s\n", r+1, sideName[side], hi-lo, d.Round(time.Millisecond), float64(hi-lo)/d.Seconds())
		}
		ratio := roundTook[0].Seconds() / roundTook[1].Seconds()
		ratios = append(ratios, ratio)
		fmt.Printf("[round %d] worker / store ceiling = %.2f; so far %d attempts per side: ceiling %.1f/s, worker %.1f/s, ratio %.2f\n",
			r+1, ratio, hi, float64(hi)/took[0].Seconds(), float64(hi)/took[1].Seconds(), took[0].Seconds()/took[1].Seconds())
	}
	ceiling := float64(n) / took[0].Seconds()
	rate := float64(n) / took[1].Seconds()
	fmt.Printf("[ceiling] store.DialSequence, no-op dial: %.1f attempts/s; CPU %s\n", ceiling, cpu[0].String())
	fmt.Printf("[worker] full pipeline: %.1f calls/s; CPU %s\n", rate, cpu[1].String())
	fmt.Printf("[rounds] worker / ceiling per round: %s (median %.2f)\n", fmtList(ratios), median(ratios))

	// Exactly one call per attempt, none lost. FerretDB filters callSid in
	// its own process over every dialed attempt: give the count minutes,
	// not the store's per-operation timeout.
	checkCtx, cancelCheck := context.WithTimeout(ctx, 10*time.Minute)
	defer cancelCheck()
	// An attempt with a call SID was dialed, whatever it became since (the
	// resolver may have finished its call).
	attempts := mc.Database(dbs[1]).Collection(store.AttemptsCollection)
	dialed, err := attempts.CountDocuments(checkCtx, bson.D{{Key: "callSid", Value: bson.D{{Key: "$exists", Value: true}}}})
	if err != nil {
		return fmt.Errorf("count the dialed attempts: %w", err)
	}
	if int(dialed) < n {
		if err := printStates(checkCtx, attempts); err != nil {
			return err
		}
	}
	dups := len(sim.DuplicateAttempts())
	stats := sim.Stats()
	lost := n - int(dialed)
	if called := stats.CallsCreated - dups; called < n {
		lost = max(lost, n-called)
	}
	fmt.Printf("[check] simulator: %d create requests, %d calls; call log: %d attempts dialed with a call SID\n",
		stats.CreateRequests, stats.CallsCreated, dialed)
	fmt.Printf("worker calls_per_s=%.1f store_ceiling_ratio=%.2f duplicates=%d lost=%d\n", rate, rate/ceiling, dups, lost)
	return nil
}

var sideName = [2]string{"ceiling", "worker"}

// printStates prints how many attempts of the worker side's call log are in
// each state, with and without a call SID: where the lost ones stand.
func printStates(ctx context.Context, attempts *mongo.Collection) error {
	cur, err := attempts.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "state", Value: 1}, {Key: "callSid", Value: 1}}))
	if err != nil {
		return fmt.Errorf("read the attempts' states: %w", err)
	}
	defer cur.Close(ctx)
	counts := map[string]int{}
	for cur.Next(ctx) {
		var a struct {
			State   string `bson:"state"`
			CallSID string `bson:"callSid"`
		}
		if err := cur.Decode(&a); err != nil {
			return err
		}
		key := a.State
		if a.CallSID == "" {
			key += " (no call SID)"
		}
		counts[key]++
	}
	if err := cur.Err(); err != nil {
		return err
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("[check] attempts %s: %d\n", k, counts[k])
	}
	return nil
}

// ceilingRound runs store.DialSequence with a no-op dial on ids with c
// goroutines. A store error (FerretDB times out an operation now and then
// on a loaded machine) is counted and printed, not retried: the attempt is
// left as the error left it. More than 1% of the round failing stops the run.
func ceilingRound(ctx context.Context, st *store.Store, ids []string, c int, done *atomic.Int64) error {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) {
					return
				}
				if _, err := st.DialSequence(ctx, ids[i], "bench", time.Minute, noopDial); err != nil {
					firstErr.CompareAndSwap(nil, err)
					failed.Add(1)
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	err, _ := firstErr.Load().(error)
	if err == nil {
		return nil
	}
	if n := failed.Load(); n*100 > int64(len(ids)) {
		return fmt.Errorf("store ceiling: %d of %d attempts failed, first: %w", n, len(ids), err)
	}
	fmt.Printf("[ceiling] %d of %d attempts failed in the store (counted, not retried); first: %v\n", failed.Load(), len(ids), err)
	return nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtList(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}

func noopDial(_ context.Context, a *store.Attempt) (store.DialResult, error) {
	return store.DialResult{CallSID: "CA" + strings.ReplaceAll(a.ID, "-", "")}, nil
}

// seed creates n queued attempts due now with c goroutines.
func seed(ctx context.Context, st *store.Store, n, c int, ns string) ([]string, error) {
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	due := time.Now().Add(-time.Second)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				uid := uuidFor(i)
				a, _, err := st.CreateAttempt(ctx, store.NewAttempt{
					Delivery: store.DeliveryRef{UID: uid, Namespace: ns, Name: fmt.Sprintf("parcel-%d", i)},
					Campaign: ns + "/bench", Shard: "shard-0", Number: 1, Due: due,
					To:      fmt.Sprintf("+1415%07d", 5550000+i%4000000),
					Context: &store.CallContext{RecipientName: "Ada", TimeZone: "UTC", Address: "1 Main St", AgentName: "Bob"},
				})
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ids[i] = a.ID
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, fmt.Errorf("seed %s: %w", ns, err)
	}
	return ids, nil
}

// uuidFor is a UUID-shaped delivery UID for attempt i of a run.
var runPrefix = randomHex(4)

func uuidFor(i int64) string {
	return fmt.Sprintf("%s-0000-4000-8000-%012x", runPrefix, i)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// progress prints a line every 5 s until stopped: the part of n done
// (done minus base) and the rates.
func progress(phase string, done *atomic.Int64, base, n int, start time.Time, extra ...func() string) func() {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		last, lastAt := int64(0), start
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				d := done.Load() - int64(base)
				more := ""
				for _, e := range extra {
					more += " " + e()
				}
				fmt.Printf("[%s] %d/%d after %s: %.1f/s now, %.1f/s overall%s\n", phase, d, n, now.Sub(start).Round(time.Second),
					float64(d-last)/now.Sub(lastAt).Seconds(), float64(d)/now.Sub(start).Seconds(), more)
				last, lastAt = d, now
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}

// counter reads a counter with the given first label value, or an
// unlabelled counter or gauge.
func counter(reg *prometheus.Registry, name, label string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case label == "" && m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case label == "" && m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label:
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func redisClient(url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opts.ReadTimeout = 15 * time.Second
	return redis.NewClient(opts), nil
}
