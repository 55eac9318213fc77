// Command operator-bench measures the operator at scale: it creates
// Deliveries over several campaigns on a real apiserver (envtest), with a
// real Redis and FerretDB, runs `delauto operator` as a separate process, and
// reports how long after the last create every Delivery is Scheduled (its
// attempt in MongoDB and in its shard's queue), what that cost the apiserver
// (its CPU seconds from /proc, the operator's requests and writes from its
// apiserver_request_total counters), and the operator's memory: peak RSS,
// and RSS and live heap growth per Delivery (each read after a forced GC once
// the operator's caches synced and again once all are Scheduled; two runs
// of different sizes give the slope).
//
// Usage: go run ./hack/bench/operator [-deliveries 10000] [-campaigns 20] [-finalizer-policy=true]
//
// The last line is:
//
//	operator deliveries=<n> schedule_all_s=<x> rss_mb=<x> rss_kb_per_delivery=<x> heap_kb_per_delivery=<x>
//	  apiserver_cpu_s=<x> apiserver_cpu_ms_per_delivery=<x> apiserver_requests_per_delivery=<x>
//	  api_writes_per_delivery=<x> finalizer=<mode>
//
// (one line).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"go.mongodb.org/mongo-driver/v2/bson"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/hack/bench/internal/benchlog"
	"github.com/delauto/delauto/hack/internal/procs"
	"github.com/delauto/delauto/internal/sharding"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/workers/queue"
)

// benchProcess names this process (the creating clients and the watch) in
// the CPU figures.
const benchProcess = "bench (creates, watch)"

func main() {
	n := flag.Int("deliveries", 10000, "Deliveries to create")
	campaigns := flag.Int("campaigns", 20, "campaigns to spread them over")
	shards := flag.Int("shards", 2, "hash shards per campaign")
	creators := flag.Int("creators", 16, "concurrent creating clients")
	reconciles := flag.Int("max-concurrent-reconciles", 32, "the operator's --max-concurrent-reconciles (its default)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	policy := flag.Bool("finalizer-policy", true, "install config/admission's MutatingAdmissionPolicy (as config/default and the chart do) so new Deliveries get the finalizer at create; false measures the operator's fallback patch")
	flag.StringVar(&apiserverProfile, "apiserver-cpuprofile", "", "write a 30 s CPU profile of kube-apiserver, taken 10 s into the creates, to this file")
	flag.Parse()
	// The bench's own watch logs nothing worth reading.
	ctrllog.SetLogger(logr.Discard())
	if err := run(*n, *campaigns, *shards, *creators, *reconciles, *policy, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "operator-bench: %v\n", err)
		os.Exit(1)
	}
}

// logf writes a progress line (benchlog.Logf).
var logf = benchlog.Logf

