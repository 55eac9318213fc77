package testservices

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

// Want says which services a test package needs.
type Want struct {
	// Kube starts envtest with DelAuto's CRDs.
	Kube bool
	// Redis starts one redis-server.
	Redis bool
	// RedisCluster starts a 3-master Redis Cluster.
	RedisCluster bool
	// Mongo starts FerretDB on PostgreSQL.
	Mongo bool
}

// Env is the set of services started for a test package.
type Env struct {
	Kube         *Kube
	Redis        *Redis
	RedisCluster *RedisCluster
	Mongo        *Mongo
}

// Start starts the wanted services. On error, those already started are
// stopped.
func Start(want Want) (*Env, error) {
	env := &Env{}
	var err error
	step := func(name string, f func() error) {
		if err != nil {
			return
		}
		t := time.Now()
		if err = f(); err != nil {
			err = fmt.Errorf("start %s: %w", name, err)
			return
		}
		if verbose() {
			fmt.Fprintf(os.Stderr, "testservices: %s up in %s\n", name, time.Since(t).Round(time.Millisecond))
		}
	}
	if want.Redis {
		step("redis", func() (e error) { env.Redis, e = StartRedis(); return })
	}
	if want.RedisCluster {
		step("redis cluster", func() (e error) { env.RedisCluster, e = StartRedisCluster(3); return })
	}
	if want.Mongo {
		step("mongo (FerretDB on PostgreSQL)", func() (e error) { env.Mongo, e = StartMongo(); return })
	}
	if want.Kube {
		step("kube-apiserver (envtest)", func() (e error) { env.Kube, e = StartKube(); return })
	}
	if err != nil {
		env.Stop()
		return nil, err
	}
	return env, nil
}

// Stop ends every started service.
func (e *Env) Stop() {
	if e == nil {
		return
	}
	e.Kube.Stop()
	e.Mongo.Stop()
	e.RedisCluster.Stop()
	e.Redis.Stop()
}

// Main is a TestMain body: it starts the wanted services into *env, runs the
// tests, stops the services and exits. A service that cannot start fails the
// package with the reason.
func Main(m *testing.M, want Want, env **Env) {
	if !flag.Parsed() {
		flag.Parse()
	}
	e, err := Start(want)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: test services: %v\n", err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	e.Stop()
	os.Exit(code)
}

// verbose reports whether to print start-up times: in `go test -v`, or when
// DELAUTO_TESTSERVICES_VERBOSE is set (benchmark commands).
func verbose() bool {
	if os.Getenv("DELAUTO_TESTSERVICES_VERBOSE") != "" {
		return true
	}
	return testing.Testing() && flag.Parsed() && testing.Verbose()
}
