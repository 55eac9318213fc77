package stores

import (
	"flag"
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

func TestRetentionFromTheEnvironment(t *testing.T) {
	t.Setenv("MONGO_URI", "mongodb://m:27017")
	for env, want := range map[string]string{"168h": "", "0": "", "a week": `CALL_LOG_RETENTION "a week" is not a duration`} {
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
