// Package calltest is the world of a test of the call pipeline and its
// recovery: a call log database of its own on the test's MongoDB, a queue
// shard on its Redis, a Twilio account on a simulator of its own, and a
// campaign; and the attempts a test plans in it. For tests only.
package calltest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twilio/twilio-go/client"
	twilioapi "github.com/twilio/twilio-go/rest/api/v2010"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/ratelimit"
	"github.com/delauto/delauto/workers/store"
)

// FromNumbers are the caller IDs of test campaigns.
var FromNumbers = []v1.PhoneNumber{"+14155550100", "+14155550101", "+14155550102"}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CALLTEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// World is one test's world: its own database, queue shard, Twilio
// account on its own simulator, and campaign.
type World struct {
	T  *testing.T
	St *store.Store
	// DB is the call log's database.
	DB string
	// Timeout is the Twilio client's request timeout.
	Timeout time.Duration
	Rdb     *redis.Client
	Q       *queue.Queue
	Shard   queue.Shard
	Sim     *twiliosim.Sim
	// Twilio is the REST client of the account on Sim.
	Twilio   *twilioapi.ApiService
	Campaign *campaignfile.Config
	// Callback answers the calls' webhooks with empty TwiML.
	Callback *httptest.Server
	// Reg is the registry of the queue's metrics and the test's own.
	Reg *prometheus.Registry
	Log *slog.Logger

	env *testservices.Env
}

var seq atomic.Int64

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// Opt adjusts a World.
type Opt func(*config)

type config struct {
	sim           twiliosim.Options
	twilioTimeout time.Duration
	spec          func(*v1.CallCampaignSpec)
}

// WithSim adjusts the world.
func WithSim(f func(*twiliosim.Options)) Opt {
	return func(c *config) { f(&c.sim) }
}

// WithSpec adjusts the world.
func WithSpec(f func(*v1.CallCampaignSpec)) Opt {
	return func(c *config) { c.spec = f }
}

// WithTwilioTimeout adjusts the world.
func WithTwilioTimeout(d time.Duration) Opt {
	return func(c *config) { c.twilioTimeout = d }
}

func randomAccount() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "AC" + hex.EncodeToString(b[:])
}

