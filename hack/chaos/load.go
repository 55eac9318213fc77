package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/hack/internal/procs"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/periodic"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

// The load profile finds the whole system's ceiling on this machine: the
// same installation as the chaos run, no faults, and Deliveries due at
// once created at a rising rate, one step after another. A step passes
// when every Delivery of it was called and the time from its create
// request to its call reaching the simulator has p99 within the limit.

// loadOptions say how the load profile climbs.
type loadOptions struct {
	rates []float64     // Deliveries per second, one step each
	step  time.Duration // how long each rate is held
	limit time.Duration // the pickup p99 a step must stay within
}

// loadDelivery is one Delivery the load profile created.
type loadDelivery struct {
	ns, name, number string
	created          time.Time // just before its create request
	failed           bool      // the apiserver refused it
}

// loadStep is one rate held for a step, and what it measured.
type loadStep struct {
	rate       float64
	start, end time.Time
	deliveries []*loadDelivery
	// cpu is the CPU seconds each component used in the step; busy and
	// total the machine's (all cores).
	cpu         procs.CPU
	busy, total float64
	// rows is the call log's cost in PostgreSQL per Delivery of the step,
	// by collection (rowsPerDelivery); empty when it could not be read.
	rows []string

	called    int
	pickup    []time.Duration // create request to call, of the called
	calls     map[string]twiliosim.CreateRecord
	missing   int
	plan      []time.Duration // create request to the attempt in the call log
	queue     []time.Duration // attempt due to claimed by a worker
	dial      []time.Duration // claimed to the call at the simulator
	decompose int             // attempts read for plan, queue and dial
}

// ok is whether the step was sustained: everyone called, p99 within limit.
func (st *loadStep) ok(limit time.Duration) bool {
	return st.missing == 0 && len(st.deliveries) > 0 && pct(st.pickup, 0.99) <= limit
}

// cores is the average cores a component used during the step.
func (st *loadStep) cores(name string) float64 {
	return st.cpu[name] / st.end.Sub(st.start).Seconds()
}

// loadCampaign is what each load campaign allows: the fleet's slots and
// rate are set high so the machine, not the campaign, sets the ceiling.
var loadCampaign = localcluster.CampaignOptions{HoursStart: "06:00", HoursEnd: "20:00", MaxAttempts: 1, Regions: regions,
	CallsPerSecond: 200, Concurrency: 100, MaxReplicas: 4}

