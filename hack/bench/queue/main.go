// Command queue-bench measures DelAuto's call queue (workers/queue) side by
// side with asynq and BullMQ on one Redis: drain throughput, pickup latency
// at a steady arrival rate, and the lateness of scheduled jobs. run.sh starts
// the Redis and calls it; its last line is the summary.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/workers/queue"
)

var (
	addr        = flag.String("redis", "127.0.0.1:6379", "Redis address (the benchmark flushes it)")
	bullScript  = flag.String("bullmq", "bullmq.mjs", "the BullMQ side's Node script")
	systemsFlag = flag.String("systems", "delauto,asynq,bullmq", "systems to measure")
	partsFlag   = flag.String("parts", "drain,pickup,lateness", "measurements to run")
	jobs        = flag.Int("jobs", 100000, "drain: pre-enqueued jobs per run")
	runs        = flag.Int("runs", 5, "drain: runs per system (median reported)")
	concurrency = flag.Int("concurrency", 100, "handler concurrency of every system")
	rate        = flag.Int("rate", 1000, "pickup: arrivals per second")
	pickupFor   = flag.Duration("pickup-duration", 10*time.Second, "pickup: how long the producer runs")
	lateJobs    = flag.Int("lateness-jobs", 10000, "lateness: scheduled jobs")
	lateSpread  = flag.Duration("lateness-spread", 20*time.Second, "lateness: due times spread over this long")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of DelAuto's drain runs here")
)

var rdb *redis.Client

func main() {
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	rdb = redis.NewClient(&redis.Options{Addr: *addr})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		fatal("redis at %s: %v", *addr, err)
	}
	systems := strings.Split(*systemsFlag, ",")
	parts := strings.Split(*partsFlag, ",")
	has := func(l []string, s string) bool { return slices.Contains(l, s) }

	drain := map[string]float64{}
	pickup := map[string]lat{}
	late := map[string]lat{}
	if has(parts, "drain") {
		for _, sys := range systems {
			var rates []float64
			for r := 1; r <= *runs; r++ {
				flush()
				var secs float64
				switch sys {
				case "delauto":
					secs = drainDelAuto(r)
				case "asynq":
					secs = drainAsynq()
				case "bullmq":
					var res struct{ Seconds float64 }
					node("drain", &res)
					secs = res.Seconds
				default:
					fatal("unknown system %q", sys)
				}
				rates = append(rates, float64(*jobs)/secs)
				progress("drain %-7s run %d/%d: %d jobs in %.3fs = %.0f jobs/s", sys, r, *runs, *jobs, secs, float64(*jobs)/secs)
			}
			slices.Sort(rates)
			drain[sys] = rates[len(rates)/2]
			progress("drain %-7s median %.0f jobs/s (min %.0f, max %.0f)", sys, drain[sys], rates[0], rates[len(rates)-1])
		}
	}
	if has(parts, "pickup") {
		for _, sys := range systems {
			flush()
			var l lat
			switch sys {
			case "delauto":
				l = pickupDelAuto()
			case "asynq":
				l = pickupAsynq()
			case "bullmq":
				node("pickup", &l)
			}
			pickup[sys] = l
			progress("pickup  %-7s at %d/s: %s", sys, *rate, l)
		}
	}
	if has(parts, "lateness") {
		for _, sys := range systems {
			flush()
			var l lat
			switch sys {
			case "delauto":
				l = latenessDelAuto()
			case "asynq":
				l = latenessAsynq()
			case "bullmq":
				node("lateness", &l)
			}
			late[sys] = l
			progress("lateness %-7s %d jobs over %s: %s", sys, *lateJobs, *lateSpread, l)
		}
	}

	fmt.Println()
	fmt.Printf("%-8s %14s %22s %22s\n", "system", "drain jobs/s", "pickup p50/p99 ms", "lateness p50/p99 ms")
	for _, sys := range systems {
		fmt.Printf("%-8s %14.0f %22s %22s\n", sys, drain[sys], pickup[sys].short(), late[sys].short())
	}
	best := 0.0
	for _, sys := range systems {
		if sys != "delauto" {
			best = max(best, drain[sys])
		}
	}
	ratio := 0.0
	if best > 0 {
		ratio = drain["delauto"] / best
	}
	fmt.Printf("queue drain_ratio_vs_best=%.2f pickup_p99_ms=%.2f lateness_p99_ms=%.2f\n",
		ratio, pickup["delauto"].P99, late["delauto"].P99)
}

