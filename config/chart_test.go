package config_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/retention"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/workers/callbacks"
	"github.com/delauto/delauto/workers/dialer"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/relay"
	"github.com/delauto/delauto/workers/store"
	"github.com/delauto/delauto/workers/worker"
)

// promTool returns bin/<name> of the checkout; the test fails (never skips)
// when it is missing.
func promTool(t *testing.T, root, name string) string {
	t.Helper()
	bin := filepath.Join(root, "bin", name)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s not found: run `make prometheus-tools` (it builds promtool, prometheus and promql-names from the Go module proxy)", bin)
	}
	return bin
}

var monitoringCRDsOnce sync.Once

// installMonitoringCRDs installs the Prometheus Operator's ServiceMonitor,
// PodMonitor and PrometheusRule CRDs (hack/testdata/monitoring-crds) into the
// test apiserver.
func installMonitoringCRDs(t *testing.T, kubectl func([]byte, ...string) (string, error), root string) {
	t.Helper()
	var err error
	var out string
	monitoringCRDsOnce.Do(func() {
		dir := filepath.Join(root, "hack", "testdata", "monitoring-crds")
		if out, err = kubectl(nil, "apply", "--server-side", "-f", dir); err != nil {
			return
		}
		out, err = kubectl(nil, "wait", "--for", "condition=established", "--timeout", "60s",
			"crd/servicemonitors.monitoring.coreos.com", "crd/podmonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	})
	if err != nil {
		t.Fatalf("installing the monitoring.coreos.com CRDs: %v\n%s", err, out)
	}
}

type renderedObject struct {
	Kind     string         `json:"kind"`
	Metadata map[string]any `json:"metadata"`
	raw      map[string]any
}

func splitDocs(t *testing.T, rendered string) []renderedObject {
	t.Helper()
	var objs []renderedObject
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(rendered, -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("a rendered document is no YAML: %v\n%s", err, doc)
		}
		if m == nil {
			continue
		}
		o := renderedObject{raw: m}
		o.Kind, _ = m["kind"].(string)
		o.Metadata, _ = m["metadata"].(map[string]any)
		objs = append(objs, o)
	}
	return objs
}

func (o renderedObject) name() string { n, _ := o.Metadata["name"].(string); return n }

// TestChartValueCombinations renders the chart for its main value
// combinations and server-side dry-run applies each rendering to the test
// apiserver, with the real monitoring.coreos.com CRDs installed.
func TestChartValueCombinations(t *testing.T) {
	kubectl, root := tools(t)
	installMonitoringCRDs(t, kubectl, root)
	chart := filepath.Join(root, "charts", "delauto")
	const ns = "delauto-chart"
	if out, err := kubectl(nil, "create", "namespace", ns); err != nil && !strings.Contains(out, "AlreadyExists") {
		t.Fatalf("create namespace: %v\n%s", err, out)
	}
	stores := []string{"--set", "stores.redisURL=redis://redis:6379", "--set", "stores.mongoURI=mongodb://mongo:27017/delauto"}
	rules, err := os.ReadFile(filepath.Join(chart, "files", "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var wantRules map[string]any
	if err := yaml.Unmarshal(rules, &wantRules); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, objs []renderedObject)
	}{
		{"defaults", stores, func(t *testing.T, objs []renderedObject) {
			want(t, objs, "CustomResourceDefinition", "deliveries.delauto.io", "callcampaigns.delauto.io")
			want(t, objs, "Service", "dl-delauto-operator-metrics")
			want(t, objs, "NetworkPolicy", "dl-delauto-operator", "dl-delauto-api")
			want(t, objs, "Deployment", "dl-delauto-api")
			want(t, objs, "Service", "dl-delauto-api")
			want(t, objs, "ServiceAccount", "dl-delauto-api")
			want(t, objs, "ClusterRole", "dl-delauto-api")
			want(t, objs, "ClusterRoleBinding", "dl-delauto-api")
			none(t, objs, "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap")
			apiArgs := containerArgs(t, objs, "dl-delauto-api")
			for _, a := range []string{"api", "--cache-ttl=10s", "--auth-cache-ttl=10s", "--max-range=2208h"} {
				if !slices.Contains(apiArgs, a) {
					t.Errorf("the API's args %q lack %s", apiArgs, a)
				}
			}
			for _, o := range objs {
				if o.Kind == "CustomResourceDefinition" {
					ann, _ := o.Metadata["annotations"].(map[string]any)
					if ann["helm.sh/resource-policy"] != "keep" {
						t.Errorf("CRD %s: crds.keep is on by default, annotations %v", o.name(), ann)
					}
				}
			}
			// The operator hands the chart's Prometheus peers to the workers'
			// NetworkPolicies, in a form it accepts.
			peers := opsPeersArg(t, objs)
			if len(peers) != 1 || peers[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "prometheus" {
				t.Errorf("--worker-ops-peers = %+v, want the default Prometheus peer", peers)
			}
		}},
		{"monitoring on", append([]string{"--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
			"--set", "grafanaDashboard.enabled=true", "--set", "serviceMonitor.labels.release=kps", "--set", "serviceMonitor.scrapeTimeout=10s"}, stores...),
			func(t *testing.T, objs []renderedObject) {
				want(t, objs, "ServiceMonitor", "dl-delauto-operator", "dl-delauto-api")
				want(t, objs, "PodMonitor", "dl-delauto-workers")
				want(t, objs, "PrometheusRule", "dl-delauto")
				want(t, objs, "ConfigMap", "dl-delauto-dashboard")
				for _, o := range objs {
					switch o.Kind {
					case "PrometheusRule":
						spec, _ := o.raw["spec"].(map[string]any)
						gotJSON, _ := json.Marshal(spec)
						wantJSON, _ := json.Marshal(wantRules)
						if !bytes.Equal(gotJSON, wantJSON) {
							t.Errorf("the PrometheusRule's spec is not files/prometheus-rules.yaml")
						}
					case "ConfigMap":
						labels, _ := o.Metadata["labels"].(map[string]any)
						data, _ := o.raw["data"].(map[string]any)
						var dash map[string]any
						if labels["grafana_dashboard"] != "1" || json.Unmarshal([]byte(fmt.Sprint(data["delauto.json"])), &dash) != nil || dash["uid"] != "delauto-overview" {
							t.Errorf("dashboard ConfigMap: labels %v, the dashboard JSON does not parse", labels)
						}
					}
				}
			}},
		{"crds off, existing secret, no network policy, no metrics service, no API", []string{"--set", "crds.enabled=false", "--set", "stores.existingSecret=my-stores",
			"--set", "networkPolicy.enabled=false", "--set", "metrics.service.enabled=false", "--set", "api.enabled=false"},
			func(t *testing.T, objs []renderedObject) {
				none(t, objs, "CustomResourceDefinition", "Secret", "NetworkPolicy", "Service")
			}},
		{"crds not kept, monitoring namespace only", append([]string{"--set", "crds.keep=false", "--set", "serviceMonitor.enabled=true",
			"--set", "serviceMonitor.workerNamespaces={team-a,team-b}",
			"--set-json", `networkPolicy.prometheusPeers=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}},"podSelector":{"matchLabels":{"app.kubernetes.io/name":"prometheus"}}}]`}, stores...),
			func(t *testing.T, objs []renderedObject) {
				for _, o := range objs {
					if ann, _ := o.Metadata["annotations"].(map[string]any); o.Kind == "CustomResourceDefinition" && ann["helm.sh/resource-policy"] != nil {
						t.Errorf("CRD %s keeps with crds.keep=false", o.name())
					}
				}
				peers := opsPeersArg(t, objs)
				if len(peers) != 1 || peers[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
					t.Errorf("--worker-ops-peers = %+v, want the monitoring namespace's Prometheus", peers)
				}
			}},
		{"own service account", append([]string{"--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops-bot",
			"--set", "aggregateRoles=false", "--set", "operator.allowedWorkerImages={registry.example/delauto/}"}, stores...),
			func(t *testing.T, objs []renderedObject) {
				for _, o := range objs {
					if o.Kind == "ServiceAccount" && o.name() != "dl-delauto-api" {
						t.Errorf("ServiceAccount %s rendered; only the API's own is wanted", o.name())
					}
				}
			}},
		{"API tuned", append([]string{"--set", "api.replicas=4", "--set", "api.cacheTTL=30s", "--set", "api.authCacheTTL=5s",
			"--set", "api.service.type=LoadBalancer", "--set", "api.extraArgs={--query-timeout=3s}"}, stores...),
			func(t *testing.T, objs []renderedObject) {
				args := containerArgs(t, objs, "dl-delauto-api")
				for _, a := range []string{"--cache-ttl=30s", "--auth-cache-ttl=5s", "--query-timeout=3s"} {
					if !slices.Contains(args, a) {
						t.Errorf("the API's args %q lack %s", args, a)
					}
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", "dl", chart, "--namespace", ns}, tc.args...)
			rendered, err := helm(t, root, args...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, rendered)
			}
			objs := splitDocs(t, rendered)
			tc.check(t, objs)
			out, err := kubectl([]byte(rendered), "apply", "--server-side", "--dry-run=server", "--force-conflicts", "--field-manager", "chart-test", "-f", "-")
			if err != nil {
				t.Fatalf("server-side dry-run of the rendered chart: %v\n%s", err, out)
			}
		})
	}

	// Values the schema refuses.
	for _, bad := range [][]string{
		{"--set", "serviceMonitor.enabeld=true"},
		{"--set", "operator.logLevel=loud"},
		{"--set", "metrics.port=0"},
		{"--set-json", `networkPolicy.prometheusPeers=[{}]`},
		{"--set", "api.cacheTTL=ten"},
		{"--set", "api.replicas=0"},
	} {
		if out, err := helm(t, root, append(append([]string{"template", "dl", chart}, stores...), bad...)...); err == nil {
			t.Errorf("helm template %v: the schema accepted it\n%s", bad, out)
		}
	}
	// A ServiceMonitor without the metrics Service is refused with a reason.
	if out, err := helm(t, root, append([]string{"template", "dl", chart, "--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"}, stores...)...); err == nil || !strings.Contains(out, "serviceMonitor.enabled needs metrics.service.enabled") {
		t.Errorf("serviceMonitor without the metrics Service: %v\n%s", err, out)
	}
}

func want(t *testing.T, objs []renderedObject, kind string, names ...string) {
	t.Helper()
	for _, n := range names {
		found := false
		for _, o := range objs {
			found = found || (o.Kind == kind && o.name() == n)
		}
		if !found {
			t.Errorf("no %s %s rendered", kind, n)
		}
	}
}

func none(t *testing.T, objs []renderedObject, kinds ...string) {
	t.Helper()
	for _, o := range objs {
		for _, k := range kinds {
			if o.Kind == k {
				t.Errorf("%s %s rendered, want none", k, o.name())
			}
		}
	}
}

// containerArgs returns the args of the first container of Deployment name.
func containerArgs(t *testing.T, objs []renderedObject, name string) []string {
	t.Helper()
	for _, o := range objs {
		if o.Kind != "Deployment" || o.name() != name {
			continue
		}
		b, _ := json.Marshal(o.raw)
		var d struct {
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `json:"args"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		_ = json.Unmarshal(b, &d)
		if len(d.Spec.Template.Spec.Containers) > 0 {
			return d.Spec.Template.Spec.Containers[0].Args
		}
	}
	t.Fatalf("no Deployment %s rendered", name)
	return nil
}

// opsPeersArg parses the operator's --worker-ops-peers as the operator does.
func opsPeersArg(t *testing.T, objs []renderedObject) []networkPeer {
	t.Helper()
	for _, a := range containerArgs(t, objs, "dl-delauto-operator") {
		if v, ok := strings.CutPrefix(a, "--worker-ops-peers="); ok {
			peers, err := controllers.ParseOpsPeers(v)
			if err != nil {
				t.Fatalf("the operator refuses the chart's %s: %v", a, err)
			}
			out := make([]networkPeer, len(peers))
			for i, p := range peers {
				out[i] = networkPeer{PodSelector: p.PodSelector, NamespaceSelector: p.NamespaceSelector}
			}
			return out
		}
	}
	t.Fatal("the operator Deployment has no --worker-ops-peers")
	return nil
}

type networkPeer struct {
	PodSelector, NamespaceSelector *metav1.LabelSelector
}

// TestAlertRules checks the chart's alert rules with promtool and runs their
// unit tests (one firing and one quiet case per alert at least).
func TestAlertRules(t *testing.T) {
	root, err := testservices.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	promtool := promTool(t, root, "promtool")
	chart := filepath.Join(root, "charts", "delauto")
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(chart, "files", "prometheus-rules.yaml")},
		{"test", "rules", filepath.Join(chart, "tests", "prometheus-rules-test.yaml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every alert has a unit test.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	readYAML(t, filepath.Join(chart, "files", "prometheus-rules.yaml"), &rules)
	tests, err := os.ReadFile(filepath.Join(chart, "tests", "prometheus-rules-test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
				t.Errorf("alert %s has no promtool unit test", r.Alert)
			}
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestPromQLNamesRegisteredMetrics parses every expression of the alert
// rules and the Grafana dashboard with Prometheus' parser (promql-names)
// and checks that each names only metrics the operator or the workers
// register.
func TestPromQLNamesRegisteredMetrics(t *testing.T) {
	root, err := testservices.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	names := promTool(t, root, "promql-names")
	chart := filepath.Join(root, "charts", "delauto")

	var exprs []string
	var rules struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	readYAML(t, filepath.Join(chart, "files", "prometheus-rules.yaml"), &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile(filepath.Join(chart, "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			// Grafana's interval variable, as Grafana substitutes it.
			exprs = append(exprs, strings.ReplaceAll(tg.Expr, "$__rate_interval", "5m"))
		}
	}
	in, _ := json.Marshal(exprs)
	cmd := exec.Command(names)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promql-names: %v\n%s", err, stderr.String())
	}
	var results []struct {
		Expr    string   `json:"expr"`
		Metrics []string `json:"metrics"`
		Error   string   `json:"error"`
	}
	if err := json.Unmarshal(out, &results); err != nil || len(results) != len(exprs) {
		t.Fatalf("promql-names answered %d results for %d expressions: %v", len(results), len(exprs), err)
	}

	registered := registeredMetrics(t)
	for _, r := range results {
		if r.Error != "" {
			t.Errorf("%s\ndoes not parse: %s", r.Expr, r.Error)
			continue
		}
		if len(r.Metrics) == 0 {
			t.Errorf("%s\nnames no metric", r.Expr)
		}
		for _, m := range r.Metrics {
			if !registered[m] {
				t.Errorf("%s\nnames %s, which neither the operator nor the workers register", r.Expr, m)
			}
		}
	}
}

// recorder is a Registerer that keeps the names of every metric registered
// on it (from the collectors' descriptions, so vectors without children
// count too), and forwards to a real registry.
type recorder struct {
	names map[string]bool
	reg   *prometheus.Registry
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.record(c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

func (r *recorder) record(c prometheus.Collector) {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
}

// registeredMetrics registers the operator's and the workers' collectors as
// the binaries do, and returns every series name they can export
// (histograms with their _bucket, _count and _sum series).
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rec := &recorder{names: map[string]bool{}, reg: prometheus.NewRegistry()}

	// The operator: its counters, the campaign status gauges and the
	// retention janitor's.
	controllers.NewMetrics(rec)
	rec.MustRegister(&controllers.CampaignCollector{Reader: fake.NewClientBuilder().Build()})
	retention.NewMetrics(rec)

	// The workers: dialer (with the rate limiter), queue, and the callback
	// server with its relay sender, on real stores.
	if _, err := dialer.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: "chart_metrics"})
	if err != nil {
		t.Fatalf("open the call log: %v", err)
	}
	defer st.Close(context.Background())
	rdb := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	defer rdb.Close()
	camp := &campaignfile.Config{Namespace: "team-a", Name: "spree", Spec: v1.CallCampaignSpec{
		Schedule: v1.ScheduleSpec{CallingHours: v1.CallingHours{Start: "08:00", End: "20:00"}, DefaultTimeZone: "Europe/Berlin"},
		Script:   v1.CallScript{CompanyName: "Parcels", TimeLimit: &metav1.Duration{Duration: time.Minute}},
		Twilio:   v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{"+14155550100"}, CallsPerSecond: 10, CallbackURL: "https://callbacks.example/"},
	}}
	const sid, token = "AC0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"
	hc, err := twilioclient.HTTPClient("http://127.0.0.1:1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := twilioclient.New(sid, token, hc)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := callbacks.New(callbacks.Config{Campaign: campaignfile.Static{Config: camp}, Store: st, Redis: rdb,
		AuthTokens: []string{token}, Twilio: rc, Consumer: "chart-test"})
	if err != nil {
		t.Fatalf("callbacks.New: %v", err)
	}
	if err := srv.RegisterMetrics(rec); err != nil {
		t.Fatal(err)
	}
	sender, err := relay.NewSender(relay.Config{Store: st, Queue: relay.NewQueue(rdb, ""), Campaign: campaignfile.Static{Config: camp}, Twilio: rc,
		Secret: relay.SecretSource("", "secret")})
	if err != nil {
		t.Fatalf("relay.NewSender: %v", err)
	}
	if err := sender.RegisterMetrics(rec); err != nil {
		t.Fatal(err)
	}
	// The worker registers its gauges on its own registry: plain gauges,
	// so a gather lists them all.
	wreg := prometheus.NewRegistry()
	if _, err := worker.New(worker.Options{Name: "chart-test", Shards: []queue.Shard{{Namespace: "team-a", Campaign: "spree", Name: "0"}},
		Store: st, Redis: rdb, Twilio: rc.Api, AccountSID: sid, Campaign: campaignfile.Static{Config: camp}, Registry: wreg}); err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	families, err := wreg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		rec.names[f.GetName()] = true
	}

	all := map[string]bool{}
	var list []string
	for n := range rec.names {
		all[n] = true
		for _, s := range []string{"_bucket", "_count", "_sum"} {
			all[n+s] = true
		}
		list = append(list, n)
	}
	sort.Strings(list)
	t.Logf("registered metrics: %s", strings.Join(list, " "))
	return all
}
