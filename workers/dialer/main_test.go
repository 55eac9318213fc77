package dialer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Redis: true, Mongo: true}, &env)
}

// The caller IDs of test campaigns.
var fromNumbers = []v1.PhoneNumber{"+14155550100", "+14155550101", "+14155550102"}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("DIALER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// harness is one test's world: its own database, queue shard, Twilio
// account on its own simulator, and campaign.
type harness struct {
	t        *testing.T
	st       *store.Store
	db       string        // the call log's database
	timeout  time.Duration // the Twilio client's request timeout
	rdb      *redis.Client
	q        *queue.Queue
	shard    queue.Shard
	sim      *twiliosim.Sim
	twilio   TwilioCalls
	campaign *campaignfile.Config
	callback *httptest.Server
	reg      *prometheus.Registry
	metrics  *Metrics
	log      *slog.Logger
}

var seq atomic.Int64

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

type harnessOpt func(*harnessConfig)

type harnessConfig struct {
	sim           twiliosim.Options
	twilioTimeout time.Duration
	spec          func(*v1.CallCampaignSpec)
}

func withSim(f func(*twiliosim.Options)) harnessOpt {
	return func(c *harnessConfig) { f(&c.sim) }
}

func withSpec(f func(*v1.CallCampaignSpec)) harnessOpt {
	return func(c *harnessConfig) { c.spec = f }
}

func withTwilioTimeout(d time.Duration) harnessOpt {
	return func(c *harnessConfig) { c.twilioTimeout = d }
}

func randomAccount() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "AC" + hex.EncodeToString(b[:])
}

