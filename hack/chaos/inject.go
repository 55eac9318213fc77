package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/periodic"
	"github.com/delauto/delauto/internal/twiliosim"
)

// operatorNamespace is where the chart installs the operator.
const operatorNamespace = "delauto-system"

// inject waits for f's time and injects it.
func (s *state) inject(ctx context.Context, f fault) {
	if !periodic.Sleep(ctx, time.Until(s.t0.Add(f.At))) {
		return
	}
	switch f.Kind {
	case kindWorkerKill:
		s.killWorker()
	case kindOperatorKill:
		s.killLeader(ctx)
	case kindWorkerTerm:
		s.terminateWorker(ctx)
	case kindRedis:
		r := s.sys.Services.Redis
		r.Kill()
		time.Sleep(2 * time.Second)
		if err := r.Restart(); err != nil {
			s.record(f.Kind, "restart failed: "+err.Error())
			return
		}
		s.record(f.Kind, "killed, restarted empty after 2 s on "+r.Addr)
	case kindPostgres:
		m := s.sys.Services.Mongo
		s.record(f.Kind, "PostgreSQL stopped (fast shutdown)")
		m.StopPostgres()
		periodic.Sleep(ctx, postgresOutage)
		if err := m.StartPostgres(); err != nil {
			s.logf("PostgreSQL did not start again: %v", err)
			return
		}
		s.logf("PostgreSQL started again")
	case kindSim429, kindSim5xx, kindSim502, kindSimTimeout:
		s.simWindow(ctx, f.Kind)
	case kindEdit, kindDelete, kindCancel:
		s.changeDue(ctx, f.Kind)
	}
}

// workerPods are the worker pods whose processes run.
func (s *state) workerPods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range s.sys.Runner.Pods() {
		if p.Labels[controllers.LabelComponent] == controllers.ComponentWorker {
			out = append(out, p)
		}
	}
	return out
}

// podShard is the queue a worker pod serves: namespace/shard.
func podShard(p *corev1.Pod) string { return p.Namespace + "/" + p.Labels[controllers.LabelShard] }

// recentShards are the queues whose calls were created in the last 3 s:
// their workers are dialing.
func (s *state) recentShards() map[string]bool {
	out := map[string]bool{}
	since := time.Now().Add(-3 * time.Second)
	creates := s.sys.Sim.Creates()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(creates) - 1; i >= 0 && creates[i].Time.After(since); i-- {
		for _, t := range s.byNumber[creates[i].To] {
			out[t.shard()] = true
		}
	}
	return out
}

// killWorker SIGKILLs a worker of a queue that is dialing (any worker when
// none is).
func (s *state) killWorker() {
	pods := s.workerPods()
	if len(pods) == 0 {
		s.record(kindWorkerKill, "no worker running")
		return
	}
	busy := s.recentShards()
	var dialing []*corev1.Pod
	for _, p := range pods {
		if busy[podShard(p)] {
			dialing = append(dialing, p)
		}
	}
	mid := "mid-dial"
	if len(dialing) == 0 {
		dialing, mid = pods, "no queue dialing"
	}
	p := dialing[s.intn(len(dialing))]
	at := time.Now()
	if !s.sys.Runner.Kill(p.Namespace, p.Name) {
		s.record(kindWorkerKill, "could not signal "+p.Namespace+"/"+p.Name)
		return
	}
	s.mu.Lock()
	s.kills = append(s.kills, kill{At: at, Shard: podShard(p)})
	s.mu.Unlock()
	s.record(kindWorkerKill, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, mid))
}

// leaderState reads an operator pod's log: when its process last started
// (the pod runner's "--- <time> start" line) and whether it acquired the
// leader election Lease since. The Lease's holder does not say which pod
// leads here: its identity is the machine's host name (every local pod
// shares it) with a random suffix.
func leaderState(log []byte) (started time.Time, leads bool) {
	i := bytes.LastIndex(log, []byte("--- "))
	if i < 0 {
		return time.Time{}, false
	}
	rest := log[i+4:]
	if sp := bytes.IndexByte(rest, ' '); sp > 0 {
		started, _ = time.Parse(time.RFC3339Nano, string(rest[:sp]))
	}
	return started, bytes.Contains(rest, []byte(`"Successfully acquired lease"`))
}

// leader is the operator pod that acquired the Lease in its current
// process, "" when none has; started is when that process started.
func (s *state) leader() (pod string, started time.Time) {
	logs, _ := filepath.Glob(filepath.Join(s.cfg.dir, "pods", "logs", operatorNamespace+"_*.log"))
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if st, leads := leaderState(data); leads {
			return strings.TrimSuffix(strings.TrimPrefix(filepath.Base(l), operatorNamespace+"_"), ".log"), st
		}
	}
	return "", time.Time{}
}

