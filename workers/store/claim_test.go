package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/delauto/delauto/api/v1alpha1"
)

func TestStateMachine(t *testing.T) {
	for _, s := range States {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
		want := s == StateCompleted || s == StateFailed || s == StateCancelled
		if s.Terminal() != want {
			t.Errorf("%s.Terminal() = %v", s, !want)
		}
	}
	if State("bogus").Valid() {
		t.Error("unknown state valid")
	}
}

func TestCreateAttemptIdempotent(t *testing.T) { inBothModes(t, testCreateAttemptIdempotent) }

func testCreateAttemptIdempotent(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	due := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	n := newAttempt("uid-1", 1, due)
	a, created, err := s.CreateAttempt(ctx, n)
	if err != nil || !created {
		t.Fatalf("first create: created=%v err=%v", created, err)
	}
	if a.ID != "uid-1-1" || a.State != StateQueued || a.Fence != 0 || a.LastSeq != -1 || !a.Due.Equal(due) {
		t.Fatalf("created attempt = %+v", a)
	}
	if _, err := s.Claim(ctx, a.ID, "w", time.Minute); err != nil {
		t.Fatal(err)
	}
	n.Due = due.Add(time.Hour) // a replanning operator must not reset the attempt
	b, created, err := s.CreateAttempt(ctx, n)
	if err != nil || created {
		t.Fatalf("second create: created=%v err=%v, want the existing attempt", created, err)
	}
	if b.ID != a.ID || b.State != StateDialing || !b.Due.Equal(due) || b.Fence != 1 {
		t.Fatalf("second create returned %+v, want the stored (claimed) attempt", b)
	}
	if c, _ := s.attempts.CountDocuments(ctx, bson.D{}); c != 1 {
		t.Fatalf("%d documents, want 1", c)
	}

	bad := n
	bad.To = "0123"
	bad.Campaign = "noslash"
	if _, _, err := s.CreateAttempt(ctx, bad); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("invalid attempt: err = %v, want ErrInvalidInput", err)
	}
}

func TestConcurrentClaimsOneWinner(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	const rounds, claimers = 5, 20
	for r := 0; r < rounds; r++ {
		a := mustCreate(t, s, newAttempt(fmt.Sprintf("race-%d", r), 1, time.Now()))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []int64
		others := 0
		start := make(chan struct{})
		for i := 0; i < claimers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got, err := s.Claim(ctx, a.ID, fmt.Sprintf("w%d", i), time.Minute)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, got.Fence)
				case errors.Is(err, ErrNotClaimable):
					others++
				default:
					t.Errorf("claim: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 || winners[0] != 1 || others != claimers-1 {
			t.Fatalf("round %d: winners with fences %v, %d not claimable; want exactly one winner with fence 1", r, winners, others)
		}
		if got, _ := s.Get(ctx, a.ID); got.Fence != 1 || got.State != StateDialing {
			t.Fatalf("round %d: attempt after the race: state %s fence %d", r, got.State, got.Fence)
		}
	}
}

// TestFerretDBUpdatesAreNotAtomic documents why the store serializes writes
// on FerretDB 1.x: without the lock, concurrent conditional updates of one
// document lose updates. If this starts failing, FerretDB became atomic and
// the lock may be dropped for that version.
func TestFerretDBUpdatesAreNotAtomic(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, func(c *Config) { c.Serialize = SerializeNever })
	for r := 0; r < 10; r++ {
		id := fmt.Sprintf("c%d", r)
		if _, err := s.db.Collection("probe").InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: 0}}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = s.db.Collection("probe").UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}})
			}()
		}
		wg.Wait()
		var doc struct{ N int }
		if err := s.db.Collection("probe").FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		if doc.N < 40 {
			t.Logf("round %d: 40 concurrent $inc gave %d: updates are not atomic", r, doc.N)
			return
		}
	}
	t.Fatal("400 concurrent $inc lost nothing: FerretDB now applies updates atomically; revisit Features.AtomicUpdates")
}

func TestFencing(t *testing.T) { inBothModes(t, testFencing) }

