package main

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/internal/workerpod"
)

func TestOperatorConfig(t *testing.T) {
	noEnv := func(string) string { return "" }
	c, err := parseOperatorConfig([]string{"--redis-addrs", "r1:7000,r2:7001", "--redis-password", "pw",
		"--mongo-uri", "mongodb://m:27017", "--mongo-database", "calls", "--worker-twilio-base-url", "http://127.0.0.1:9999", "--worker-relay-allow-private",
		"--allowed-worker-images", "ghcr.io/delauto/delauto, registry.example.com/team/"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	// What the operator was told by flags is what its workers get.
	w := c.workers.Stores
	if w.RedisAddrs != "r1:7000,r2:7001" || w.RedisPassword != "pw" || w.MongoURI != "mongodb://m:27017" || w.MongoDatabase != "calls" {
		t.Errorf("worker store settings %+v, want the operator's flags", w)
	}
	if got := strings.Join(c.workers.AllowedImages, "|"); got != "ghcr.io/delauto/delauto|registry.example.com/team/" {
		t.Errorf("allowed worker images %q", got)
	}
	if c.workers.TwilioBaseURL != "http://127.0.0.1:9999" {
		t.Errorf("worker Twilio base URL %q", c.workers.TwilioBaseURL)
	}
	// What the operator allows its workers' relay, the workers it writes do.
	workerEnv := map[string]string{}
	for _, e := range c.workers.Deployment(&v1.CallCampaign{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c"}}, "shard-0", 1).Spec.Template.Spec.Containers[0].Env {
		if e.Value != nil {
			workerEnv[*e.Name] = *e.Value
		}
	}
	workerEnv["TWILIO_ACCOUNT_SID"], workerEnv["TWILIO_AUTH_TOKEN"] = twiliosim.DefaultAccountSID, twiliosim.DefaultAuthToken
	delete(workerEnv, workerpod.EnvCampaign)
	delete(workerEnv, workerpod.EnvCampaignNamespace)
	delete(workerEnv, workerpod.EnvDrainTokenFile)
	wc, err := parseWorkerConfig([]string{"--campaign-file", writeCampaign(t, t.TempDir(), "shop", nil), "--shards", "shard-0",
		"--twilio-dir", "", "--redis-url", "redis://r", "--mongo-uri", "mongodb://m"}, func(k string) string { return workerEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !wc.RelayAllowPrivate {
		t.Errorf("--worker-relay-allow-private did not reach the worker (env %v)", workerEnv)
	}
	// The Lease lives in the operator's namespace, which the chart gives
	// it by the downward API (no ServiceAccount file needed).
	inNS, err := parseOperatorConfig([]string{"--redis-url", "redis://r", "--mongo-uri", "mongodb://m"}, func(k string) string {
		return map[string]string{"POD_NAMESPACE": "delauto-system"}[k]
	})
	if err != nil || inNS.leaderNamespace != "delauto-system" {
		t.Errorf("leader election namespace %q (%v), want the pod's namespace from POD_NAMESPACE", inNS.leaderNamespace, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--redis-url"},
		{[]string{"--redis-url", "redis://r", "--mongo-uri", "mongodb://m", "--max-concurrent-reconciles", "0"}, "at least 1"},
		{[]string{"--redis-url", "redis://r", "--mongo-uri", "mongodb://m", "--worker-twilio-base-url", "127.0.0.1:9"}, "http(s) URL"},
	} {
		if _, err := parseOperatorConfig(tc.args, noEnv); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// The operator and a worker run side by side on one machine with their
// default flags (local development): none of their listen addresses clash.
func TestOperatorAndWorkerDefaultPortsDiffer(t *testing.T) {
	op, err := parseOperatorConfig([]string{"--redis-url", "redis://r", "--mongo-uri", "mongodb://m"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TWILIO_ACCOUNT_SID": twiliosim.DefaultAccountSID, "TWILIO_AUTH_TOKEN": twiliosim.DefaultAuthToken}
	w, err := parseWorkerConfig([]string{"--campaign-file", writeCampaign(t, t.TempDir(), "shop", nil), "--shards", "shard-0",
		"--redis-url", "redis://r", "--mongo-uri", "mongodb://m"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for name, addr := range map[string]string{
		"operator --metrics-bind-address": op.metricsAddr, "operator --health-probe-bind-address": op.probeAddr,
		"worker --http-addr": w.HTTPAddr, "worker --ops-addr": w.OpsAddr,
	} {
		if other, ok := seen[addr]; ok {
			t.Errorf("%s and %s both default to %s", name, other, addr)
		}
		seen[addr] = name
	}
}