// killLeader SIGKILLs the leading operator and measures how long until a
// replica leads again (the other, or the killed one restarted).
func (s *state) killLeader(ctx context.Context) {
	old, _ := s.leader()
	if old == "" {
		s.record(kindOperatorKill, "no leader found")
		return
	}
	at := time.Now()
	if !s.sys.Runner.Kill(operatorNamespace, old) {
		s.record(kindOperatorKill, "could not signal "+old)
		return
	}
	s.record(kindOperatorKill, operatorNamespace+"/"+old)
	k := kill{At: at, Operator: true, Failover: -1}
	for deadline := at.Add(3 * time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
		if now, started := s.leader(); now != "" && (now != old || started.After(at)) {
			k.Failover = time.Since(at)
			s.logf("operator %s leads %s after the kill", now, k.Failover.Round(100*time.Millisecond))
			break
		}
	}
	s.mu.Lock()
	s.kills = append(s.kills, k)
	s.mu.Unlock()
}

// terminateWorker deletes a worker pod: SIGTERM, it finishes its calls.
func (s *state) terminateWorker(ctx context.Context) {
	pods := s.workerPods()
	if len(pods) == 0 {
		s.record(kindWorkerTerm, "no worker running")
		return
	}
	p := pods[s.intn(len(pods))]
	if err := s.sys.Cluster.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
		s.record(kindWorkerTerm, fmt.Sprintf("delete %s/%s: %v", p.Namespace, p.Name, err))
		return
	}
	s.record(kindWorkerTerm, p.Namespace+"/"+p.Name)
}

// simFaults is the simulator's fault windows in force.
var simFaults struct {
	sync.Mutex
	active map[string]int
}

// simWindow puts a simulator fault in force for simWindow.
func (s *state) simWindow(ctx context.Context, kind string) {
	apply := func(delta int) {
		simFaults.Lock()
		defer simFaults.Unlock()
		if simFaults.active == nil {
			simFaults.active = map[string]int{}
		}
		simFaults.active[kind] += delta
		f := baseFaults
		if simFaults.active[kindSim429] > 0 {
			f.RateLimit = 0.9
		}
		if simFaults.active[kindSim5xx] > 0 {
			f.ServerError, f.Unavailable = 0.15, 0.15
		}
		if simFaults.active[kindSim502] > 0 {
			f.BadGateway = 0.3
		}
		if simFaults.active[kindSimTimeout] > 0 {
			f.HangAfterCreate = 0.25
		}
		if err := s.sys.Sim.SetFaults(f); err != nil {
			s.logf("simulator faults: %v", err)
		}
	}
	apply(1)
	s.record(kind, fmt.Sprintf("for %s", simWindow))
	periodic.Sleep(ctx, simWindow)
	apply(-1)
}

// changeDue edits (a new window tomorrow), deletes or cancels two
// Deliveries whose call is due now.
func (s *state) changeDue(ctx context.Context, kind string) {
	var list v1.DeliveryList
	if err := s.sys.Client.List(ctx, &list); err != nil {
		s.record(kind, "list: "+err.Error())
		return
	}
	now := time.Now()
	var due []*v1.Delivery
	s.mu.Lock()
	for i := range list.Items {
		d := &list.Items[i]
		t := s.byName[d.Namespace+"/"+d.Name]
		if t == nil || t.change != "" || t.zone == s.zones.closed || d.Status.Phase != v1.DeliveryScheduled || d.Status.NextCallTime == nil {
			continue
		}
		if next := d.Status.NextCallTime.Time; next.After(now.Add(-time.Minute)) && next.Before(now.Add(15*time.Second)) {
			due = append(due, d)
		}
	}
	s.mu.Unlock()
	changed := 0
	for changed < 2 && len(due) > 0 {
		i := s.intn(len(due))
		d := due[i]
		due = append(due[:i], due[i+1:]...)
		was := fmt.Sprintf("%s/%s (phase %s, call due %s)", d.Namespace, d.Name, d.Status.Phase, d.Status.NextCallTime.Format("15:04:05"))
		var err error
		switch kind {
		case kindDelete:
			err = s.sys.Client.Delete(ctx, d)
		case kindCancel:
			err = s.patchSpec(ctx, d, func(d *v1.Delivery) { d.Spec.Cancelled = true })
		default:
			start := now.Add(24 * time.Hour).UTC().Truncate(time.Second)
			err = s.patchSpec(ctx, d, func(d *v1.Delivery) {
				d.Spec.Window = v1.DeliveryWindow{Start: metav1.NewTime(start), End: metav1.NewTime(start.Add(2 * time.Hour))}
			})
		}
		if err != nil {
			s.logf("%s %s/%s: %v", kind, d.Namespace, d.Name, err)
			continue
		}
		at := time.Now()
		s.mu.Lock()
		t := s.byName[d.Namespace+"/"+d.Name]
		t.change, t.changed = kind, at
		if kind == kindEdit {
			t.windowEnd = d.Spec.Window.End.Time
		}
		s.mu.Unlock()
		changed++
		s.record(kind, was)
	}
	if changed == 0 {
		s.record(kind, "no Delivery due")
	}
}

