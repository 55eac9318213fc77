// Package store is DelAuto's MongoDB call log: the attempts collection
// (the source of truth for every call attempt; Redis is only the dispatch
// index), the opt-out list, and the fenced operations that make sure each
// attempt is dialed at most once.
//
// It speaks to MongoDB and to FerretDB 1.24 (MongoDB wire protocol on
// PostgreSQL). At Open it detects what the server can do:
//
//   - TTL indexes: used for the call log's retention and lock expiry where
//     supported; elsewhere PurgeExpired does the cleanup.
//   - Partial indexes: the unique call SID index is partial where supported,
//     sparse otherwise (FerretDB ignores "sparse", but its unique indexes
//     already skip documents without the field).
//   - Atomic conditional updates: MongoDB applies findOneAndUpdate atomically,
//     so every transition is one conditional update. FerretDB 1.x does not:
//     it reads the matching document and then writes it back by _id, so two
//     concurrent claims can both win and concurrent $inc lose updates. There
//     the store serializes writers per attempt with a lock document (a unique
//     _id insert, which PostgreSQL makes atomic) held for the one update.
package store

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// Collection names.
const (
	// AttemptsCollection is the call log.
	AttemptsCollection = "attempts"
	// OptOutsCollection holds the numbers that asked not to be called.
	OptOutsCollection = "optouts"
	// LocksCollection holds per-attempt write locks (serialized mode only).
	LocksCollection = "attempt_locks"
	// MetaCollection holds the store's own settings (the opt-out salt).
	MetaCollection = "meta"
)

// Serialization says how writes to one attempt are made atomic.
type Serialization string

// The serialization modes.
const (
	// SerializeAuto locks on servers known to apply updates non-atomically
	// (FerretDB before 2.0) and uses plain conditional updates elsewhere.
	SerializeAuto Serialization = ""
	// SerializeAlways always takes the per-attempt lock.
	SerializeAlways Serialization = "always"
	// SerializeNever relies on the server's atomic findOneAndUpdate (MongoDB).
	SerializeNever Serialization = "never"
)

