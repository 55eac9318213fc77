package ratelimit_test

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/workers/ratelimit"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Redis: true}, &env)
}

func client(t *testing.T) *redis.Client {
	t.Helper()
	c := env.Redis.Client()
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRateHeldAcrossClients: several workers, each with its own connection,
// reserve and wait in a loop for 10 s; the slots granted keep to the rate
// within 5%, no second holds more than its share, and every worker is served
// about equally (FIFO, no starvation).
func TestRateHeldAcrossClients(t *testing.T) {
	const rate = 50.0
	// Ten clients keep reservations queued ahead of the limiter, so a client
	// that wakes late (a loaded machine) does not leave a slot unused.
	const clients = 10
	const window = 10 * time.Second
	reg := prometheus.NewRegistry()
	metrics, err := ratelimit.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var mu sync.Mutex
	var grants []time.Time
	perClient := make([]int, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		l, err := ratelimit.New(client(t), "AC-rate", rate, ratelimit.Options{Metrics: metrics})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// The slot the limiter books is what it grants; when this
				// goroutine then wakes depends on the machine's load.
				r, err := l.Reserve(ctx)
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				if r.At.After(deadline) {
					return
				}
				mu.Lock()
				grants = append(grants, r.Slot)
				perClient[i]++
				mu.Unlock()
				time.Sleep(time.Until(r.At))
			}
		}()
	}
	wg.Wait()
	sort.Slice(grants, func(i, j int) bool { return grants[i].Before(grants[j]) })
	span := grants[len(grants)-1].Sub(grants[0])
	got := float64(len(grants)-1) / span.Seconds()
	t.Logf("%d grants in %s: %.2f/s (limit %.0f/s); per client %v", len(grants), span.Round(time.Millisecond), got, rate, perClient)
	if math.Abs(got-rate)/rate > 0.05 {
		t.Errorf("rate %.2f/s, want %.0f/s within 5%%", got, rate)
	}
	// No one-second window holds more than the rate allows (+5%).
	worst := 0
	for i, j := 0, 0; i < len(grants); i++ {
		for grants[i].Sub(grants[j]) >= time.Second {
			j++
		}
		worst = max(worst, i-j+1)
	}
	if float64(worst) > rate*1.05+1 {
		t.Errorf("%d grants within one second, want at most %.0f", worst, rate*1.05+1)
	}
	mean := float64(len(grants)) / clients
	for i, n := range perClient {
		if math.Abs(float64(n)-mean)/mean > 0.2 {
			t.Errorf("client %d got %d grants, mean %.0f: unfair", i, n, mean)
		}
	}
	if n := testutil.CollectAndCount(reg, "delauto_ratelimit_wait_seconds"); n != 1 {
		t.Errorf("wait histogram series = %d, want 1", n)
	}
}

func TestReservationsQueueAndCancelReturnsTheLastSlot(t *testing.T) {
	ctx := context.Background()
	l, err := ratelimit.New(client(t), "AC-cancel", 10, ratelimit.Options{}) // one per 100ms
	if err != nil {
		t.Fatal(err)
	}
	var rs []*ratelimit.Reservation
	for i := 0; i < 3; i++ {
		r, err := l.Reserve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	near := func(d, want time.Duration) bool { return d > want-15*time.Millisecond && d <= want+5*time.Millisecond }
	for i, r := range rs {
		if want := time.Duration(i) * 100 * time.Millisecond; !near(r.Delay, want) {
			t.Fatalf("reservation %d waits %s, want about %s", i, r.Delay, want)
		}
	}
	if ok, err := rs[1].Cancel(ctx); err != nil || ok {
		t.Fatalf("cancel of a middle reservation: %v %v, want not returned", ok, err)
	}
	if ok, err := rs[2].Cancel(ctx); err != nil || !ok {
		t.Fatalf("cancel of the last reservation: %v %v, want returned", ok, err)
	}
	r, err := l.Reserve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(rs[2].At.Add(-rs[2].Delay)); !near(r.Delay+elapsed, 200*time.Millisecond) {
		t.Fatalf("after returning the last slot the next waits %s (+%s elapsed), want its slot at 200ms", r.Delay, elapsed)
	}

	// Wait gives its slot back when its context ends first.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := l.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v, want deadline exceeded", err)
	}
	r2, err := l.Reserve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.At.Add(-20 * time.Millisecond).Before(r.At.Add(100 * time.Millisecond)) {
		t.Fatalf("slot after a cancelled Wait starts %s after the previous, want 100ms", r2.At.Sub(r.At))
	}
}

func TestBurstAndMaxWait(t *testing.T) {
	ctx := context.Background()
	l, err := ratelimit.New(client(t), "AC-burst", 5, ratelimit.Options{Burst: 3, MaxWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Three slots at once (the burst), the fourth one interval (200ms)
	// after the first, on the Redis server's clock: what the limiter grants,
	// whatever this process's latency between the calls. Only a pause of
	// more than an interval between them (a loaded machine) moves the fourth
	// later, to when it was asked for.
	var slots []time.Time
	for i := 0; i < 4; i++ {
		r, err := l.Reserve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i < 3 && r.Delay != 0 {
			t.Fatalf("reservation %d of a burst of 3 waits %v", i+1, r.Delay)
		}
		slots = append(slots, r.Slot)
	}
	if gap := slots[3].Sub(slots[0]); gap < 190*time.Millisecond || gap > 210*time.Millisecond && gap > slots[2].Sub(slots[0])+210*time.Millisecond {
		t.Fatalf("the fourth slot is %v after the first, want one interval (200ms)", gap)
	}
	// The next slot is 400ms away, beyond MaxWait: refused, nothing booked.
	for i := 0; i < 2; i++ {
		_, err := l.Reserve(ctx)
		if !errors.Is(err, ratelimit.ErrWaitTooLong) {
			t.Fatalf("reserve beyond MaxWait: %v, want ErrWaitTooLong", err)
		}
		// The refusal says how far the slot was, so the caller can come back then.
		var tl *ratelimit.WaitTooLongError
		if !errors.As(err, &tl) || tl.Wait < 350*time.Millisecond || tl.Wait > 450*time.Millisecond || tl.MaxWait != 300*time.Millisecond {
			t.Fatalf("refusal %#v, want the slot about 400ms away and the maximum 300ms", tl)
		}
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		account string
		rate    float64
	}{{"", 1}, {"a{b}", 1}, {"ok", 0}, {"ok", -1}, {"ok", math.Inf(1)}, {"ok", math.NaN()}} {
		if _, err := ratelimit.New(client(t), c.account, c.rate, ratelimit.Options{}); err == nil {
			t.Errorf("New(%q, %v) accepted", c.account, c.rate)
		}
	}
	if got := ratelimit.Key("AC123"); got != "{rl:AC123}" {
		t.Errorf("key %q", got)
	}
}