func testFencing(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	a := mustCreate(t, s, newAttempt("u1", 1, clk.Now()))
	c1 := mustClaim(t, s, a.ID)
	if c1.Fence != 1 || c1.Owner != "worker-1" || c1.LeaseUntil == nil || !c1.LeaseUntil.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("claim = %+v", c1)
	}
	// A claimed attempt is not claimable again.
	_, err := s.Claim(ctx, a.ID, "worker-2", time.Minute)
	var nc *NotClaimableError
	if !errors.As(err, &nc) || nc.State != StateDialing {
		t.Fatalf("second claim: %v, want NotClaimableError in state dialing", err)
	}
	// Put back for later: not claimable before it is due again.
	next := clk.Now().Add(time.Hour)
	r, err := s.Release(ctx, a.ID, c1.Fence, next, "rate limited")
	if err != nil || r.State != StateRetry || !r.Due.Equal(next) || r.LeaseUntil != nil || r.Releases != 1 {
		t.Fatalf("release = %+v, %v", r, err)
	}
	if _, err := s.Claim(ctx, a.ID, "worker-2", time.Minute); !errors.As(err, &nc) || nc.State != StateRetry {
		t.Fatalf("claim before due: %v, want not claimable", err)
	}
	clk.Add(time.Hour)
	c2, err := s.Claim(ctx, a.ID, "worker-2", time.Minute)
	if err != nil || c2.Fence != 2 {
		t.Fatalf("claim after due: %+v %v", c2, err)
	}

	// The first worker wakes up with its stale fence: every write is refused.
	before, _ := s.Get(ctx, a.ID)
	stale := []func() error{
		func() error { _, err := s.MarkDialed(ctx, a.ID, c1.Fence, "CA-old", ""); return err },
		func() error { _, err := s.MarkUnknown(ctx, a.ID, c1.Fence, "timeout"); return err },
		func() error { _, err := s.MarkFailed(ctx, a.ID, c1.Fence, 21211, "invalid number"); return err },
		func() error { _, err := s.Release(ctx, a.ID, c1.Fence, clk.Now(), "x"); return err },
		func() error { _, err := s.MarkCancelled(ctx, a.ID, c1.Fence, "x"); return err },
		func() error { _, err := s.Renew(ctx, a.ID, c1.Fence, time.Minute); return err },
	}
	for i, f := range stale {
		var sf *StaleFenceError
		if err := f(); !errors.As(err, &sf) || sf.Have != 1 || sf.Current != 2 {
			t.Errorf("stale write %d: %v, want StaleFenceError 1 vs 2", i, err)
		}
	}
	after, _ := s.Get(ctx, a.ID)
	if after.State != before.State || after.Fence != before.Fence || after.CallSID != "" || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("stale writes changed the attempt: %+v", after)
	}

	d, err := s.MarkDialed(ctx, a.ID, c2.Fence, "CA-new", "+14155550100")
	if err != nil || d.State != StateDialed || d.CallSID != "CA-new" || d.From != "+14155550100" || d.LeaseUntil != nil {
		t.Fatalf("mark dialed = %+v, %v", d, err)
	}
	// Idempotent replay of the same dial.
	if d2, err := s.MarkDialed(ctx, a.ID, c2.Fence, "CA-new", ""); err != nil || d2.CallSID != "CA-new" {
		t.Fatalf("replayed mark dialed: %v", err)
	}
	// A dialed attempt cannot be released or cancelled: the call exists.
	if _, err := s.Release(ctx, a.ID, c2.Fence, clk.Now(), "x"); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("release after dial: %v, want ErrInvalidTransition", err)
	}
	if _, err := s.MarkCancelled(ctx, a.ID, AnyFence, "x"); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("cancel after dial: %v, want ErrInvalidTransition", err)
	}
	if _, err := s.Claim(ctx, "nope", "w", time.Minute); !errors.Is(err, ErrNotFound) {
		t.Fatalf("claim of a missing attempt: %v, want ErrNotFound", err)
	}
}

func TestLeaseExpiryAndReconciliation(t *testing.T) { inBothModes(t, testLeaseExpiryAndReconciliation) }