// Config says how to reach MongoDB and how the store behaves.
type Config struct {
	// URI is the mongodb:// or mongodb+srv:// connection string (required).
	URI string
	// Database is the database name (required).
	Database string
	// AppName is reported to the server; default "delauto".
	AppName string
	// MinPoolSize is the connections kept open; default 0.
	MinPoolSize uint64
	// MaxPoolSize is the most connections; default 100.
	MaxPoolSize uint64
	// ConnectTimeout bounds opening one connection; default 5s.
	ConnectTimeout time.Duration
	// ServerSelectionTimeout bounds finding a usable server, so an outage
	// fails operations instead of hanging; default 5s.
	ServerSelectionTimeout time.Duration
	// OperationTimeout bounds every operation on the wire (the driver's
	// timeoutMS, which replaces socketTimeoutMS in driver v2); default 10s.
	OperationTimeout time.Duration

	// Retention is how long a finished attempt is kept (its ExpireAt is set
	// when it becomes terminal); 0 keeps the call log forever.
	Retention time.Duration
	// EarlyClaim lets Claim take an attempt this long before its due time,
	// absorbing clock skew between Redis and the workers; default 5s.
	EarlyClaim time.Duration
	// Serialize overrides the detected serialization mode.
	Serialize Serialization
	// LockTTL is how long a per-attempt lock lives if its holder dies,
	// counted on the server's clock from when the server took it; default
	// 6 x OperationTimeout (60s). Writes hold it for one round trip, bounded
	// by OperationTimeout; it must be at least 3 x OperationTimeout, so a
	// slow write never outlives its lock.
	LockTTL time.Duration
	// LockWait is how long a writer waits for a held lock before ErrBusy;
	// default 5s.
	LockWait time.Duration
	// InsightsFlush is how often the outcomes counted for the insights
	// rollups are written (FlushInsights); default DefaultInsightsFlush,
	// or DefaultInsightsFlushLocked on a server whose updates are not
	// atomic. Negative: only when FlushInsights is called (tests) and on
	// Close.
	InsightsFlush time.Duration
	// Logger receives start-up and fallback messages; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now. Tests set it.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.AppName == "" {
		c.AppName = "delauto"
	}
	if c.MaxPoolSize == 0 {
		c.MaxPoolSize = 100
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.ServerSelectionTimeout == 0 {
		c.ServerSelectionTimeout = 5 * time.Second
	}
	if c.OperationTimeout == 0 {
		c.OperationTimeout = 10 * time.Second
	}
	if c.EarlyClaim == 0 {
		c.EarlyClaim = 5 * time.Second
	}
	if c.LockTTL == 0 {
		c.LockTTL = lockTTLFactor * 2 * c.OperationTimeout
	}
	if c.LockWait == 0 {
		c.LockWait = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// lockTTLFactor is how many times the longest write (OperationTimeout) a
// per-attempt lock must outlive at least.
const lockTTLFactor = 3

var dbNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)

// Validate reports the first problem with the configuration, after defaults
// are applied.
func (c Config) Validate() error {
	c.defaults()
	var errs []string
	if c.URI == "" {
		errs = append(errs, "URI is required (mongodb://host:27017/)")
	} else if u, err := url.Parse(c.URI); err != nil || (u.Scheme != "mongodb" && u.Scheme != "mongodb+srv") {
		errs = append(errs, "URI must be a mongodb:// or mongodb+srv:// connection string")
	}
	if c.Database == "" {
		errs = append(errs, "Database is required")
	} else if !dbNameRE.MatchString(c.Database) {
		errs = append(errs, fmt.Sprintf("Database %q must be 1-63 letters, digits, '_' or '-'", c.Database))
	}
	if c.MinPoolSize > c.MaxPoolSize {
		errs = append(errs, fmt.Sprintf("MinPoolSize %d is above MaxPoolSize %d", c.MinPoolSize, c.MaxPoolSize))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ConnectTimeout", c.ConnectTimeout}, {"ServerSelectionTimeout", c.ServerSelectionTimeout},
		{"OperationTimeout", c.OperationTimeout}, {"LockTTL", c.LockTTL}, {"LockWait", c.LockWait}} {
		if d.v < 0 {
			errs = append(errs, fmt.Sprintf("%s must not be negative (got %s)", d.name, d.v))
		}
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Sprintf("Retention must not be negative (got %s)", c.Retention))
	}
	if c.EarlyClaim < 0 {
		errs = append(errs, fmt.Sprintf("EarlyClaim must not be negative (got %s)", c.EarlyClaim))
	}
	if c.LockTTL > 0 && c.LockTTL < lockTTLFactor*c.OperationTimeout {
		errs = append(errs, fmt.Sprintf("LockTTL %s is too short: a slow write could outlive its lock (use %d x OperationTimeout, %s, or more)",
			c.LockTTL, lockTTLFactor, lockTTLFactor*c.OperationTimeout))
	}
	switch c.Serialize {
	case SerializeAuto, SerializeAlways, SerializeNever:
	default:
		errs = append(errs, fmt.Sprintf("Serialize %q must be empty (auto), %q or %q", c.Serialize, SerializeAlways, SerializeNever))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: store config: %s", ErrInvalidInput, strings.Join(errs, "; "))
	}
	return nil
}

// Features is what the server supports, detected at Open.
type Features struct {
	// Server names the server and version, e.g. "MongoDB 7.0.12" or "FerretDB v1.24.2".
	Server string
	// FerretDB is true when the server is FerretDB.
	FerretDB bool
	// TTLIndexes: the server accepted a TTL index.
	TTLIndexes bool
	// PartialIndexes: the server accepted a partial index.
	PartialIndexes bool
	// AtomicUpdates: conditional updates run without the per-attempt lock.
	AtomicUpdates bool
}

// Store is the call log. It is safe for concurrent use.
type Store struct {
	cfg      Config
	log      *slog.Logger
	client   *mongo.Client
	db       *mongo.Database
	attempts *mongo.Collection
	optouts  *mongo.Collection
	locks    *mongo.Collection
	meta     *mongo.Collection
	salt     []byte

	// rollups, series, deliveries and listDays are the insights
	// collections; tally the outcomes counted and not yet written (see
	// insights.go).
	rollups    *mongo.Collection
	series     *mongo.Collection
	deliveries *mongo.Collection
	listDays   *mongo.Collection
	listHours  listHours
	tally      tally
	flushMu    sync.Mutex
	closeOnce  sync.Once
	stopFlush  chan struct{}
	flushDone  chan struct{}

	mu       sync.Mutex
	features Features
	logged   map[string]bool

	// indexCommands counts the createIndexes commands EnsureIndexes sent.
	indexCommands atomic.Int64
}

