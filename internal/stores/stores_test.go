package stores

import (
	"context"
	"errors"
	"flag"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidateNamesWhatIsMissing(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv("REDIS_ADDRS", "")
	t.Setenv("MONGO_URI", "")
	var s Settings
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	s.Register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	err := s.Validate()
	if err == nil || !strings.Contains(err.Error(), "--redis-url") || !strings.Contains(err.Error(), "--mongo-uri") {
		t.Fatalf("Validate() = %v, want both stores named", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis-url", "http://x", "--mongo-uri", "mongodb://m"}, "--redis-url"},
		{[]string{"--redis-url", "redis://r", "--redis-addrs", "a:1", "--mongo-uri", "mongodb://m"}, "only one"},
		{[]string{"--redis-url", "redis://r", "--mongo-uri", "postgres://m"}, "mongodb://"},
		{[]string{"--redis-url", "redis://r", "--mongo-uri", "mongodb://m", "--call-log-retention", "-1h"}, "--call-log-retention must not be negative"},
	} {
		var s Settings
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		s.Register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: Validate() = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestEnvironmentDefaults(t *testing.T) {
	t.Setenv("REDIS_URL", "redis://r:6379/0")
	t.Setenv("MONGO_URI", "mongodb://m:27017")
	t.Setenv("MONGO_DATABASE", "calls")
	var s Settings
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	s.Register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.MongoDatabase != "calls" || s.Timeout != 5*time.Second || s.Retention != DefaultRetention {
		t.Errorf("settings = %+v", s)
	}
	rdb, err := s.Redis()
	if err != nil {
		t.Fatal(err)
	}
	rdb.Close()
}

// settingsFrom parses settings from args and an environment.
func settingsFrom(t *testing.T, args []string, env map[string]string) Settings {
	t.Helper()
	var s Settings
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	s.RegisterEnv(fs, func(k string) string { return env[k] })
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEnvRoundTripsEverySetting(t *testing.T) {
	for _, args := range [][]string{
		{"--redis-url", "redis://:pw@r:6379/2", "--mongo-uri", "mongodb://u:p@m:27017", "--mongo-database", "calls", "--mongo-max-pool", "7", "--store-timeout", "3s"},
		{"--redis-addrs", "r1:7000,r2:7001", "--redis-password", "pw", "--mongo-uri", "mongodb://m:27017"},
	} {
		op := settingsFrom(t, args, nil)
		env := map[string]string{}
		for _, e := range op.Env(true) {
			env[e.Name] = e.Value
		}
		got := settingsFrom(t, nil, env)
		if got.RedisURL != op.RedisURL || got.RedisAddrs != op.RedisAddrs || got.RedisPassword != op.RedisPassword ||
			got.MongoURI != op.MongoURI || got.MongoDatabase != op.MongoDatabase || got.MongoMaxPool != op.MongoMaxPool || got.Timeout != op.Timeout {
			t.Errorf("%v: through the environment %+v, want %+v", args, got, op)
		}
		for _, e := range op.Env(false) {
			switch e.Name {
			case EnvRedisURL, EnvRedisAddrs, EnvRedisPassword, EnvMongoURI:
				t.Errorf("%v: Env(false) carries %s", args, e.Name)
			}
		}
	}
}

func TestUnreadableEnvironmentIsReported(t *testing.T) {
	var s Settings
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	env := map[string]string{EnvRedisURL: "redis://r", EnvMongoURI: "mongodb://m", EnvMongoMaxPool: "many", EnvStoreTimeout: "5"}
	s.RegisterEnv(fs, func(k string) string { return env[k] })
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	err := s.Validate()
	if err == nil || !strings.Contains(err.Error(), EnvMongoMaxPool) || !strings.Contains(err.Error(), EnvStoreTimeout) {
		t.Fatalf("Validate() = %v, want both bad variables named", err)
	}
}

func TestRetentionFromTheEnvironment(t *testing.T) {
	t.Setenv("MONGO_URI", "mongodb://m:27017")
	for env, want := range map[string]string{"168h": "", "0": "", "a week": `env CALL_LOG_RETENTION="a week" is not a duration`} {
		t.Setenv("CALL_LOG_RETENTION", env)
		var s Settings
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		s.Register(fs)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		err := s.ValidateMongo()
		switch {
		case want == "" && err != nil:
			t.Errorf("CALL_LOG_RETENTION=%s: %v", env, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("CALL_LOG_RETENTION=%s: %v, want %q", env, err, want)
		}
		if env == "168h" && s.Retention != 168*time.Hour {
			t.Errorf("retention = %s, want 168h", s.Retention)
		}
	}
}

// A worker or operator started while the call log is down tries again at
// most StoreRetryMax apart: after a 15 s outage it is up within seconds of
// the store, not half a minute later (a worker SIGKILLed during a
// PostgreSQL stop kept its queue waiting that long).
func TestStoreRetryingTriesAgainWithinFiveSeconds(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: every try fails
	s := Settings{MongoURI: "mongodb://" + addr + "/?connectTimeoutMS=100", MongoDatabase: "x", Timeout: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []time.Duration
	_, err = s.StoreRetrying(ctx, func(err error, in time.Duration) {
		if err == nil {
			t.Error("a failed try reported no error")
		}
		waits = append(waits, in)
		if len(waits) == 4 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("StoreRetrying = %v, want it to give up only when its context ends", err)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, StoreRetryMax}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits between tries %v, want %v", waits, want)
	}
}
