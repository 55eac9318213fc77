// Command autoscale-bench measures the operator's worker autoscaler on a
// real apiserver (envtest) and a real Redis:
//
//  1. Spikes: a campaign's shard runs one worker; n attempts (100, 1,000,
//     10,000) are queued due now; the time from the start of the enqueue
//     to the Deployment's replicas being patched is read from a watch.
//     Each size is repeated -repeat times.
//  2. Replay: the recorded day in day.csv (calls falling due per minute)
//     is replayed in accelerated fake time through the same autoscaler
//     (real Deployment, real scale patches) with noise on every step; it
//     counts the scale decisions and the flaps (an up, a down and an up
//     again within the scale-down delay). The queue figures of the replay
//     come from a model of the day (calls due, in flight for the average
//     call duration, due within the look-ahead), not from Redis.
//
// Beside the spikes it prints the reaction KEDA's Redis scaler with an HPA
// would have with their defaults (see kedaReaction).
//
// Usage: go run ./hack/bench/autoscale [-repeat 10]
//
// The last line is:
//
//	autoscale reaction_p99_ms=<x> flaps_per_hour=<x>
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/queue"
)

func main() {
	repeat := flag.Int("repeat", 10, "spikes of each size")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	if err := run(*repeat); err != nil {
		fmt.Fprintln(os.Stderr, "autoscale-bench:", err)
		os.Exit(1)
	}
}

func run(repeat int) error {
	root, err := testservices.RepoRoot()
	if err != nil {
		return err
	}
	env, err := testservices.Start(testservices.Want{Kube: true, Redis: true})
	if err != nil {
		return err
	}
	defer env.Stop()
	ctx := context.Background()
	fmt.Printf("machine: %d CPUs; interval 250 ms; spikes repeated %d times\n", numCPU(), repeat)

	var all []time.Duration
	fmt.Println("spike_calls  delauto_p50_ms  delauto_p99_ms  delauto_max_ms  keda_first_patch_p50_s  keda_first_patch_p99_s  keda_at_target_p99_s  target_pods")
	for _, n := range []int{100, 1000, 10000} {
		var ds []time.Duration
		for i := 0; i < repeat; i++ {
			d, err := spike(ctx, env, n, i)
			if err != nil {
				return fmt.Errorf("spike of %d: %w", n, err)
			}
			ds = append(ds, d)
		}
		all = append(all, ds...)
		pods := min(1000, (n+9)/10)
		k := kedaReaction(pods)
		fmt.Printf("%11d  %14.0f  %14.0f  %14.0f  %22.1f  %22.1f  %20.1f  %11d\n", n, ms(pct(ds, 50)), ms(pct(ds, 99)), ms(pct(ds, 100)),
			k.firstP50.Seconds(), k.firstP99.Seconds(), k.targetP99.Seconds(), pods)
	}
	decisions, flaps, hours, err := replay(ctx, env, filepath.Join(root, "hack/bench/autoscale/day.csv"))
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	fmt.Printf("replay: %.0f h of day.csv in fake time, %d scale decisions, %d flaps (up-down-up within the scale-down delay)\n", hours, decisions, flaps)
	fmt.Printf("autoscale reaction_p99_ms=%.0f flaps_per_hour=%.2f\n", ms(pct(all, 99)), float64(flaps)/hours)
	return nil
}

func numCPU() int {
	n := 0
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "processor") {
			n++
		}
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(len(s)-1, i))]
}

func campaign(ns string, maxPods int32) *v1.CallCampaign {
	return &v1.CallCampaign{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench"},
		Spec: v1.CallCampaignSpec{
			Script: v1.CallScript{CompanyName: "Bench"},
			Twilio: v1.TwilioSpec{CredentialsSecretRef: v1.TwilioCredentials{Name: "twilio"}, FromNumbers: []v1.PhoneNumber{"+493012345670"},
				CallbackURL: "https://calls.example.com", CallsPerSecond: 1000},
			Schedule: v1.ScheduleSpec{CallingHours: v1.CallingHours{Start: "00:00", End: "23:59"}},
			Sharding: v1.ShardingSpec{By: v1.ShardByHash, Count: 1},
			Workers: v1.WorkersSpec{MinReplicas: ptr.To[int32](1), MaxReplicas: maxPods, Concurrency: 10,
				AverageCallDuration: &metav1.Duration{Duration: 60 * time.Second}, ScaleDownDelay: &metav1.Duration{Duration: 5 * time.Minute}},
		},
	}
}

func secrets(ns string) []client.Object {
	return []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "twilio"}, Data: map[string][]byte{"accountSID": []byte("AC1"), "authToken": []byte("t")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "delauto-stores"}, Data: map[string][]byte{"REDIS_URL": []byte("redis://r"), "MONGO_URI": []byte("mongodb://m")}},
	}
}