func testLeaseExpiryAndReconciliation(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	a := mustCreate(t, s, newAttempt("u1", 1, clk.Now()))
	b := mustCreate(t, s, newAttempt("u2", 1, clk.Now()))
	ca := mustClaim(t, s, a.ID)
	if _, err := s.Claim(ctx, b.ID, "w", 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	renewed, err := s.Renew(ctx, a.ID, ca.Fence, 2*time.Minute)
	if err != nil || !renewed.LeaseUntil.Equal(clk.Now().Add(2*time.Minute)) {
		t.Fatalf("renew = %+v, %v", renewed, err)
	}
	if got, _ := s.StaleDialing(ctx, clk.Now(), 10); len(got) != 0 {
		t.Fatalf("stale dialing before any lease ended: %d", len(got))
	}
	clk.Add(3 * time.Minute) // a's worker died mid-dial
	got, err := s.StaleDialing(ctx, clk.Now(), 10)
	if err != nil || len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("stale dialing = %v, %v; want only %s", ids(got), err, a.ID)
	}
	// The expired dialing claim is not claimable again: it may have dialed.
	if _, err := s.Claim(ctx, a.ID, "w2", time.Minute); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim of an expired dialing attempt: %v, want ErrNotClaimable", err)
	}
	u, err := s.MarkUnknown(ctx, a.ID, got[0].Fence, "lease expired while dialing")
	if err != nil || u.State != StateUnknown || u.Result != v1alpha1.CallUnknown {
		t.Fatalf("mark unknown = %+v, %v", u, err)
	}
	clk.Add(time.Minute)
	unk, err := s.Unknown(ctx, clk.Now(), 10)
	if err != nil || len(unk) != 1 || unk[0].ID != a.ID {
		t.Fatalf("unknown = %v, %v", ids(unk), err)
	}
	// Reconciliation finds the call in Twilio's list.
	d, err := s.MarkDialed(ctx, a.ID, u.Fence, "CA-found", "")
	if err != nil || d.State != StateDialed || d.Result != "" {
		t.Fatalf("reconciled dial = %+v, %v", d, err)
	}
	// A callback overtaking the REST response: MarkUnknown then leaves it.
	cb := mustClaim(t, s, mustCreate(t, s, newAttempt("u3", 1, clk.Now())).ID)
	if _, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: cb.ID}, StatusUpdate{Status: "ringing", Seq: 1, CallSID: "CA-3"}); err != nil {
		t.Fatal(err)
	}
	if x, err := s.MarkUnknown(ctx, cb.ID, cb.Fence, "timeout"); err != nil || x.State != StateRinging {
		t.Fatalf("mark unknown after a ringing callback = %+v, %v; want it left ringing", x, err)
	}
	// Reconciliation proves no call was created: back to retry.
	e := mustClaim(t, s, mustCreate(t, s, newAttempt("u4", 1, clk.Now())).ID)
	if _, err := s.MarkUnknown(ctx, e.ID, e.Fence, "timeout"); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Release(ctx, e.ID, e.Fence, clk.Now(), "no call at Twilio"); err != nil || r.State != StateRetry || r.Result != "" {
		t.Fatalf("release of unknown = %+v, %v", r, err)
	}
	// A permanent refusal is terminal.
	f := mustClaim(t, s, mustCreate(t, s, newAttempt("u5", 1, clk.Now())).ID)
	x, err := s.MarkFailed(ctx, f.ID, f.Fence, 21211, "invalid To number")
	if err != nil || x.State != StateFailed || x.Result != v1alpha1.CallRejected || x.ErrorCode != 21211 || x.EndedAt == nil {
		t.Fatalf("mark failed = %+v, %v", x, err)
	}
}

func ids(as []Attempt) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

// ClaimableAfter pages through a shard's whole queue (future attempts
// included) in due, then id, order, even when many share one due time.
func TestClaimableAfterPagesTheWholeQueue(t *testing.T) {
	inBothModes(t, testClaimableAfterPagesTheWholeQueue)
}

