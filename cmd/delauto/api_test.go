package main

import (
	"strings"
	"testing"
	"time"
)

// TestAPIConfig checks the flags of `delauto api`: defaults, the store
// settings from the environment, and every refusal named.
func TestAPIConfig(t *testing.T) {
	env := map[string]string{"REDIS_URL": "redis://r:6379", "MONGO_URI": "mongodb://m:27017"}
	c, err := parseAPIConfig([]string{"--cache-ttl", "3s", "--token-audiences", "delauto-api, https://kubernetes.default.svc"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.cacheTTL != 3*time.Second || c.conn.RedisURL != "redis://r:6379" || c.httpAddr != ":8090" || c.opsAddr != ":8091" {
		t.Errorf("config %+v", c)
	}
	if strings.Join(c.audiences, "|") != "delauto-api|https://kubernetes.default.svc" {
		t.Errorf("audiences %q", c.audiences)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cache-ttl", "0s"}, "--cache-ttl must be positive"},
		{[]string{"--auth-cache-ttl", "-1s"}, "--auth-cache-ttl must be positive"},
		{[]string{"--auth-cache-size", "0"}, "--auth-cache-size must be at least 1"},
		{[]string{"--max-range", "30m"}, "--max-range 30m0s is shorter than an hour"},
		{[]string{"--http-addr", ":9000", "--ops-addr", ":9000"}, "both :9000"},
		{[]string{"--http-addr", "9000"}, "--http-addr \"9000\" is not host:port"},
		{[]string{"--tls-cert-file", "c.pem"}, "--tls-cert-file and --tls-key-file go together"},
		{[]string{"--log-level", "loud"}, "--log-level \"loud\""},
		{[]string{"--kube-api-qps", "0"}, "--kube-api-qps"},
		{[]string{"extra"}, "unexpected arguments: extra"},
	} {
		_, err := parseAPIConfig(tc.args, func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseAPIConfig(nil, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "--redis-url") || !strings.Contains(err.Error(), "--mongo-uri") {
		t.Errorf("no stores: %v", err)
	}
}