// Open validates cfg, connects, detects the server's features and creates
// the indexes (EnsureIndexes). It fails within the configured timeouts when
// the server is unreachable.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	opts := options.Client().ApplyURI(cfg.URI).
		SetAppName(cfg.AppName).
		SetMinPoolSize(cfg.MinPoolSize).
		SetMaxPoolSize(cfg.MaxPoolSize).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetServerSelectionTimeout(cfg.ServerSelectionTimeout).
		SetTimeout(cfg.OperationTimeout).
		SetRetryWrites(true).
		SetRetryReads(true)
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	db := client.Database(cfg.Database)
	s := &Store{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "store", "database", cfg.Database),
		client:   client,
		db:       db,
		attempts: db.Collection(AttemptsCollection),
		optouts:  db.Collection(OptOutsCollection),
		locks:    db.Collection(LocksCollection),
		meta:     db.Collection(MetaCollection),
		logged:   map[string]bool{},

		rollups:    db.Collection(RollupsCollection),
		series:     db.Collection(SeriesCollection),
		deliveries: db.Collection(DeliveriesCollection),
		listDays:   db.Collection(ListDaysCollection),
	}
	if err := s.detect(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	if err := s.EnsureIndexes(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	if err := s.loadSalt(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	if s.cfg.InsightsFlush == 0 {
		s.cfg.InsightsFlush = defaultInsightsFlush(s.Features().AtomicUpdates)
	}
	if s.cfg.InsightsFlush > 0 {
		s.stopFlush, s.flushDone = make(chan struct{}), make(chan struct{})
		go s.flushLoop(s.stopFlush, s.flushDone)
	}
	f := s.Features()
	s.log.Info("call log store ready", "server", f.Server, "ttlIndexes", f.TTLIndexes,
		"partialIndexes", f.PartialIndexes, "atomicUpdates", f.AtomicUpdates, "insightsFlush", s.cfg.InsightsFlush)
	return s, nil
}

// detect reads buildInfo to tell MongoDB from FerretDB.
func (s *Store) detect(ctx context.Context) error {
	var bi struct {
		Version         string `bson:"version"`
		FerretDBVersion string `bson:"ferretdbVersion"`
	}
	raw, err := s.db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Raw()
	if err != nil {
		return fmt.Errorf("store: buildInfo: %w", err)
	}
	if err := bson.Unmarshal(raw, &bi); err != nil {
		return fmt.Errorf("store: decode buildInfo: %w", err)
	}
	_, hasFerret := raw.Lookup("ferretdbVersion").StringValueOK()
	hasFerret = hasFerret || raw.Lookup("ferretdbFeatures").Type != 0
	f := Features{Server: "MongoDB " + bi.Version, AtomicUpdates: true}
	if hasFerret {
		f.FerretDB = true
		f.Server = "FerretDB " + bi.FerretDBVersion + " (reports MongoDB " + bi.Version + ")"
		// FerretDB 1.x applies findAndModify/update as a read followed by a
		// write by _id, with no transaction: not atomic. 2.x runs on
		// DocumentDB's extension and is; unknown versions are treated as 1.x.
		f.AtomicUpdates = ferretMajor(bi.FerretDBVersion) >= 2
	}
	switch s.cfg.Serialize {
	case SerializeAlways:
		f.AtomicUpdates = false
	case SerializeNever:
		f.AtomicUpdates = true
	}
	s.mu.Lock()
	s.features = f
	s.mu.Unlock()
	if !f.AtomicUpdates {
		s.logOnce("serialize", slog.LevelWarn, "server does not apply conditional updates atomically: serializing writes per attempt with lock documents",
			"server", f.Server, "lockTTL", s.cfg.LockTTL)
	}
	return nil
}

// ferretMajor parses "v1.24.2" or "2.0.0" into its major version; 0 if unknown.
func ferretMajor(v string) int {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexByte(v, '.'); i > 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0
	}
	return n
}

// Features returns what was detected at Open (and by the last EnsureIndexes).
func (s *Store) Features() Features {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.features
}

func (s *Store) logOnce(key string, level slog.Level, msg string, args ...any) {
	s.mu.Lock()
	done := s.logged[key]
	s.logged[key] = true
	s.mu.Unlock()
	if !done {
		s.log.Log(context.Background(), level, msg, args...)
	}
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, readpref.Primary()); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// Close writes the outcomes counted and not yet flushed, then
// disconnects; operations afterwards fail.
func (s *Store) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		if s.stopFlush != nil {
			close(s.stopFlush)
			<-s.flushDone
		}
	})
	if err := s.FlushInsights(ctx); err != nil {
		s.log.Warn("outcomes counted for the insights rollups were not written before closing; a rebuild restores them", "error", err)
	}
	return s.client.Disconnect(ctx)
}

// now is the store's clock, in UTC with BSON's millisecond precision.
func (s *Store) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Millisecond) }
