// Package stores holds the Redis and MongoDB connection settings shared by
// the operator and the workers: flags with environment defaults, validated
// with clear messages, and the clients made from them.
package stores

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/workers/store"
)

// Settings are the connection settings.
type Settings struct {
	// RedisURL is a redis:// or rediss:// URL of a single Redis.
	RedisURL string
	// RedisAddrs are host:port of Redis Cluster nodes (instead of RedisURL).
	RedisAddrs string
	// RedisPassword is used with RedisAddrs.
	RedisPassword string
	// MongoURI is the mongodb:// URI of the call log.
	MongoURI string
	// MongoDatabase is the call log's database.
	MongoDatabase string
	// MongoMaxPool bounds the MongoDB connection pool.
	MongoMaxPool uint64
	// Timeout bounds connecting and each operation.
	Timeout time.Duration
	// Retention is how long a finished attempt stays in the call log when
	// its campaign sets none; 0 keeps it forever.
	Retention time.Duration

	envErrs []error // unreadable environment defaults, for Validate
}

// The environment variables of the settings: flags default to them, and the
// operator hands its own settings to its workers through them (Env).
const (
	EnvRedisURL      = "REDIS_URL"
	EnvRedisAddrs    = "REDIS_ADDRS"
	EnvRedisPassword = "REDIS_PASSWORD"
	EnvMongoURI      = "MONGO_URI"
	EnvMongoDatabase = "MONGO_DATABASE"
	EnvMongoMaxPool  = "MONGO_MAX_POOL"
	EnvStoreTimeout  = "DELAUTO_STORE_TIMEOUT"
	EnvRetention     = "CALL_LOG_RETENTION"
)

// Defaults of the settings.
const (
	DefaultMongoDatabase = "delauto"
	DefaultMongoMaxPool  = 100
	DefaultTimeout       = 5 * time.Second
	// DefaultRetention is --call-log-retention's default: 30 days.
	DefaultRetention = 30 * 24 * time.Hour
)

// Register adds the settings' flags to fs, defaulting to the process's
// environment (the Env* variables).
func (s *Settings) Register(fs *flag.FlagSet) { s.RegisterEnv(fs, os.Getenv) }

// RegisterEnv adds the settings' flags to fs, defaulting to the Env*
// variables as getenv returns them. An unreadable number or duration in the
// environment is reported by Validate.
func (s *Settings) RegisterEnv(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&s.RedisURL, "redis-url", getenv(EnvRedisURL), "Redis URL, redis://[:password@]host:port/db (env "+EnvRedisURL+")")
	fs.StringVar(&s.RedisAddrs, "redis-addrs", getenv(EnvRedisAddrs), "comma-separated Redis Cluster node addresses, instead of --redis-url (env "+EnvRedisAddrs+")")
	fs.StringVar(&s.RedisPassword, "redis-password", getenv(EnvRedisPassword), "password for --redis-addrs (env "+EnvRedisPassword+")")
	fs.StringVar(&s.MongoURI, "mongo-uri", getenv(EnvMongoURI), "MongoDB URI of the call log (env "+EnvMongoURI+")")
	db := getenv(EnvMongoDatabase)
	if db == "" {
		db = DefaultMongoDatabase
	}
	fs.StringVar(&s.MongoDatabase, "mongo-database", db, "MongoDB database of the call log (env "+EnvMongoDatabase+")")
	pool := uint64(DefaultMongoMaxPool)
	if v := getenv(EnvMongoMaxPool); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.envErrs = append(s.envErrs, fmt.Errorf("env %s=%q is not a whole number", EnvMongoMaxPool, v))
		}
		pool = n
	}
	fs.Uint64Var(&s.MongoMaxPool, "mongo-max-pool", pool, "most MongoDB connections (env "+EnvMongoMaxPool+")")
	timeout := DefaultTimeout
	s.durationEnv(getenv, EnvStoreTimeout, &timeout, "5s")
	fs.DurationVar(&s.Timeout, "store-timeout", timeout, "timeout for connecting to and each operation on Redis and MongoDB (env "+EnvStoreTimeout+")")
	s.Retention = DefaultRetention
	s.durationEnv(getenv, EnvRetention, &s.Retention, "720h")
	fs.DurationVar(&s.Retention, "call-log-retention", s.Retention, "how long a finished call stays in the call log (with answers and recordings) when its campaign sets no retention; 0 keeps it forever (env "+EnvRetention+")")
}

// durationEnv reads the duration in environment variable name into d, if
// set; an unreadable one is kept for Validate.
func (s *Settings) durationEnv(getenv func(string) string, name string, d *time.Duration, example string) {
	v := getenv(name)
	if v == "" {
		return
	}
	got, err := time.ParseDuration(v)
	if err != nil {
		s.envErrs = append(s.envErrs, fmt.Errorf("env %s=%q is not a duration such as %s", name, v, example))
		return
	}
	*d = got
}

// EnvVar is one environment variable.
type EnvVar struct{ Name, Value string }

