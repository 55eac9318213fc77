package queue_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/workers/queue"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	testservices.Main(m, testservices.Want{Redis: true, RedisCluster: true}, &env)
}

// shardFor returns a shard of its own for a test, so tests never share keys.
func shardFor(t *testing.T, name string) queue.Shard {
	t.Helper()
	ns := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	s := queue.Shard{Namespace: ns, Campaign: "cc", Name: name}
	// The shard's keys go with the test: a test run again in the process
	// (-count) starts on an empty shard.
	t.Cleanup(func() {
		ctx := context.Background()
		c := env.Redis.Client()
		defer c.Close()
		iter := c.Scan(ctx, 0, "{"+s.String()+"}*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return s
}

// newQueue returns a queue on rdb with its own metrics registry.
func newQueue(t *testing.T, rdb redis.UniversalClient) (*queue.Queue, *queue.Metrics) {
	t.Helper()
	m, err := queue.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return queue.New(rdb, queue.Options{Metrics: m}), m
}

func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	c := env.Redis.Client()
	t.Cleanup(func() { c.Close() })
	return c
}

// delivery is a handler start seen by a recorder.
type delivery struct {
	queue.Message
	at time.Time
}

// recorder is a handler that records every start and acknowledges.
type recorder struct {
	mu   sync.Mutex
	seen []delivery
	ch   chan delivery
}

func newRecorder() *recorder { return &recorder{ch: make(chan delivery, 10000)} }

func (r *recorder) handle(_ context.Context, m queue.Message) error {
	d := delivery{Message: m, at: time.Now()}
	r.mu.Lock()
	r.seen = append(r.seen, d)
	r.mu.Unlock()
	r.ch <- d
	return nil
}

// wait collects n deliveries or fails after timeout.
func (r *recorder) wait(t *testing.T, n int, timeout time.Duration) []delivery {
	t.Helper()
	var out []delivery
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case d := <-r.ch:
			out = append(out, d)
		case <-deadline:
			t.Fatalf("got %d of %d deliveries within %s: %v", len(out), n, timeout, ids(out))
		}
	}
	return out
}

// none fails if any delivery arrives within d.
func (r *recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case x := <-r.ch:
		t.Fatalf("unexpected delivery of %q (deliveries %d)", x.ID, x.Deliveries)
	case <-time.After(d):
	}
}

