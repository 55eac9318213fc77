package retention_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twilio/twilio-go"

	"github.com/delauto/delauto/internal/retention"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Kube: true, Mongo: true}, &env)
}

// clock is a settable clock shared by the store and the janitor.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var dbSeq atomic.Int64

// openStore opens a call log on a fresh database, on the clock.
func openStore(t *testing.T, clk *clock) *store.Store {
	t.Helper()
	db := fmt.Sprintf("retention_%d", dbSeq.Add(1))
	s, err := store.Open(context.Background(), store.Config{
		URI: env.Mongo.URI, Database: db,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Mongo.DropDatabase(db)
		_ = s.Close(context.Background())
	})
	return s
}

// startSim starts the Twilio simulator and a client of its account.
func startSim(t *testing.T) (*twiliosim.Sim, *twilio.RestClient) {
	t.Helper()
	sim, err := twiliosim.New(twiliosim.Options{Instant: true, Numbers: []string{"+14155550100"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	hc, err := twilioclient.HTTPClient(sim.URL(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := twilioclient.New(sim.AccountSID(), sim.AuthToken(), hc)
	if err != nil {
		t.Fatal(err)
	}
	return sim, rc
}

// oneAccount is every campaign on one Twilio account.
type oneAccount struct{ rc *twilio.RestClient }

func (o oneAccount) Recordings(context.Context, string) (retention.Recordings, error) {
	return retention.TwilioRecordings{API: o.rc.Api}, nil
}

// newClock is a clock at a fixed time.
func newClock() *clock { return &clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)} }

// finished creates attempt uid (calling to, of campaign shop/evening) kept
// for r once finished, and cancels it.
func finished(t *testing.T, s *store.Store, uid, to string, r time.Duration) *store.Attempt {
	t.Helper()
	a := planned(t, s, uid, to, r)
	a, err := s.MarkCancelled(context.Background(), a.ID, store.AnyFence, "done")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// planned creates a queued attempt uid calling to, kept for r once finished.
func planned(t *testing.T, s *store.Store, uid, to string, r time.Duration) *store.Attempt {
	t.Helper()
	a, _, err := s.CreateAttempt(context.Background(), store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: "shop", Name: "parcel-" + uid},
		Campaign: "shop/evening", Shard: "s0", Number: 1, Due: time.Now(), To: to, Retention: &r,
		Context: &store.CallContext{RecipientName: "Anna Schmidt", Address: "Torstrasse 101, Berlin", TimeZone: "Europe/Berlin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// recorded gives attempt id a recording (with a transcription) at the simulator.
func recorded(t *testing.T, s *store.Store, sim *twiliosim.Sim, id string) twiliosim.Recording {
	t.Helper()
	rec := sim.AddRecording("CA"+fmt.Sprintf("%032x", dbSeq.Add(1)), 5, "leave it with the neighbour")
	if _, _, err := s.RecordRecording(context.Background(), id, store.Recording{SID: rec.Sid, URL: rec.URL, DurationSec: 5}); err != nil {
		t.Fatal(err)
	}
	return rec
}

// simRecording is the simulator's recording sid now.
func simRecording(t *testing.T, sim *twiliosim.Sim, sid string) twiliosim.Recording {
	t.Helper()
	for _, r := range sim.Recordings() {
		if r.Sid == sid {
			return r
		}
	}
	t.Fatalf("no recording %s at the simulator", sid)
	return twiliosim.Recording{}
}