// Env returns the settings as the environment variables RegisterEnv reads,
// so a process started with them has the same settings. Without
// withConnection it leaves out where the stores are and how to log in
// (the Redis URL or cluster addresses and password, the MongoDB URI), for a
// process that gets those from a Secret. Empty settings are left out.
func (s *Settings) Env(withConnection bool) []EnvVar {
	var out []EnvVar
	add := func(name, value string) {
		if value != "" {
			out = append(out, EnvVar{Name: name, Value: value})
		}
	}
	if withConnection {
		add(EnvRedisURL, s.RedisURL)
		add(EnvRedisAddrs, s.RedisAddrs)
		add(EnvRedisPassword, s.RedisPassword)
		add(EnvMongoURI, s.MongoURI)
	}
	add(EnvMongoDatabase, s.MongoDatabase)
	add(EnvMongoMaxPool, strconv.FormatUint(s.MongoMaxPool, 10))
	add(EnvStoreTimeout, s.Timeout.String())
	add(EnvRetention, s.Retention.String())
	return out
}

// Validate reports missing or contradictory settings.
func (s *Settings) Validate() error {
	return errors.Join(append(s.validateRedis(), s.ValidateMongo())...)
}

// ValidateMongo reports missing or contradictory settings of the call log
// alone, for modes that need no Redis.
func (s *Settings) ValidateMongo() error {
	errs := append([]error(nil), s.envErrs...)
	if s.MongoURI == "" {
		errs = append(errs, errors.New("set --mongo-uri (or MONGO_URI)"))
	} else if !strings.HasPrefix(s.MongoURI, "mongodb://") && !strings.HasPrefix(s.MongoURI, "mongodb+srv://") {
		errs = append(errs, errors.New("--mongo-uri must start with mongodb:// or mongodb+srv://"))
	}
	if s.MongoDatabase == "" {
		errs = append(errs, errors.New("--mongo-database must not be empty"))
	}
	if s.Timeout <= 0 {
		errs = append(errs, errors.New("--store-timeout must be positive"))
	}
	if s.Retention < 0 {
		errs = append(errs, fmt.Errorf("--call-log-retention must not be negative (got %s); 0 keeps calls forever", s.Retention))
	}
	return errors.Join(errs...)
}

func (s *Settings) validateRedis() []error {
	var errs []error
	switch {
	case s.RedisURL == "" && s.RedisAddrs == "":
		errs = append(errs, errors.New("set --redis-url (or REDIS_URL) for one Redis, or --redis-addrs (REDIS_ADDRS) for a Redis Cluster"))
	case s.RedisURL != "" && s.RedisAddrs != "":
		errs = append(errs, errors.New("set only one of --redis-url and --redis-addrs"))
	case s.RedisURL != "":
		if _, err := redis.ParseURL(s.RedisURL); err != nil {
			errs = append(errs, fmt.Errorf("--redis-url: %w", err))
		}
	}
	return errs
}

// Redis connects a client: a cluster client for RedisAddrs, else a single one.
func (s *Settings) Redis() (redis.UniversalClient, error) {
	if s.RedisAddrs != "" {
		var addrs []string
		for _, a := range strings.Split(s.RedisAddrs, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: addrs, Password: s.RedisPassword,
			DialTimeout: s.Timeout, ReadTimeout: s.Timeout + 10*time.Second, WriteTimeout: s.Timeout,
		}), nil
	}
	opts, err := redis.ParseURL(s.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	opts.DialTimeout = s.Timeout
	// Blocking reads (XREADGROUP BLOCK) need more than the operation timeout.
	opts.ReadTimeout = s.Timeout + 10*time.Second
	opts.WriteTimeout = s.Timeout
	return redis.NewClient(opts), nil
}

// Store opens the call log and makes sure its indexes exist.
func (s *Settings) Store(ctx context.Context) (*store.Store, error) {
	st, err := store.Open(ctx, store.Config{
		URI: s.MongoURI, Database: s.MongoDatabase, MaxPoolSize: s.MongoMaxPool,
		ConnectTimeout: s.Timeout, ServerSelectionTimeout: s.Timeout, OperationTimeout: 2 * s.Timeout,
		Retention: s.Retention,
	})
	if err != nil {
		return nil, fmt.Errorf("open the call log: %w", err)
	}
	if err := st.EnsureIndexes(ctx); err != nil {
		st.Close(context.Background())
		return nil, fmt.Errorf("create the call log's indexes: %w", err)
	}
	return st, nil
}

// StoreRetryMax is the longest wait between two tries of StoreRetrying: a
// process started during an outage of the call log is up at most this long
// after the outage ends (a worker restarted then calls again that soon).
const StoreRetryMax = 5 * time.Second

// StoreRetrying opens the call log as Store does, retrying with backoff (1 s,
// doubling up to StoreRetryMax) while MongoDB is unreachable: an outage at
// start-up delays the operator or a worker (not ready), it does not
// crash-loop it. retrying, if set, hears of each failure and the wait before
// the next try. It fails only when ctx ends.
func (s *Settings) StoreRetrying(ctx context.Context, retrying func(err error, in time.Duration)) (*store.Store, error) {
	backoff := time.Second
	for {
		st, err := s.Store(ctx)
		if err == nil {
			return st, nil
		}
		if retrying != nil {
			retrying(err, backoff)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, StoreRetryMax)
	}
}