func ids(ds []delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

// run starts a consumer and stops it (draining) when the test ends.
func run(t *testing.T, q *queue.Queue, opts queue.ConsumerOptions) (*queue.Consumer, func()) {
	t.Helper()
	c, err := q.NewConsumer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("consumer run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("consumer did not drain within 10s")
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

func stats(t *testing.T, q *queue.Queue, s queue.Shard) queue.ShardStats {
	t.Helper()
	st, err := q.Stats(context.Background(), []queue.Shard{s}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return st[0]
}

func TestScheduledEntriesFireInDueOrderNoneEarly(t *testing.T) {
	ctx := context.Background()
	q, m := newQueue(t, redisClient(t))
	s := shardFor(t, "0")
	base := time.Now().Add(400 * time.Millisecond)
	const n = 40
	entries := make([]queue.Entry, n)
	for i := range entries {
		entries[i] = queue.Entry{Shard: s, ID: fmt.Sprintf("a%02d", i), Due: base.Add(time.Duration(i) * 20 * time.Millisecond)}
	}
	shuffled := append([]queue.Entry(nil), entries...)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	res, err := q.ScheduleBatch(ctx, shuffled)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r != queue.Added {
			t.Fatalf("%s: %s, want added", shuffled[i].ID, r)
		}
	}
	rec := newRecorder()
	run(t, q, queue.ConsumerOptions{Shards: []queue.ShardWeight{{Shard: s}}, Handler: rec.handle, Concurrency: 1})
	got := rec.wait(t, n, 5*time.Second)
	var worst time.Duration
	for i, d := range got {
		want := entries[i]
		if d.ID != want.ID {
			t.Fatalf("delivery %d is %s, want %s (order %v)", i, d.ID, want.ID, ids(got))
		}
		if ms := (want.Due.UnixNano() + 999_999) / 1_000_000; d.Due.UnixMilli() != ms {
			t.Errorf("%s: due %s, want %s rounded up to the millisecond", d.ID, d.Due, want.Due)
		}
		if d.at.Before(want.Due) {
			t.Errorf("%s started %s before its due time", d.ID, want.Due.Sub(d.at))
		}
		worst = max(worst, d.at.Sub(want.Due))
		if d.Deliveries != 1 {
			t.Errorf("%s: deliveries %d, want 1", d.ID, d.Deliveries)
		}
	}
	t.Logf("worst lateness of %d entries: %s", n, worst)
	rec.none(t, 200*time.Millisecond)
	if got := testutil.ToFloat64(m.Handled.WithLabelValues(s.String())); got != n {
		t.Errorf("handled_total = %v, want %d", got, n)
	}
	if got := testutil.CollectAndCount(m.ScheduleLateness); got != 1 {
		t.Errorf("schedule lateness series = %d, want 1", got)
	}
}

func TestCancelAndReschedule(t *testing.T) {
	ctx := context.Background()
	q, _ := newQueue(t, redisClient(t))
	s := shardFor(t, "0")
	now := time.Now()
	must := func(r queue.Result, err error) queue.Result {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	expect := func(what string, got, want queue.Result) {
		t.Helper()
		if got != want {
			t.Fatalf("%s: %s, want %s", what, got, want)
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		expect("schedule "+id, must(q.Schedule(ctx, s, id, now.Add(400*time.Millisecond))), queue.Added)
	}
	expect("cancel b", must(q.Cancel(ctx, s, "b")), queue.Cancelled)
	expect("cancel b again", must(q.Cancel(ctx, s, "b")), queue.NotQueued)
	cDue := now.Add(1000 * time.Millisecond)
	expect("move c", must(q.Reschedule(ctx, s, "c", cDue)), queue.Moved)
	expect("move unknown", must(q.Reschedule(ctx, s, "zz", cDue)), queue.NotQueued)

	// Due now with nothing else due: straight into the ready stream; cancel
	// and reschedule still reach it there while no worker has read it.
	expect("schedule d", must(q.Schedule(ctx, s, "d", now)), queue.Added)
	expect("schedule e", must(q.Schedule(ctx, s, "e", now)), queue.Added)
	if st := stats(t, q, s); st.Ready != 2 || st.Scheduled != 2 {
		t.Fatalf("stats before cancel: %+v, want 2 ready, 2 scheduled", st)
	}
	expect("cancel ready d", must(q.Cancel(ctx, s, "d")), queue.Cancelled)
	eDue := now.Add(700 * time.Millisecond)
	expect("move ready e", must(q.Reschedule(ctx, s, "e", eDue)), queue.Moved)
	if st := stats(t, q, s); st.Ready != 0 || st.Scheduled != 3 {
		t.Fatalf("stats after cancel: %+v, want 0 ready, 3 scheduled", st)
	}

	rec := newRecorder()
	release := make(chan struct{})
	handler := func(ctx context.Context, m queue.Message) error {
		if m.ID == "f" {
			<-release
		}
		return rec.handle(ctx, m)
	}
	run(t, q, queue.ConsumerOptions{Shards: []queue.ShardWeight{{Shard: s}}, Handler: handler, Concurrency: 4})
	got := rec.wait(t, 3, 3*time.Second)
	if fmt.Sprint(ids(got)) != "[a e c]" {
		t.Fatalf("deliveries %v, want [a e c]", ids(got))
	}
	for _, d := range got {
		if d.at.Before(d.Due) {
			t.Errorf("%s ran %s early", d.ID, d.Due.Sub(d.at))
		}
	}
	if got[2].at.Before(cDue) || got[1].at.Before(eDue) {
		t.Errorf("moved entries ran before their new due times")
	}

	// In flight: a worker holds f; cancel and move cannot touch it.
	expect("schedule f", must(q.Schedule(ctx, s, "f", time.Now())), queue.Added)
	deadline := time.Now().Add(3 * time.Second)
	for stats(t, q, s).InFlight != 1 {
		if time.Now().After(deadline) {
			t.Fatal("f never went in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}
	expect("cancel in-flight f", must(q.Cancel(ctx, s, "f")), queue.InFlight)
	expect("move in-flight f", must(q.Reschedule(ctx, s, "f", time.Now().Add(time.Hour))), queue.InFlight)
	expect("schedule in-flight f", must(q.Schedule(ctx, s, "f", time.Now())), queue.Unchanged)
	close(release)
	rec.wait(t, 1, 3*time.Second)
	rec.none(t, 300*time.Millisecond)
	expect("cancel handled f", must(q.Cancel(ctx, s, "f")), queue.NotQueued)
	if st := stats(t, q, s); st.InFlight != 0 || st.Ready != 0 || st.Scheduled != 0 || st.DueNow != 0 {
		t.Fatalf("stats at the end: %+v, want empty", st)
	}
}

func TestDuplicateIDsAreQueuedOnce(t *testing.T) {
	ctx := context.Background()
	q, _ := newQueue(t, redisClient(t))
	s := shardFor(t, "0")
	soon := time.Now().Add(300 * time.Millisecond)
	for i, want := range []queue.Result{queue.Added, queue.Unchanged, queue.Unchanged} {
		r, err := q.Schedule(ctx, s, "x", soon.Add(time.Duration(i)*time.Second))
		if err != nil || r != want {
			t.Fatalf("schedule x #%d: %s %v, want %s", i, r, err, want)
		}
	}
	res, err := q.ScheduleBatch(ctx, []queue.Entry{
		{Shard: s, ID: "y", Due: soon}, {Shard: s, ID: "y", Due: soon}, {Shard: s, ID: "x", Due: soon},
	})
	if err != nil || fmt.Sprint(res) != "[added unchanged unchanged]" {
		t.Fatalf("batch: %v %v", res, err)
	}
	// Many schedulers racing on the same ids, due now (straight to the
	// stream) and later.
	const workers, n = 8, 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var batch []queue.Entry
			for i := 0; i < n; i++ {
				due := time.Now()
				if i%2 == 1 {
					due = soon
				}
				batch = append(batch, queue.Entry{Shard: s, ID: fmt.Sprintf("r%03d", i), Due: due})
			}
			rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
			res, err := q.ScheduleBatch(ctx, batch)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range res {
				if r == queue.Added {
					added++
				}
			}
		}()
	}
	wg.Wait()
	if added != n {
		t.Fatalf("%d schedulers added %d entries, want %d", workers, added, n)
	}
	rec := newRecorder()
	run(t, q, queue.ConsumerOptions{Shards: []queue.ShardWeight{{Shard: s}}, Handler: rec.handle, Concurrency: 16})
	got := rec.wait(t, n+2, 5*time.Second)
	rec.none(t, 500*time.Millisecond)
	seen := map[string]int{}
	for _, d := range got {
		seen[d.ID]++
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s handled %d times", id, k)
		}
	}
}

func TestPromoterWakesForEarlierEntryFromAnotherProcess(t *testing.T) {
	ctx := context.Background()
	q, _ := newQueue(t, redisClient(t))
	s := shardFor(t, "0")
	rec := newRecorder()
	// A long safety tick: only a wake-up can make an earlier entry on time.
	run(t, q, queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: s}}, Handler: rec.handle,
		Promoter: queue.PromoterOptions{SafetyTick: 30 * time.Second},
	})
	if _, err := q.Schedule(ctx, s, "late", time.Now().Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the promoter now sleeps until "late"

	// Another process (its own client and queue) schedules an earlier entry.
	other, _ := newQueue(t, redisClient(t))
	for _, id := range []string{"early", "early2"} {
		due := time.Now().Add(300 * time.Millisecond)
		if _, err := other.Schedule(ctx, s, id, due); err != nil {
			t.Fatal(err)
		}
		d := rec.wait(t, 1, 2*time.Second)[0]
		if d.ID != id {
			t.Fatalf("got %s, want %s", d.ID, id)
		}
		if late := d.at.Sub(due); late < -time.Millisecond || late > 150*time.Millisecond {
			t.Fatalf("%s ran %s after its due time, want within 150ms", id, late)
		}
	}
	// The same from this process.
	due := time.Now().Add(300 * time.Millisecond)
	if _, err := q.Schedule(ctx, s, "early3", due); err != nil {
		t.Fatal(err)
	}
	d := rec.wait(t, 1, 2*time.Second)[0]
	if late := d.at.Sub(due); d.ID != "early3" || late > 150*time.Millisecond {
		t.Fatalf("%s ran %s after its due time, want early3 within 150ms", d.ID, late)
	}
}

func TestDeadLetterRetryAndFailedHandlers(t *testing.T) {
	ctx := context.Background()
	q, m := newQueue(t, redisClient(t))
	s := shardFor(t, "0")
	var mu sync.Mutex
	calls := map[string][]int64{}
	retried := make(chan time.Time, 1)
	handler := func(ctx context.Context, msg queue.Message) error {
		mu.Lock()
		calls[msg.ID] = append(calls[msg.ID], msg.Deliveries)
		k := len(calls[msg.ID])
		mu.Unlock()
		switch msg.ID {
		case "poison":
			return errors.New("twilio said no")
		case "bad":
			return queue.Dead(errors.New("number opted out"))
		case "again":
			if k == 1 {
				return queue.Retry(300*time.Millisecond, errors.New("busy"))
			}
			retried <- time.Now()
		case "panic":
			if k == 1 {
				panic("boom")
			}
		}
		return nil
	}
	const maxDeliveries = 3
	run(t, q, queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: s}}, Handler: handler,
		Lease: 300 * time.Millisecond, ReclaimInterval: 50 * time.Millisecond, MaxDeliveries: maxDeliveries,
	})
	start := time.Now()
	for _, id := range []string{"poison", "bad", "again", "panic"} {
		if _, err := q.Schedule(ctx, s, id, start); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case at := <-retried:
		if at.Sub(start) < 300*time.Millisecond {
			t.Errorf("retried after %s, want at least 300ms", at.Sub(start))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the retried entry never came back")
	}
	deadline := time.Now().Add(5 * time.Second)
	var dead []queue.DeadLetter
	for {
		var err error
		if dead, err = q.DeadLetters(ctx, s, 10); err != nil {
			t.Fatal(err)
		}
		if len(dead) == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(dead) != 2 {
		t.Fatalf("dead letters: %+v, want bad and poison", dead)
	}
	byID := map[string]queue.DeadLetter{}
	for _, d := range dead {
		byID[d.ID] = d
	}
	if d := byID["bad"]; d.Reason != "number opted out" || d.Deliveries != 1 {
		t.Errorf("dead letter of bad: %+v", d)
	}
	if d := byID["poison"]; d.Deliveries != maxDeliveries || !strings.Contains(d.Reason, "delivered 3 times") {
		t.Errorf("dead letter of poison: %+v", d)
	}
	time.Sleep(500 * time.Millisecond) // nothing more happens to poison
	mu.Lock()
	if got := fmt.Sprint(calls["poison"]); got != "[1 2 3]" {
		t.Errorf("poison delivered %s, want [1 2 3]", got)
	}
	if got := fmt.Sprint(calls["panic"]); got != "[1 2]" {
		t.Errorf("panicking handler's entry delivered %s, want [1 2]", got)
	}
	mu.Unlock()
	lbl := s.String()
	for name, c := range map[string]prometheus.Counter{
		"dead_lettered": m.DeadLettered.WithLabelValues(lbl), "retried": m.Retried.WithLabelValues(lbl),
	} {
		want := 2.0
		if name == "retried" {
			want = 1
		}
		if got := testutil.ToFloat64(c); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := testutil.ToFloat64(m.Failed.WithLabelValues(lbl)); got != 4 { // 3 poison + 1 panic
		t.Errorf("failed = %v, want 4", got)
	}
	if got := testutil.ToFloat64(m.Reclaimed.WithLabelValues(lbl)); got != 3 { // poison 2,3 + panic 2
		t.Errorf("reclaimed = %v, want 3", got)
	}
	if st := stats(t, q, s); st.InFlight != 0 || st.Ready != 0 || st.DeadLetters != 2 {
		t.Errorf("stats: %+v", st)
	}
}

func TestLongHandlerKeepsItsLease(t *testing.T) {
	ctx := context.Background()
	q, m := newQueue(t, redisClient(t))
	s := shardFor(t, "0")
	var mu sync.Mutex
	var runs []string
	var cancelled bool
	finished := make(chan struct{}, 2)
	mk := func(name string) queue.Handler {
		return func(ctx context.Context, msg queue.Message) error {
			mu.Lock()
			runs = append(runs, fmt.Sprintf("%s:%d", name, msg.Deliveries))
			mu.Unlock()
			select {
			case <-time.After(1500 * time.Millisecond): // five leases
			case <-ctx.Done():
				mu.Lock()
				cancelled = true
				mu.Unlock()
			}
			finished <- struct{}{}
			return nil
		}
	}
	for _, name := range []string{"a", "b"} {
		run(t, q, queue.ConsumerOptions{
			Shards: []queue.ShardWeight{{Shard: s}}, Handler: mk(name), Name: name,
			Lease: 300 * time.Millisecond, ReclaimInterval: 20 * time.Millisecond,
		})
	}
	if _, err := q.Schedule(ctx, s, "long", time.Now()); err != nil {
		t.Fatal(err)
	}
	// A lost lease would have let the other consumer take the message
	// during the run; wait for the run to end (not for a time that a slow
	// start outlasts) and for the message to be acknowledged.
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler did not finish")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st := stats(t, q, s); st.InFlight == 0 && st.Ready == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not acknowledged: %+v", stats(t, q, s))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != 1 || cancelled {
		t.Fatalf("runs %v cancelled %v, want one uninterrupted run", runs, cancelled)
	}
	if got := testutil.ToFloat64(m.Reclaimed.WithLabelValues(s.String())); got != 0 {
		t.Fatalf("reclaimed = %v, want 0", got)
	}
}

func TestDrainFinishesHandlersAndAbortCancelsThem(t *testing.T) {
	ctx := context.Background()
	q, _ := newQueue(t, redisClient(t))
	s := shardFor(t, "0")
	var mu sync.Mutex
	var finished []time.Time
	started := make(chan string, 10)
	c, err := q.NewConsumer(queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: s}}, Concurrency: 5,
		Handler: func(ctx context.Context, m queue.Message) error {
			started <- m.ID
			time.Sleep(300 * time.Millisecond)
			mu.Lock()
			finished = append(finished, time.Now())
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := q.Schedule(ctx, s, fmt.Sprint("d", i), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan time.Time, 1)
	go func() { _ = c.Run(rctx); done <- time.Now() }()
	for i := 0; i < 5; i++ {
		select {
		case <-started:
		case <-time.After(3 * time.Second):
			t.Fatal("handlers did not start")
		}
	}
	cancel()
	var returned time.Time
	select {
	case returned = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after drain")
	}
	mu.Lock()
	if len(finished) != 5 {
		t.Fatalf("%d handlers finished before Run returned, want 5", len(finished))
	}
	for _, f := range finished {
		if f.After(returned) {
			t.Fatal("Run returned before a handler finished")
		}
	}
	mu.Unlock()
	if st := stats(t, q, s); st.InFlight != 0 || st.Ready != 0 {
		t.Fatalf("after drain: %+v, want every outcome acknowledged", st)
	}

	// Abort: the handler's context is cancelled; its entry stays pending and
	// another consumer takes it over after the lease.
	sawCancel := make(chan struct{})
	c2, err := q.NewConsumer(queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: s}}, Lease: 300 * time.Millisecond,
		Handler: func(ctx context.Context, m queue.Message) error {
			started <- m.ID
			<-ctx.Done()
			close(sawCancel)
			return ctx.Err()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Schedule(ctx, s, "stuck", time.Now()); err != nil {
		t.Fatal(err)
	}
	rctx, cancel = context.WithCancel(ctx)
	go func() { _ = c2.Run(rctx); done <- time.Now() }()
	<-started
	cancel()
	select {
	case <-done:
		t.Fatal("Run returned while a handler was still running")
	case <-time.After(200 * time.Millisecond):
	}
	c2.Abort()
	select {
	case <-sawCancel:
	case <-time.After(2 * time.Second):
		t.Fatal("Abort did not cancel the handler")
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after Abort")
	}
	if st := stats(t, q, s); st.InFlight != 1 {
		t.Fatalf("after abort: %+v, want the aborted entry pending", st)
	}
	rec := newRecorder()
	run(t, q, queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: s}}, Handler: rec.handle,
		Lease: 300 * time.Millisecond, ReclaimInterval: 50 * time.Millisecond,
	})
	d := rec.wait(t, 1, 3*time.Second)[0]
	if d.ID != "stuck" || d.Deliveries != 2 {
		t.Fatalf("took over %s with deliveries %d, want stuck with 2", d.ID, d.Deliveries)
	}
}

