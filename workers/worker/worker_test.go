package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

func TestOpsEndpointsAndDrain(t *testing.T) {
	w := newWorld(t)
	r := w.start(w.workerOpts("w1", nil))
	r.waitReady(t, http.StatusOK, 5*time.Second)
	if c, body := r.get(t, "/healthz"); c != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", c, body)
	}
	a := w.create("+14155550123", true)
	w.waitState(a.ID, 20*time.Second, store.StateDialed)

	// Drain while a call is being placed: it finishes and is recorded.
	if err := w.sim.SetFaults(twiliosim.Faults{Latency: time.Second}); err != nil {
		t.Fatal(err)
	}
	for len(w.creates) > 0 {
		<-w.creates // the first attempt's
	}
	slow := w.create("+14155550124", true)
	select {
	case <-w.creates:
	case <-time.After(10 * time.Second):
		t.Fatal("no create request")
	}
	c, body := r.do(t, http.MethodPost, "/drain")
	var st DrainState
	if err := json.Unmarshal([]byte(body), &st); c != http.StatusAccepted || err != nil || !st.Draining {
		t.Fatalf("POST /drain = %d %q", c, body)
	}
	if body := r.waitReady(t, http.StatusServiceUnavailable, 2*time.Second); !strings.Contains(body, "draining") {
		t.Errorf("/readyz while draining: %q", body)
	}
	got := w.waitState(slow.ID, 20*time.Second, store.StateDialed)
	if got.CallSID == "" || w.sim.CallsForAttempt(slow.ID) != 1 {
		t.Fatalf("the call in flight during the drain: %+v, %d calls", got, w.sim.CallsForAttempt(slow.ID))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := r.get(t, "/drain")
		_ = json.Unmarshal([]byte(body), &st)
		if st.Drained {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never drained: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Drained: new attempts wait.
	_ = w.sim.SetFaults(twiliosim.Faults{})
	waiting := w.create("+14155550125", true)
	time.Sleep(time.Second)
	if got := w.get(waiting.ID); got.State != store.StateQueued || w.sim.CallsForAttempt(waiting.ID) != 0 {
		t.Fatalf("a drained worker took an attempt: %s", got.State)
	}
	if c, _ := r.do(t, http.MethodDelete, "/drain"); c != http.StatusOK {
		t.Fatalf("DELETE /drain = %d", c)
	}
	r.waitReady(t, http.StatusOK, 5*time.Second)
	w.waitState(waiting.ID, 20*time.Second, store.StateDialed)

	// The call log says dialed before the handler has counted the dial and
	// left: the counters catch up once it returns.
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, metrics := r.get(t, "/metrics")
		var missing []string
		for _, name := range []string{
			`delauto_worker_dials_total{result="dialed"} 3`, "delauto_worker_in_flight 0", "delauto_worker_pickup_to_dial_seconds_count 3",
			"delauto_worker_ready 1", "delauto_worker_draining 0", "delauto_queue_handled_total", "delauto_ratelimit_wait_seconds_count",
			"delauto_worker_fence_conflicts_total 0", "delauto_worker_redis_up 1", "delauto_worker_mongo_up 1",
		} {
			if !strings.Contains(metrics, name) {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// /drain answers only the operator: requests without its token, or with
// another, are refused and change nothing.
func TestDrainNeedsTheOperatorsToken(t *testing.T) {
	w := newWorld(t)
	r := w.start(w.workerOpts("w1", nil))
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		if c, body := r.doAs(t, m, "/drain", ""); c != http.StatusUnauthorized || !strings.Contains(body, "Bearer") {
			t.Errorf("%s /drain without a token = %d %q, want 401 naming the Bearer token", m, c, body)
		}
		if c, _ := r.doAs(t, m, "/drain", "Bearer guessed"); c != http.StatusForbidden {
			t.Errorf("%s /drain with a wrong token = %d, want 403", m, c)
		}
	}
	if r.State().Draining {
		t.Fatal("a request without the token started a drain")
	}
	if c, _ := r.do(t, http.MethodPost, "/drain"); c != http.StatusAccepted || !r.State().Draining {
		t.Fatalf("POST /drain with the token = %d", c)
	}

	// A worker given no token refuses every drain request.
	o := w.workerOpts("w2", nil)
	o.DrainToken = ""
	r2 := w.start(o)
	if c, _ := r2.do(t, http.MethodPost, "/drain"); c != http.StatusForbidden || r2.State().Draining {
		t.Errorf("POST /drain on a worker without a token = %d", c)
	}
}

func TestCallbacksSlot(t *testing.T) {
	w := newWorld(t)
	o := w.workerOpts("w1", nil)
	wk, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	rec := &statusRecorder{}
	wk.CallbackHandler().ServeHTTP(rec, httptestRequest("/twilio/status"))
	if rec.code != http.StatusNotFound {
		t.Errorf("without callbacks: %d, want 404", rec.code)
	}
	o.Callbacks = http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { rw.WriteHeader(http.StatusNoContent) })
	o.Registry = nil
	wk, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	rec = &statusRecorder{}
	wk.CallbackHandler().ServeHTTP(rec, httptestRequest("/twilio/status"))
	if rec.code != http.StatusNoContent {
		t.Errorf("with callbacks: %d, want the handler's 204", rec.code)
	}
}

// Redis dies with attempts queued in it and comes back empty: the worker is
// not ready meanwhile, and the sweeper puts the attempts back from MongoDB;
// each is called once.
func TestRedisLossDelaysCallsAndLosesNone(t *testing.T) {
	w := newWorld(t)
	r := w.start(w.workerOpts("w1", nil))
	r.waitReady(t, http.StatusOK, 5*time.Second)
	r.Drain() // hold the attempts in Redis
	var ids []string
	for i := range 10 {
		ids = append(ids, w.create(fmt.Sprintf("+141555501%02d", 30+i), true).ID)
	}
	restartRedis(t, r)
	w.dialedOnce(t, ids)
	_, metrics := r.get(t, "/metrics")
	if !strings.Contains(metrics, "delauto_worker_swept_total 10") {
		t.Errorf("swept_total is not 10:\n%s", grep(metrics, "swept"))
	}
}

// Redis restarts empty and the sweeper's periodic pass is an hour away: the
// worker sees the new Redis incarnation and republishes the shard's whole
// queue at once, the attempt due tomorrow included, and each due attempt
// is then called once.
func TestRedisRestartRepublishesTheQueueAtOnce(t *testing.T) {
	w := newWorld(t)
	opts := w.workerOpts("w1", nil)
	opts.SweepInterval = time.Hour
	opts.SweepWatchInterval = 100 * time.Millisecond
	r := w.start(opts)
	r.waitReady(t, http.StatusOK, 5*time.Second)
	r.Drain() // hold the attempts in Redis
	var ids []string
	for i := range 5 {
		ids = append(ids, w.create(fmt.Sprintf("+141555502%02d", 30+i), true).ID)
	}
	ctx := context.Background()
	uid := testservices.UUID()
	tomorrow, _, err := w.direct.CreateAttempt(ctx, store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: w.campaign.Namespace, Name: "parcel-" + uid[:8]},
		Campaign: w.campaign.Namespace + "/evening", Shard: w.shard.Name, Number: 1, Due: time.Now().Add(24 * time.Hour), To: "+14155550299",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.q.Schedule(ctx, w.shard, tomorrow.ID, tomorrow.Due); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the worker has seen this Redis
	restartRedis(t, r)
	w.dialedOnce(t, ids)
	if res, err := w.q.Schedule(ctx, w.shard, tomorrow.ID, tomorrow.Due); err != nil || res != queue.Unchanged {
		t.Errorf("the attempt due tomorrow is not back in the queue: scheduling it again gave %v, %v", res, err)
	}
	if got := w.get(tomorrow.ID); got.State != store.StateQueued {
		t.Errorf("the attempt due tomorrow is %s", got.State)
	}
	_, metrics := r.get(t, "/metrics")
	if !strings.Contains(metrics, "delauto_worker_swept_total 6") {
		t.Errorf("swept_total is not 6:\n%s", grep(metrics, "swept"))
	}
}

// Redis restarts empty while no worker runs: the next worker to start
// finds the shard's queue not marked complete in this Redis and restores
// it, although its periodic pass could not have found the attempts.
func TestWorkerStartedAfterARedisRestartRestoresTheQueue(t *testing.T) {
	w := newWorld(t)
	var ids []string
	for i := range 3 {
		ids = append(ids, w.create(fmt.Sprintf("+141555503%02d", 30+i), true).ID)
	}
	env.Redis.Kill()
	if err := env.Redis.Restart(); err != nil {
		t.Fatal(err)
	}
	opts := w.workerOpts("w1", nil)
	opts.SweepInterval, opts.SweepOverdue, opts.SweepWatchInterval = time.Hour, time.Hour, 100*time.Millisecond
	r := w.start(opts)
	r.waitReady(t, http.StatusOK, 10*time.Second)
	w.dialedOnce(t, ids)
	_, metrics := r.get(t, "/metrics")
	if !strings.Contains(metrics, `delauto_worker_sweeps_total{kind="restore"} 1`) {
		t.Errorf("no restore counted:\n%s", grep(metrics, "sweep"))
	}
}

// restartRedis kills Redis while r holds its attempts (drained), lets r
// resume, and brings Redis back empty; it returns once r is ready again.
func restartRedis(t *testing.T, r *running) {
	t.Helper()
	env.Redis.Kill()
	r.Resume()
	if body := r.waitReady(t, http.StatusServiceUnavailable, 5*time.Second); !strings.Contains(body, "redis") {
		t.Errorf("/readyz during the outage: %q", body)
	}
	if err := env.Redis.Restart(); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t, http.StatusOK, 10*time.Second)
}

// dialedOnce waits until each attempt is dialed and checks it was called once.
func (w *world) dialedOnce(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		w.waitState(id, 30*time.Second, store.StateDialed)
		if n := w.sim.CallsForAttempt(id); n != 1 {
			t.Errorf("attempt %s: %d calls", id, n)
		}
	}
}

