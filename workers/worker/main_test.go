package worker

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
	"sync/atomic"
	"testing"
	"time"

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

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("WORKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

var seq atomic.Int64

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// world is a test's campaign: its database, shard, simulator and callback
// server, shared by the workers it starts.
type world struct {
	t        *testing.T
	direct   *store.Store // straight to FerretDB, for the test's own reads and writes
	db       string
	rdb      *redis.Client
	q        *queue.Queue
	shard    queue.Shard
	sim      *twiliosim.Sim
	simURL   string // the simulator, possibly behind a wrapper
	campaign *campaignfile.Config
	log      *slog.Logger
	creates  chan struct{} // a create-call request arrived (when watched)
}

func newWorld(t *testing.T) *world {
	t.Helper()
	n := seq.Add(1)
	name := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 30 {
		name = name[:30]
	}
	w := &world{t: t, db: fmt.Sprintf("worker%d_%s", n, strings.ReplaceAll(name, "-", "_")), log: testLogger(t),
		creates: make(chan struct{}, 1000)}
	var err error
	w.direct, err = store.Open(context.Background(), store.Config{URI: env.Mongo.URI, Database: w.db, Logger: w.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Mongo.DropDatabase(w.db)
		_ = w.direct.Close(context.Background())
	})
	w.rdb = env.Redis.Client()
	t.Cleanup(func() { w.rdb.Close() })
	w.q = queue.New(w.rdb, queue.Options{Logger: w.log})
	cb := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(rw, `<Response/>`)
	}))
	t.Cleanup(cb.Close)
	var b [16]byte
	_, _ = rand.Read(b[:])
	w.sim, err = twiliosim.New(twiliosim.Options{Instant: true, AccountSID: "AC" + hex.EncodeToString(b[:])})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.sim.Close)
	front := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/Calls.json") {
			select {
			case w.creates <- struct{}{}:
			default:
			}
		}
		w.sim.Handler().ServeHTTP(rw, r)
	}))
	t.Cleanup(front.Close)
	w.simURL = front.URL
	ns := fmt.Sprintf("w%d-%s", n, name)
	w.shard = queue.Shard{Namespace: ns, Campaign: "evening", Name: "shard-0"}
	w.campaign = &campaignfile.Config{Namespace: ns, Name: "evening", Spec: v1.CallCampaignSpec{
		Schedule: v1.ScheduleSpec{CallingHours: v1.CallingHours{Start: "06:00", End: "18:00"}, DefaultTimeZone: v1.TimeZone(testservices.NoonZone())},
		Script:   v1.CallScript{CompanyName: "Parcels", TimeLimit: &metav1.Duration{Duration: time.Minute}},
		Twilio:   v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{"+14155550100"}, CallsPerSecond: 1000, CallbackURL: cb.URL},
	}}
	return w
}

// workerOpts are the defaults of a test worker: quick health checks and loops.
func (w *world) workerOpts(name string, st *store.Store) Options {
	w.t.Helper()
	hc, err := twilioclient.HTTPClient(w.simURL, testTwilioTimeout)
	if err != nil {
		w.t.Fatal(err)
	}
	rc, err := twilioclient.New(w.sim.AccountSID(), w.sim.AuthToken(), hc)
	if err != nil {
		w.t.Fatal(err)
	}
	if st == nil {
		st = w.direct
	}
	return Options{
		Name: name, Shards: []queue.Shard{w.shard}, Concurrency: 8,
		Store: st, Redis: w.rdb, Twilio: rc.Api, AccountSID: w.sim.AccountSID(), Campaign: campaignfile.Static{Config: w.campaign},
		Logger: w.log.With("worker", name), Lease: 6 * time.Second, QueueLease: 3 * time.Second, TwilioTimeout: testTwilioTimeout, RecordTimeout: time.Minute,
		HealthInterval: 200 * time.Millisecond, ReconcileInterval: 500 * time.Millisecond, StaleAfter: 500 * time.Millisecond,
		UnknownGrace: 3 * time.Second, SweepInterval: 500 * time.Millisecond, SweepOverdue: time.Second,
		DrainToken: testDrainToken,
	}
}

// testTwilioTimeout is the test workers' Twilio request timeout: with
// their 6 s lease, 3 s unknown grace and 0.5 s stale-after, at most what
// dialer.Timing allows.
const testTwilioTimeout = 2 * time.Second

// testDrainToken is the drain token of the test workers; do sends it.
const testDrainToken = "drain-token-of-the-operator"

// running is a started worker.
type running struct {
	*Worker
	ops    *httptest.Server
	cancel context.CancelFunc
	done   chan error
}

func (w *world) start(o Options) *running {
	w.t.Helper()
	wk, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Worker: wk, ops: httptest.NewServer(wk.OpsHandler()), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- wk.Run(ctx) }()
	w.t.Cleanup(func() { r.stop(w.t) })
	return r
}

func (r *running) stop(t *testing.T) {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		r.Abort()
		<-r.done
	}
	r.done <- nil
	r.ops.Close()
}

func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return r.do(t, http.MethodGet, path)
}

func (r *running) do(t *testing.T, method, path string) (int, string) {
	t.Helper()
	return r.doAs(t, method, path, "Bearer "+testDrainToken)
}

// doAs sends the request with the Authorization header auth (none if empty).
func (r *running) doAs(t *testing.T, method, path, auth string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, r.ops.URL+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady waits for /readyz to answer code.
func (r *running) waitReady(t *testing.T, code int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, body := r.get(t, "/readyz")
		if c == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q, want %d", c, body, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// create plans an attempt due now and queues it.
func (w *world) create(to string, queued bool) *store.Attempt {
	w.t.Helper()
	uid := testservices.UUID()
	a, _, err := w.direct.CreateAttempt(context.Background(), store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: w.campaign.Namespace, Name: "parcel-" + uid[:8]},
		Campaign: w.campaign.Namespace + "/evening", Shard: w.shard.Name, Number: 1, Due: time.Now(), To: to,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	if queued {
		if _, err := w.q.Schedule(context.Background(), w.shard, a.ID, a.Due); err != nil {
			w.t.Fatal(err)
		}
	}
	return a
}

func (w *world) get(id string) *store.Attempt {
	w.t.Helper()
	a, err := w.direct.Get(context.Background(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return a
}

func (w *world) waitState(id string, timeout time.Duration, state store.State) *store.Attempt {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a := w.get(id)
		if a.State == state {
			return a
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("attempt %s is %s (%q), want %s", id, a.State, a.Reason, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mongoHost(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(env.Mongo.URI)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
