package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/insightsapi"
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

// TestAPIProcess runs `delauto api` as a process against the test
// apiserver (through a kubeconfig, as outside a cluster), Redis and
// FerretDB: a reader's token reads its namespace, no token is a 401,
// another namespace a 403, and the ops port serves the metrics.
func TestAPIProcess(t *testing.T) {
	ctx := context.Background()
	kubeconfig, err := env.Kube.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(kubeconfig) })
	token, err := env.Kube.ReaderToken(ctx, "api-readers", "dashboard", insightsapi.DeliveryReaderRules)
	if err != nil {
		t.Fatal(err)
	}
	addr, ops := freeAddr(t), freeAddr(t)
	startChild(t, "api", []string{"api", "--http-addr", addr, "--ops-addr", ops, "--redis-url", env.Redis.URL(),
		"--mongo-uri", env.Mongo.URI, "--mongo-database", "api_process", "--log-level", "debug"}, ops, "KUBECONFIG="+kubeconfig)
	get := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/api/v1/namespaces/api-readers/analytics/overview", token, http.StatusOK},
		{"/api/v1/namespaces/api-readers/deliveries?limit=10", token, http.StatusOK},
		{"/api/v1/namespaces/api-readers/analytics/breakdown?by=region", token, http.StatusOK},
		{"/api/v1/namespaces/api-readers/analytics/timeseries?step=6h", token, http.StatusOK},
		{"/api/v1/namespaces/api-readers/deliveries", "", http.StatusUnauthorized},
		{"/api/v1/namespaces/default/deliveries", token, http.StatusForbidden},
		{"/api/v1/namespaces/api-readers/analytics/breakdown?by=planet", token, http.StatusBadRequest},
		{"/openapi.json", "", http.StatusOK},
	} {
		if code, body := get(c.path, c.token); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.path, code, body, c.want)
		}
	}
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, m := range []string{"delauto_api_requests_total", "delauto_api_cache_requests_total", "delauto_api_refusals_total", "delauto_api_auth_cache_requests_total"} {
		if !strings.Contains(string(b), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}
