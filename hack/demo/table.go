package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/workerpod"
)

// view is what the live table follows: the generated campaigns'
// namespaces and Deliveries, and the German sample.
type view struct {
	namespaces     []string
	total          int
	scaleDownDelay time.Duration
	german         *sample
}

// snapshot is what the live table shows at one moment.
type snapshot struct {
	at     time.Time
	phases map[v1.DeliveryPhase]int
	done   int
	calls  int
	shards []shardRow
	// german is the German sample's phase ("" when not followed).
	german v1.DeliveryPhase
	// peak is the most replicas each shard's Deployment asked for so far.
	peak map[string]int32
}

type shardRow struct {
	campaign, shard               string
	replicas, ready               int32
	dueNow, scheduled, inFlight   int64
	deploymentReplicas, available int32
	minReplicas                   int32
}

func (r shardRow) key() string { return r.campaign + "/" + r.shard }

// take reads the Deliveries, campaigns and worker Deployments of the
// namespaces (and the samples' campaigns) and the simulator's call count.
func (v view) take(ctx context.Context, sys *localcluster.System, prev snapshot) (snapshot, error) {
	s := snapshot{at: time.Now(), phases: map[v1.DeliveryPhase]int{}, calls: len(sys.Sim.Creates()), peak: map[string]int32{}}
	for k, n := range prev.peak {
		s.peak[k] = n
	}
	namespaces := v.namespaces
	if v.german != nil {
		namespaces = append(append([]string(nil), namespaces...), sampleNamespace)
		if v.german.due {
			d, err := sampleStatus(ctx, sys)
			if err != nil {
				return prev, err
			}
			s.german = d.Status.Phase
			if s.german == "" {
				s.german = v1.DeliveryPending
			}
		}
	}
	for _, ns := range namespaces {
		if ns != sampleNamespace {
			var dl v1.DeliveryList
			if err := sys.Client.List(ctx, &dl, client.InNamespace(ns)); err != nil {
				return prev, err
			}
			for _, d := range dl.Items {
				p := d.Status.Phase
				if p == "" {
					p = v1.DeliveryPending
				}
				s.phases[p]++
				if p.Finished() {
					s.done++
				}
			}
		}
		var cl v1.CallCampaignList
		if err := sys.Client.List(ctx, &cl, client.InNamespace(ns)); err != nil {
			return prev, err
		}
		var deps appsv1.DeploymentList
		if err := sys.Client.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{controllers.LabelComponent: controllers.ComponentWorker}); err != nil {
			return prev, err
		}
		for _, c := range cl.Items {
			for _, sh := range c.Status.Shards {
				row := shardRow{campaign: ns + "/" + c.Name, shard: sh.Name, replicas: sh.Replicas, ready: sh.ReadyReplicas,
					dueNow: sh.DueNow, scheduled: sh.Scheduled, inFlight: sh.InFlight, minReplicas: 1}
				if m := c.Spec.Workers.MinReplicas; m != nil {
					row.minReplicas = *m
				}
				for _, d := range deps.Items {
					if d.Labels[controllers.LabelCampaign] == c.Name && strings.HasSuffix(d.Name, sh.Name) {
						if d.Spec.Replicas != nil {
							row.deploymentReplicas = *d.Spec.Replicas
						}
						row.available = d.Status.AvailableReplicas
					}
				}
				s.shards = append(s.shards, row)
				s.peak[row.key()] = max(s.peak[row.key()], row.deploymentReplicas)
			}
		}
	}
	sort.Slice(s.shards, func(i, j int) bool {
		return s.shards[i].campaign+s.shards[i].shard < s.shards[j].campaign+s.shards[j].shard
	})
	return s, nil
}

var phaseOrder = []v1.DeliveryPhase{v1.DeliveryPending, v1.DeliveryScheduled, v1.DeliveryCalling, v1.DeliveryConfirmed,
	v1.DeliveryRescheduleRequested, v1.DeliveryInstructionsRecorded, v1.DeliveryUnreachable, v1.DeliveryOptedOut,
	v1.DeliveryCancelled, v1.DeliveryFailed}

// table renders the snapshot.
func (s snapshot) table(total int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  Deliveries done %d/%d   calls placed %d\n", s.at.Format("15:04:05"), s.done, total, s.calls)
	for _, p := range phaseOrder {
		if s.phases[p] > 0 {
			fmt.Fprintf(&b, "  %-22s %5d\n", p, s.phases[p])
		}
	}
	if s.german != "" {
		fmt.Fprintf(&b, "  German sample %s/%s: %s\n", sampleNamespace, sampleDelivery, s.german)
	}
	fmt.Fprintf(&b, "  %-28s %-13s %9s %5s %7s %9s %9s\n", "CAMPAIGN", "SHARD", "REPLICAS", "PEAK", "DUE", "IN-FLIGHT", "SCHEDULED")
	for _, r := range s.shards {
		fmt.Fprintf(&b, "  %-28s %-13s %4d/%-4d %5d %7d %9d %9d\n", r.campaign, r.shard, r.available, r.deploymentReplicas, s.peak[r.key()], r.dueNow, r.inFlight, r.scheduled)
	}
	return b.String()
}

