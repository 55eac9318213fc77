package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Store benchmarks: `make bench-store`. Each op is one attempt (or one
// callback) against the FerretDB of the test services. "serialized" is the
// mode FerretDB 1.24 needs (per-attempt lock); "native" skips the lock: it
// is the raw ceiling of the same operations, correct only on MongoDB.

const benchParallelism = 16 // goroutines per GOMAXPROCS, like a worker pod's concurrency

var benchModes = []struct {
	name string
	mode Serialization
}{{"serialized", SerializeAlways}, {"native", SerializeNever}}

// seedAttempts inserts n queued attempts due now, in batches, and returns their ids.
func seedAttempts(b *testing.B, s *Store, prefix string, n int) []string {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, 0, n)
	batch := make([]any, 0, 500)
	now := s.now()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := s.attempts.InsertMany(ctx, batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := 0; i < n; i++ {
		na := newAttempt(fmt.Sprintf("%s-%d", prefix, i), 1, now)
		a := &Attempt{ID: AttemptID(na.Delivery.UID, 1), Delivery: na.Delivery, Campaign: na.Campaign, Shard: na.Shard,
			Number: 1, State: StateQueued, Due: now, To: na.To, LastSeq: -1, CreatedAt: now, UpdatedAt: now,
			Notify: Notifications{SMS: Notification{State: NotifyPending}, Webhook: Notification{State: NotifyPending}}}
		ids = append(ids, a.ID)
		batch = append(batch, a)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	return ids
}

// runParallel runs op once per id across benchParallelism*GOMAXPROCS
// goroutines and reports attempts per second.
func runParallel(b *testing.B, ids []string, op func(ctx context.Context, id string) error) {
	var next atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			i := next.Add(1) - 1
			if err := op(ctx, ids[i]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

func noopDial(_ context.Context, a *Attempt) (DialResult, error) {
	return DialResult{CallSID: "CA" + a.ID}, nil
}

// BenchmarkDialSequence measures the worker's whole per-attempt store
// sequence (Claim, IsOptedOut, MarkDialed) with a no-op dial: the store's
// ceiling for calls per second.
func BenchmarkDialSequence(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			s := openStore(b, func(c *Config) { c.Serialize = m.mode })
			ids := seedAttempts(b, s, "dial", b.N)
			runParallel(b, ids, func(ctx context.Context, id string) error {
				_, err := s.DialSequence(ctx, id, "bench", time.Minute, noopDial)
				return err
			})
		})
	}
}

// BenchmarkClaimDial measures Claim followed by MarkDialed.
func BenchmarkClaimDial(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			s := openStore(b, func(c *Config) { c.Serialize = m.mode })
			ids := seedAttempts(b, s, "claim", b.N)
			runParallel(b, ids, func(ctx context.Context, id string) error {
				a, err := s.Claim(ctx, id, "bench", time.Minute)
				if err != nil {
					return err
				}
				_, err = s.MarkDialed(ctx, id, a.Fence, "CA"+id, "")
				return err
			})
		})
	}
}

// BenchmarkApplyCallStatus measures status callbacks: each op applies one
// callback; every attempt gets its four (initiated, ringing, in-progress,
// completed).
func BenchmarkApplyCallStatus(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			s := openStore(b, func(c *Config) { c.Serialize = m.mode })
			attempts := seedAttempts(b, s, "cb", (b.N+3)/4)
			ops := make([]string, b.N)
			for i := range ops {
				ops[i] = fmt.Sprintf("%s|%d", attempts[i/4], i%4)
			}
			runParallel(b, ops, func(ctx context.Context, op string) error {
				var id string
				var k int
				for j := len(op) - 1; j >= 0; j-- {
					if op[j] == '|' {
						id, k = op[:j], int(op[j+1]-'0')
						break
					}
				}
				_, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: id}, callLife[k])
				return err
			})
		})
	}
}

// BenchmarkCreateAttempt measures the operator's attempt inserts.
func BenchmarkCreateAttempt(b *testing.B) {
	s := openStore(b)
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("create-%d", i)
	}
	now := s.now()
	runParallel(b, ids, func(ctx context.Context, uid string) error {
		_, _, err := s.CreateAttempt(ctx, newAttempt(uid, 1, now))
		return err
	})
}

// BenchmarkForDelivery measures the operator's read of one Delivery's call
// log in a collection of forDeliveryLogSize attempts (the operator
// benchmark's size): FerretDB filters only top-level fields in PostgreSQL,
// so the cost depends on the document shape, not on an index.
func BenchmarkForDelivery(b *testing.B) {
	const forDeliveryLogSize = 10000
	s := openStore(b)
	seedAttempts(b, s, "read", forDeliveryLogSize)
	uids := make([]string, b.N)
	for i := range uids {
		uids[i] = fmt.Sprintf("read-%d", (i*7919)%forDeliveryLogSize)
	}
	runParallel(b, uids, func(ctx context.Context, uid string) error {
		got, err := s.ForDelivery(ctx, uid)
		if err == nil && len(got) != 1 {
			err = fmt.Errorf("ForDelivery(%s) = %d attempts, want 1", uid, len(got))
		}
		return err
	})
}

// BenchmarkDueBefore measures the sweeper's query on a call log shaped like
// a working one: dueBeforeLogSize attempts of one campaign shard, all but
// dueBeforeQueued of them finished. Each op is one sweep of the shard (a
// DueBefore with the sweeper's batch, finding the queued ones), one at a
// time.
func BenchmarkDueBefore(b *testing.B) {
	const dueBeforeLogSize, dueBeforeQueued, sweepBatch = 10000, 100, 500
	s := openStore(b)
	ids := seedAttempts(b, s, "sweep", dueBeforeLogSize)
	ctx := context.Background()
	if _, err := s.attempts.UpdateMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$nin", Value: ids[:dueBeforeQueued]}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: StateCompleted}}}}); err != nil {
		b.Fatal(err)
	}
	// One sweep at a time, as one worker runs them.
	b.ResetTimer()
	for range b.N {
		got, err := s.DueBefore(ctx, "shop/evening", "s0", s.now().Add(time.Second), DueCursor{}, sweepBatch)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != dueBeforeQueued {
			b.Fatalf("DueBefore = %d attempts, want %d", len(got), dueBeforeQueued)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/sweep")
}