func TestStats(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	q, _ := newQueue(t, rdb)
	s := shardFor(t, "0")
	if st := stats(t, q, s); st != (queue.ShardStats{Shard: s}) {
		t.Fatalf("stats of an unused shard: %+v, want zeros", st)
	}
	now := time.Now()
	var batch []queue.Entry
	for i := 0; i < 3; i++ { // due now, nothing else due: straight to the stream
		batch = append(batch, queue.Entry{Shard: s, ID: fmt.Sprint("now", i), Due: now})
	}
	for i := 0; i < 2; i++ {
		batch = append(batch, queue.Entry{Shard: s, ID: fmt.Sprint("soon", i), Due: now.Add(100 * time.Millisecond)})
	}
	for i := 0; i < 5; i++ {
		batch = append(batch, queue.Entry{Shard: s, ID: fmt.Sprint("later", i), Due: now.Add(5 * time.Second)})
	}
	for i := 0; i < 4; i++ {
		batch = append(batch, queue.Entry{Shard: s, ID: fmt.Sprint("tomorrow", i), Due: now.Add(24 * time.Hour)})
	}
	if _, err := q.ScheduleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // "soon" is due; no promoter runs
	st := stats(t, q, s)
	want := queue.ShardStats{Shard: s, DueNow: 2, Ready: 3, Scheduled: 9, DueSoon: 5}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	if st.Waiting() != 5 {
		t.Fatalf("waiting %d, want 5", st.Waiting())
	}
	if n, err := q.PromoteNow(ctx, s); err != nil || n != 2 {
		t.Fatalf("PromoteNow: %d %v, want the 2 due entries", n, err)
	}
	if st = stats(t, q, s); st.DueNow != 0 || st.Ready != 5 {
		t.Fatalf("stats after promotion: %+v, want 0 due, 5 ready", st)
	}
	// A worker reads two entries.
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: queue.DefaultGroup, Consumer: "w", Streams: []string{s.ReadyKey(), ">"}, Count: 2, Block: -1,
	}).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	st = stats(t, q, s)
	if st.InFlight != 2 || st.Ready != 3 || st.OldestPendingAge < 20*time.Millisecond || st.OldestPendingAge > 10*time.Second {
		t.Fatalf("stats after a read: %+v", st)
	}
}