// New makes a test's world on env's Redis and MongoDB: its own database,
// queue shard, Twilio account on its own simulator, and campaign.
func New(t *testing.T, env *testservices.Env, opts ...Opt) *World {
	t.Helper()
	cfg := config{sim: twiliosim.Options{Instant: true, AccountSID: randomAccount()}, twilioTimeout: 5 * time.Second}
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
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Response/>`)
	}))
	t.Cleanup(cb.Close)
	if cfg.sim.Numbers == nil {
		for _, f := range FromNumbers {
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
		Twilio: v1.TwilioSpec{FromNumbers: FromNumbers, CallsPerSecond: 1000, CallbackURL: cb.URL},
	}
	if cfg.spec != nil {
		cfg.spec(&spec)
	}
	h := &World{
		env: env, T: t, St: st, DB: db, Timeout: cfg.twilioTimeout, Rdb: rdb, Q: queue.New(rdb, queue.Options{Metrics: qm, Logger: log}),
		Shard: queue.Shard{Namespace: ns, Campaign: "evening", Name: "shard-0"},
		Sim:   sim, Twilio: rc.Api, Callback: cb, Reg: reg, Log: log,
		Campaign: &campaignfile.Config{Namespace: ns, Name: "evening", Spec: spec},
	}
	return h
}

// Attempt is what a test plans: To defaults to a number of its own, Due to
// now, WindowEnd to a day after Due, Shard to the world's shard.
type Attempt struct {
	To        string
	TZ        string
	Due       time.Time
	WindowEnd time.Time
	Shard     string
}

var toSeq atomic.Int64

// Create plans an attempt in the call log (and, with queued, in Redis).
func (h *World) Create(a Attempt, queued bool) *store.Attempt {
	h.T.Helper()
	if a.To == "" {
		// A number of its own: one attempt per number may be in flight.
		a.To = fmt.Sprintf("+1415%07d", 5000000+toSeq.Add(1)%4000000)
	}
	if a.Due.IsZero() {
		a.Due = time.Now()
	}
	if a.WindowEnd.IsZero() {
		a.WindowEnd = a.Due.Add(24 * time.Hour)
	}
	shard := h.Shard
	if a.Shard != "" {
		shard.Name = a.Shard
	}
	uid := testservices.UUID()
	got, _, err := h.St.CreateAttempt(context.Background(), store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: h.Campaign.Namespace, Name: "parcel-" + uid[:8]},
		Campaign: h.Campaign.Namespace + "/" + h.Campaign.Name, Shard: shard.Name, Number: 1, Due: a.Due, To: a.To,
		Context: &store.CallContext{RecipientName: "Ada", TimeZone: a.TZ, WindowStart: a.WindowEnd.Add(-2 * time.Hour), WindowEnd: a.WindowEnd,
			Address: "1 Main St", AgentName: "Bob"},
	})
	if err != nil {
		h.T.Fatalf("create attempt: %v", err)
	}
	if queued {
		if _, err := h.Q.Schedule(context.Background(), shard, got.ID, a.Due); err != nil {
			h.T.Fatal(err)
		}
	}
	return got
}

// Get reads an attempt.
func (h *World) Get(id string) *store.Attempt {
	h.T.Helper()
	a, err := h.St.Get(context.Background(), id)
	if err != nil {
		h.T.Fatalf("get %s: %v", id, err)
	}
	return a
}

// WaitState waits until the attempt is in one of the states.
func (h *World) WaitState(id string, timeout time.Duration, states ...store.State) *store.Attempt {
	h.T.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a := h.Get(id)
		for _, s := range states {
			if a.State == s {
				return a
			}
		}
		if time.Now().After(deadline) {
			h.T.Fatalf("attempt %s is %s (reason %q), want %v", id, a.State, a.Reason, states)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Idle waits until the shard has nothing ready or in flight.
func (h *World) Idle(timeout time.Duration) queue.ShardStats {
	h.T.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := h.Q.Stats(context.Background(), []queue.Shard{h.Shard}, time.Hour)
		if err != nil {
			h.T.Fatal(err)
		}
		if st[0].DueNow == 0 && st[0].Ready == 0 && st[0].InFlight == 0 {
			return st[0]
		}
		if time.Now().After(deadline) {
			h.T.Fatalf("queue not idle: %+v", st[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DueScore is the attempt's due time in the shard's due set, if it is there.
func (h *World) DueScore(id string) (time.Time, bool) {
	h.T.Helper()
	ms, err := h.Rdb.ZScore(context.Background(), h.Shard.DueKey(), id).Result()
	if err == redis.Nil {
		return time.Time{}, false
	}
	if err != nil {
		h.T.Fatal(err)
	}
	return time.UnixMilli(int64(ms)), true
}

// OutcomeEvents returns the states published for an attempt.
func (h *World) OutcomeEvents(id string) []string {
	h.T.Helper()
	msgs, err := h.Rdb.XRange(context.Background(), "{delauto:outcomes}:stream", "-", "+").Result()
	if err != nil {
		h.T.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		if m.Values["attempt"] == id {
			out = append(out, fmt.Sprint(m.Values["state"]))
		}
	}
	return out
}

// Counter reads a counter of the World's registry.
func (h *World) Counter(name string, labels map[string]string) float64 {
	h.T.Helper()
	mfs, err := h.Reg.Gather()
	if err != nil {
		h.T.Fatal(err)
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

// TwilioCalls is the Twilio client of the dialer and the recovery loops
// (dialer.TwilioCalls).
type TwilioCalls interface {
	CreateCall(params *twilioapi.CreateCallParams) (*twilioapi.ApiV2010Call, error)
	ListCall(params *twilioapi.ListCallParams) ([]twilioapi.ApiV2010Call, error)
	FetchCall(sid string, params *twilioapi.FetchCallParams) (*twilioapi.ApiV2010Call, error)
}

// StoreVia opens the world's call log through a proxy, with short
// timeouts so that an outage shows quickly.
func (h *World) StoreVia(p *testservices.Proxy) *store.Store {
	h.T.Helper()
	st, err := store.Open(context.Background(), store.Config{URI: p.URL(h.T, h.env.Mongo.URI), Database: h.DB, Logger: h.Log,
		ConnectTimeout: 500 * time.Millisecond, ServerSelectionTimeout: 500 * time.Millisecond, OperationTimeout: time.Second})
	if err != nil {
		h.T.Fatal(err)
	}
	h.T.Cleanup(func() { _ = st.Close(context.Background()) })
	return st
}

// MongoHost is host:port of the test's MongoDB.
func (h *World) MongoHost() string {
	h.T.Helper()
	u, err := url.Parse(h.env.Mongo.URI)
	if err != nil {
		h.T.Fatal(err)
	}
	return u.Host
}

// Scripted is a Twilio client whose first create-call requests fail with
// the given errors (without reaching Twilio); later ones go through.
type Scripted struct {
	TwilioCalls
	mu sync.Mutex
	// Errs are the errors of the next create-call requests.
	Errs []error
	sent []time.Time // when each create request was made, failed or not
}

// CreateCall fails with the next of Errs, else creates the call.
func (s *Scripted) CreateCall(p *twilioapi.CreateCallParams) (*twilioapi.ApiV2010Call, error) {
	s.mu.Lock()
	s.sent = append(s.sent, time.Now())
	var err error
	if len(s.Errs) > 0 {
		err, s.Errs = s.Errs[0], s.Errs[1:]
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s.TwilioCalls.CreateCall(p)
}

// Creates are when each create request was made.
func (s *Scripted) Creates() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.sent...)
}

// TwilioError is the REST error Twilio answers with.
func TwilioError(status, code int) error {
	return &client.TwilioRestError{Status: status, Code: code, Message: fmt.Sprintf("error %d", code)}
}

// Message is the queue message of an attempt of the world's shard.
func (h *World) Message(a *store.Attempt) queue.Message {
	return queue.Message{Shard: h.Shard, ID: a.ID, Due: a.Due, EntryID: "0-1", Deliveries: 1}
}

// Prebook books n slots on the account's limiter at the dialer's rate, so
// the next dial waits about n intervals: the claims of other workers ahead.
func (h *World) Prebook(n int) {
	h.T.Helper()
	cps := float64(h.Campaign.Spec.Twilio.CallsPerSecond) * 0.95 // less the dialer's headroom
	l, err := ratelimit.New(h.Rdb, h.Sim.AccountSID(), cps, ratelimit.Options{})
	if err != nil {
		h.T.Fatal(err)
	}
	for range n {
		if _, err := l.Reserve(context.Background()); err != nil {
			h.T.Fatal(err)
		}
	}
}

// WaitFor waits until cond holds.
func (h *World) WaitFor(what string, cond func() bool) {
	h.T.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.T.Fatalf("timed out waiting: %s", what)
		}
	}
}

// Booked is the account limiter's state.
func (h *World) Booked() string {
	v, _ := h.Rdb.Get(context.Background(), ratelimit.Key(h.Sim.AccountSID())).Result()
	return v
}

// FenceOf is the fence a create request carried in its URL.
func FenceOf(t *testing.T, form url.Values) int64 {
	t.Helper()
	u, err := url.Parse(form.Get("Url"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := callurls.Parse(u.Query())
	if err != nil {
		t.Fatal(err)
	}
	return ref.Fence
}

// Consume runs a queue consumer of the world's shard with handler until
// the test ends.
func (h *World) Consume(handler queue.Handler, name string, concurrency int) {
	h.T.Helper()
	c, err := h.Q.NewConsumer(queue.ConsumerOptions{
		Shards: []queue.ShardWeight{{Shard: h.Shard}}, Handler: handler, Name: name,
		Concurrency: concurrency, Block: 200 * time.Millisecond, Lease: 5 * time.Second, ReclaimInterval: 200 * time.Millisecond,
	})
	if err != nil {
		h.T.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	h.T.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			c.Abort()
			<-done
		}
	})
}
