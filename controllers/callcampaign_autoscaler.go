package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/queue"
)

// +kubebuilder:rbac:groups=apps,resources=deployments/scale,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;patch

// PodDeletionCostAnnotation tells the ReplicaSet controller which pods to
// remove first when replicas are lowered: the lowest cost goes first.
const PodDeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// DrainedPodDeletionCost is the cost the autoscaler gives the pods it drained.
const DrainedPodDeletionCost = "-1000"

// ScaleFigures reads the figures the autoscaler decides from, as seen at now:
// due now, in flight and due within horizon, per shard (O(1) and O(log n)
// Redis reads, one pipeline per campaign).
type ScaleFigures interface {
	ShardFigures(ctx context.Context, namespace, campaign string, shards []string, now time.Time, horizon time.Duration) (map[string]ScaleInputs, error)
}

// CallDurations reads a campaign's average call duration over the calls
// that ended recently (before now) and how many ended; the average is zero
// when too few did (the campaign's averageCallDuration is used). LastCall
// is when the campaign last placed a call (zero: not recently).
type CallDurations interface {
	AverageCallDuration(ctx context.Context, namespace, campaign string, now time.Time) (avg time.Duration, calls int64, err error)
	LastCall(ctx context.Context, namespace, campaign string) (time.Time, error)
}

// ShardFigures implements ScaleFigures on the workers' queues.
func (r RedisQueueStats) ShardFigures(ctx context.Context, namespace, campaign string, shards []string, now time.Time, horizon time.Duration) (map[string]ScaleInputs, error) {
	qs := make([]queue.Shard, len(shards))
	for i, s := range shards {
		qs[i] = queue.Shard{Namespace: namespace, Campaign: campaign, Name: s}
	}
	st, err := r.Queue.StatsAt(ctx, qs, now, horizon)
	if err != nil {
		return nil, err
	}
	out := make(map[string]ScaleInputs, len(st))
	for _, s := range st {
		out[s.Shard.Name] = ScaleInputs{Now: now, Waiting: s.Waiting(), InFlight: s.InFlight, DueSoon: s.DueSoon}
	}
	return out, nil
}

// Autoscaler decides every shard's worker replicas from its queue figures
// in a loop of its own (Interval, 250 ms by default), apart from the
// reconciles: a spike is patched through the Deployment's scale subresource
// within one interval plus one Redis round trip and one API call. Steps
// down drain the pods removed first (see stepDown).
//
// The campaign reconciler tells it which campaigns to scale (Track,
// Forget), applies the replicas it decided (WithReplicas) and writes what
// it did into the status (Report); the autoscaler asks for such a
// reconcile on Events after each change.
type Autoscaler struct {
	// Client patches the scale subresource and pod annotations and reads
	// Deployments (from the cache).
	Client client.Client
	// APIReader lists a shard's pods and reads the drain Secret directly:
	// the operator neither watches pods nor lists Secrets.
	APIReader client.Reader
	// Figures reads the queue figures.
	Figures ScaleFigures
	// Durations reads the average length of recent calls (RedisRates); nil
	// uses the campaign's averageCallDuration.
	Durations CallDurations
	// Clock is the decisions' time; nil is the real clock.
	Clock clock.PassiveClock
	// Interval is how often each campaign's figures are read; default 250ms.
	Interval time.Duration
	// OpsPort is the workers' ops port; default workerpod.OpsPort.
	OpsPort int
	// PodAddress returns host:port of a pod's ops endpoint; nil is the
	// pod IP and OpsPort.
	PodAddress func(*corev1.Pod) string
	// HTTPClient calls the workers' /drain; nil uses a client with a 5 s timeout.
	HTTPClient *http.Client
	// DrainTimeout bounds how long a step down waits for an idle pod to
	// report drained; default 30s. A pod that does not is resumed and kept.
	DrainTimeout time.Duration
	// Metrics records decisions; nil records none.
	Metrics *ScaleMetrics
	// Log is the autoscaler's logger.
	Log logr.Logger

	mu        sync.Mutex
	steps     sync.WaitGroup
	campaigns map[types.NamespacedName]*trackedCampaign
	events    chan event.GenericEvent
}