// runLoad runs the load profile and prints its table and summary line;
// ok is false when a call was duplicated or the system never came up.
func runLoad(ctx context.Context, cfg config, lo loadOptions) (bool, error) {
	fmt.Printf(">> load: Deliveries due at once at %s a second, %s each, until the pickup p99 (create request to call) exceeds %s; run folder %s\n",
		joinRates(lo.rates), lo.step, lo.limit, cfg.dir)
	logf, err := createRunLog(cfg.dir)
	if err != nil {
		return false, err
	}
	defer logf.Close()

	// Calls run at a tenth of real time: a call's slot is free again in
	// seconds, so the fleet's slots do not set the ceiling; every callback
	// of a call still comes.
	sys, err := localcluster.StartSystem(ctx, localcluster.SystemOptions{
		Repo: cfg.repo, Bin: filepath.Join(cfg.repo, "bin"), Dir: cfg.dir, OperatorReplicas: 2,
		Sim:      twiliosim.Options{TimeScale: 0.1, Lean: true, Seed: int64(cfg.seed)},
		Progress: os.Stdout,
	})
	if err != nil {
		return false, err
	}
	defer sys.Stop()

	zone := etcZone(noonOffset(time.Now()))
	for _, c := range campaigns {
		o := loadCampaign
		o.Namespace, o.Name = c.ns, c.name
		if err := sys.Apply(ctx, sys.Campaign(o)); err != nil {
			return false, err
		}
		if err := sys.RouteCallbacks(c.ns, c.name); err != nil {
			return false, err
		}
	}
	fmt.Printf(">> recipients in %s (calling hours %s-%s there, open all along); waiting for a worker of every shard\n", zone, loadCampaign.HoursStart, loadCampaign.HoursEnd)
	if err := localcluster.WaitFor(ctx, 3*time.Minute, func() error { return workersReady(ctx, sys.Client) }); err != nil {
		return false, fmt.Errorf("the workers did not start: %w", err)
	}
	// Before the first timed create, a Delivery must be creatable: for a
	// while after the CRDs were created, the apiserver's admission (the
	// finalizer policy) refuses a create with "Resource kind ... not found"
	// (a list passes). A dry run goes through admission and stores nothing.
	if err := localcluster.WaitFor(ctx, time.Minute, func() error {
		_, d := nthLoadDelivery(0, zone)
		return sys.Client.Create(ctx, d, client.DryRunAll)
	}); err != nil {
		return false, fmt.Errorf("a Delivery cannot be created: %w", err)
	}

	name := componentNamer()
	var steps []*loadStep
	n := 0
	for _, rate := range lo.rates {
		st := &loadStep{rate: rate}
		cpu0 := procs.AllCPUBy(name)
		busy0, total0 := procs.MachineCPU()
		rows0, rowsErr := callLogRows(sys.Services.Mongo)
		st.start = time.Now()
		n = streamStep(ctx, sys.Client, st, lo.step, zone, n, logf)
		st.end = time.Now()
		busy1, total1 := procs.MachineCPU()
		st.cpu, st.busy, st.total = procs.AllCPUBy(name).Minus(cpu0), busy1-busy0, total1-total0
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		// Wait for the step's calls: until all came, or the limit is
		// missed by far.
		_ = localcluster.WaitFor(ctx, 10*lo.limit+10*time.Second, func() error {
			st.measure(sys.Sim)
			if st.missing > 0 {
				return fmt.Errorf("%d not called yet", st.missing)
			}
			return nil
		})
		st.measure(sys.Sim)
		// The step's Deliveries' writes, their calls' included (PostgreSQL
		// publishes its counters up to 10 s late).
		if rows1, err := callLogRows(sys.Services.Mongo); err == nil && rowsErr == nil {
			st.rows = rowsPerDelivery(rows0, rows1, len(st.deliveries))
		} else {
			fmt.Fprintln(logf, "the call log's row counters could not be read:", cmp.Or(rowsErr, err))
		}
		steps = append(steps, st)
		printStepRow(os.Stdout, st, lo.limit, len(steps) == 1)
		describeMissing(ctx, sys.Client, st, io.MultiWriter(os.Stdout, logf))
		if !st.ok(lo.limit) {
			break
		}
		// Let the fleet settle before the next rate.
		periodic.Sleep(ctx, 5*time.Second)
	}

	fmt.Println(">> reading the call log: where the time went (a sample of each step's attempts)")
	if err := decompose(ctx, sys, steps); err != nil {
		fmt.Fprintln(os.Stdout, "   the call log could not be read:", err)
	}
	dups := localcluster.DuplicateCalls(sys.Sim)
	printLoadReport(os.Stdout, steps, lo, dups)
	printLoadReport(logf, steps, lo, dups)
	// A system that cannot sustain the lowest rate is a failed run: its
	// logs are kept.
	return len(dups) == 0 && len(steps) > 0 && steps[0].ok(lo.limit), nil
}

// describeMissing says where up to five of a step's Deliveries that were
// not called stand: their phase and Ready condition.
func describeMissing(ctx context.Context, c client.Client, st *loadStep, w io.Writer) {
	shown := 0
	for _, d := range st.deliveries {
		if _, called := st.calls[d.number]; called || shown == 5 {
			continue
		}
		shown++
		if d.failed {
			fmt.Fprintf(w, "   not called: %s/%s, its create was refused (chaos.log)\n", d.ns, d.name)
			continue
		}
		var got v1.Delivery
		if err := c.Get(ctx, client.ObjectKey{Namespace: d.ns, Name: d.name}, &got); err != nil {
			fmt.Fprintf(w, "   not called: %s/%s: %v\n", d.ns, d.name, err)
			continue
		}
		ready := "no Ready condition"
		for _, cd := range got.Status.Conditions {
			if cd.Type == "Ready" {
				ready = fmt.Sprintf("Ready %s %s: %s", cd.Status, cd.Reason, cd.Message)
			}
		}
		fmt.Fprintf(w, "   not called: %s/%s created %s, phase %q, %s\n", d.ns, d.name, d.created.Format("15:04:05.000"), got.Status.Phase, ready)
	}
}