func testClaimableAfterPagesTheWholeQueue(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	t0 := clk.Now()
	var want []string
	for i := range 7 { // seven attempts due at the same instant
		n := newAttempt(fmt.Sprintf("same-%d", i), 1, t0.Add(-time.Minute))
		want = append(want, mustCreate(t, s, n).ID)
	}
	want = append(want, mustCreate(t, s, newAttempt("tomorrow", 1, t0.Add(24*time.Hour))).ID)
	slices.Sort(want[:7])
	done := mustCreate(t, s, newAttempt("done", 1, t0.Add(-2*time.Minute)))
	mustClaim(t, s, done.ID)
	other := newAttempt("other", 1, t0)
	other.Shard = "s1"
	mustCreate(t, s, other)

	var got []string
	var c DueCursor
	for page := 0; ; page++ {
		as, err := s.ClaimableAfter(ctx, "shop/evening", "s0", c, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(as) == 0 {
			break
		}
		if page > 10 {
			t.Fatalf("no end after %d pages: %v", page, got)
		}
		got = append(got, ids(as)...)
		c = c.After(&as[len(as)-1])
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pages = %v, want %v (claimable, this shard, due then id order, each once)", got, want)
	}
}

func TestDueBefore(t *testing.T) { inBothModes(t, testDueBefore) }

func testDueBefore(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	t0 := clk.Now()
	mk := func(uid, shard, campaign string, due time.Duration) *Attempt {
		n := newAttempt(uid, 1, t0.Add(due))
		n.Shard, n.Campaign = shard, campaign
		return mustCreate(t, s, n)
	}
	late := mk("late", "s0", "shop/evening", 3*time.Minute)
	early := mk("early", "s0", "shop/evening", -2*time.Minute)
	mid := mk("mid", "s0", "shop/evening", time.Minute)
	mk("future", "s0", "shop/evening", time.Hour)
	mk("othershard", "s1", "shop/evening", 0)
	mk("othercampaign", "s0", "shop/morning", 0)
	claimed := mk("claimed", "s0", "shop/evening", -time.Minute)
	mustClaim(t, s, claimed.ID)
	cancelled := mk("cancelled", "s0", "shop/evening", -time.Minute)
	if _, err := s.MarkCancelled(ctx, cancelled.ID, AnyFence, "delivery cancelled"); err != nil {
		t.Fatal(err)
	}
	released := mk("released", "s0", "shop/evening", -3*time.Minute)
	rc := mustClaim(t, s, released.ID)
	if _, err := s.Release(ctx, released.ID, rc.Fence, t0.Add(2*time.Minute), "429"); err != nil {
		t.Fatal(err)
	}

	got, err := s.DueBefore(ctx, "shop/evening", "s0", t0.Add(5*time.Minute), DueCursor{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{early.ID, mid.ID, released.ID, late.ID}
	if fmt.Sprint(ids(got)) != fmt.Sprint(want) {
		t.Fatalf("DueBefore = %v, want %v (queued/retry, this shard, due order)", ids(got), want)
	}
	got, _ = s.DueBefore(ctx, "shop/evening", "s0", t0.Add(5*time.Minute), DueCursor{}, 2)
	if fmt.Sprint(ids(got)) != fmt.Sprint(want[:2]) {
		t.Fatalf("DueBefore limit 2 = %v", ids(got))
	}
	got, _ = s.DueBefore(ctx, "shop/evening", "s0", t0.Add(5*time.Minute), DueCursor{}.After(&got[1]), 10)
	if fmt.Sprint(ids(got)) != fmt.Sprint(want[2:]) {
		t.Fatalf("DueBefore after the second = %v, want %v", ids(got), want[2:])
	}
	got, _ = s.DueBefore(ctx, "shop/evening", "", t0.Add(time.Second), DueCursor{}, 10)
	if fmt.Sprint(ids(got)) != fmt.Sprint([]string{early.ID, "othershard-1"}) {
		t.Fatalf("DueBefore all shards = %v", ids(got))
	}
	if _, err := s.DueBefore(ctx, "", "s0", t0, DueCursor{}, 10); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("no campaign: %v", err)
	}
	// ForDelivery: sorted by attempt number.
	for _, n := range []int32{3, 1, 2} {
		mustCreate(t, s, newAttempt("multi", n, t0))
	}
	fd, err := s.ForDelivery(ctx, "multi")
	if err != nil || fmt.Sprint(ids(fd)) != "[multi-1 multi-2 multi-3]" {
		t.Fatalf("ForDelivery = %v, %v", ids(fd), err)
	}
}

func TestCancel(t *testing.T) { inBothModes(t, testCancel) }

func testCancel(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	a := mustCreate(t, s, newAttempt("u1", 1, time.Now()))
	c, err := s.MarkCancelled(ctx, a.ID, AnyFence, "delivery cancelled")
	if err != nil || c.State != StateCancelled || c.EndedAt == nil {
		t.Fatalf("cancel = %+v, %v", c, err)
	}
	if c2, err := s.MarkCancelled(ctx, a.ID, AnyFence, "again"); err != nil || c2.Reason != "delivery cancelled" {
		t.Fatalf("second cancel = %+v, %v; want the first unchanged", c2, err)
	}
	if _, err := s.Claim(ctx, a.ID, "w", time.Minute); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim after cancel: %v", err)
	}
	// The operator cannot cancel a claim in flight; the claimant can.
	b := mustClaim(t, s, mustCreate(t, s, newAttempt("u2", 1, time.Now())).ID)
	if _, err := s.MarkCancelled(ctx, b.ID, AnyFence, "x"); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("operator cancel of dialing: %v", err)
	}
	if x, err := s.MarkCancelled(ctx, b.ID, b.Fence, "opted out"); err != nil || x.State != StateCancelled {
		t.Fatalf("fenced cancel of dialing = %+v, %v", x, err)
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) {
		c.LockWait, c.LockTTL, c.OperationTimeout = 300*time.Millisecond, 5*time.Second, time.Second
	})
	a := mustCreate(t, s, newAttempt("u1", 1, clk.Now()))
	// A live lock held by another writer: ErrBusy after LockWait, however
	// far this store's own clock runs ahead (expiry is judged on the
	// server's clock, against the server's stamp).
	if _, err := s.locks.InsertOne(ctx, lockDoc{ID: a.ID, Token: "other", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	if _, err := s.Claim(ctx, a.ID, "w", time.Minute); !errors.Is(err, ErrBusy) {
		t.Fatalf("claim while locked: %v, want ErrBusy", err)
	}
	// Its holder died: once expired on the server's clock, the lock is
	// broken and the claim goes through.
	if _, err := s.locks.UpdateOne(ctx, bson.D{{Key: "_id", Value: a.ID}}, bson.D{{Key: "$set", Value: bson.D{{Key: "at", Value: time.Now().Add(-6 * time.Second)}}}}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Claim(ctx, a.ID, "w", time.Minute)
	if err != nil || c.Fence != 1 {
		t.Fatalf("claim after the lock expired: %+v, %v", c, err)
	}
	if n, _ := s.locks.CountDocuments(ctx, bson.D{}); n != 0 {
		t.Fatalf("%d locks left after the claim, want 0", n)
	}
	// Expired locks are purged, live ones kept, whatever the purger's clock says.
	if _, err := s.locks.InsertOne(ctx, lockDoc{ID: "x", Token: "t", At: time.Now().Add(-6 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.locks.InsertOne(ctx, lockDoc{ID: "y", Token: "t", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PurgeExpired(ctx, clk.Now(), 100); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.locks.CountDocuments(ctx, bson.D{}); n != 1 {
		t.Fatalf("%d locks after the purge, want the live one", n)
	}
}

func TestPurgeExpired(t *testing.T) { inBothModes(t, testPurgeExpired) }

func testPurgeExpired(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) { c.Retention = 24 * time.Hour })
	done := mustCreate(t, s, newAttempt("done", 1, clk.Now()))
	open := mustCreate(t, s, newAttempt("open", 1, clk.Now()))
	x, err := s.MarkCancelled(ctx, done.ID, AnyFence, "delivery cancelled")
	if err != nil || x.ExpireAt == nil || !x.ExpireAt.Equal(clk.Now().Add(24*time.Hour)) {
		t.Fatalf("terminal attempt expireAt = %v, %v", x.ExpireAt, err)
	}
	if n, err := s.PurgeExpired(ctx, clk.Now().Add(23*time.Hour), 100); err != nil || n != 0 {
		t.Fatalf("purge before retention: %d, %v", n, err)
	}
	if n, err := s.PurgeExpired(ctx, clk.Now().Add(25*time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("purge after retention: %d, %v", n, err)
	}
	if _, err := s.Get(ctx, done.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired attempt still there: %v", err)
	}
	if _, err := s.Get(ctx, open.ID); err != nil {
		t.Fatalf("open attempt purged: %v", err)
	}
}

func TestRequestCancel(t *testing.T) { inBothModes(t, testRequestCancel) }

func testRequestCancel(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	// Queued: cancelled at once.
	q := mustCreate(t, s, newAttempt("rc-queued", 1, clk.Now()))
	if a, err := s.RequestCancel(ctx, q.ID, "delivery cancelled"); err != nil || a.State != StateCancelled {
		t.Fatalf("cancel of a queued attempt = %+v, %v", a, err)
	}
	// Dialing, then released: cancelled, and never claimed again.
	mustCreate(t, s, newAttempt("rc-dialing", 1, clk.Now()))
	d := mustClaim(t, s, "rc-dialing-1")
	if a, err := s.RequestCancel(ctx, d.ID, "delivery deleted"); err != nil || a.State != StateDialing || !a.CancelRequested {
		t.Fatalf("cancel of a dialing attempt = %+v, %v; want it marked", a, err)
	}
	if _, err := s.Claim(ctx, d.ID, "w2", time.Minute); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim of a held, marked attempt: %v", err)
	}
	if a, err := s.Release(ctx, d.ID, d.Fence, clk.Now(), "rate limited"); err != nil || a.State != StateCancelled || a.EndedAt == nil {
		t.Fatalf("release of a marked attempt = %+v, %v; want cancelled", a, err)
	}
	if _, err := s.Claim(ctx, d.ID, "w2", time.Minute); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim after the release of a marked attempt: %v", err)
	}
	// Unknown, reconciled as never dialed: cancelled, not put back.
	mustCreate(t, s, newAttempt("rc-unknown", 1, clk.Now()))
	u := mustClaim(t, s, "rc-unknown-1")
	if _, err := s.MarkUnknown(ctx, u.ID, u.Fence, "timeout"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestCancel(ctx, u.ID, "delivery cancelled"); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Release(ctx, u.ID, u.Fence, clk.Now(), "no call at Twilio"); err != nil || a.State != StateCancelled {
		t.Fatalf("release of a marked unknown attempt = %+v, %v; want cancelled", a, err)
	}
	// Dialed: the call exists and is left to finish.
	mustCreate(t, s, newAttempt("rc-dialed", 1, clk.Now()))
	x := mustClaim(t, s, "rc-dialed-1")
	if _, err := s.MarkDialed(ctx, x.ID, x.Fence, "CA-rc", ""); err != nil {
		t.Fatal(err)
	}
	if a, err := s.RequestCancel(ctx, x.ID, "delivery cancelled"); err != nil || a.State != StateDialed {
		t.Fatalf("cancel of a dialed attempt = %+v, %v", a, err)
	}
}

func TestMoveToShard(t *testing.T) { inBothModes(t, testMoveToShard) }

func testMoveToShard(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	a := mustCreate(t, s, newAttempt("u1", 1, time.Now()))
	m, err := s.MoveToShard(ctx, a.ID, "shard-9")
	if err != nil || m.Shard != "shard-9" || m.State != StateQueued || m.Fence != a.Fence {
		t.Fatalf("move a queued attempt = %+v, %v", m, err)
	}
	// A claimed attempt stays with the shard whose worker holds it.
	b := mustClaim(t, s, mustCreate(t, s, newAttempt("u2", 1, time.Now())).ID)
	if x, err := s.MoveToShard(ctx, b.ID, "shard-9"); err != nil || x.Shard != b.Shard || x.State != StateDialing {
		t.Fatalf("move a dialing attempt = %+v, %v; want it unchanged on %s", x, err, b.Shard)
	}
	if _, err := s.MoveToShard(ctx, a.ID, ""); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("move to no shard: %v", err)
	}
}