// spike runs the operator's campaign controller and autoscaler for one
// campaign, queues n due attempts and times the replicas patch.
func spike(ctx context.Context, env *testservices.Env, n, i int) (time.Duration, error) {
	ns := fmt.Sprintf("spike-%d-%d-%d", n, i, time.Now().UnixNano()%100000)
	for _, o := range secrets(ns) {
		if err := env.Kube.Client.Create(ctx, o); err != nil {
			return 0, err
		}
	}
	rdb := env.Redis.Client()
	defer rdb.Close()
	q := queue.New(rdb, queue.Options{})
	mgr, err := ctrl.NewManager(env.Kube.Config, ctrl.Options{
		Scheme: env.Kube.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:      cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return 0, err
	}
	if err := controllers.IndexDeliveryPhases(ctx, mgr.GetFieldIndexer()); err != nil {
		return 0, err
	}
	r := &controllers.CallCampaignReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Workers: controllers.WorkerDefaults{Image: "delauto:bench"},
		Queues: controllers.RedisQueueStats{Queue: q}, StatusInterval: 10 * time.Second, Recorder: mgr.GetEventRecorder("delauto-operator"),
		Autoscaler: &controllers.Autoscaler{Figures: controllers.RedisQueueStats{Queue: q}},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return 0, err
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() { stop(); <-done }()
	if err := env.Kube.Client.Create(ctx, campaign(ns, 1000)); err != nil {
		return 0, err
	}
	name := controllers.WorkerDeploymentName("bench", "shard-0")
	wc, err := client.NewWithWatch(env.Kube.Config, client.Options{Scheme: env.Kube.Scheme})
	if err != nil {
		return 0, err
	}
	// Wait for the Deployment at one replica, then watch it from there.
	var rv string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		d := &appsv1.Deployment{}
		if err := env.Kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err == nil && ptr.Deref(d.Spec.Replicas, 0) == 1 {
			rv = d.ResourceVersion
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no worker Deployment at 1 replica")
		}
	}
	var list appsv1.DeploymentList
	w, err := wc.Watch(ctx, &list, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, FieldSelector: "metadata.name=" + name}})
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	entries := make([]queue.Entry, n)
	now := time.Now()
	for j := range entries {
		entries[j] = queue.Entry{Shard: queue.Shard{Namespace: ns, Campaign: "bench", Name: "shard-0"}, ID: fmt.Sprintf("a-%d", j), Due: now.Add(-time.Second)}
	}
	start := time.Now()
	if _, err := q.ScheduleBatch(ctx, entries); err != nil {
		return 0, err
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return 0, fmt.Errorf("watch ended")
			}
			if d, isDep := ev.Object.(*appsv1.Deployment); isDep && ev.Type == watch.Modified && ptr.Deref(d.Spec.Replicas, 1) > 1 {
				return time.Since(start), nil
			}
		case <-timeout:
			return 0, fmt.Errorf("replicas not patched within 60 s")
		}
	}
}

// kedaFigures is the reaction of KEDA's Redis scaler driving an HPA with
// their defaults, for a spike asking for pods replicas from one.
type kedaFigures struct{ firstP50, firstP99, targetP99 time.Duration }

// kedaReaction computes, by simulation over uniformly random spike times,
// when KEDA+HPA with default settings first patch replicas and when they
// reach the target:
//   - KEDA polls the scaler every pollingInterval = 30 s (the spike waits
//     U(0, 30 s) to be seen);
//   - the HPA controller syncs every 15 s (--horizontal-pod-autoscaler-sync-period),
//     so the patch waits another U(0, 15 s) after KEDA's metric changes;
//   - the HPA's default scale-up policy allows at most max(100 %, 4 pods)
//     more per 15 s period, so reaching the target takes further 15 s steps
//     (1 -> 5 -> 10 -> 20 -> 40 ...).
//
// API and metrics-server round trips are left out (they only add).
func kedaReaction(pods int) kedaFigures {
	rng := rand.New(rand.NewPCG(16, 16))
	var first, target []time.Duration
	steps := 0
	for n := 1; n < pods; steps++ {
		n = max(2*n, n+4)
	}
	for i := 0; i < 100000; i++ {
		f := time.Duration(rng.Float64()*30e9) + time.Duration(rng.Float64()*15e9)
		first = append(first, f)
		target = append(target, f+time.Duration(max(0, steps-1))*15*time.Second)
	}
	return kedaFigures{firstP50: pct(first, 50), firstP99: pct(first, 99), targetP99: pct(target, 99)}
}

