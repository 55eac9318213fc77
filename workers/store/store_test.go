package store

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

func TestConfigValidate(t *testing.T) {
	good := Config{URI: "mongodb://127.0.0.1:27017/", Database: "delauto"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no URI", func(c *Config) { c.URI = "" }, "URI is required"},
		{"bad scheme", func(c *Config) { c.URI = "http://localhost" }, "mongodb:// or mongodb+srv://"},
		{"no database", func(c *Config) { c.Database = "" }, "Database is required"},
		{"bad database", func(c *Config) { c.Database = "a.b" }, `Database "a.b"`},
		{"pool", func(c *Config) { c.MinPoolSize, c.MaxPoolSize = 10, 5 }, "MinPoolSize 10 is above MaxPoolSize 5"},
		{"negative timeout", func(c *Config) { c.OperationTimeout = -time.Second }, "OperationTimeout must not be negative"},
		{"short lock", func(c *Config) { c.LockTTL = time.Millisecond }, "LockTTL 1ms is too short"},
		{"lock as long as a write", func(c *Config) { c.LockTTL = 10 * time.Second }, "LockTTL 10s is too short"},
		{"serialize", func(c *Config) { c.Serialize = "sometimes" }, `Serialize "sometimes"`},
		{"retention", func(c *Config) { c.Retention = -time.Hour }, "Retention must not be negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("Validate() = %v, want ErrInvalidInput mentioning %q", err, tc.want)
			}
			if _, err := Open(context.Background(), c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open() = %v, want the validation error", err)
			}
		})
	}
}

func TestFeaturesDetectFerretDB(t *testing.T) {
	s := openStore(t)
	f := s.Features()
	if !f.FerretDB || f.TTLIndexes || f.PartialIndexes || f.AtomicUpdates {
		t.Fatalf("features on FerretDB 1.24 = %+v, want FerretDB without TTL, partial indexes and atomic updates", f)
	}
	if !strings.Contains(f.Server, "FerretDB") {
		t.Errorf("server = %q, want it named FerretDB", f.Server)
	}
	forced := openStore(t, func(c *Config) { c.Serialize = SerializeNever })
	if !forced.Features().AtomicUpdates {
		t.Errorf("Serialize=never: AtomicUpdates = false, want the override to win")
	}
}

func indexNames(t *testing.T, c *mongo.Collection) map[string]bson.M {
	t.Helper()
	cur, err := c.Indexes().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var specs []bson.M
	if err := cur.All(context.Background(), &specs); err != nil {
		t.Fatal(err)
	}
	out := map[string]bson.M{}
	for _, s := range specs {
		out[s["name"].(string)] = s
	}
	return out
}

func TestEnsureIndexesIdempotentAndUnique(t *testing.T) {
	inBothModes(t, testEnsureIndexesIdempotentAndUnique)
}