func TestWeightedFairReadingAcrossShards(t *testing.T) {
	ctx := context.Background()
	q, _ := newQueue(t, redisClient(t))
	heavy, light := shardFor(t, "heavy"), shardFor(t, "light")
	const n = 300
	var batch []queue.Entry
	for i := 0; i < n; i++ {
		batch = append(batch, queue.Entry{Shard: heavy, ID: fmt.Sprint("h", i), Due: time.Now()},
			queue.Entry{Shard: light, ID: fmt.Sprint("l", i), Due: time.Now()})
	}
	if _, err := q.ScheduleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []queue.Shard
	rec := newRecorder()
	handler := func(ctx context.Context, m queue.Message) error {
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		order = append(order, m.Shard)
		mu.Unlock()
		return rec.handle(ctx, m)
	}
	run(t, q, queue.ConsumerOptions{
		Shards:      []queue.ShardWeight{{Shard: heavy, Weight: 3}, {Shard: light, Weight: 1}},
		Handler:     handler,
		Concurrency: 8,
	})
	rec.wait(t, 2*n, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	// While both shards have work, the heavy one gets about 3 of 4 slots.
	h := 0
	for _, s := range order[:n] {
		if s == heavy {
			h++
		}
	}
	if share := float64(h) / n; share < 0.65 || share > 0.85 {
		t.Fatalf("heavy shard got %.2f of the first %d handler runs, want about 0.75", share, n)
	}
}

func TestBadInputIsRefused(t *testing.T) {
	ctx := context.Background()
	q, _ := newQueue(t, redisClient(t))
	good := shardFor(t, "0")
	for _, s := range []queue.Shard{
		{Namespace: "", Campaign: "c", Name: "0"},
		{Namespace: "ns", Campaign: "c{x}", Name: "0"},
		{Namespace: "ns", Campaign: "c", Name: "a/b"},
		{Namespace: "ns", Campaign: "c", Name: strings.Repeat("x", 300)},
	} {
		if _, err := q.Schedule(ctx, s, "id", time.Now()); err == nil {
			t.Errorf("shard %+v accepted", s)
		}
	}
	if _, err := q.Schedule(ctx, good, "", time.Now()); err == nil {
		t.Error("empty id accepted")
	}
	if _, err := q.Schedule(ctx, good, "id", time.Time{}); err == nil {
		t.Error("zero due time accepted")
	}
	if _, err := q.ScheduleBatch(ctx, []queue.Entry{{Shard: good, ID: "id", Due: time.Now(), Mode: 9}}); err == nil {
		t.Error("unknown mode accepted")
	}
	if _, err := q.NewConsumer(queue.ConsumerOptions{Shards: []queue.ShardWeight{{Shard: good}}}); err == nil {
		t.Error("consumer without handler accepted")
	}
	if _, err := q.NewConsumer(queue.ConsumerOptions{Handler: func(context.Context, queue.Message) error { return nil }}); err == nil {
		t.Error("consumer without shards accepted")
	}
}

func TestHandlerTimeoutCancelsTheHandler(t *testing.T) {
	q, _ := newQueue(t, redisClient(t))
	s := shardFor(t, "0")
	took := make(chan time.Duration, 1)
	run(t, q, queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: s}}, HandlerTimeout: 100 * time.Millisecond,
		Handler: func(ctx context.Context, m queue.Message) error {
			start := time.Now()
			<-ctx.Done()
			took <- time.Since(start)
			return nil
		},
	})
	if _, err := q.Schedule(context.Background(), s, "slow", time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-took:
		if d < 90*time.Millisecond || d > time.Second {
			t.Fatalf("handler cancelled after %s, want about 100ms", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("handler never cancelled")
	}
}

// TestCallOff: a called-off group's attempts are refused by Schedule (so
// no republish brings them back) and reported by IsCalledOff; attempts of
// other groups, and ids of other forms, are not touched.
func TestCallOff(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	q, _ := newQueue(t, rdb)
	s := shardFor(t, "0")
	other := shardFor(t, "1")
	if err := q.CallOff(ctx, s, "uid-a"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		shard queue.Shard
		id    string
		off   bool
	}{
		{s, "uid-a-1", true}, {s, "uid-a-12", true}, {s, "uid-ab-1", false}, {s, "uid-a", true}, // an id of another form is its own group

		{s, "uid-a-x", false}, {s, "uid-b-1", false}, {other, "uid-a-1", false},
	} {
		off, held, err := queue.IsCalledOff(ctx, rdb, c.shard, c.id)
		if err != nil {
			t.Fatal(err)
		}
		if off != c.off || held {
			t.Errorf("IsCalledOff(%s, %s) = %v, held %v; want %v, not held", c.shard.Name, c.id, off, held, c.off)
		}
		want := queue.Added
		if c.off {
			want = queue.CalledOff
		}
		if r, err := q.Schedule(ctx, c.shard, c.id, time.Now().Add(time.Hour)); err != nil || r != want {
			t.Errorf("Schedule(%s, %s) = %s, %v; want %s", c.shard.Name, c.id, r, err, want)
		}
	}
	if st := stats(t, q, s); st.Scheduled != 3 {
		t.Errorf("%d scheduled on the shard, want the 3 attempts not called off", st.Scheduled)
	}
	if err := q.CallOff(ctx, s, ""); err == nil {
		t.Error("calling off an empty group: no error")
	}
}

// TestHold: a held group's attempts are reported held (not called off)
// until Unhold at the generation that asked for the hold, and are still
// scheduled: the reconcile that lifts the hold queues the re-planned
// attempt first. The reconcile of an earlier generation (still running
// when the next change came) does not lift a later one's hold. A call-off
// outlives a lifted hold.
func TestHold(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	q, _ := newQueue(t, rdb)
	s := shardFor(t, "0")
	other := shardFor(t, "1")
	if err := q.Hold(ctx, s, "uid-a", 2); err != nil {
		t.Fatal(err)
	}
	check := func(sh queue.Shard, id string, wantOff, wantHeld bool) {
		t.Helper()
		off, held, err := queue.IsCalledOff(ctx, rdb, sh, id)
		if err != nil {
			t.Fatal(err)
		}
		if off != wantOff || held != wantHeld {
			t.Errorf("IsCalledOff(%s, %s) = %v, held %v; want %v, held %v", sh.Name, id, off, held, wantOff, wantHeld)
		}
	}
	unhold := func(group string, gen int64, want bool) {
		t.Helper()
		lifted, err := q.Unhold(ctx, s, group, gen)
		if err != nil {
			t.Fatal(err)
		}
		if lifted != want {
			t.Errorf("Unhold(%s, generation %d) = %v, want %v", group, gen, lifted, want)
		}
	}
	check(s, "uid-a-1", false, true)
	check(s, "uid-a-2", false, true)
	check(s, "uid-ab-1", false, false)
	check(other, "uid-a-1", false, false)
	if r, err := q.Schedule(ctx, s, "uid-a-2", time.Now().Add(time.Hour)); err != nil || r != queue.Added {
		t.Errorf("Schedule of a held group's attempt = %s, %v; want %s", r, err, queue.Added)
	}
	// Generation 3 holds too; an older hold request does not lower it.
	if err := q.Hold(ctx, s, "uid-a", 3); err != nil {
		t.Fatal(err)
	}
	if err := q.Hold(ctx, s, "uid-a", 2); err != nil {
		t.Fatal(err)
	}
	unhold("uid-a", 2, false)
	check(s, "uid-a-1", false, true)
	unhold("uid-a", 3, true)
	check(s, "uid-a-1", false, false)
	unhold("uid-a", 3, true) // not held: nothing to do

	// Held and called off: the call-off stays when the hold is lifted.
	if err := q.Hold(ctx, s, "uid-c", 1); err != nil {
		t.Fatal(err)
	}
	if err := q.CallOff(ctx, s, "uid-c"); err != nil {
		t.Fatal(err)
	}
	check(s, "uid-c-1", true, true)
	unhold("uid-c", 5, true)
	check(s, "uid-c-1", true, false)
	if err := q.Hold(ctx, s, "", 1); err == nil {
		t.Error("holding an empty group: no error")
	}
}

// TestDialBlocks: the one request a worker makes before it dials reports
// each of the call-off, the hold and the pending opt-out, for that attempt
// and number only.
func TestDialBlocks(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	q, _ := newQueue(t, rdb)
	s := shardFor(t, "0")
	ns, number := s.Namespace, "+14155550123"
	check := func(id, to string, want queue.Blocks) {
		t.Helper()
		got, err := queue.DialBlocks(ctx, rdb, s, id, ns, to)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("DialBlocks(%s, %s) = %+v, want %+v", id, to, got, want)
		}
	}
	check("uid-a-1", number, queue.Blocks{})
	if err := q.CallOff(ctx, s, "uid-a"); err != nil {
		t.Fatal(err)
	}
	if err := q.Hold(ctx, s, "uid-b", 1); err != nil {
		t.Fatal(err)
	}
	if err := queue.MarkOptOutPending(ctx, rdb, ns, number); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = queue.ClearOptOutPending(context.Background(), rdb, ns, number) })
	check("uid-a-1", "+14155550100", queue.Blocks{CalledOff: true})
	check("uid-b-1", "+14155550100", queue.Blocks{Held: true})
	check("uid-c-1", number, queue.Blocks{OptOutPending: true})
	check("uid-a-2", number, queue.Blocks{CalledOff: true, OptOutPending: true})
}

func TestGroupOf(t *testing.T) {
	for id, want := range map[string]string{"u-1": "u", "a-b-c-10": "a-b-c", "u": "u", "u-": "u-", "-1": "-1", "u-1x": "u-1x"} {
		if got := queue.GroupOf(id); got != want {
			t.Errorf("GroupOf(%q) = %q, want %q", id, got, want)
		}
	}
}