func run(n, campaigns, shards, creators, reconciles int, policy bool, timeout time.Duration) error {
	// Interrupting the bench still stops the services it started.
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, timeout)
	defer cancel()
	root, err := testservices.RepoRoot()
	if err != nil {
		return err
	}
	os.Setenv("DELAUTO_TESTSERVICES_VERBOSE", "1")
	logf("starting kube-apiserver, etcd, redis-server and FerretDB")
	env, err := testservices.Start(testservices.Want{Kube: true, Redis: true, Mongo: true})
	if err != nil {
		return err
	}
	defer env.Stop()

	bin := filepath.Join(root, "bin", "delauto")
	logf("building %s", "delauto")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "cmd", "delauto")).CombinedOutput(); err != nil {
		return fmt.Errorf("build delauto: %v\n%s", err, out)
	}
	kubeconfig, err := env.Kube.Kubeconfig()
	if err != nil {
		return err
	}
	c := env.Kube.Client
	ns := "bench"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "twilio"},
		Data: map[string][]byte{"accountSID": []byte("AC0"), "authToken": []byte("t")}}); err != nil {
		return err
	}
	var specs []v1.CallCampaign
	for i := 0; i < campaigns; i++ {
		cc := v1.CallCampaign{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("campaign-%02d", i)},
			Spec: v1.CallCampaignSpec{
				Schedule: v1.ScheduleSpec{CallingHours: v1.CallingHours{Start: "00:00", End: "23:59"}},
				Script:   v1.CallScript{CompanyName: "Bench"},
				Twilio: v1.TwilioSpec{CredentialsSecretRef: v1.TwilioCredentials{Name: "twilio"},
					FromNumbers: []v1.PhoneNumber{"+14155550100"}, CallbackURL: "https://calls.example.com"},
				Sharding: v1.ShardingSpec{By: v1.ShardByHash, Count: int32(shards)},
			},
		}
		if err := c.Create(ctx, &cc); err != nil {
			return err
		}
		specs = append(specs, cc)
	}

	if policy {
		logf("installing the finalizer's MutatingAdmissionPolicy %s", policyName)
		if err := installFinalizerPolicy(ctx, c, root, ns, specs[0].Name); err != nil {
			return err
		}
	}

	before, err := requestCounts(ctx, env)
	if err != nil {
		return err
	}
	logf("starting delauto operator (--max-concurrent-reconciles=%d)", reconciles)
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	pprofAddr, err := freeAddr()
	if err != nil {
		return err
	}
	op := exec.CommandContext(ctx, bin, "operator", "--metrics-bind-address="+metricsAddr, "--metrics-secure=false", "--health-probe-bind-address=127.0.0.1:0",
		"--max-concurrent-reconciles="+strconv.Itoa(reconciles), "--redis-url="+env.Redis.URL(), "--mongo-uri="+env.Mongo.URI,
		"--mongo-database=bench", "--pprof-bind-address="+pprofAddr, "--finalizer-policy="+policyName)
	op.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	opLog, err := os.CreateTemp("", "delauto-operator-*.log")
	if err != nil {
		return err
	}
	op.Stdout, op.Stderr = opLog, opLog
	if err := op.Start(); err != nil {
		return err
	}
	defer func() { op.Process.Kill(); op.Wait() }()
	var peakRSS atomic.Int64
	go sampleRSS(ctx, op.Process.Pid, &peakRSS)
	if apiserverProfile != "" {
		go profileAPIServer(ctx, env, apiserverProfile)
	}

	// The bench follows the Deliveries through a watch, as the operator does:
	// listing all of them from the apiserver every second would cost it more
	// than the operator's own work.
	watched, err := cache.New(env.Kube.Config, cache.Options{
		Scheme:            c.Scheme(),
		DefaultNamespaces: map[string]cache.Config{ns: {}},
		DefaultTransform:  cache.TransformStripManagedFields(),
	})
	if err != nil {
		return err
	}
	if _, err := watched.GetInformer(ctx, &v1.Delivery{}); err != nil {
		return err
	}
	go watched.Start(ctx)
	if !watched.WaitForCacheSync(ctx) {
		return fmt.Errorf("the bench's Delivery cache did not sync")
	}

	// Memory is measured from when the operator's caches are synced and its
	// controllers run (every campaign reconciled once), so the growth is
	// what the Deliveries cost.
	if err := waitReconciled(ctx, metricsAddr, "callcampaign-workload", campaigns); err != nil {
		return fmt.Errorf("%w; operator log: %s", err, opLog.Name())
	}
	memBefore, err := memory(ctx, op.Process.Pid, metricsAddr, pprofAddr)
	if err != nil {
		return err
	}
	logf("operator ready: RSS %.1f MB, live heap %.1f MB", memBefore.rssKB/1024, memBefore.heapBytes/(1<<20))

	logf("creating %d Deliveries over %d campaigns with %d clients", n, campaigns, creators)
	cpuBefore := procs.CPUSnapshot(benchProcess)
	start := time.Now()
	var created atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, creators)
	work := make(chan int)
	for w := 0; w < creators; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := c.Create(ctx, delivery(ns, i, specs[i%campaigns].Name)); err != nil {
					errs <- fmt.Errorf("create delivery %d: %w", i, err)
					return
				}
				if k := created.Add(1); k%1000 == 0 {
					logf("created %d/%d", k, n)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case work <- i:
		case err := <-errs:
			close(work)
			return err
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	lastCreate := time.Now()
	logf("created %d Deliveries in %.1fs; waiting until every one is Scheduled", n, lastCreate.Sub(start).Seconds())

	rdb := env.Redis.Client()
	defer rdb.Close()
	mc, err := env.Mongo.Client()
	if err != nil {
		return err
	}
	defer mc.Disconnect(context.Background())
	var scheduleAll time.Duration
	// allScheduled is when the watch first saw every Delivery Scheduled: the
	// figure, without the checks of Redis and the call log that follow.
	var allScheduled time.Time
	for {
		if op.ProcessState != nil {
			return fmt.Errorf("the operator exited; its log: %s", opLog.Name())
		}
		var list v1.DeliveryList
		if err := watched.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		scheduled := 0
		for _, d := range list.Items {
			if d.Status.Phase == v1.DeliveryScheduled {
				scheduled++
			}
		}
		// Counting the call log costs FerretDB a scan, so it is read only
		// once the Deliveries say they are all Scheduled.
		attempts := int64(-1)
		if scheduled == n && allScheduled.IsZero() {
			allScheduled = time.Now()
		}
		if scheduled == n {
			// FerretDB on a loaded machine may stall a scan (one stalled
			// for minutes at 50,000 attempts): each count gets a minute,
			// then it is tried again.
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			began := time.Now()
			attempts, err = mc.Database("bench").Collection("attempts").CountDocuments(cctx, bson.D{})
			cancel()
			if err != nil {
				logf("counting the call log failed after %.1fs; trying again: %v", time.Since(began).Seconds(), err)
				attempts = -1
			}
		}
		var queued int64
		for _, cc := range specs {
			for _, sh := range sharding.Names(cc.Spec.Sharding) {
				s := queue.Shard{Namespace: ns, Campaign: cc.Name, Name: sh}
				z, _ := rdb.ZCard(ctx, s.DueKey()).Result()
				h, _ := rdb.HLen(ctx, s.IndexKey()).Result()
				queued += z + h
			}
		}
		inMongo := "(counted at the end)"
		if attempts >= 0 {
			inMongo = strconv.FormatInt(attempts, 10)
		}
		logf("scheduled %d/%d, queued in Redis %d, attempts in MongoDB %s", scheduled, n, queued, inMongo)
		if scheduled == n && attempts >= int64(n) && queued >= int64(n) {
			scheduleAll = allScheduled.Sub(lastCreate)
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("not all scheduled before the timeout; operator log: %s", opLog.Name())
		}
		time.Sleep(time.Second)
	}
	elapsed := time.Since(start)
	used := procs.CPUSnapshot(benchProcess).Minus(cpuBefore)
	after, err := requestCounts(ctx, env)
	if err != nil {
		return err
	}
	memAfter, err := memory(ctx, op.Process.Pid, metricsAddr, pprofAddr)
	if err != nil {
		return err
	}
	var requests, writes, deliveryWrites float64
	logf("apiserver requests after the operator started, by resource and verb (the bench's %d creates included):", n)
	for _, k := range slices.SortedFunc(maps.Keys(after), requestKey.Compare) {
		d := after[k] - before[k]
		if d <= 0 {
			continue
		}
		requests += d
		if k.write() {
			writes += d
			if res, _, _ := strings.Cut(k.resource, "/"); res == "deliveries" || res == "events" {
				deliveryWrites += d
			}
		}
		logf("  %-44s %8.0f", k, d)
	}
	// The bench's own creates are not the operator's; its watch and these
	// reads of the metrics are a handful of requests.
	requests -= float64(n)
	writes -= float64(n)
	deliveryWrites -= float64(n)
	perDelivery := writes / float64(n)
	logf("operator's API writes: %.0f (%.3f per Delivery), of which on Deliveries and Events %.0f (%.3f per Delivery); requests %.0f (%.3f per Delivery)",
		writes, perDelivery, deliveryWrites, deliveryWrites/float64(n), requests, requests/float64(n))
	mode, finalizerPatches := finalizerFigures(ctx, metricsAddr)
	logf("finalizer mode %s, finalizer patches %.0f", mode, finalizerPatches)
	if reconciles, err := reconcileCounts(ctx, metricsAddr); err != nil {
		logf("cannot read the operator's metrics: %v", err)
	} else {
		for _, k := range slices.Sorted(maps.Keys(reconciles)) {
			logf("  reconciles %-30s %8.0f (%.2f per Delivery)", k, reconciles[k], reconciles[k]/float64(n))
		}
	}
	logf("CPU seconds from the first create until all Scheduled, by process (%.1f s of wall time, 2 cores = %.1f CPU seconds):",
		elapsed.Seconds(), 2*elapsed.Seconds())
	for _, name := range slices.Sorted(maps.Keys(used)) {
		if used[name] >= 0.5 {
			logf("  %-24s %8.1f", name, used[name])
		}
	}
	rssPer := (memAfter.rssKB - memBefore.rssKB) / float64(n)
	heapPer := (memAfter.heapBytes - memBefore.heapBytes) / 1024 / float64(n)
	logf("operator memory: RSS %.1f -> %.1f MB, live heap %.1f -> %.1f MB (after a forced GC), peak RSS %.1f MB",
		memBefore.rssKB/1024, memAfter.rssKB/1024, memBefore.heapBytes/(1<<20), memAfter.heapBytes/(1<<20), float64(peakRSS.Load())/1024)
	apiCPU := used["kube-apiserver"]
	fmt.Printf("operator deliveries=%d schedule_all_s=%.1f rss_mb=%.0f rss_kb_per_delivery=%.2f heap_kb_per_delivery=%.2f apiserver_cpu_s=%.1f apiserver_cpu_ms_per_delivery=%.2f apiserver_requests_per_delivery=%.3f api_writes_per_delivery=%.3f finalizer=%s\n",
		n, scheduleAll.Seconds(), float64(peakRSS.Load())/1024, rssPer, heapPer, apiCPU, 1000*apiCPU/float64(n), requests/float64(n), perDelivery, mode)
	return nil
}