// patchSpec changes a Delivery's spec, re-reading it on a conflict.
func (s *state) patchSpec(ctx context.Context, d *v1.Delivery, change func(*v1.Delivery)) error {
	for try := 0; ; try++ {
		change(d)
		err := s.sys.Client.Update(ctx, d)
		if err == nil || try == 5 {
			return err
		}
		if err := s.sys.Client.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return err
		}
	}
}

// forgeStats counts forged webhooks and what they got.
type forgeStats struct {
	sent     int
	byStatus map[int]int
	errors   int
}

// forge sends forged webhooks, two a second, to the campaigns' callback
// Services as the internet could: an opt-out (Digits=9) or a status
// (busy) for a real call of a recipient who confirms, unsigned or signed
// with a wrong token. Every one must be refused (403) and change nothing.
func (s *state) forge(ctx context.Context) {
	proxies := map[string]string{}
	for _, c := range campaigns {
		p, err := s.sys.Runner.ServiceProxy(ctx, localcluster.CampaignHost(c.ns, c.name), 80)
		if err != nil {
			s.logf("forger: %v", err)
			return
		}
		proxies[localcluster.CampaignHost(c.ns, c.name)] = p
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	n := 0
	periodic.Every(ctx, 500*time.Millisecond, func(ctx context.Context) {
		n++
		s.forgeOne(ctx, hc, proxies, n)
	})
}

// forgeOne sends the n-th forged webhook.
func (s *state) forgeOne(ctx context.Context, hc *http.Client, proxies map[string]string, n int) {
	target, ok := s.forgeTarget()
	if !ok {
		return
	}
	u, err := url.Parse(target.Form.Get("StatusCallback"))
	if err != nil || proxies[u.Host] == "" {
		return
	}
	params := url.Values{"AccountSid": {s.sys.Sim.AccountSID()}, "CallSid": {target.CallSid}}
	if n%2 == 0 {
		u.Path = callurls.GatherPath
		params.Set("Digits", "9")
	} else {
		params.Set("CallStatus", "busy")
		params.Set("SequenceNumber", "99")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, proxies[u.Host]+u.Path+"?"+u.RawQuery, strings.NewReader(params.Encode()))
	req.Host = u.Host
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if n%3 != 0 {
		req.Header.Set("X-Twilio-Signature", twiliosim.Sign("not-the-auth-token-of-this-account", u.String(), params))
	}
	resp, err := hc.Do(req)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forged.sent++
	if s.forged.byStatus == nil {
		s.forged.byStatus = map[int]int{}
	}
	if err != nil {
		s.forged.errors++
	} else if resp.Header.Get(localcluster.ProxyErrorHeader) != "" {
		s.forged.errors++
		resp.Body.Close()
	} else {
		s.forged.byStatus[resp.StatusCode]++
		resp.Body.Close()
	}
	for _, t := range s.byNumber[target.To] {
		t.forged = true
	}
}

// forgeTarget is a recent call to a recipient who confirms (press1).
func (s *state) forgeTarget() (twiliosim.CreateRecord, bool) {
	creates := s.sys.Sim.Creates()
	for try := 0; try < 20 && len(creates) > 0; try++ {
		from := max(0, len(creates)-200)
		c := creates[from+s.intn(len(creates)-from)]
		if c.Created() && (strings.HasSuffix(c.To, "0") || strings.HasSuffix(c.To, "9")) {
			return c, true
		}
	}
	return twiliosim.CreateRecord{}, false
}

// reuseOptedOut creates, for recipients who opted out (pressed 9), another
// Delivery to the same number: it must never be called. At most one in 50
// Deliveries.
func (s *state) reuseOptedOut(ctx context.Context) {
	limit := max(2, s.cfg.deliveries/50)
	periodic.Every(ctx, 5*time.Second, func(ctx context.Context) {
		for _, c := range s.sys.Sim.Calls() {
			s.mu.Lock()
			n, done := len(s.reused), !s.reused[c.To].IsZero()
			orig := s.byNumber[c.To]
			s.mu.Unlock()
			if n >= limit || time.Since(s.t0) > s.cfg.length {
				return
			}
			if done || c.Ended.IsZero() || c.Scenario != "press9" || len(orig) == 0 || !contains(c.Inputs, "digits:9") {
				continue
			}
			o := orig[0]
			t := &tracked{ns: o.ns, campaign: o.campaign, name: o.name + "-again", number: o.number, region: o.region, zone: o.zone, hours: o.hours}
			s.mu.Lock()
			s.reused[c.To] = c.Ended
			s.mu.Unlock()
			if err := s.create(ctx, t, routeAgent(s.intn(routes))); err != nil {
				s.logf("create %s/%s: %v", t.ns, t.name, err)
				continue
			}
			s.logf("opted-out number of %s/%s has a new Delivery %s", o.ns, o.name, t.name)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