// joinRates lists rates as "2, 4, 8".
func joinRates(rates []float64) string {
	out := make([]string, len(rates))
	for i, r := range rates {
		out[i] = fmt.Sprintf("%g", r)
	}
	return strings.Join(out, ", ")
}

// noonOffset is the whole-hour UTC offset whose local time is between
// 12:00 and 13:00 at t.
func noonOffset(t time.Time) int {
	off := 12 - t.UTC().Hour()
	if off < -12 {
		off += 24
	}
	if off > 14 {
		off -= 24
	}
	return off
}

// workersReady is nil once every shard of every campaign has a ready
// worker.
func workersReady(ctx context.Context, c client.Client) error {
	for _, cp := range campaigns {
		var list appsv1.DeploymentList
		if err := c.List(ctx, &list, client.InNamespace(cp.ns)); err != nil {
			return err
		}
		ready := 0
		for _, d := range list.Items {
			if d.Status.ReadyReplicas > 0 {
				ready++
			}
		}
		if ready < len(regions) {
			return fmt.Errorf("campaign %s/%s: %d of %d shards have a ready worker", cp.ns, cp.name, ready, len(regions))
		}
	}
	return nil
}

// streamStep creates Deliveries due at once at st.rate for length, up to
// 64 creates in flight; n numbers them across steps. It returns the next n.
// nthLoadDelivery is the load's k-th Delivery, due at once, with a
// number of its own, for recipients in zone.
func nthLoadDelivery(k int, zone string) (*loadDelivery, *v1.Delivery) {
	cp := campaigns[k%len(campaigns)]
	ld := &loadDelivery{ns: cp.ns, name: fmt.Sprintf("load-%06d", k), number: fmt.Sprintf("+1415%03d%04d", 200+k/10000, k%10000)}
	now := time.Now().UTC().Truncate(time.Second)
	return ld, &v1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Namespace: cp.ns, Name: ld.name, Labels: map[string]string{"delauto.io/campaign": cp.name}},
		Spec: v1.DeliverySpec{
			Recipient: v1.Recipient{Name: "Recipient " + ld.name, Phone: v1.PhoneNumber(ld.number), TimeZone: v1.TimeZone(zone), Language: "en-US"},
			Address:   v1.Address{Line1: "1 Main St", City: "Springfield", PostalCode: "12345", Country: "US"},
			Region:    regions[(k/len(campaigns))%len(regions)],
			Window:    v1.DeliveryWindow{Start: metav1.NewTime(now), End: metav1.NewTime(now.Add(2 * time.Hour))},
			Agent:     routeAgent(k),
		},
	}
}

func streamStep(ctx context.Context, c client.Client, st *loadStep, length time.Duration, zone string, n int, log io.Writer) int {
	count := int(st.rate * length.Seconds())
	every := time.Duration(float64(time.Second) / st.rate)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range count {
		if !periodic.Sleep(ctx, time.Until(st.start.Add(time.Duration(i)*every))) {
			break
		}
		k := n + i
		ld, d := nthLoadDelivery(k, zone)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ld.created = time.Now()
			if err := c.Create(ctx, d); err != nil {
				ld.failed = true
				mu.Lock()
				fmt.Fprintf(log, "%s create %s/%s: %v\n", time.Now().Format("15:04:05.000"), ld.ns, ld.name, err)
				mu.Unlock()
			}
		}()
		st.deliveries = append(st.deliveries, ld)
		n = k + 1
	}
	wg.Wait()
	return n
}

// measure matches the step's Deliveries with their first call at the
// simulator (by number: each Delivery has its own).
func (st *loadStep) measure(sim *twiliosim.Sim) {
	first := map[string]twiliosim.CreateRecord{}
	for _, r := range sim.Creates() {
		if r.Created() {
			if _, ok := first[r.To]; !ok {
				first[r.To] = r
			}
		}
	}
	st.called, st.missing, st.pickup = 0, 0, st.pickup[:0]
	st.calls = map[string]twiliosim.CreateRecord{}
	for _, d := range st.deliveries {
		r, ok := first[d.number]
		if !ok || d.failed {
			st.missing++
			continue
		}
		st.called++
		st.calls[d.number] = r
		st.pickup = append(st.pickup, r.Time.Sub(d.created))
	}
}