func delivery(ns string, i int, campaign string) *v1.Delivery {
	now := time.Now()
	start := now.Add(time.Duration(2+i%20) * time.Hour).Truncate(time.Minute)
	return &v1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("parcel-%05d", i)},
		Spec: v1.DeliverySpec{
			CampaignRef: &v1.CampaignReference{Name: campaign},
			Recipient:   v1.Recipient{Name: "Recipient", Phone: v1.PhoneNumber(fmt.Sprintf("+1415%07d", i)), TimeZone: "America/Los_Angeles"},
			Address:     v1.Address{Line1: fmt.Sprintf("%d Main St", i), City: "San Francisco"},
			Window:      v1.DeliveryWindow{Start: metav1.NewTime(start), End: metav1.NewTime(start.Add(2 * time.Hour))},
			Agent:       v1.Agent{Name: "Route"},
		},
	}
}

// requestKey is one apiserver_request_total series, summed over codes,
// scopes and versions.
type requestKey struct{ resource, verb string }

func (k requestKey) String() string { return k.resource + " " + k.verb }

func (k requestKey) Compare(o requestKey) int { return strings.Compare(k.String(), o.String()) }

// write says whether the request changed something.
func (k requestKey) write() bool {
	switch k.verb {
	case "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY", "CREATE", "UPDATE":
		return true
	}
	return false
}