type trackedCampaign struct {
	campaign *v1.CallCampaign
	shards   []string
	// stopped: suspended, degraded or held; the reconciler sets replicas.
	stopped  bool
	redisErr error
	state    map[string]*shardState
}

type shardState struct {
	shardScaler
	// apply serializes the reconciler's apply of replicas with the
	// autoscaler's scale patches.
	apply sync.Mutex
	// replicas is the count decided last; decided is false until the first.
	replicas int32
	decided  bool
	target   ScaleTarget
	last     *v1.ScaleRecord
	stepping bool
}

// Events are the campaigns whose scale changed; the reconciler watches it.
func (a *Autoscaler) Events() <-chan event.GenericEvent {
	a.init()
	return a.events
}

func (a *Autoscaler) init() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.campaigns == nil {
		a.campaigns = map[types.NamespacedName]*trackedCampaign{}
		a.events = make(chan event.GenericEvent, 1024)
	}
}

func (a *Autoscaler) now() time.Time {
	if a.Clock != nil {
		return a.Clock.Now()
	}
	return time.Now()
}

// Track tells the autoscaler a campaign's spec and shards; stopped campaigns
// (suspended, degraded, held) are not scaled by it.
func (a *Autoscaler) Track(c *v1.CallCampaign, shards []string, stopped bool) {
	a.init()
	a.mu.Lock()
	defer a.mu.Unlock()
	key := client.ObjectKeyFromObject(c)
	tc := a.campaigns[key]
	if tc == nil {
		tc = &trackedCampaign{state: map[string]*shardState{}}
		a.campaigns[key] = tc
	}
	tc.campaign, tc.shards, tc.stopped = c.DeepCopy(), append([]string(nil), shards...), stopped
	keep := map[string]bool{}
	for _, s := range shards {
		keep[s] = true
		if tc.state[s] == nil {
			tc.state[s] = &shardState{}
		}
		if stopped {
			// The reconciler runs no workers; decide afresh when it resumes.
			tc.state[s].decided, tc.state[s].shardScaler = false, shardScaler{}
		}
	}
	for s := range tc.state {
		if !keep[s] {
			delete(tc.state, s)
			a.Metrics.forget(key.Namespace, key.Name, s)
		}
	}
}

// Forget stops scaling a deleted campaign.
func (a *Autoscaler) Forget(key types.NamespacedName) {
	a.init()
	a.mu.Lock()
	defer a.mu.Unlock()
	if tc := a.campaigns[key]; tc != nil {
		for s := range tc.state {
			a.Metrics.forget(key.Namespace, key.Name, s)
		}
	}
	delete(a.campaigns, key)
}

func (a *Autoscaler) shard(key types.NamespacedName, shard string) *shardState {
	a.mu.Lock()
	defer a.mu.Unlock()
	if tc := a.campaigns[key]; tc != nil {
		return tc.state[shard]
	}
	return nil
}

// WithReplicas runs apply with the replicas decided for a shard (ok false
// when none was decided yet), while no scale patch of the shard runs.
func (a *Autoscaler) WithReplicas(key types.NamespacedName, shard string, apply func(replicas int32, ok bool) error) error {
	st := a.shard(key, shard)
	if st == nil {
		return apply(0, false)
	}
	st.apply.Lock()
	defer st.apply.Unlock()
	a.mu.Lock()
	n, ok := st.replicas, st.decided
	a.mu.Unlock()
	return apply(n, ok)
}

// ShardReport is what the autoscaler last did and saw for a shard.
type ShardReport struct {
	Last   *v1.ScaleRecord
	Target ScaleTarget
	// RedisErr is set while the queue figures cannot be read: replicas are held.
	RedisErr error
}

// Report returns what the autoscaler last did and saw for a shard.
func (a *Autoscaler) Report(key types.NamespacedName, shard string) (ShardReport, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tc := a.campaigns[key]
	if tc == nil || tc.state[shard] == nil {
		return ShardReport{}, false
	}
	st := tc.state[shard]
	var last *v1.ScaleRecord
	if st.last != nil {
		l := *st.last
		last = &l
	}
	return ShardReport{Last: last, Target: st.target, RedisErr: tc.redisErr}, true
}