// decompose reads a sample of each step's attempts from the call log and
// splits the pickup into planning (create request to the attempt in the
// call log: the apiserver and the operator), queueing (the attempt due to
// a worker's claim: Redis and the workers) and dialing (the claim to the
// call at the simulator: the worker, the call log and the Twilio client).
func decompose(ctx context.Context, sys *localcluster.System, steps []*loadStep) error {
	st0, err := store.Open(ctx, store.Config{URI: sys.Services.Mongo.URI, Database: stores.DefaultMongoDatabase, InsightsFlush: -1})
	if err != nil {
		return err
	}
	defer st0.Close(context.Background())
	rng := rand.New(rand.NewPCG(1, 2))
	for _, st := range steps {
		ds := slices.Clone(st.deliveries)
		rng.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
		for _, d := range ds {
			if st.decompose >= 200 {
				break
			}
			r, ok := st.calls[d.number]
			if !ok || r.AttemptID == "" {
				continue
			}
			a, err := st0.Get(ctx, r.AttemptID)
			if err != nil || a.ClaimedAt == nil {
				continue
			}
			st.decompose++
			due := a.Due
			if due.Before(a.CreatedAt) {
				due = a.CreatedAt
			}
			st.plan = append(st.plan, a.CreatedAt.Sub(d.created))
			st.queue = append(st.queue, a.ClaimedAt.Sub(due))
			st.dial = append(st.dial, r.Time.Sub(*a.ClaimedAt))
		}
	}
	return nil
}

// componentNamer names a process by the part of the system it is.
func componentNamer() func(procs.Process) string {
	me := os.Getpid()
	// Other processes go by their command name.
	return func(p procs.Process) string {
		if p.PID == me {
			return "harness" // the simulator, the pod runner, the stream
		}
		switch p.Command {
		case "postgres", "ferretdb", "redis-server", "etcd", "kube-apiserver", "kube-scheduler", "kwok":
			return p.Command
		case "kube-controller":
			return "kube-controller-manager"
		case "delauto":
			if args := procs.Args(p.PID); len(args) > 1 {
				return "delauto " + args[1]
			}
		}
		return p.Command
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }

// topComponents are the components that used the most CPU in a step, as
// "name cores".
func topComponents(st *loadStep, n int) []string {
	names := make([]string, 0, len(st.cpu))
	for k := range st.cpu {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return st.cpu[names[i]] > st.cpu[names[j]] })
	var out []string
	for _, k := range names[:min(n, len(names))] {
		out = append(out, fmt.Sprintf("%s %.2f", k, st.cores(k)))
	}
	return out
}

// perDelivery is the CPU each of the n largest components used per
// Delivery created in the step, in ms, and their total.
func perDelivery(st *loadStep, n int) []string {
	if len(st.deliveries) == 0 {
		return nil
	}
	names := make([]string, 0, len(st.cpu))
	total := 0.0
	for k, v := range st.cpu {
		names = append(names, k)
		total += v
	}
	sort.Slice(names, func(i, j int) bool { return st.cpu[names[i]] > st.cpu[names[j]] })
	each := func(sec float64) float64 { return 1000 * sec / float64(len(st.deliveries)) }
	out := []string{fmt.Sprintf("total %.0f", each(total))}
	for _, k := range names[:min(n, len(names))] {
		out = append(out, fmt.Sprintf("%s %.0f", k, each(st.cpu[k])))
	}
	return out
}

func printStepRow(w io.Writer, st *loadStep, limit time.Duration, header bool) {
	if header {
		fmt.Fprintf(w, "   %-6s %-9s %-7s %-22s %-6s %-5s %s\n", "rate/s", "created", "called", "pickup p50/p99/max ms", "pass", "busy", "top CPU (cores)")
	}
	pass := "yes"
	if !st.ok(limit) {
		pass = "NO"
	}
	fmt.Fprintf(w, "   %-6g %-9d %-7d %-22s %-6s %3.0f%%  %s\n", st.rate, len(st.deliveries), st.called,
		ms(pct(st.pickup, 0.5))+"/"+ms(pct(st.pickup, 0.99))+"/"+ms(pct(st.pickup, 1)), pass, 100*st.busy/st.total, strings.Join(topComponents(st, 4), ", "))
}

