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

	envErr error // a malformed environment default
}

// DefaultRetention is --call-log-retention's default: 30 days.
const DefaultRetention = 30 * 24 * time.Hour

// Register adds the settings' flags to fs, defaulting to the environment
// variables REDIS_URL, REDIS_ADDRS, REDIS_PASSWORD, MONGO_URI and
// MONGO_DATABASE.
func (s *Settings) Register(fs *flag.FlagSet) {
	fs.StringVar(&s.RedisURL, "redis-url", os.Getenv("REDIS_URL"), "Redis URL, redis://[:password@]host:port/db (env REDIS_URL)")
	fs.StringVar(&s.RedisAddrs, "redis-addrs", os.Getenv("REDIS_ADDRS"), "comma-separated Redis Cluster node addresses, instead of --redis-url (env REDIS_ADDRS)")
	fs.StringVar(&s.RedisPassword, "redis-password", os.Getenv("REDIS_PASSWORD"), "password for --redis-addrs (env REDIS_PASSWORD)")
	fs.StringVar(&s.MongoURI, "mongo-uri", os.Getenv("MONGO_URI"), "MongoDB URI of the call log (env MONGO_URI)")
	db := os.Getenv("MONGO_DATABASE")
	if db == "" {
		db = "delauto"
	}
	fs.StringVar(&s.MongoDatabase, "mongo-database", db, "MongoDB database of the call log (env MONGO_DATABASE)")
	fs.Uint64Var(&s.MongoMaxPool, "mongo-max-pool", 100, "most MongoDB connections")
	fs.DurationVar(&s.Timeout, "store-timeout", 5*time.Second, "timeout for connecting to and each operation on Redis and MongoDB")
	retention := DefaultRetention
	if v := os.Getenv("CALL_LOG_RETENTION"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			retention = d
		} else {
			s.envErr = fmt.Errorf("CALL_LOG_RETENTION %q is not a duration such as 720h", v)
		}
	}
	fs.DurationVar(&s.Retention, "call-log-retention", retention, "how long a finished call stays in the call log (with answers and recordings) when its campaign sets no retention; 0 keeps it forever (env CALL_LOG_RETENTION)")
}

// Validate reports missing or contradictory settings.
func (s *Settings) Validate() error {
	var errs []error
	errs = append(errs, s.validateRedis()...)
	errs = append(errs, s.ValidateMongo())
	return errors.Join(errs...)
}

// ValidateMongo reports missing or contradictory settings of the call log
// alone, for modes that need no Redis.
func (s *Settings) ValidateMongo() error {
	var errs []error
	if s.envErr != nil {
		errs = append(errs, s.envErr)
	}
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