// MongoDB becomes unreachable while a call is being placed and attempts
// keep coming: the call is recorded once MongoDB is back, the others wait
// and are then called, each once.
func TestMongoOutageKeepsInFlightStateAndResumes(t *testing.T) {
	w := newWorld(t)
	p, st := w.storeBehindProxy(t)
	r := w.start(w.workerOpts("w1", st))
	r.waitReady(t, http.StatusOK, 5*time.Second)
	if err := w.sim.SetFaults(twiliosim.Faults{Latency: 1500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	inFlight := w.create("+14155550140", true)
	select {
	case <-w.creates:
	case <-time.After(10 * time.Second):
		t.Fatal("no create request")
	}
	p.Down() // the create request is in flight
	if body := r.waitReady(t, http.StatusServiceUnavailable, 5*time.Second); !strings.Contains(body, "mongodb") {
		t.Errorf("/readyz during the outage: %q", body)
	}
	_ = w.sim.SetFaults(twiliosim.Faults{})
	var later []string
	for i := range 5 {
		later = append(later, w.create(fmt.Sprintf("+141555501%02d", 50+i), true).ID)
	}
	time.Sleep(2 * time.Second)
	for _, id := range later {
		if n := w.sim.CallsForAttempt(id); n != 0 {
			t.Fatalf("attempt %s called while MongoDB was unreachable", id)
		}
	}
	// The create request went out before the outage: the simulator creates
	// the call when its latency is over, however late that is.
	for deadline := time.Now().Add(10 * time.Second); w.sim.CallsForAttempt(inFlight.ID) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := w.sim.CallsForAttempt(inFlight.ID); n != 1 {
		t.Fatalf("the call in flight: %d calls", n)
	}
	p.Up(t)
	r.waitReady(t, http.StatusOK, 10*time.Second)
	got := w.waitState(inFlight.ID, 30*time.Second, store.StateDialed)
	var simSID string
	for _, c := range w.sim.Calls() {
		if c.AttemptID == inFlight.ID {
			simSID = c.Sid
		}
	}
	if got.CallSID != simSID {
		t.Errorf("in-flight call recorded with SID %q, the simulator's is %q", got.CallSID, simSID)
	}
	for _, id := range append(later, inFlight.ID) {
		w.waitState(id, 30*time.Second, store.StateDialed)
		if n := w.sim.CallsForAttempt(id); n != 1 {
			t.Errorf("attempt %s: %d calls", id, n)
		}
	}
}

// Two workers on one shard with every attempt queued and then queued again
// by the sweeper's republishing: one call per attempt.
func TestTwoWorkersOneCallPerAttempt(t *testing.T) {
	w := newWorld(t)
	r1 := w.start(w.workerOpts("w1", nil))
	r2 := w.start(w.workerOpts("w2", nil))
	r1.waitReady(t, http.StatusOK, 5*time.Second)
	r2.waitReady(t, http.StatusOK, 5*time.Second)
	var ids []string
	for i := range 40 {
		a := w.create(fmt.Sprintf("+141555502%02d", i), true)
		ids = append(ids, a.ID)
		if _, err := w.rdb.XAdd(context.Background(), xaddDuplicate(w, a.ID)).Result(); err != nil {
			t.Fatal(err)
		}
	}
	owners := map[string]int{}
	for _, id := range ids {
		owners[w.waitState(id, 30*time.Second, store.StateDialed).Owner]++
	}
	time.Sleep(time.Second)
	if d := w.sim.DuplicateAttempts(); len(d) != 0 {
		t.Fatalf("attempts called more than once: %v", d)
	}
	t.Logf("attempts per worker: %v", owners)
}

// switchable is a campaign source the test changes.
type switchable struct {
	cur atomic.Pointer[campaignfile.Config]
}

func (s *switchable) Current() *campaignfile.Config { return s.cur.Load() }

// A suspended campaign stops dialing, keeps its attempts queued, and dials
// them once the suspension is lifted.
func TestSuspendedCampaignPausesDialing(t *testing.T) {
	w := newWorld(t)
	src := &switchable{}
	src.cur.Store(w.campaign)
	o := w.workerOpts("w1", nil)
	o.Campaign = src
	r := w.start(o)
	r.waitReady(t, http.StatusOK, 5*time.Second)
	suspended := *w.campaign
	suspended.Spec.Suspend = true
	src.cur.Store(&suspended)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(metric(t, r, "delauto_worker_consuming"), "delauto_worker_consuming 0") {
		if time.Now().After(deadline) {
			t.Fatal("still consuming after the campaign was suspended")
		}
		time.Sleep(50 * time.Millisecond)
	}
	a := w.create("+14155550160", true)
	time.Sleep(time.Second)
	if got := w.get(a.ID); got.State != store.StateQueued || w.sim.CallsForAttempt(a.ID) != 0 {
		t.Fatalf("dialed while suspended: %s", got.State)
	}
	if c, _ := r.get(t, "/readyz"); c != http.StatusOK {
		t.Errorf("a suspended worker is not ready (%d): it still serves callbacks", c)
	}
	resumed := *w.campaign
	src.cur.Store(&resumed)
	w.waitState(a.ID, 20*time.Second, store.StateDialed)
}

func metric(t *testing.T, r *running, name string) string {
	t.Helper()
	_, body := r.get(t, "/metrics")
	return grep(body, name)
}

// storeBehindProxy opens the world's call log through a TCP proxy the test
// can cut, with short timeouts so an outage shows within seconds.
func (w *world) storeBehindProxy(t *testing.T) (*testservices.Proxy, *store.Store) {
	t.Helper()
	p := testservices.StartProxy(t, mongoHost(t))
	st, err := store.Open(context.Background(), store.Config{URI: p.URL(t, env.Mongo.URI), Database: w.db, Logger: w.log,
		ConnectTimeout: time.Second, ServerSelectionTimeout: time.Second, OperationTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	return p, st
}