// Start runs the loop until ctx ends (manager.Runnable).
func (a *Autoscaler) Start(ctx context.Context) error {
	a.init()
	if a.Interval <= 0 {
		a.Interval = 250 * time.Millisecond
	}
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	for {
		a.RunOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// WaitSteps waits for the steps down in progress (drains, then the scale
// patch) to end; RunOnce returns before them.
func (a *Autoscaler) WaitSteps() { a.steps.Wait() }

// NeedLeaderElection: only the leader scales.
func (a *Autoscaler) NeedLeaderElection() bool { return true }

// RunOnce makes one decision for every shard of every tracked campaign.
func (a *Autoscaler) RunOnce(ctx context.Context) {
	a.init()
	a.mu.Lock()
	keys := make([]types.NamespacedName, 0, len(a.campaigns))
	for k := range a.campaigns {
		keys = append(keys, k)
	}
	a.mu.Unlock()
	for _, k := range keys {
		a.decideCampaign(ctx, k)
	}
}

func (a *Autoscaler) notify(key types.NamespacedName) {
	u := &v1.CallCampaign{}
	u.Namespace, u.Name = key.Namespace, key.Name
	select {
	case a.events <- event.GenericEvent{Object: u}:
	default:
	}
}

func (a *Autoscaler) decideCampaign(ctx context.Context, key types.NamespacedName) {
	a.mu.Lock()
	tc := a.campaigns[key]
	if tc == nil {
		a.mu.Unlock()
		return
	}
	c, shards, stopped := tc.campaign, tc.shards, tc.stopped
	a.mu.Unlock()
	if stopped {
		return
	}
	now := a.now()
	s := settingsOf(c)
	figs, err := a.Figures.ShardFigures(ctx, c.Namespace, c.Name, shards, now, s.lookAhead)
	a.mu.Lock()
	changed := (err == nil) != (tc.redisErr == nil)
	tc.redisErr = err
	a.mu.Unlock()
	if changed {
		a.notify(key)
	}
	if err != nil {
		// Never scale on missing data: hold every shard where it is.
		a.Metrics.redisDown(c.Namespace, c.Name)
		return
	}
	var avg time.Duration
	var measured int64
	live := false
	if a.Durations != nil {
		d, n, err := a.Durations.AverageCallDuration(ctx, c.Namespace, c.Name, now)
		if err != nil {
			a.Log.V(1).Info("recent call durations unreadable; the campaign's averageCallDuration holds", "campaign", key, "error", err.Error())
		} else {
			avg, measured = d, n
		}
		last, err := a.Durations.LastCall(ctx, c.Namespace, c.Name)
		switch {
		case err != nil:
			// Unknown: keep a worker, as if calls were going on.
			a.Log.V(1).Info("the campaign's last call is unreadable; a worker is kept for calls that may be going on", "campaign", key, "error", err.Error())
			live = true
		case !last.IsZero():
			live = now.Sub(last) < liveCallHold(c)
		}
	}
	active := 0
	for _, f := range figs {
		if f.Waiting+f.InFlight+f.DueSoon > 0 {
			active++
		}
	}
	inHours := inCallingHours(c, now)
	external := c.Spec.Workers.Autoscaling == v1.AutoscaleExternal
	for _, shard := range shards {
		in := figs[shard]
		in.Now, in.ActiveShards, in.AverageCallDuration, in.EndedCalls = now, active, avg, measured
		// Calls going on need a worker, of any shard: their status
		// callbacks reach the campaign's callback Service, and a worker's
		// resolver finishes those whose final status is lost. The first
		// shard keeps it.
		in.CallsMayBeLive = live && shard == shards[0]
		t := Target(c, in, inHours)
		a.Metrics.figures(c.Namespace, c.Name, shard, in, t)
		if external {
			a.mu.Lock()
			if st := tc.state[shard]; st != nil {
				st.target = t
			}
			a.mu.Unlock()
			continue
		}
		a.decideShard(ctx, key, tc, c, shard, s, t, now)
	}
}

func (a *Autoscaler) decideShard(ctx context.Context, key types.NamespacedName, tc *trackedCampaign, c *v1.CallCampaign, shard string, s scaleSettings, t ScaleTarget, now time.Time) {
	a.mu.Lock()
	st := tc.state[shard]
	if st == nil {
		a.mu.Unlock()
		return
	}
	rateChanged := st.target.RateLimited != t.RateLimited
	st.target = t
	stepping := st.stepping
	a.mu.Unlock()
	if rateChanged {
		a.notify(key)
	}
	if stepping {
		return
	}
	dep := &appsv1.Deployment{}
	if err := a.Client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: WorkerDeploymentName(c.Name, shard)}, dep); err != nil || !dep.DeletionTimestamp.IsZero() {
		return
	}
	current := int32(1)
	if dep.Spec.Replicas != nil {
		current = *dep.Spec.Replicas
	}
	a.mu.Lock()
	n, reason := st.next(s, current, t, now)
	if !st.decided {
		st.replicas, st.decided = current, true
	}
	if n >= current {
		st.replicas = n
	}
	a.mu.Unlock()
	switch {
	case n > current:
		st.apply.Lock()
		err := a.scale(ctx, dep, n)
		st.apply.Unlock()
		if err != nil {
			a.Log.Error(err, "scale up", "campaign", key, "shard", shard, "replicas", n)
			return
		}
		a.record(key, st, current, n, reason, t, now)
	case n < current:
		a.mu.Lock()
		st.stepping = true
		a.mu.Unlock()
		a.steps.Add(1)
		go func() {
			defer a.steps.Done()
			a.stepDown(ctx, key, c, shard, st, dep, current, n, t, now)
		}()
	}
}