// printLoadReport prints the steps with where the time went, the CPU by
// component at the step that failed (or the last), the bottleneck and the
// summary line.
func printLoadReport(w io.Writer, steps []*loadStep, lo loadOptions, dups []string) {
	fmt.Fprintf(w, "\n== load: %d steps of %s, limit pickup p99 <= %s, machine %d cores, %s\n", len(steps), lo.step, lo.limit, runtime.NumCPU(), procs.MemGiB())
	fmt.Fprintf(w, "   %-6s %-7s %-7s %-15s %-15s %-15s %-15s %s\n", "rate/s", "created", "called", "pickup p50/p99", "plan p50/p99", "queue p50/p99", "dial p50/p99", "busy")
	ceiling, last := 0.0, (*loadStep)(nil)
	for _, st := range steps {
		fmt.Fprintf(w, "   %-6g %-7d %-7d %-15s %-15s %-15s %-15s %.0f%%\n", st.rate, len(st.deliveries), st.called,
			ms(pct(st.pickup, 0.5))+"/"+ms(pct(st.pickup, 0.99)), ms(pct(st.plan, 0.5))+"/"+ms(pct(st.plan, 0.99)),
			ms(pct(st.queue, 0.5))+"/"+ms(pct(st.queue, 0.99)), ms(pct(st.dial, 0.5))+"/"+ms(pct(st.dial, 0.99)), 100*st.busy/st.total)
		last = st
		if !st.ok(lo.limit) {
			break
		}
		ceiling = st.rate
	}
	if last == nil {
		fmt.Fprintln(w, "load ceiling_deliveries_per_s=0 bottleneck=none (no step ran)")
		return
	}
	fmt.Fprintln(w, "   CPU per Delivery by component (ms of CPU; the cost to size from, see docs/operations.md):")
	for _, st := range steps {
		fmt.Fprintf(w, "   %-6g %s\n", st.rate, strings.Join(perDelivery(st, 9), ", "))
	}
	fmt.Fprintf(w, "   CPU by component at %g/s (cores): %s\n", last.rate, strings.Join(topComponents(last, 12), ", "))
	fmt.Fprintln(w, "   the call log's rows in PostgreSQL per Delivery, by collection (inserted, updated, deleted, table scans):")
	for _, st := range steps {
		if len(st.rows) > 0 {
			fmt.Fprintf(w, "   %-6g %s\n", st.rate, strings.Join(st.rows[:min(len(st.rows), 8)], "; "))
		}
	}
	stage, worst := "planning (apiserver and operator)", pct(last.plan, 0.99)
	if q := pct(last.queue, 0.99); q > worst {
		stage, worst = "queueing (Redis and workers)", q
	}
	if d := pct(last.dial, 0.99); d > worst {
		stage, worst = "dialing (worker, call log, Twilio client)", d
	}
	reached := "the last step failed"
	if last.ok(lo.limit) {
		reached = "not reached: every step passed; add higher -rates"
	}
	top := topComponents(last, 1)
	fmt.Fprintf(w, "   ceiling: %g Deliveries/s (%s); at %g/s the slowest stage is %s (p99 %s ms), the machine is %.0f%% busy, the largest CPU user %s cores\n",
		ceiling, reached, last.rate, stage, ms(worst), 100*last.busy/last.total, strings.Join(top, ""))
	for _, d := range dups {
		fmt.Fprintln(w, "   DUPLICATE:", d)
	}
	fmt.Fprintf(w, "load ceiling_deliveries_per_s=%g pickup_p99_ms_at_ceiling=%s stage=%q top_cpu=%q duplicate_calls=%d\n",
		ceiling, ms(p99At(steps, ceiling)), strings.Fields(stage)[0], strings.Join(top, ""), len(dups))
}

// p99At is the pickup p99 of the step at rate.
func p99At(steps []*loadStep, rate float64) time.Duration {
	for _, st := range steps {
		if st.rate == rate {
			return pct(st.pickup, 0.99)
		}
	}
	return 0
}
