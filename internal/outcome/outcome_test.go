package outcome

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/testservices"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Redis: true, RedisCluster: true}, &env)
}

func TestPublishedEventsReachTheOperatorOnce(t *testing.T) {
	rdb := env.Redis.Client()
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdb.Del(ctx, StreamKey)

	for i := 0; i < 50; i++ {
		if err := Publish(ctx, rdb, Event{AttemptID: fmt.Sprintf("uid-%d-1", i), Namespace: "ns", Name: fmt.Sprintf("d%d", i), State: "completed"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := Publish(ctx, rdb, Event{AttemptID: "x"}); err == nil {
		t.Fatal("an event without its delivery was published")
	}

	var mu sync.Mutex
	seen := map[string]int{}
	failOnce := map[string]bool{"d7": true}
	c := NewConsumer(rdb, "op-1")
	c.Block = 100 * time.Millisecond
	c.RetryInterval = 200 * time.Millisecond
	go c.Run(ctx, func(e Event) error {
		mu.Lock()
		defer mu.Unlock()
		if failOnce[e.Name] {
			failOnce[e.Name] = false
			return errors.New("not now")
		}
		seen[e.Name]++
		return nil
	}, nil)

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 50 deliveries were handled", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if seen["d7"] != 1 {
		t.Errorf("the event whose handling failed once was handled %d times after the retry, want 1", seen["d7"])
	}
	pending, err := rdb.XPending(context.Background(), StreamKey, Group).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 0 {
		t.Errorf("%d events still pending after handling", pending.Count)
	}
}

func TestWorksOnRedisCluster(t *testing.T) {
	rdb := env.RedisCluster.Client()
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Publish(ctx, rdb, Event{AttemptID: "a-1", Namespace: "ns", Name: "d"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan Event, 1)
	go NewConsumer(rdb, "op").Run(ctx, func(e Event) error { got <- e; return nil }, nil)
	select {
	case e := <-got:
		if e.AttemptID != "a-1" || e.Name != "d" {
			t.Errorf("got %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("no event from the cluster")
	}
}

// TestEventsNameObjectsTheApiserverCouldHold: an event whose Delivery has a
// name no object can have (a slash, capitals, a path) is refused when
// published and dropped when read, since the operator would ask the
// apiserver for it on every retry for ever.
func TestEventsNameObjectsTheApiserverCouldHold(t *testing.T) {
	for _, e := range []Event{
		{AttemptID: "a-1", Namespace: "../kube-system", Name: "d"},
		{AttemptID: "a-1", Namespace: "ns", Name: "a/b"},
		{AttemptID: "a-1", Namespace: "NS", Name: "d"},
		{AttemptID: strings.Repeat("a", 65), Namespace: "ns", Name: "d"},
	} {
		if err := Publish(context.Background(), nil, e); err == nil {
			t.Errorf("Publish(%+v) = nil, want an error", e)
		}
	}
}