// record keeps a decision for the status and the metrics, and asks for a
// status reconcile.
func (a *Autoscaler) record(key types.NamespacedName, st *shardState, from, to int32, reason string, t ScaleTarget, now time.Time) {
	msg := t.Message
	if len(msg) > 500 {
		msg = msg[:500]
	}
	a.mu.Lock()
	st.last = &v1.ScaleRecord{Time: metav1.NewTime(now.Truncate(time.Second)), From: from, To: to, Reason: reason, Message: msg}
	st.replicas = to
	a.mu.Unlock()
	a.Metrics.decided(key.Namespace, key.Name, reason, from, to)
	a.Log.Info("scaled workers", "campaign", key, "from", from, "to", to, "reason", reason, "inputs", msg)
	a.notify(key)
}

// scale patches a Deployment's replicas through its scale subresource.
func (a *Autoscaler) scale(ctx context.Context, dep *appsv1.Deployment, n int32) error {
	sc := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: n}}
	body, _ := json.Marshal(map[string]any{"spec": map[string]any{"replicas": n}})
	return a.Client.SubResource("scale").Patch(ctx, dep, client.RawPatch(types.MergePatchType, body), client.WithSubResourceBody(sc), client.FieldOwner(FieldOwner+"-autoscaler"))
}

// stepDown removes up to current-n pods without ending a call: it picks
// pods that have no call in flight (pods not yet running first), drains
// each through its ops port's /drain with the campaign's drain token,
// waits until it reports drained, gives it the lowest deletion cost so the
// ReplicaSet removes it, and only then lowers replicas by the pods drained.
// A pod that takes a call in between, or does not answer, is resumed and
// kept; the step is then smaller, or waits for the next decision.
func (a *Autoscaler) stepDown(ctx context.Context, key types.NamespacedName, c *v1.CallCampaign, shard string, st *shardState, dep *appsv1.Deployment, current, n int32, t ScaleTarget, now time.Time) {
	defer func() {
		a.mu.Lock()
		st.stepping = false
		st.stepped(now)
		a.mu.Unlock()
	}()
	log := a.Log.WithValues("campaign", key, "shard", shard)
	removed, err := a.drainPods(ctx, c, shard, int(current), int(current-n))
	if err != nil {
		log.Error(err, "drain workers before scaling down")
	}
	if removed == 0 {
		return
	}
	to := current - int32(removed)
	st.apply.Lock()
	defer st.apply.Unlock()
	if err := a.scale(ctx, dep, to); err != nil {
		log.Error(err, "scale down", "replicas", to)
		return
	}
	a.record(key, st, current, to, ScaleReasonStepDown, t, now)
}