// lat is a latency distribution in milliseconds.
type lat struct {
	N   int
	P50 float64
	P99 float64
	Max float64
}

func (l lat) String() string {
	return fmt.Sprintf("n=%d p50=%.2fms p99=%.2fms max=%.2fms", l.N, l.P50, l.P99, l.Max)
}

func (l lat) short() string {
	if l.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f / %.2f", l.P50, l.P99)
}

func latOf(ds []time.Duration) lat {
	if len(ds) == 0 {
		return lat{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	return lat{N: len(ds), P50: ms(q(0.50)), P99: ms(q(0.99)), Max: ms(ds[len(ds)-1])}
}

func progress(format string, args ...any) {
	fmt.Printf("[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "queue-bench: "+format+"\n", args...)
	os.Exit(1)
}

func flush() {
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		fatal("flushall: %v", err)
	}
}

// node runs the BullMQ side and decodes its last output line.
func node(mode string, out any) {
	host, port, _ := strings.Cut(*addr, ":")
	cmd := exec.Command("node", *bullScript, "--mode", mode, "--host", host, "--port", port,
		"--jobs", strconv.Itoa(*jobs), "--concurrency", strconv.Itoa(*concurrency),
		"--rate", strconv.Itoa(*rate), "--pickup-ms", strconv.FormatInt(pickupFor.Milliseconds(), 10),
		"--lateness-jobs", strconv.Itoa(*lateJobs), "--lateness-spread-ms", strconv.FormatInt(lateSpread.Milliseconds(), 10))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fatal("node: %v", err)
	}
	if err := cmd.Start(); err != nil {
		fatal("node: %v", err)
	}
	var last string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		last = sc.Text()
	}
	if err := cmd.Wait(); err != nil {
		fatal("node %s: %v", mode, err)
	}
	if err := json.Unmarshal([]byte(last), out); err != nil {
		fatal("node %s: bad result %q: %v", mode, last, err)
	}
}

// --- DelAuto -----------------------------------------------------------

var benchShard = queue.Shard{Namespace: "bench", Campaign: "queue", Name: "0"}