func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	cfg := harnessConfig{sim: twiliosim.Options{Instant: true, AccountSID: randomAccount()}, twilioTimeout: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	ctx := context.Background()
	name := nonName.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(name) > 40 {
		name = name[:40]
	}
	name = strings.Trim(name, "-")
	n := seq.Add(1)
	log := testLogger(t)
	db := fmt.Sprintf("dialer%d_%s", n, strings.ReplaceAll(name, "-", "_"))
	st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: db, Logger: log})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		_ = env.Mongo.DropDatabase(db)
		_ = st.Close(context.Background())
	})
	rdb := env.Redis.Client()
	t.Cleanup(func() { rdb.Close() })
	reg := prometheus.NewRegistry()
	qm, err := queue.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Response/>`)
	}))
	t.Cleanup(cb.Close)
	if cfg.sim.Numbers == nil {
		for _, f := range fromNumbers {
			cfg.sim.Numbers = append(cfg.sim.Numbers, string(f))
		}
	}
	sim, err := twiliosim.New(cfg.sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	hc, err := twilioclient.HTTPClient(sim.URL(), cfg.twilioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := twilioclient.New(sim.AccountSID(), sim.AuthToken(), hc)
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("t%d-%s", n, name)
	if len(ns) > 50 {
		ns = ns[:50]
	}
	spec := v1.CallCampaignSpec{
		Schedule: v1.ScheduleSpec{
			CallingHours:    v1.CallingHours{Start: "06:00", End: "18:00"},
			DefaultTimeZone: v1.TimeZone(testservices.NoonZone()),
		},
		Script: v1.CallScript{CompanyName: "Parcels", AnsweringMachine: v1.MachineHangUp,
			RingTimeout: &metav1.Duration{Duration: 25 * time.Second}, TimeLimit: &metav1.Duration{Duration: 90 * time.Second}},
		Twilio: v1.TwilioSpec{FromNumbers: fromNumbers, CallsPerSecond: 1000, CallbackURL: cb.URL},
	}
	if cfg.spec != nil {
		cfg.spec(&spec)
	}
	h := &harness{
		t: t, st: st, db: db, timeout: cfg.twilioTimeout, rdb: rdb, q: queue.New(rdb, queue.Options{Metrics: qm, Logger: log}),
		shard: queue.Shard{Namespace: ns, Campaign: "evening", Name: "shard-0"},
		sim:   sim, twilio: rc.Api, callback: cb, reg: reg, metrics: m, log: log,
		campaign: &campaignfile.Config{Namespace: ns, Name: "evening", Spec: spec},
	}
	return h
}

// dialer returns a Dialer of the harness; edit adjusts its options.
func (h *harness) dialer(owner string, edit ...func(*Options)) *Dialer {
	h.t.Helper()
	o := Options{
		Store: h.st, Redis: h.rdb, Twilio: h.twilio, AccountSID: h.sim.AccountSID(),
		Campaign: campaignfile.Static{Config: h.campaign}, Owner: owner, Lease: 10 * time.Second, TwilioTimeout: h.timeout,
		RateLimitBackoff: 20 * time.Millisecond, RecordTimeout: 5 * time.Second,
		Metrics: h.metrics, Logger: h.log,
	}
	for _, e := range edit {
		e(&o)
	}
	d, err := New(o)
	if err != nil {
		h.t.Fatalf("dialer: %v", err)
	}
	return d
}

// consume runs a queue consumer with d's handler until the test ends.
func (h *harness) consume(d *Dialer, name string, concurrency int) {
	h.t.Helper()
	c, err := h.q.NewConsumer(queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: h.shard}}, Handler: d.Handle, Name: name,
		Concurrency: concurrency, Block: 200 * time.Millisecond, Lease: 5 * time.Second, ReclaimInterval: 200 * time.Millisecond,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			c.Abort()
			<-done
		}
	})
}

// attempt is what a test plans.
type attempt struct {
	to  string
	tz  string
	due time.Time
	// windowEnd defaults to a day after due.
	windowEnd time.Time
	// shard defaults to the harness's shard.
	shard string
}

var toSeq atomic.Int64

// create plans an attempt in the call log (and, with queued, in Redis).
func (h *harness) create(a attempt, queued bool) *store.Attempt {
	h.t.Helper()
	if a.to == "" {
		// A number of its own: one attempt per number may be in flight.
		a.to = fmt.Sprintf("+1415%07d", 5000000+toSeq.Add(1)%4000000)
	}
	if a.due.IsZero() {
		a.due = time.Now()
	}
	if a.windowEnd.IsZero() {
		a.windowEnd = a.due.Add(24 * time.Hour)
	}
	shard := h.shard
	if a.shard != "" {
		shard.Name = a.shard
	}
	uid := testservices.UUID()
	got, _, err := h.st.CreateAttempt(context.Background(), store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: h.campaign.Namespace, Name: "parcel-" + uid[:8]},
		Campaign: h.campaign.Namespace + "/" + h.campaign.Name, Shard: shard.Name, Number: 1, Due: a.due, To: a.to,
		Context: &store.CallContext{RecipientName: "Ada", TimeZone: a.tz, WindowStart: a.windowEnd.Add(-2 * time.Hour), WindowEnd: a.windowEnd,
			Address: "1 Main St", AgentName: "Bob"},
	})
	if err != nil {
		h.t.Fatalf("create attempt: %v", err)
	}
	if queued {
		if _, err := h.q.Schedule(context.Background(), shard, got.ID, a.due); err != nil {
			h.t.Fatal(err)
		}
	}
	return got
}

// get reads an attempt.
func (h *harness) get(id string) *store.Attempt {
	h.t.Helper()
	a, err := h.st.Get(context.Background(), id)
	if err != nil {
		h.t.Fatalf("get %s: %v", id, err)
	}
	return a
}

// waitState waits until the attempt is in one of the states.
func (h *harness) waitState(id string, timeout time.Duration, states ...store.State) *store.Attempt {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a := h.get(id)
		for _, s := range states {
			if a.State == s {
				return a
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("attempt %s is %s (reason %q), want %v", id, a.State, a.Reason, states)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// idle waits until the shard has nothing ready or in flight.
func (h *harness) idle(timeout time.Duration) queue.ShardStats {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := h.q.Stats(context.Background(), []queue.Shard{h.shard}, time.Hour)
		if err != nil {
			h.t.Fatal(err)
		}
		if st[0].DueNow == 0 && st[0].Ready == 0 && st[0].InFlight == 0 {
			return st[0]
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("queue not idle: %+v", st[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dueScore is the attempt's due time in the shard's due set, if it is there.
func (h *harness) dueScore(id string) (time.Time, bool) {
	h.t.Helper()
	ms, err := h.rdb.ZScore(context.Background(), h.shard.DueKey(), id).Result()
	if err == redis.Nil {
		return time.Time{}, false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return time.UnixMilli(int64(ms)), true
}

// outcomeEvents returns the states published for an attempt.
func (h *harness) outcomeEvents(id string) []string {
	h.t.Helper()
	msgs, err := h.rdb.XRange(context.Background(), "{delauto:outcomes}:stream", "-", "+").Result()
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		if m.Values["attempt"] == id {
			out = append(out, fmt.Sprint(m.Values["state"]))
		}
	}
	return out
}

// counter reads a counter of the harness's registry.
func (h *harness) counter(name string, labels map[string]string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := true
			for _, lp := range m.GetLabel() {
				if v, want := lp.GetValue(), labels[lp.GetName()]; want != "" && v != want {
					ok = false
				}
			}
			if ok && m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
