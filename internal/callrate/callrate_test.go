package callrate

import (
	"context"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/testservices"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Redis: true, RedisCluster: true}, &env)
}

func TestRateAndLimitedFlag(t *testing.T) {
	ctx := context.Background()
	rdb := env.Redis.Client()
	defer rdb.Close()
	now := time.Unix(1_800_000_000, 0)
	// 30 calls spread over the 10 seconds before now; 5 in the current second
	// (not yet whole) and 7 older than the window do not count.
	for i := 0; i < 30; i++ {
		if err := Record(ctx, rdb, "ns", "c", now.Add(-time.Duration(1+i%10)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		Record(ctx, rdb, "ns", "c", now)
	}
	for i := 0; i < 7; i++ {
		Record(ctx, rdb, "ns", "c", now.Add(-20*time.Second))
	}
	cps, limited, err := Read(ctx, rdb, "ns", "c", now)
	if err != nil {
		t.Fatal(err)
	}
	if cps != 3 || limited {
		t.Fatalf("Read = %v calls/s, limited %v; want 3, false", cps, limited)
	}
	if err := MarkLimited(ctx, rdb, "ns", "c"); err != nil {
		t.Fatal(err)
	}
	if _, limited, _ := Read(ctx, rdb, "ns", "c", now); !limited {
		t.Error("MarkLimited did not show in Read")
	}
	if cps, _, _ := Read(ctx, rdb, "ns", "other", now); cps != 0 {
		t.Errorf("another campaign shows %v calls/s", cps)
	}
}

func TestClusterSafe(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisCluster.Client()
	defer rdb.Close()
	now := time.Now()
	for i := 0; i < 10; i++ {
		if err := Record(ctx, rdb, "ns", "c", now.Add(-2*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	cps, _, err := Read(ctx, rdb, "ns", "c", now)
	if err != nil {
		t.Fatalf("Read on a cluster (CROSSSLOT?): %v", err)
	}
	if cps != 1 {
		t.Errorf("cps = %v, want 1", cps)
	}
}

func TestRecordNAddsUp(t *testing.T) {
	ctx := context.Background()
	rdb := env.Redis.Client()
	defer rdb.Close()
	now := time.Unix(1_800_000_500, 0)
	if err := RecordN(ctx, rdb, "ns", "n", now.Add(-time.Second), 25); err != nil {
		t.Fatal(err)
	}
	if err := RecordN(ctx, rdb, "ns", "n", now.Add(-2*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if err := Record(ctx, rdb, "ns", "n", now.Add(-2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if cps, _, err := Read(ctx, rdb, "ns", "n", now); err != nil || cps != 2.6 {
		t.Fatalf("Read = %v, %v; want 2.6 calls/s", cps, err)
	}
}