// dayModel turns day.csv into the figures the autoscaler reads at a moment.
type dayModel struct {
	perMinute []float64
	avg       time.Duration
	lookAhead time.Duration
	start     time.Time
	rng       *rand.Rand
}

// between is the calls falling due in [a, b), spread evenly over each minute.
func (m *dayModel) between(a, b time.Time) float64 {
	total := 0.0
	for t := a; t.Before(b); {
		min := int(t.Sub(m.start) / time.Minute)
		end := m.start.Add(time.Duration(min+1) * time.Minute)
		if end.After(b) {
			end = b
		}
		if min >= 0 && min < len(m.perMinute) {
			total += m.perMinute[min] * end.Sub(t).Seconds() / 60
		}
		t = end
	}
	return total
}

// ShardFigures implements controllers.ScaleFigures: the calls due in the
// last 10 s still waiting, those in flight (due within the last average
// call duration), those due within the look-ahead, each with +-20 % noise.
func (m *dayModel) ShardFigures(_ context.Context, _, _ string, shards []string, now time.Time, horizon time.Duration) (map[string]controllers.ScaleInputs, error) {
	noise := func(x float64) int64 { return int64(math.Max(0, x*(0.8+0.4*m.rng.Float64()))) }
	in := controllers.ScaleInputs{
		Now:      now,
		Waiting:  noise(m.between(now.Add(-10*time.Second), now)),
		InFlight: noise(m.between(now.Add(-m.avg), now.Add(-10*time.Second))),
		DueSoon:  noise(m.between(now, now.Add(horizon))),
	}
	out := map[string]controllers.ScaleInputs{}
	for _, s := range shards {
		out[s] = in
	}
	return out, nil
}

func readDay(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "minute") {
			continue
		}
		_, v, ok := strings.Cut(line, ",")
		if !ok {
			return nil, fmt.Errorf("bad line %q", line)
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, sc.Err()
}

type change struct {
	at       time.Time
	from, to int32
}

// replay runs the day through the autoscaler in fake time, one decision
// every 10 s of the day, and counts decisions and flaps.
func replay(ctx context.Context, env *testservices.Env, path string) (decisions, flaps int, hours float64, err error) {
	day, err := readDay(path)
	if err != nil {
		return 0, 0, 0, err
	}
	ns := fmt.Sprintf("replay-%d", time.Now().UnixNano()%100000)
	for _, o := range secrets(ns) {
		if err := env.Kube.Client.Create(ctx, o); err != nil {
			return 0, 0, 0, err
		}
	}
	c := campaign(ns, 100)
	if err := env.Kube.Client.Create(ctx, c); err != nil {
		return 0, 0, 0, err
	}
	start := time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	model := &dayModel{perMinute: day, avg: c.Spec.Workers.AverageCallDuration.Duration, lookAhead: controllers.DefaultLookAhead, start: start, rng: rand.New(rand.NewPCG(1, 2))}
	a := &controllers.Autoscaler{Client: env.Kube.Client, APIReader: env.Kube.Client, Figures: model, Clock: clk, Log: logr.Discard()}
	// The drain Secret and the Deployment the reconciler would write.
	drain := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: controllers.DrainSecretName("bench")}, Data: map[string][]byte{workerpod.DrainTokenFile: []byte("x")}}
	if err := env.Kube.Client.Create(ctx, drain); err != nil {
		return 0, 0, 0, err
	}
	if err := env.Kube.Client.Apply(ctx, controllers.WorkerDefaults{Image: "delauto:bench"}.Deployment(c, "shard-0", 1), client.FieldOwner(controllers.FieldOwner)); err != nil {
		return 0, 0, 0, err
	}
	a.Track(c, []string{"shard-0"}, false)
	key := client.ObjectKeyFromObject(c)
	var changes []change
	var last *v1.ScaleRecord
	end := start.Add(time.Duration(len(day)) * time.Minute)
	for ; clk.Now().Before(end); clk.Step(10 * time.Second) {
		a.RunOnce(ctx)
		a.WaitSteps()
		if rep, ok := a.Report(key, "shard-0"); ok && rep.Last != nil && (last == nil || *rep.Last != *last) {
			l := *rep.Last
			last = &l
			changes = append(changes, change{at: clk.Now(), from: l.From, to: l.To})
		}
	}
	delay := c.Spec.Workers.ScaleDownDelay.Duration
	for i := 2; i < len(changes); i++ {
		a, b, cc := changes[i-2], changes[i-1], changes[i]
		if a.to > a.from && b.to < b.from && cc.to > cc.from && cc.at.Sub(a.at) <= delay {
			flaps++
		}
	}
	return len(changes), flaps, end.Sub(start).Hours(), nil
}
