package queue_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/workers/queue"
)

// The crash test re-runs this test binary as a worker process: with
// helperEnv set, TestMain runs helperMain instead of the tests.
const helperEnv = "DELAUTO_QUEUE_TEST_HELPER"

const crashLease = 2 * time.Second

// helperMain is a worker whose handlers print "started <id>" and never
// return, so the process dies holding its entries.
func helperMain() int {
	parts := strings.Split(os.Getenv("DELAUTO_QUEUE_TEST_SHARD"), "/")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "helper: bad shard")
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("DELAUTO_QUEUE_TEST_REDIS")})
	q := queue.New(rdb, queue.Options{})
	c, err := q.NewConsumer(queue.ConsumerOptions{
		Shards:      []queue.ShardWeight{{Shard: queue.Shard{Namespace: parts[0], Campaign: parts[1], Name: parts[2]}}},
		Name:        "doomed",
		Concurrency: 10,
		Lease:       crashLease,
		Handler: func(ctx context.Context, m queue.Message) error {
			fmt.Printf("started %s\n", m.ID)
			<-ctx.Done()
			return ctx.Err()
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	_ = c.Run(context.Background())
	return 0
}

func TestEntriesOfAKilledWorkerAreTakenOverWithinTheLease(t *testing.T) {
	ctx := context.Background()
	rdb := redisClient(t)
	q, m := newQueue(t, rdb)
	s := shardFor(t, "0")
	const n = 30
	var batch []queue.Entry
	for i := 0; i < n; i++ {
		batch = append(batch, queue.Entry{Shard: s, ID: fmt.Sprintf("k%02d", i), Due: time.Now()})
	}
	if _, err := q.ScheduleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}

	// A worker process reads a batch and blocks in its handlers.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=consumer",
		"DELAUTO_QUEUE_TEST_REDIS="+env.Redis.Addr, "DELAUTO_QUEUE_TEST_SHARD="+s.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	held := map[string]bool{}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for len(held) < 10 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("worker process exited early")
			}
			if id, ok := strings.CutPrefix(l, "started "); ok {
				held[id] = true
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("worker process started %d handlers, want 10", len(held))
		}
	}
	p, err := rdb.XPending(ctx, s.ReadyKey(), queue.DefaultGroup).Result()
	if err != nil || p.Count != 10 || p.Consumers["doomed"] != 10 {
		t.Fatalf("pending before the kill: %+v %v, want 10 held by doomed", p, err)
	}

	// Kill it: no drain, no acknowledgement, no lease extension.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()

	rec := newRecorder()
	const reclaimEvery = 200 * time.Millisecond
	run(t, q, queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: s}}, Handler: rec.handle, Name: "survivor",
		Concurrency: 10, Lease: crashLease, ReclaimInterval: reclaimEvery,
	})
	got := rec.wait(t, n, crashLease+3*time.Second)
	rec.none(t, 300*time.Millisecond)
	seen := map[string]int{}
	var lastReclaim time.Time
	for _, d := range got {
		seen[d.ID]++
		if held[d.ID] {
			if d.Deliveries != 2 {
				t.Errorf("%s was held by the killed worker; deliveries %d, want 2", d.ID, d.Deliveries)
			}
			if d.at.After(lastReclaim) {
				lastReclaim = d.at
			}
		} else if d.Deliveries != 1 {
			t.Errorf("%s: deliveries %d, want 1", d.ID, d.Deliveries)
		}
	}
	for _, e := range batch {
		if seen[e.ID] != 1 {
			t.Errorf("%s handled %d times after the kill, want once", e.ID, seen[e.ID])
		}
	}
	took := lastReclaim.Sub(killed)
	t.Logf("entries of the killed worker taken over %s after the kill (lease %s)", took.Round(time.Millisecond), crashLease)
	if took > crashLease+reclaimEvery+500*time.Millisecond {
		t.Errorf("take-over took %s, want within the lease %s plus one reclaim interval", took, crashLease)
	}
	if got := testutil.ToFloat64(m.Reclaimed.WithLabelValues(s.String())); got != 10 {
		t.Errorf("reclaimed_total = %v, want 10", got)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		st := stats(t, q, s)
		if st.InFlight == 0 && st.Ready == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats after recovery: %+v, want nothing left", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