// drainState is what a worker's GET /drain reports.
type drainState struct {
	Draining bool  `json:"draining"`
	Drained  bool  `json:"drained"`
	InFlight int64 `json:"inFlight"`
}

func (a *Autoscaler) drainPods(ctx context.Context, c *v1.CallCampaign, shard string, current, k int) (int, error) {
	var pods corev1.PodList
	sel := client.MatchingLabels{LabelCampaign: c.Name, LabelShard: shard, LabelComponent: ComponentWorker}
	if err := a.APIReader.List(ctx, &pods, client.InNamespace(c.Namespace), sel); err != nil {
		return 0, fmt.Errorf("list the shard's pods: %w", err)
	}
	secret := &corev1.Secret{}
	if err := a.APIReader.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: DrainSecretName(c.Name)}, secret); err != nil {
		return 0, fmt.Errorf("read the drain token: %w", err)
	}
	token := string(secret.Data[workerpod.DrainTokenFile])
	type cand struct {
		pod      *corev1.Pod
		started  bool
		draining bool
	}
	var cands []cand
	live := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		live++
		if p.Status.PodIP == "" || p.Status.Phase == corev1.PodPending {
			// No container runs: it has no call; the ReplicaSet removes
			// unstarted pods before running ones.
			cands = append(cands, cand{pod: p})
			continue
		}
		ds, err := a.drainCall(ctx, p, http.MethodGet, token)
		if err != nil || ds.InFlight > 0 && !ds.Draining {
			continue
		}
		cands = append(cands, cand{pod: p, started: true, draining: ds.Draining})
	}
	// Unstarted pods first, then pods already draining, then idle ones.
	sort.SliceStable(cands, func(i, j int) bool {
		if cands[i].started != cands[j].started {
			return !cands[i].started
		}
		return cands[i].draining && !cands[j].draining
	})
	// Replicas without a pod yet are removed first, with nothing to drain.
	removed := min(k, max(0, current-live))
	var errs []error
	for _, cd := range cands {
		if removed >= k {
			break
		}
		if cd.started {
			if err := a.drain(ctx, cd.pod, token); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, PodDeletionCostAnnotation, DrainedPodDeletionCost)
		if err := a.Client.Patch(ctx, cd.pod, client.RawPatch(types.MergePatchType, patch)); err != nil {
			errs = append(errs, fmt.Errorf("set the deletion cost of pod %s: %w", cd.pod.Name, err))
			if cd.started {
				_, _ = a.drainCall(ctx, cd.pod, http.MethodDelete, token)
			}
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// drain starts a pod's drain and waits until it reports drained with no
// call in flight; on failure it resumes the pod.
func (a *Autoscaler) drain(ctx context.Context, p *corev1.Pod, token string) error {
	timeout := a.DrainTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	ds, err := a.drainCall(ctx, p, http.MethodPost, token)
	for err == nil && !(ds.Drained && ds.InFlight == 0) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(100 * time.Millisecond):
			ds, err = a.drainCall(ctx, p, http.MethodGet, token)
		}
	}
	if err == nil && ds.Drained && ds.InFlight == 0 {
		return nil
	}
	_, _ = a.drainCall(ctx, p, http.MethodDelete, token)
	if err == nil {
		err = fmt.Errorf("pod %s did not drain within %s (%d in flight)", p.Name, timeout, ds.InFlight)
	}
	return err
}

func (a *Autoscaler) drainCall(ctx context.Context, p *corev1.Pod, method, token string) (drainState, error) {
	addr := ""
	if a.PodAddress != nil {
		addr = a.PodAddress(p)
	} else {
		port := a.OpsPort
		if port == 0 {
			port = workerpod.OpsPort
		}
		addr = net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port))
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/drain", nil)
	if err != nil {
		return drainState{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	hc := a.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return drainState{}, fmt.Errorf("%s /drain of pod %s: %w", method, p.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return drainState{}, fmt.Errorf("%s /drain of pod %s: %s", method, p.Name, resp.Status)
	}
	var ds drainState
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
		return drainState{}, fmt.Errorf("%s /drain of pod %s: %w", method, p.Name, err)
	}
	return ds, nil
}