// consume runs a DelAuto consumer with handler until stop is closed.
func consume(handler queue.Handler) (stop func()) {
	q := queue.New(rdb, queue.Options{})
	c, err := q.NewConsumer(queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: benchShard}}, Handler: handler, Concurrency: *concurrency,
	})
	if err != nil {
		fatal("consumer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func drainDelAuto(run int) float64 {
	ctx := context.Background()
	q := queue.New(rdb, queue.Options{})
	now := time.Now()
	batch := make([]queue.Entry, 0, 5000)
	for i := 0; i < *jobs; i++ {
		batch = append(batch, queue.Entry{Shard: benchShard, ID: "j" + strconv.Itoa(i), Due: now})
		if len(batch) == cap(batch) || i == *jobs-1 {
			if _, err := q.ScheduleBatch(ctx, batch); err != nil {
				fatal("schedule: %v", err)
			}
			batch = batch[:0]
		}
	}
	if n, _ := rdb.XLen(ctx, benchShard.ReadyKey()).Result(); n != int64(*jobs) {
		fatal("pre-enqueued %d, want %d", n, *jobs)
	}
	if *cpuProfile != "" && run == 1 {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fatal("%v", err)
		}
		_ = pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	var n atomic.Int64
	all := make(chan struct{})
	start := time.Now()
	stop := consume(func(context.Context, queue.Message) error {
		if n.Add(1) == int64(*jobs) {
			close(all)
		}
		return nil
	})
	<-all
	waitEmpty(func() bool { l, _ := rdb.HLen(ctx, benchShard.IndexKey()).Result(); return l == 0 })
	secs := time.Since(start).Seconds()
	stop()
	return secs
}

// waitEmpty polls until the queue holds nothing (every job acknowledged).
func waitEmpty(empty func() bool) {
	for !empty() {
		time.Sleep(time.Millisecond)
	}
}

// latencies collects handler start minus a per-job reference time.
type latencies struct {
	mu  sync.Mutex
	ref map[string]time.Time
	got []time.Duration
	all chan struct{}
	n   int
}

func newLatencies(n int) *latencies {
	return &latencies{ref: make(map[string]time.Time, n), all: make(chan struct{}), n: n}
}

func (l *latencies) set(id string, t time.Time) {
	l.mu.Lock()
	l.ref[id] = t
	l.mu.Unlock()
}

func (l *latencies) seen(id string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ref, ok := l.ref[id]
	if !ok {
		return
	}
	delete(l.ref, id)
	l.got = append(l.got, at.Sub(ref))
	if len(l.got) == l.n {
		close(l.all)
	}
}

func (l *latencies) wait(timeout time.Duration) lat {
	select {
	case <-l.all:
	case <-time.After(timeout):
		progress("  only %d of %d jobs ran within %s", len(l.got), l.n, timeout)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return latOf(l.got)
}

// produce calls enqueue at the arrival rate for the pickup duration, on an
// absolute timetable (a slow call does not shift later arrivals).
func produce(enqueue func(i int)) int {
	n := int(pickupFor.Seconds() * float64(*rate))
	step := time.Second / time.Duration(*rate)
	start := time.Now()
	for i := 0; i < n; i++ {
		if d := time.Until(start.Add(time.Duration(i) * step)); d > 0 {
			time.Sleep(d)
		}
		enqueue(i)
	}
	return n
}

func pickupDelAuto() lat {
	ctx := context.Background()
	n := int(pickupFor.Seconds() * float64(*rate))
	l := newLatencies(n)
	stop := consume(func(_ context.Context, m queue.Message) error { l.seen(m.ID, time.Now()); return nil })
	defer stop()
	time.Sleep(200 * time.Millisecond)
	q := queue.New(rdb, queue.Options{})
	ctl := startControl()
	produce(func(i int) {
		id := "p" + strconv.Itoa(i)
		now := time.Now()
		l.set(id, now)
		if _, err := q.Schedule(ctx, benchShard, id, now); err != nil {
			fatal("schedule: %v", err)
		}
	})
	res := l.wait(10 * time.Second)
	ctl()
	return res
}

func latenessDelAuto() lat {
	ctx := context.Background()
	l := newLatencies(*lateJobs)
	q := queue.New(rdb, queue.Options{})
	base := time.Now().Add(2 * time.Second)
	step := *lateSpread / time.Duration(*lateJobs)
	var batch []queue.Entry
	for i := 0; i < *lateJobs; i++ {
		id := "l" + strconv.Itoa(i)
		due := base.Add(time.Duration(i) * step)
		l.set(id, due)
		batch = append(batch, queue.Entry{Shard: benchShard, ID: id, Due: due})
	}
	if _, err := q.ScheduleBatch(ctx, batch); err != nil {
		fatal("schedule: %v", err)
	}
	// Where lateness comes from: due -> promotion (the ready entry's id is
	// the server's millisecond clock) and promotion -> handler start.
	var mu sync.Mutex
	var promote, deliver []time.Duration
	stop := consume(func(_ context.Context, m queue.Message) error {
		now := time.Now()
		l.seen(m.ID, now)
		if ms, err := strconv.ParseInt(m.EntryID[:strings.IndexByte(m.EntryID, '-')], 10, 64); err == nil {
			at := time.UnixMilli(ms)
			mu.Lock()
			promote = append(promote, at.Sub(m.Due))
			deliver = append(deliver, now.Sub(at))
			mu.Unlock()
		}
		return nil
	})
	defer stop()
	ctl := startControl()
	res := l.wait(2*time.Second + *lateSpread + 10*time.Second)
	ctl()
	mu.Lock()
	defer mu.Unlock()
	progress("  due -> promoted (ms clock): %s; promoted -> handler start: %s", latOf(promote), latOf(deliver))
	return res
}

// startControl measures, until the returned function is called, how late a
// plain 2ms sleep wakes and how long a PING takes in this process: the
// machine's own scheduling noise, beside DelAuto's latencies.
func startControl() (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var sleeps, pings []time.Duration
		for {
			select {
			case <-done:
				progress("  control in the same process: 2ms sleep oversleep %s; PING %s", latOf(sleeps), latOf(pings))
				return
			default:
			}
			due := time.Now().Add(2 * time.Millisecond)
			time.Sleep(time.Until(due))
			sleeps = append(sleeps, time.Since(due))
			t := time.Now()
			_ = rdb.Ping(context.Background()).Err()
			pings = append(pings, time.Since(t))
		}
	}()
	return func() { close(done); <-stopped }
}

// --- asynq --------------------------------------------------------------

func asynqServer(h asynq.HandlerFunc) *asynq.Server {
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: *addr}, asynq.Config{
		Concurrency: *concurrency, LogLevel: asynq.FatalLevel, Logger: quietLogger{},
	})
	if err := srv.Start(h); err != nil {
		fatal("asynq server: %v", err)
	}
	return srv
}