// requestCounts reads the apiserver's request counters of API resources,
// keyed by "resource/subresource" and verb.
func requestCounts(ctx context.Context, env *testservices.Env) (map[requestKey]float64, error) {
	cs, err := kubernetes.NewForConfig(env.Kube.Config)
	if err != nil {
		return nil, err
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("read apiserver metrics: %w", err)
	}
	out := map[requestKey]float64{}
	for _, m := range samples(raw, "apiserver_request_total") {
		res := m.labels["resource"]
		if res == "" {
			continue // /metrics, /healthz, discovery
		}
		if s := m.labels["subresource"]; s != "" {
			res += "/" + s
		}
		out[requestKey{res, m.labels["verb"]}] += m.value
	}
	return out, nil
}

// sample is one line of a Prometheus text exposition.
type sample struct {
	labels map[string]string
	value  float64
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([0-9.e+-]+)$`)

// samples returns the labelled samples of metric name in a text exposition.
func samples(text []byte, name string) []sample {
	var out []sample
	for _, line := range strings.Split(string(text), "\n") {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil || m[1] != name {
			continue
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(m[2], ",") {
			if kv == "" {
				continue
			}
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = strings.Trim(v, `"`)
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		out = append(out, sample{labels: labels, value: v})
	}
	return out
}

// apiserverProfile is the -apiserver-cpuprofile file.
var apiserverProfile string

// profileAPIServer writes a CPU profile of kube-apiserver to file.
func profileAPIServer(ctx context.Context, env *testservices.Env, file string) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(10 * time.Second):
	}
	cs, err := kubernetes.NewForConfig(env.Kube.Config)
	if err == nil {
		var raw []byte
		raw, err = cs.RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "30").Timeout(time.Minute).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(file, raw, 0o644)
		}
	}
	if err != nil {
		logf("apiserver CPU profile: %v", err)
		return
	}
	logf("apiserver CPU profile written to %s", file)
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// operatorMetrics reads the operator's /metrics.
func operatorMetrics(ctx context.Context, addr string) ([]byte, error) {
	return httpGet(ctx, "http://"+addr+"/metrics")
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return raw, nil
}

