package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/testservices"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	if os.Getenv(lockHelperEnv) != "" {
		// A helper process of a test (see lockInOtherProcess): it uses the
		// parent's services and runs no tests.
		os.Exit(lockHelperMain())
	}
	testservices.Main(m, testservices.Want{Mongo: true}, &env)
}

// clock is a settable fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var dbSeq atomic.Int64

var nonName = regexp.MustCompile(`[^A-Za-z0-9]+`)

// testConfig is a Config for a fresh database of its own.
func testConfig(t testing.TB) Config {
	name := nonName.ReplaceAllString(t.Name(), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	return Config{
		URI:      env.Mongo.URI,
		Database: fmt.Sprintf("t%d_%s", dbSeq.Add(1), name),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// openStore opens a store on a fresh database; edit adjusts the config.
func openStore(t testing.TB, edit ...func(*Config)) *Store {
	t.Helper()
	cfg := testConfig(t)
	for _, e := range edit {
		e(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		_ = s.db.Drop(context.Background())
		_ = s.Close(context.Background())
	})
	return s
}

// opener opens a store on a fresh database, as openStore does.
type opener func(t testing.TB, edit ...func(*Config)) *Store

// inBothModes runs test once per serialization mode, on FerretDB: with the
// per-attempt lock (SerializeAlways, what FerretDB needs) and with the plain
// conditional updates production MongoDB runs (SerializeNever), so a wrong
// filter or update on either path fails a test. FerretDB 1.x does not apply
// the plain updates atomically, so tests that race writers on one attempt
// stay on the mode the server supports.
func inBothModes(t *testing.T, test func(t *testing.T, openStore opener)) {
	for _, mode := range []Serialization{SerializeAlways, SerializeNever} {
		t.Run("serialize="+string(mode), func(t *testing.T) {
			test(t, func(t testing.TB, edit ...func(*Config)) *Store {
				return openStore(t, append([]func(*Config){func(c *Config) { c.Serialize = mode }}, edit...)...)
			})
		})
	}
}

func withClock(c *clock) func(*Config) { return func(cfg *Config) { cfg.Now = c.Now } }

// newAttempt is a valid NewAttempt for delivery uid, number n, due at due.
func newAttempt(uid string, n int32, due time.Time) NewAttempt {
	return NewAttempt{
		Delivery: DeliveryRef{UID: uid, Namespace: "shop", Name: "parcel-" + uid},
		Campaign: "shop/evening",
		Shard:    "s0",
		Number:   n,
		Due:      due,
		To:       numberFor(uid),
	}
}

// numberFor is a recipient number of its own for each delivery uid: one
// attempt per number may be in flight (see TestOneAttemptPerNumberInFlight).
func numberFor(uid string) string {
	h := fnv.New32a()
	h.Write([]byte(uid))
	return fmt.Sprintf("+1415%07d", h.Sum32()%10000000)
}

func mustCreate(t testing.TB, s *Store, n NewAttempt) *Attempt {
	t.Helper()
	a, _, err := s.CreateAttempt(context.Background(), n)
	if err != nil {
		t.Fatalf("CreateAttempt: %v", err)
	}
	return a
}

func mustClaim(t testing.TB, s *Store, id string) *Attempt {
	t.Helper()
	a, err := s.Claim(context.Background(), id, "worker-1", time.Minute)
	if err != nil {
		t.Fatalf("Claim %s: %v", id, err)
	}
	return a
}
