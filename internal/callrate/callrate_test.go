package callrate

import (
	"context"
	"fmt"
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

func TestLastCallIsTheLatest(t *testing.T) {
	ctx := context.Background()
	rdb := env.Redis.Client()
	defer rdb.Close()
	if last, err := LastCall(ctx, rdb, "ns", "last"); err != nil || !last.IsZero() {
		t.Fatalf("LastCall before any call = %v, %v; want zero", last, err)
	}
	now := time.Unix(1_800_000_500, 0)
	// Two workers' counts arrive out of order: the later second stays.
	if err := RecordN(ctx, rdb, "ns", "last", now, 3); err != nil {
		t.Fatal(err)
	}
	if err := RecordN(ctx, rdb, "ns", "last", now.Add(-5*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	if last, err := LastCall(ctx, rdb, "ns", "last"); err != nil || !last.Equal(now) {
		t.Fatalf("LastCall = %v, %v; want %v", last, err, now)
	}
	if ttl := rdb.TTL(ctx, lastCallKey("ns", "last")).Val(); ttl <= 0 || ttl > LastCallTTL {
		t.Errorf("last call kept for %s, want up to %s", ttl, LastCallTTL)
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

func TestCallDurationsAverageOverTheWindow(t *testing.T) {
	ctx := context.Background()
	rdb := env.Redis.Client()
	defer rdb.Close()
	now := time.Unix(1_800_000_030, 0) // 30 s into a minute
	camp := fmt.Sprintf("dur-%d", time.Now().UnixNano())
	record := func(at time.Time, d time.Duration) {
		t.Helper()
		if err := RecordDuration(ctx, rdb, "ns", camp, at, d); err != nil {
			t.Fatal(err)
		}
	}
	// Inside the window: now's minute and the nine before it.
	record(now, 20*time.Second)
	record(now.Add(-30*time.Second), 40*time.Second) // the minute's first second
	record(now.Add(-5*time.Minute), 30*time.Second)
	record(now.Add(-9*time.Minute-30*time.Second), 10*time.Second)
	// Outside: the tenth minute before, and a call of no length.
	record(now.Add(-9*time.Minute-31*time.Second), 10*time.Minute)
	record(now, 0)
	sum, n, err := Durations(ctx, rdb, "ns", camp, now)
	if err != nil || sum != 100*time.Second || n != 4 {
		t.Fatalf("Durations = %s over %d calls, %v; want 1m40s over 4", sum, n, err)
	}
	if avg, n, err := AverageDuration(ctx, rdb, "ns", camp, now); err != nil || avg != 0 || n != 4 {
		t.Fatalf("AverageDuration of 4 calls = %s, %d, %v; want none (fewer than %d)", avg, n, err, MinDurationCalls)
	}
	record(now.Add(-2*time.Minute), 50*time.Second)
	if avg, n, err := AverageDuration(ctx, rdb, "ns", camp, now); err != nil || avg != 30*time.Second || n != 5 {
		t.Fatalf("AverageDuration = %s over %d calls, %v; want 30s over 5", avg, n, err)
	}
	// Ten minutes on, only what ended in the last ten minutes counts.
	if _, n, _ := Durations(ctx, rdb, "ns", camp, now.Add(10*time.Minute)); n != 0 {
		t.Errorf("%d calls still counted ten minutes later", n)
	}
	if _, n, _ := Durations(ctx, rdb, "ns", "other", now); n != 0 {
		t.Errorf("another campaign shows %d calls", n)
	}
	// Every bucket expires once it has left the window.
	keys, err := rdb.Keys(ctx, tag("ns", camp)+":dur:*").Result()
	if err != nil || len(keys) != 5 {
		t.Fatalf("buckets %v, %v; want 5", keys, err)
	}
	for _, k := range keys {
		if ttl := rdb.TTL(ctx, k).Val(); ttl <= DurationWindow || ttl > durationTTL {
			t.Errorf("bucket %s expires in %s, want after the %s window, by %s", k, ttl, DurationWindow, durationTTL)
		}
	}
}

func TestCallDurationsClusterSafe(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisCluster.Client()
	defer rdb.Close()
	now := time.Now()
	camp := fmt.Sprintf("dur-%d", now.UnixNano())
	for i := range MinDurationCalls {
		if err := RecordDuration(ctx, rdb, "ns", camp, now.Add(-time.Duration(i)*time.Minute), 12*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	avg, n, err := AverageDuration(ctx, rdb, "ns", camp, now)
	if err != nil {
		t.Fatalf("AverageDuration on a cluster (CROSSSLOT?): %v", err)
	}
	if avg != 12*time.Second || n != MinDurationCalls {
		t.Errorf("AverageDuration = %s over %d calls, want 12s over %d", avg, n, MinDurationCalls)
	}
}
