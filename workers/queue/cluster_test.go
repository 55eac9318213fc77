package queue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/ratelimit"
)

// TestRedisCluster runs scheduling, cancelling, moving, consuming,
// dead-lettering, stats and the limiter against a 3-master Redis Cluster with
// shards spread over the masters: every script must keep to its shard's slot.
func TestRedisCluster(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisCluster.Client()
	t.Cleanup(func() { rdb.Close() })
	q, m := newQueue(t, rdb)

	var shards []queue.Shard
	masters := map[string]bool{}
	for i := 0; i < 6; i++ {
		s := shardFor(t, fmt.Sprint(i))
		shards = append(shards, s)
		node, err := rdb.MasterForKey(ctx, s.DueKey())
		if err != nil {
			t.Fatal(err)
		}
		masters[node.Options().Addr] = true
	}
	if len(masters) < 2 {
		t.Fatalf("the test shards all hash to %v; want them spread over masters", masters)
	}
	t.Logf("6 shards on %d masters", len(masters))

	now := time.Now()
	var batch []queue.Entry
	want := map[string]time.Time{}
	for _, s := range shards {
		for i := 0; i < 10; i++ {
			id := fmt.Sprintf("%s-%d", s.Name, i)
			due := now.Add(time.Duration(200+30*i) * time.Millisecond)
			if i < 2 {
				due = now
			}
			batch = append(batch, queue.Entry{Shard: s, ID: id, Due: due})
			want[id] = due
		}
		batch = append(batch, queue.Entry{Shard: s, ID: s.Name + "-poison", Due: now.Add(100 * time.Millisecond)})
	}
	res, err := q.ScheduleBatch(ctx, batch) // one pipeline over every master
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r != queue.Added {
			t.Fatalf("%s: %s", batch[i].ID, r)
		}
	}
	var cancels []queue.Ref
	for _, s := range shards {
		cancels = append(cancels, queue.Ref{Shard: s, ID: s.Name + "-0"}, queue.Ref{Shard: s, ID: s.Name + "-5"})
		delete(want, s.Name+"-0")
		delete(want, s.Name+"-5")
		moved := now.Add(900 * time.Millisecond)
		if r, err := q.Reschedule(ctx, s, s.Name+"-9", moved); err != nil || r != queue.Moved {
			t.Fatalf("reschedule on %s: %s %v", s, r, err)
		}
		want[s.Name+"-9"] = moved
	}
	res, err = q.CancelBatch(ctx, cancels)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r != queue.Cancelled {
			t.Fatalf("cancel %s: %s", cancels[i].ID, r)
		}
	}

	var mu sync.Mutex
	seen := map[string]int{}
	rec := newRecorder()
	handler := func(ctx context.Context, msg queue.Message) error {
		if len(msg.ID) > 7 && msg.ID[len(msg.ID)-7:] == "-poison" {
			return errors.New("always fails")
		}
		mu.Lock()
		seen[msg.ID]++
		mu.Unlock()
		return rec.handle(ctx, msg)
	}
	var sw []queue.ShardWeight
	for i, s := range shards {
		sw = append(sw, queue.ShardWeight{Shard: s, Weight: 1 + i%2})
	}
	run(t, q, queue.ConsumerOptions{
		Shards: sw, Handler: handler, Concurrency: 8,
		Lease: 300 * time.Millisecond, ReclaimInterval: 50 * time.Millisecond, MaxDeliveries: 2,
	})
	got := rec.wait(t, len(want), 5*time.Second)
	for _, d := range got {
		due, ok := want[d.ID]
		if !ok {
			t.Errorf("unexpected delivery of %s", d.ID)
			continue
		}
		if d.at.Before(due) {
			t.Errorf("%s ran %s early", d.ID, due.Sub(d.at))
		}
	}
	// Every shard dead-letters its poison entry after two deliveries.
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range shards {
		for {
			dl, err := q.DeadLetters(ctx, s, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(dl) == 1 && dl[0].ID == s.Name+"-poison" && dl[0].Deliveries == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dead letters of %s: %+v", s, dl)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	rec.none(t, 200*time.Millisecond)
	mu.Lock()
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s handled %d times", id, k)
		}
	}
	mu.Unlock()
	sts, err := q.Stats(ctx, shards, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.InFlight != 0 || st.Ready != 0 || st.Scheduled != 0 || st.DueNow != 0 || st.DeadLetters != 1 {
			t.Errorf("stats of %s: %+v", st.Shard, st)
		}
	}
	if got := testutilSum(m.DeadLettered, shards); got != 6 {
		t.Errorf("dead_lettered_total = %v, want 6", got)
	}

	// The limiter's key is a slot of its own too.
	l, err := ratelimit.New(rdb, "AC-cluster-test", 100, ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := l.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func testutilSum(c interface {
	WithLabelValues(...string) prometheus.Counter
}, shards []queue.Shard) float64 {
	var sum float64
	for _, s := range shards {
		sum += testutil.ToFloat64(c.WithLabelValues(s.String()))
	}
	return sum
}
