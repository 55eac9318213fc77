package queue_test

import (
	"context"
	"strings"
	"testing"

	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/workers/queue"
)

// A restarted Redis is a new incarnation (it may have lost entries); the
// same server asked again is not.
func TestIncarnationChangesWhenRedisRestarts(t *testing.T) {
	ctx := context.Background()
	r, err := testservices.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	c := r.Client()
	defer c.Close()
	q := queue.New(c, queue.Options{})
	first, err := q.Incarnation(ctx)
	if err != nil || first == "" {
		t.Fatalf("Incarnation = %q, %v", first, err)
	}
	if again, err := q.Incarnation(ctx); err != nil || again != first {
		t.Fatalf("asked again: %q, %v; want %q", again, err, first)
	}
	r.Kill()
	if _, err := q.Incarnation(ctx); err == nil {
		t.Fatal("Incarnation of a stopped server did not fail")
	}
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	after, err := q.Incarnation(ctx)
	if err != nil || after == "" || after == first {
		t.Fatalf("after a restart: %q, %v; want a new id (was %q)", after, err, first)
	}
}

// On a Redis Cluster the incarnation names every master.
func TestIncarnationOfACluster(t *testing.T) {
	c := env.RedisCluster.Client()
	defer c.Close()
	id, err := queue.New(c, queue.Options{}).Incarnation(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Split(id, ",")); n != 3 {
		t.Fatalf("cluster incarnation %q names %d servers, want 3", id, n)
	}
}