// scaledDown reports whether every shard of the generated campaigns is
// back at its minimum replicas.
func (v view) scaledDown(s snapshot) bool {
	for _, r := range s.shards {
		if !strings.HasPrefix(r.campaign, sampleNamespace+"/") && r.deploymentReplicas > r.minReplicas {
			return false
		}
	}
	return true
}

// live redraws the table in place until every generated Delivery (and the
// German sample, when due) is done and the workers scaled back down, or ctx
// ends. Scaling down waits for scaleDownDelay of surplus, then drains: the
// table goes on for that long plus two minutes at most.
func (v view) live(ctx context.Context, sys *localcluster.System) snapshot {
	var prev snapshot
	var doneAt time.Time
	lines := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s, err := v.take(ctx, sys, prev)
		if err == nil {
			out := s.table(v.total)
			finished := s.done >= v.total && (s.german == "" || s.german.Finished())
			if finished && doneAt.IsZero() {
				doneAt = s.at
			}
			if finished {
				out += fmt.Sprintf("  every call is done; the workers scale down after %s of surplus (this demo's scaleDownDelay), draining idle pods first\n", v.scaleDownDelay)
			}
			if lines > 0 {
				fmt.Printf("\033[%dA\033[J", lines)
			}
			fmt.Print(out)
			lines = strings.Count(out, "\n")
			prev = s
			if finished && (v.scaledDown(s) || s.at.Sub(doneAt) > v.scaleDownDelay+2*time.Minute) {
				return s
			}
		}
		select {
		case <-ctx.Done():
			return prev
		case <-tick.C:
		}
	}
}

// summary says what happened: calls, answers, retries and the workers'
// pickup latency.
func (s snapshot) summary(sys *localcluster.System) string {
	var b strings.Builder
	delivered := 0
	for _, n := range s.phases {
		delivered += n
	}
	retries := s.calls - (delivered - s.phases[v1.DeliveryPending] - s.phases[v1.DeliveryScheduled])
	fmt.Fprintf(&b, "Summary\n  calls %d, confirmations %d, reschedules %d, instructions %d, opt-outs %d, unreachable %d, retries %d\n",
		s.calls, s.phases[v1.DeliveryConfirmed], s.phases[v1.DeliveryRescheduleRequested], s.phases[v1.DeliveryInstructionsRecorded],
		s.phases[v1.DeliveryOptedOut], s.phases[v1.DeliveryUnreachable], max(retries, 0))
	if p95, n, err := pickupP95(sys); err == nil && n > 0 {
		fmt.Fprintf(&b, "  pickup latency p95 %s over %d calls (due time to the worker's start, from the workers' metrics)\n", p95.Round(time.Millisecond), n)
	}
	b.WriteString("  worker replicas per shard, peak -> now:")
	for _, r := range s.shards {
		if !strings.HasPrefix(r.campaign, sampleNamespace+"/") {
			fmt.Fprintf(&b, " %s/%s %d -> %d;", r.campaign, r.shard, s.peak[r.key()], r.deploymentReplicas)
		}
	}
	b.WriteString("\n")
	return b.String()
}

// pickupP95 merges the pickup latency histograms of every running worker.
func pickupP95(sys *localcluster.System) (time.Duration, uint64, error) {
	merged := map[float64]uint64{}
	var count uint64
	for _, p := range sys.Runner.Pods() {
		if p.Labels[controllers.LabelComponent] != controllers.ComponentWorker {
			continue
		}
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/metrics", p.Status.PodIP, workerpod.OpsPort))
		if err != nil {
			continue
		}
		fams, err := parse(resp.Body)
		resp.Body.Close()
		if err != nil {
			continue
		}
		for _, m := range fams["delauto_queue_pickup_latency_seconds"].GetMetric() {
			h := m.GetHistogram()
			count += h.GetSampleCount()
			for _, bk := range h.GetBucket() {
				merged[bk.GetUpperBound()] += bk.GetCumulativeCount()
			}
		}
	}
	if count == 0 {
		return 0, 0, nil
	}
	bounds := make([]float64, 0, len(merged))
	for ub := range merged {
		bounds = append(bounds, ub)
	}
	sort.Float64s(bounds)
	want := uint64(math.Ceil(0.95 * float64(count)))
	for _, ub := range bounds {
		if merged[ub] >= want {
			return time.Duration(ub * float64(time.Second)), count, nil
		}
	}
	return time.Duration(bounds[len(bounds)-1] * float64(time.Second)), count, nil
}

func parse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}