// quietLogger drops asynq's logs.
type quietLogger struct{}

func (quietLogger) Debug(...any) {}
func (quietLogger) Info(...any)  {}
func (quietLogger) Warn(...any)  {}
func (quietLogger) Error(...any) {}
func (quietLogger) Fatal(...any) {}

func drainAsynq() float64 {
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: *addr})
	defer client.Close()
	// asynq has no batch enqueue: enqueue from many goroutines.
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(*jobs) {
					return
				}
				if _, err := client.Enqueue(asynq.NewTask("noop", []byte(strconv.FormatInt(i, 10)))); err != nil {
					fatal("asynq enqueue: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: *addr})
	defer insp.Close()
	var n atomic.Int64
	all := make(chan struct{})
	start := time.Now()
	srv := asynqServer(func(context.Context, *asynq.Task) error {
		if n.Add(1) == int64(*jobs) {
			close(all)
		}
		return nil
	})
	<-all
	waitEmpty(func() bool {
		qi, err := insp.GetQueueInfo("default")
		return err == nil && qi.Active == 0 && qi.Pending == 0
	})
	secs := time.Since(start).Seconds()
	srv.Shutdown()
	return secs
}

func pickupAsynq() lat {
	n := int(pickupFor.Seconds() * float64(*rate))
	l := newLatencies(n)
	srv := asynqServer(func(_ context.Context, t *asynq.Task) error { l.seen(string(t.Payload()), time.Now()); return nil })
	defer srv.Shutdown()
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: *addr})
	defer client.Close()
	time.Sleep(200 * time.Millisecond)
	produce(func(i int) {
		id := strconv.Itoa(i)
		l.set(id, time.Now())
		if _, err := client.Enqueue(asynq.NewTask("noop", []byte(id))); err != nil {
			fatal("asynq enqueue: %v", err)
		}
	})
	return l.wait(15 * time.Second)
}

func latenessAsynq() lat {
	l := newLatencies(*lateJobs)
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: *addr})
	defer client.Close()
	base := time.Now().Add(5 * time.Second) // asynq enqueues one task per call
	step := *lateSpread / time.Duration(*lateJobs)
	for i := 0; i < *lateJobs; i++ {
		id := strconv.Itoa(i)
		due := base.Add(time.Duration(i) * step)
		l.set(id, due)
		if _, err := client.Enqueue(asynq.NewTask("noop", []byte(id)), asynq.ProcessAt(due)); err != nil {
			fatal("asynq enqueue: %v", err)
		}
	}
	srv := asynqServer(func(_ context.Context, t *asynq.Task) error { l.seen(string(t.Payload()), time.Now()); return nil })
	defer srv.Shutdown()
	return l.wait(5*time.Second + *lateSpread + 15*time.Second)
}
