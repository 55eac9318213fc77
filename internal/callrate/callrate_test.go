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

func TestDialErrorFlag(t *testing.T) {
	ctx := context.Background()
	rdb := env.Redis.Client()
	defer rdb.Close()
	if e, err := ReadDialError(ctx, rdb, "ns", "dial"); err != nil || e != nil {
		t.Fatalf("no error marked: %+v, %v", e, err)
	}
	at := time.Unix(1_800_000_000, 0).UTC()
	if err := MarkDialError(ctx, rdb, "ns", "dial", DialError{Code: 21210, Message: "caller ID not verified", At: at}); err != nil {
		t.Fatal(err)
	}
	e, err := ReadDialError(ctx, rdb, "ns", "dial")
	if err != nil || e == nil || e.Code != 21210 || e.Message != "caller ID not verified" || !e.At.Equal(at) {
		t.Fatalf("read %+v, %v", e, err)
	}
	if ttl := rdb.TTL(ctx, dialErrorKey("ns", "dial")).Val(); ttl <= 0 || ttl > DialErrorTTL {
		t.Errorf("flag TTL %s, want up to %s", ttl, DialErrorTTL)
	}
	if e, _ := ReadDialError(ctx, rdb, "ns", "other"); e != nil {
		t.Errorf("another campaign shows %+v", e)
	}
}