func testEnsureIndexesIdempotentAndUnique(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t) // Open ran EnsureIndexes once
	before := indexNames(t, s.attempts)
	sent := s.indexCommands.Load()
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatalf("second EnsureIndexes: %v", err)
	}
	after := indexNames(t, s.attempts)
	if len(after) != len(before) {
		t.Fatalf("indexes changed on re-run: %v -> %v", keys(before), keys(after))
	}
	// Every process runs it at start: with the indexes there, it only lists.
	if n := s.indexCommands.Load() - sent; n != 0 {
		t.Fatalf("EnsureIndexes sent %d createIndexes commands with every index there, want none", n)
	}
	// One index gone: that one is created again, and only it.
	if err := s.attempts.Indexes().DropOne(ctx, idxStateUpdated); err != nil {
		t.Fatal(err)
	}
	sent = s.indexCommands.Load()
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatalf("EnsureIndexes after a drop: %v", err)
	}
	if _, ok := indexNames(t, s.attempts)[idxStateUpdated]; !ok {
		t.Fatalf("dropped index %s not created again", idxStateUpdated)
	}
	if n := s.indexCommands.Load() - sent; n != 1 {
		t.Fatalf("EnsureIndexes with one index missing sent %d createIndexes commands, want 1", n)
	}
	if f := s.Features(); f.PartialIndexes || f.TTLIndexes {
		t.Fatalf("features after a re-run on FerretDB = %+v, want the fallbacks the indexes show", f)
	}
	after = indexNames(t, s.attempts)
	for _, name := range []string{idxDeliveryAttempt, idxCallSIDSparse, idxDue, idxDeliveryCreated, idxStateLease, idxStateUpdated, idxExpire} {
		if _, ok := after[name]; !ok {
			t.Errorf("index %s missing; have %v", name, keys(after))
		}
	}
	if !s.Features().AtomicUpdates {
		if _, ok := indexNames(t, s.locks)[idxLock]; !ok {
			t.Errorf("lock expiry index missing")
		}
	}

	// Unique (delivery UID, number), even under another _id.
	a := mustCreate(t, s, newAttempt("u1", 1, time.Now()))
	dup := *a
	dup.ID = "other-id"
	if _, err := s.attempts.InsertOne(ctx, dup); !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("second document for the same delivery and attempt number: err = %v, want duplicate key", err)
	}

	// Unique call SID, while many attempts have none.
	b := mustCreate(t, s, newAttempt("u2", 1, time.Now()))
	c := mustCreate(t, s, newAttempt("u3", 1, time.Now()))
	ca, cb := mustClaim(t, s, b.ID), mustClaim(t, s, c.ID)
	if _, err := s.MarkDialed(ctx, b.ID, ca.Fence, "CA0001", ""); err != nil {
		t.Fatal(err)
	}
	_, err := s.MarkDialed(ctx, c.ID, cb.Fence, "CA0001", "")
	if !errors.Is(err, ErrDuplicate) {
		t.Fatalf("same call SID on a second attempt: err = %v, want ErrDuplicate", err)
	}
	// Not a success: the attempt is in doubt, the conflict recorded.
	if got, _ := s.Get(ctx, c.ID); got.State != StateUnknown || got.CallSID != "" || got.ConflictSID != "CA0001" {
		t.Fatalf("after a refused duplicate SID the attempt is %+v, want unknown with the conflict", got)
	}
}

func keys(m map[string]bson.M) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestOpenUnreachableFailsWithinTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	start := time.Now()
	_, err = Open(context.Background(), Config{URI: "mongodb://" + addr + "/", Database: "x",
		ServerSelectionTimeout: 500 * time.Millisecond, ConnectTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("Open on a closed port succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open took %s to fail, want about the 500ms server selection timeout", d)
	}
}

func TestClosedStoreReturnsErrors(t *testing.T) { inBothModes(t, testClosedStoreReturnsErrors) }

func testClosedStoreReturnsErrors(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	a := mustCreate(t, s, newAttempt("u1", 1, time.Now()))
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, a.ID); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Close: %v, want a client error", err)
	}
	if _, err := s.Claim(ctx, a.ID, "w", time.Minute); err == nil {
		t.Fatal("Claim after Close succeeded")
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping after Close succeeded")
	}
}

// freezingProxy forwards TCP to target until frozen: then it holds every
// byte, like a server that stopped answering.
type freezingProxy struct {
	l      net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newFreezingProxy(t *testing.T, target string) *freezingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{l: l, target: target}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *freezingProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *freezingProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.frozen.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}

func (p *freezingProxy) close() {
	p.frozen.Store(false)
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func TestServerStopsAnsweringOperationsTimeOut(t *testing.T) {
	ctx := context.Background()
	host := strings.TrimSuffix(strings.TrimPrefix(env.Mongo.URI, "mongodb://"), "/")
	p := newFreezingProxy(t, host)
	s := openStore(t, func(c *Config) {
		c.URI = "mongodb://" + p.l.Addr().String() + "/?directConnection=true"
		c.OperationTimeout = time.Second
		c.ServerSelectionTimeout = time.Second
	})
	a := mustCreate(t, s, newAttempt("u1", 1, time.Now()))

	p.frozen.Store(true)
	start := time.Now()
	_, err := s.Claim(ctx, a.ID, "w", time.Minute)
	if err == nil {
		t.Fatal("Claim succeeded while the server did not answer")
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("Claim took %s to fail, want about the 1s operation timeout", d)
	}
	_, err = s.Get(ctx, a.ID)
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get while frozen: %v, want a timeout", err)
	}

	p.frozen.Store(false)
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := s.Get(ctx, a.ID)
		if err == nil {
			if got.State != StateQueued && got.State != StateDialing {
				t.Fatalf("after the outage the attempt is %s", got.State)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover after the server answered again: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