// reconcileCounts reads the operator's reconciles by controller and result.
func reconcileCounts(ctx context.Context, addr string) (map[string]float64, error) {
	raw, err := operatorMetrics(ctx, addr)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range samples(raw, "controller_runtime_reconcile_total") {
		if m.value > 0 {
			out[m.labels["controller"]+" "+m.labels["result"]] = m.value
		}
	}
	return out, nil
}

// waitReconciled waits until controller has finished at least n reconciles.
func waitReconciled(ctx context.Context, addr, controller string, n int) error {
	var err error
	for ctx.Err() == nil {
		var counts map[string]float64
		if counts, err = reconcileCounts(ctx, addr); err == nil {
			done := 0.0
			for k, v := range counts {
				if strings.HasPrefix(k, controller+" ") {
					done += v
				}
			}
			if done >= float64(n) {
				return nil
			}
			err = fmt.Errorf("%s reconciles: %.0f of %d", controller, done, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the operator did not start: %v", err)
}

// memFigures is the operator's memory at one moment.
type memFigures struct {
	rssKB     float64
	heapBytes float64
}

// memory forces a garbage collection in the operator (its pprof heap
// endpoint with gc=1), then reads its live heap (go_memstats_heap_alloc_bytes)
// and RSS.
func memory(ctx context.Context, pid int, metricsAddr, pprofAddr string) (memFigures, error) {
	var m memFigures
	if _, err := httpGet(ctx, "http://"+pprofAddr+"/debug/pprof/heap?gc=1"); err != nil {
		return m, fmt.Errorf("force a GC in the operator: %w", err)
	}
	raw, err := operatorMetrics(ctx, metricsAddr)
	if err != nil {
		return m, err
	}
	for _, s := range samples(raw, "go_memstats_heap_alloc_bytes") {
		m.heapBytes = s.value
	}
	m.rssKB = float64(procStatusKB(pid, "VmRSS:"))
	return m, nil
}

// finalizerFigures reads how the operator sets the finalizer of new
// Deliveries and how many it patched.
func finalizerFigures(ctx context.Context, addr string) (mode string, patches float64) {
	mode = "unknown"
	raw, err := operatorMetrics(ctx, addr)
	if err != nil {
		return mode, -1
	}
	for _, s := range samples(raw, "delauto_operator_finalizer_mode") {
		if s.value == 1 {
			mode = s.labels["mode"]
		}
	}
	for _, s := range samples(raw, "delauto_operator_finalizer_patches_total") {
		patches = s.value
	}
	return mode, patches
}

// policyName is the admission policy's name as config/default installs it
// (namePrefix delauto-).
const policyName = "delauto-cancel-calls"

// installFinalizerPolicy creates config/admission's MutatingAdmissionPolicy
// and binding, named as config/default names them, and waits until the
// apiserver applies it (a dry-run create of a Delivery comes back with the
// finalizer).
func installFinalizerPolicy(ctx context.Context, c client.Client, root, ns, campaign string) error {
	raw, err := os.ReadFile(filepath.Join(root, "config", "admission", "finalizer_policy.yaml"))
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return fmt.Errorf("config/admission/finalizer_policy.yaml: %w", err)
		}
		u.SetName(policyName)
		if u.GetKind() == "MutatingAdmissionPolicyBinding" {
			if err := unstructured.SetNestedField(u.Object, policyName, "spec", "policyName"); err != nil {
				return err
			}
		}
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("create %s: %w", u.GetKind(), err)
		}
	}
	for ctx.Err() == nil {
		d := delivery(ns, 99999, campaign)
		err := c.Create(ctx, d, client.DryRunAll)
		if meta.IsNoMatchError(err) {
			// The CRD was just installed and is not served yet.
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("dry-run create of a Delivery: %w", err)
		}
		if slices.Contains(d.Finalizers, "delauto.io/cancel-calls") {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the admission policy did not set the finalizer: %w", ctx.Err())
}

// sampleRSS keeps the peak resident set size (KiB) of pid.
func sampleRSS(ctx context.Context, pid int, peak *atomic.Int64) {
	for ctx.Err() == nil {
		kb := procStatusKB(pid, "VmHWM:")
		if kb < 0 {
			return
		}
		if kb > peak.Load() {
			peak.Store(kb)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// procStatusKB reads one figure (KiB) of /proc/<pid>/status; -1 when the
// process is gone.
func procStatusKB(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field) {
			if f := strings.Fields(line); len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb
			}
		}
	}
	return 0
}
