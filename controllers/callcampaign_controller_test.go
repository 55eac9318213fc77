package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/sharding"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/queue"
)

func startCampaignController(t *testing.T) (*queue.Queue, string) {
	return startCampaignControllerEvery(t, 300*time.Millisecond)
}

// startCampaignControllerEvery starts the controller refreshing campaign
// status every statusInterval.
func startCampaignControllerEvery(t *testing.T, statusInterval time.Duration) (*queue.Queue, string) {
	ns := namespace(t)
	if err := env.Kube.Client.Create(context.Background(), storesSecret(ns)); err != nil {
		t.Fatal(err)
	}
	rdb := env.Redis.Client()
	t.Cleanup(func() { rdb.Close() })
	q := queue.New(rdb, queue.Options{})
	mgr := newManager(t, ns)
	if err := controllers.IndexDeliveryPhases(context.Background(), mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	r := &controllers.CallCampaignReconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Workers:        controllers.WorkerDefaults{Image: "delauto:test", Stores: stores.Settings{RedisURL: "redis://r:6379", MongoURI: "mongodb://m/delauto", MongoDatabase: "delauto"}},
		Queues:         controllers.RedisQueueStats{Queue: q},
		Rates:          controllers.RedisRates{Redis: rdb},
		StatusInterval: statusInterval,
		Recorder:       mgr.GetEventRecorder("delauto-operator"),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	run(t, mgr)
	return q, ns
}

func twilioSecret(ns string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "twilio"},
		Data:       map[string][]byte{"accountSID": []byte("AC123"), "authToken": []byte("tok")},
	}
}

// storesSecret is the per-namespace Secret telling workers where the
// stores are and how to log in.
func storesSecret(ns string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "delauto-stores"},
		Data:       map[string][]byte{stores.EnvRedisURL: []byte("redis://r:6379"), stores.EnvMongoURI: []byte("mongodb://m/delauto")},
	}
}

func newCampaign(ns string, shards int32) *v1.CallCampaign {
	return &v1.CallCampaign{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "spree"},
		Spec: v1.CallCampaignSpec{
			Script: v1.CallScript{CompanyName: "Spree", TimeLimit: &metav1.Duration{Duration: 90 * time.Second}},
			Twilio: v1.TwilioSpec{
				CredentialsSecretRef: v1.TwilioCredentials{Name: "twilio"},
				FromNumbers:          []v1.PhoneNumber{"+493012345670"},
				CallbackURL:          "https://calls.example.com",
			},
			Sharding: v1.ShardingSpec{By: v1.ShardByHash, Count: shards},
			Workers:  v1.WorkersSpec{MinReplicas: ptr.To[int32](2), MaxReplicas: 5, Concurrency: 20},
		},
	}
}

// workloadApplied waits until the workload controller has applied the
// campaign's current spec (its ConfigMap says so) and then for two more of
// its periodic reconciles (every 300 ms here), so that what a test then
// finds, or does not find, on the workers is what that spec gives.
func workloadApplied(t *testing.T, key client.ObjectKey) {
	t.Helper()
	eventually(t, 10*time.Second, "the workload controller applied the campaign's spec", func() error {
		c := getCampaign(t, key)
		cm := &corev1.ConfigMap{}
		if err := env.Kube.Client.Get(context.Background(), client.ObjectKey{Namespace: key.Namespace, Name: controllers.CampaignConfigMapName(key.Name)}, cm); err != nil {
			return err
		}
		applied, err := campaignfile.Parse([]byte(cm.Data[workerpod.CampaignFile]), "ConfigMap")
		if err != nil {
			return err
		}
		want, _ := json.Marshal(c.Spec)
		if got, _ := json.Marshal(applied.Spec); string(got) != string(want) {
			return fmt.Errorf("ConfigMap has %s, want %s", got, want)
		}
		return nil
	})
	time.Sleep(600 * time.Millisecond)
}

func workerDeployments(ns string) ([]appsv1.Deployment, error) {
	var list appsv1.DeploymentList
	err := env.Kube.Client.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{controllers.LabelComponent: controllers.ComponentWorker})
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	return list.Items, err
}

func deploymentNames(ds []appsv1.Deployment) string {
	var n []string
	for _, d := range ds {
		n = append(n, d.Name)
	}
	return strings.Join(n, ",")
}

func getCampaign(t *testing.T, key client.ObjectKey) *v1.CallCampaign {
	t.Helper()
	c := &v1.CallCampaign{}
	if err := env.Kube.Client.Get(context.Background(), key, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCampaignOwnsOneWorkerDeploymentPerShard(t *testing.T) {
	q, ns := startCampaignController(t)
	ctx := context.Background()
	c := env.Kube.Client
	if err := c.Create(ctx, twilioSecret(ns)); err != nil {
		t.Fatal(err)
	}
	// Queue figures come from the shards' Redis queues: two attempts due now
	// and three later on shard-0, one later on shard-1.
	now := time.Now()
	for i, due := range []time.Duration{-time.Minute, -time.Second, time.Hour, 2 * time.Hour, 3 * time.Hour} {
		if _, err := q.Schedule(ctx, queue.Shard{Namespace: ns, Campaign: "spree", Name: "shard-0"}, fmt.Sprintf("a%d", i), now.Add(due)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Schedule(ctx, queue.Shard{Namespace: ns, Campaign: "spree", Name: "shard-1"}, "b", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Workers counted 40 calls over the last seconds and waited on the limiter.
	rdb := env.Redis.Client()
	defer rdb.Close()
	for i := 0; i < 40; i++ {
		if err := callrate.Record(ctx, rdb, ns, "spree", time.Now().Add(-time.Duration(1+i%4)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if err := callrate.MarkLimited(ctx, rdb, ns, "spree"); err != nil {
		t.Fatal(err)
	}
	campaign := newCampaign(ns, 2)
	campaign.Spec.Relay.Webhook = &v1.RelayWebhook{URL: "https://dispatch.example.com/hook", SecretRef: v1.SecretKeySelector{Name: "hook", Key: "key"}}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hook"}, Data: map[string][]byte{"key": []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, campaign); err != nil {
		t.Fatal(err)
	}

	eventually(t, 10*time.Second, "two worker Deployments", func() error {
		ds, err := workerDeployments(ns)
		if err != nil {
			return err
		}
		if got := deploymentNames(ds); got != "spree-shard-0,spree-shard-1" {
			return fmt.Errorf("Deployments = %q", got)
		}
		return nil
	})
	ds, _ := workerDeployments(ns)
	d := ds[0]
	if !metav1.IsControlledBy(&d, campaign) {
		t.Errorf("Deployment %s is not controlled by the campaign", d.Name)
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want the campaign's minimum 2", *d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	w := pod.Containers[0]
	if w.Image != "delauto:test" || strings.Join(w.Args, " ") != "worker" {
		t.Errorf("container image/args = %s %v", w.Image, w.Args)
	}
	env := map[string]string{}
	for _, e := range w.Env {
		env[e.Name] = e.Value
	}
	for _, name := range []string{stores.EnvRedisURL, stores.EnvRedisAddrs, stores.EnvRedisPassword, stores.EnvMongoURI} {
		if _, ok := env[name]; ok {
			t.Errorf("store credential %s is a plain env value of the worker", name)
		}
	}
	if env[stores.EnvMongoDatabase] != "delauto" {
		t.Errorf("the call log database is not handed to the workers: %v", env)
	}
	if len(w.EnvFrom) != 1 || w.EnvFrom[0].SecretRef == nil || w.EnvFrom[0].SecretRef.Name != "delauto-stores" {
		t.Errorf("the stores Secret is not the workers' envFrom: %+v", w.EnvFrom)
	}
	if env[workerpod.EnvPodName] != "" || env[workerpod.EnvCampaign] != "spree" || env[workerpod.EnvShards] != "shard-0" || env[workerpod.EnvConcurrency] != "20" || env[workerpod.EnvCallbackURL] != "https://calls.example.com" {
		t.Errorf("worker env = %v", env)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds <= 90 {
		t.Errorf("terminationGracePeriodSeconds = %v, want above the 90s call time limit", pod.TerminationGracePeriodSeconds)
	}
	sc := w.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("container security context is not locked down: %+v", sc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("workers need no Kubernetes API token, yet one is mounted")
	}
	var secretVol *corev1.SecretVolumeSource
	for _, v := range pod.Volumes {
		if v.Name == "twilio" {
			secretVol = v.Secret
		}
	}
	if secretVol == nil || secretVol.SecretName != "twilio" || len(secretVol.Items) != 2 {
		t.Errorf("the Twilio Secret is not mounted as files: %+v", secretVol)
	}
	var relayVol *corev1.SecretVolumeSource
	for _, v := range pod.Volumes {
		if v.Name == "relay" {
			relayVol = v.Secret
		}
	}
	if relayVol == nil || relayVol.SecretName != "hook" || relayVol.Items[0].Key != "key" || env[workerpod.EnvRelaySecretFile] == "" {
		t.Errorf("the relay webhook's key is not mounted for the workers: %+v, env %v", relayVol, env)
	}
	if w.ReadinessProbe == nil || w.ReadinessProbe.HTTPGet.Path != "/readyz" || w.LivenessProbe == nil {
		t.Error("worker probes missing")
	}

	drain := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.DrainSecretName("spree")}, drain); err != nil {
		t.Fatalf("drain Secret: %v", err)
	}
	if len(drain.Data[workerpod.DrainTokenFile]) < 32 || !metav1.IsControlledBy(drain, campaign) {
		t.Errorf("drain Secret: token of %d bytes, owners %v", len(drain.Data[workerpod.DrainTokenFile]), drain.OwnerReferences)
	}
	var drainVol *corev1.SecretVolumeSource
	for _, v := range pod.Volumes {
		if v.Name == "drain" {
			drainVol = v.Secret
		}
	}
	if drainVol == nil || drainVol.SecretName != drain.Name || env[workerpod.EnvDrainTokenFile] != workerpod.DrainDir+"/"+workerpod.DrainTokenFile {
		t.Errorf("the drain token is not mounted for the workers: %+v, env %v", drainVol, env)
	}

	// The callback Service and the NetworkPolicy are applied after the
	// Deployments, in the same reconcile.
	np := &networkingv1.NetworkPolicy{}
	eventually(t, 10*time.Second, "the callback Service and the worker NetworkPolicy", func() error {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "spree-callbacks"}, &corev1.Service{}); err != nil {
			return err
		}
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.NetworkPolicyName("spree")}, np)
	})
	if !metav1.IsControlledBy(np, campaign) || np.Spec.PodSelector.MatchLabels[controllers.LabelCampaign] != "spree" || np.Spec.PodSelector.MatchLabels[controllers.LabelComponent] != controllers.ComponentWorker {
		t.Errorf("NetworkPolicy selects %v, owners %v", np.Spec.PodSelector, np.OwnerReferences)
	}
	if in := np.Spec.Ingress; len(in) != 2 ||
		in[0].Ports[0].Port.IntValue() != workerpod.CallbackPort || len(in[0].From) != 0 ||
		in[1].Ports[0].Port.IntValue() != workerpod.OpsPort || len(in[1].From) != 2 ||
		in[1].From[0].PodSelector.MatchLabels[controllers.LabelComponent] != "operator" || in[1].From[1].PodSelector.MatchLabels[controllers.LabelName] != "prometheus" {
		t.Errorf("NetworkPolicy ingress = %+v, want callbacks from anywhere and ops only from the operator and Prometheus", in)
	}

	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "spree-campaign"}, cm); err != nil {
		t.Fatalf("campaign ConfigMap: %v", err)
	}
	var cfg campaignfile.Config
	if err := json.Unmarshal([]byte(cm.Data[workerpod.CampaignFile]), &cfg); err != nil {
		t.Fatalf("campaign.json: %v", err)
	}
	if cfg.Name != "spree" || cfg.Spec.Script.CompanyName != "Spree" || cfg.Spec.Twilio.FromNumbers[0] != "+493012345670" {
		t.Errorf("campaign.json = %+v", cfg)
	}
	svc := &corev1.Service{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "spree-callbacks"}, svc); err != nil {
		t.Fatalf("callback Service: %v", err)
	}
	if svc.Spec.Selector[controllers.LabelCampaign] != "spree" {
		t.Errorf("callback Service selector = %v", svc.Spec.Selector)
	}

	eventually(t, 10*time.Second, "status reports shards and queues", func() error {
		got := getCampaign(t, client.ObjectKeyFromObject(campaign))
		if got.Status.ShardCount != 2 || len(got.Status.Shards) != 2 || got.Status.Replicas != 4 || got.Status.Queued != 2 {
			return fmt.Errorf("status = %+v", got.Status)
		}
		s0, s1 := got.Status.Shards[0], got.Status.Shards[1]
		if s0.Name != "shard-0" || s0.DueNow != 2 || s0.Scheduled != 3 || s1.DueNow != 0 || s1.Scheduled != 1 {
			return fmt.Errorf("shard figures = %+v", got.Status.Shards)
		}
		if got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", got.Status.ObservedGeneration, got.Generation)
		}
		if got.Status.CallsPerSecond != "4.0" {
			return fmt.Errorf("callsPerSecond = %q, want 4.0", got.Status.CallsPerSecond)
		}
		if err := hasCondition(got.Status.Conditions, v1.ConditionRateLimited, metav1.ConditionTrue, "AccountLimit"); err != nil {
			return err
		}
		return hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
	})

	// More shards add Deployments; fewer remove them.
	for _, step := range []struct {
		count int32
		want  string
	}{{3, "spree-shard-0,spree-shard-1,spree-shard-2"}, {1, "spree-shard-0"}} {
		update(t, campaign, func(c *v1.CallCampaign) { c.Spec.Sharding.Count = step.count })
		eventually(t, 10*time.Second, fmt.Sprintf("%d shards", step.count), func() error {
			ds, err := workerDeployments(ns)
			if err != nil {
				return err
			}
			var live []appsv1.Deployment
			for _, d := range ds {
				if d.DeletionTimestamp.IsZero() {
					live = append(live, d)
				}
			}
			if got := deploymentNames(live); got != step.want {
				return fmt.Errorf("Deployments = %q, want %q", got, step.want)
			}
			return nil
		})
	}
}

func TestCampaignDegradedWithoutSecretAndReadyWhenItAppears(t *testing.T) {
	_, ns := startCampaignController(t)
	ctx := context.Background()
	c := env.Kube.Client
	campaign := newCampaign(ns, 1)
	if err := c.Create(ctx, campaign); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(campaign)
	eventually(t, 10*time.Second, "Degraded SecretMissing", func() error {
		got := getCampaign(t, key)
		if err := hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "SecretMissing"); err != nil {
			return err
		}
		return hasCondition(got.Status.Conditions, v1.ConditionReady, metav1.ConditionFalse, "Degraded")
	})
	workloadApplied(t, key)
	ds, _ := workerDeployments(ns)
	if len(ds) != 1 || *ds[0].Spec.Replicas != 0 {
		t.Fatalf("a degraded campaign must run no workers: %v", ds)
	}

	// A Secret without the token key is still not enough.
	s := twilioSecret(ns)
	delete(s.Data, "authToken")
	if err := c.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Degraded SecretKeyMissing", func() error {
		return hasCondition(getCampaign(t, key).Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "SecretKeyMissing")
	})
	s.Data["authToken"] = []byte("tok")
	if err := c.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "not Degraded once the Secret is complete", func() error {
		got := getCampaign(t, key)
		if err := hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected"); err != nil {
			return err
		}
		ds, err := workerDeployments(ns)
		if err != nil || len(ds) != 1 || *ds[0].Spec.Replicas != 2 {
			return fmt.Errorf("workers not scaled back to 2: %v %v", err, ds)
		}
		return nil
	})
}

func TestCampaignInvalidGreetingIsDegraded(t *testing.T) {
	_, ns := startCampaignController(t)
	ctx := context.Background()
	if err := env.Kube.Client.Create(ctx, twilioSecret(ns)); err != nil {
		t.Fatal(err)
	}
	campaign := newCampaign(ns, 1)
	campaign.Spec.Script.Greeting = "Hello {{.Nmae}}"
	if err := env.Kube.Client.Create(ctx, campaign); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Degraded InvalidScriptTemplate", func() error {
		got := getCampaign(t, client.ObjectKeyFromObject(campaign))
		if err := hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "InvalidScriptTemplate"); err != nil {
			return err
		}
		if msg := got.Status.Conditions; !strings.Contains(fmt.Sprint(msg), "Nmae") {
			return fmt.Errorf("the message does not name the bad field: %v", msg)
		}
		return nil
	})
}

// A campaign's status writes must not start its next reconcile: while its
// queue figures change all the time, status is written about once per
// status interval, not in a loop of reconciles and server-side applies.
func TestCampaignStatusIsRefreshedPerIntervalNotPerWrite(t *testing.T) {
	const interval = 2 * time.Second
	q, ns := startCampaignControllerEvery(t, interval)
	ctx := context.Background()
	c := env.Kube.Client
	if err := c.Create(ctx, twilioSecret(ns)); err != nil {
		t.Fatal(err)
	}
	campaign := newCampaign(ns, 1)
	if err := c.Create(ctx, campaign); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(campaign)
	eventually(t, 10*time.Second, "campaign status written", func() error {
		if getCampaign(t, key).Status.ObservedGeneration == 0 {
			return fmt.Errorf("no status yet")
		}
		return nil
	})

	wc, err := client.NewWithWatch(env.Kube.Config, client.Options{Scheme: env.Kube.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &v1.CallCampaignList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// Attempts keep arriving in the shard's queue for three intervals, so
	// every reconcile finds new figures to write.
	const window = 3 * interval
	shard := queue.Shard{Namespace: ns, Campaign: "spree", Name: "shard-0"}
	writes, queued := 0, 0
	stop := time.After(window)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
			if _, err := q.Schedule(ctx, shard, fmt.Sprintf("a%d", queued), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			queued++
		case ev := <-w.ResultChan():
			if ev.Type == "MODIFIED" {
				writes++
			}
		}
	}
	// One write per interval, one more for a reconcile already under way.
	if max := int(window/interval) + 1; writes > max {
		t.Errorf("the campaign's status was written %d times in %s with a %s status interval; want at most %d (a reconcile loop on its own writes)", writes, window, interval, max)
	}
	if writes == 0 {
		t.Errorf("the campaign's status was not refreshed in %s with a %s status interval", window, interval)
	}
	eventually(t, 2*interval, "the queue figures caught up", func() error {
		got := getCampaign(t, key).Status.Shards
		if len(got) != 1 || got[0].Scheduled != int64(queued) {
			return fmt.Errorf("shards = %+v, want %d scheduled", got, queued)
		}
		return nil
	})
}

func TestCampaignSuspendDrainsAndResumes(t *testing.T) {
	_, ns := startCampaignController(t)
	ctx := context.Background()
	c := env.Kube.Client
	if err := c.Create(ctx, twilioSecret(ns)); err != nil {
		t.Fatal(err)
	}
	campaign := newCampaign(ns, 1)
	campaign.Spec.Suspend = true
	if err := c.Create(ctx, campaign); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(campaign)
	replicas := func(want int32) func() error {
		return func() error {
			ds, err := workerDeployments(ns)
			if err != nil || len(ds) != 1 {
				return fmt.Errorf("Deployments %v %v", ds, err)
			}
			if *ds[0].Spec.Replicas != want {
				return fmt.Errorf("replicas = %d, want %d", *ds[0].Spec.Replicas, want)
			}
			return nil
		}
	}
	eventually(t, 10*time.Second, "suspended: no workers", replicas(0))
	eventually(t, 10*time.Second, "Ready=False Suspended", func() error {
		return hasCondition(getCampaign(t, key).Status.Conditions, v1.ConditionReady, metav1.ConditionFalse, "Suspended")
	})
	update(t, campaign, func(c *v1.CallCampaign) { c.Spec.Suspend = false })
	eventually(t, 10*time.Second, "resumed: minimum workers", replicas(2))

	// Deleting the campaign leaves the owned objects to the garbage collector
	// through their owner references.
	if err := c.Delete(ctx, campaign); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "campaign gone", func() error {
		err := c.Get(ctx, key, &v1.CallCampaign{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
}

// switchQueues reads the queue figures from whichever queue it holds now,
// so a test can bring Redis back while the controller runs.
type switchQueues struct{ q atomic.Pointer[queue.Queue] }

func (s *switchQueues) ShardStats(ctx context.Context, ns, campaign string, shards []string) (map[string]controllers.ShardQueueStats, error) {
	return controllers.RedisQueueStats{Queue: s.q.Load()}.ShardStats(ctx, ns, campaign, shards)
}

// downStore is a call log that cannot be reached.
type downStore struct{}

func (downStore) Ping(context.Context) error { return fmt.Errorf("connection refused") }

func TestCampaignDegradedWhenStoresUnreachable(t *testing.T) {
	// Redis: a client of a server that is not there; MongoDB: a ping that fails.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	queues := &switchQueues{}
	queues.q.Store(queue.New(rdb, queue.Options{}))
	ns := namespace(t)
	if err := env.Kube.Client.Create(context.Background(), storesSecret(ns)); err != nil {
		t.Fatal(err)
	}
	mgr := newManager(t, ns)
	if err := controllers.IndexDeliveryPhases(context.Background(), mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	r := &controllers.CallCampaignReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Queues:         queues,
		CallLog:        downStore{},
		StatusInterval: 300 * time.Millisecond,
		Recorder:       mgr.GetEventRecorder("delauto-operator"),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	run(t, mgr)
	ctx := context.Background()
	if err := env.Kube.Client.Create(ctx, twilioSecret(ns)); err != nil {
		t.Fatal(err)
	}
	campaign := newCampaign(ns, 1)
	if err := env.Kube.Client.Create(ctx, campaign); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Degraded RedisUnreachable", func() error {
		got := getCampaign(t, client.ObjectKeyFromObject(campaign))
		if err := hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "RedisUnreachable"); err != nil {
			return fmt.Errorf("%w; status %+v", err, got.Status)
		}
		return hasCondition(got.Status.Conditions, v1.ConditionReady, metav1.ConditionFalse, "Degraded")
	})
	// Redis back, MongoDB still down: the reason follows.
	good := env.Redis.Client()
	defer good.Close()
	queues.q.Store(queue.New(good, queue.Options{}))
	eventually(t, 10*time.Second, "Degraded MongoUnreachable", func() error {
		return hasCondition(getCampaign(t, client.ObjectKeyFromObject(campaign)).Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "MongoUnreachable")
	})
	// An outage is not the campaign's fault: its workers keep running and
	// wait for the stores to come back.
	ds, _ := workerDeployments(ns)
	if len(ds) != 1 || *ds[0].Spec.Replicas != 2 {
		t.Errorf("workers during a store outage: %v", ds)
	}
}

// A campaign may name only a worker image the operator allows; another
// image degrades it and no Deployment is written for it.
func TestCampaignWorkerImageMustBeAllowed(t *testing.T) {
	_, ns := startCampaignController(t)
	campaign := newCampaign(ns, 1)
	campaign.Spec.Workers.Image = "evil.example.com/miner:latest"
	create(t, twilioSecret(ns), campaign)
	key := client.ObjectKeyFromObject(campaign)
	eventually(t, 10*time.Second, "Degraded ImageNotAllowed", func() error {
		got := getCampaign(t, key)
		if err := hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "ImageNotAllowed"); err != nil {
			return err
		}
		if !strings.Contains(fmt.Sprint(got.Status.Conditions), "evil.example.com/miner:latest") {
			return fmt.Errorf("the condition does not name the image: %v", got.Status.Conditions)
		}
		return nil
	})
	workloadApplied(t, key)
	if ds, _ := workerDeployments(ns); len(ds) != 0 {
		t.Fatalf("Deployments written for a campaign with an image not allowed: %s", deploymentNames(ds))
	}

	// The operator's own image is allowed; switching to another keeps the
	// Deployment as it was.
	update(t, campaign, func(c *v1.CallCampaign) { c.Spec.Workers.Image = "delauto:test" })
	eventually(t, 10*time.Second, "Deployment written for the allowed image", func() error {
		ds, err := workerDeployments(ns)
		if err != nil || len(ds) != 1 || ds[0].Spec.Template.Spec.Containers[0].Image != "delauto:test" {
			return fmt.Errorf("Deployments %s: %v", deploymentNames(ds), err)
		}
		return hasCondition(getCampaign(t, key).Status.Conditions, v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
	})
	update(t, campaign, func(c *v1.CallCampaign) { c.Spec.Workers.Image = "delauto:test-evil" })
	eventually(t, 10*time.Second, "Degraded ImageNotAllowed again", func() error {
		return hasCondition(getCampaign(t, key).Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "ImageNotAllowed")
	})
	workloadApplied(t, key)
	ds, _ := workerDeployments(ns)
	if len(ds) != 1 || ds[0].Spec.Template.Spec.Containers[0].Image != "delauto:test" {
		t.Errorf("the Deployment changed for an image not allowed: %+v", ds)
	}
}

// Workers get where the stores are and how to log in only from the
// namespace's stores Secret: without it, or without its keys, the campaign
// is Degraded and no Deployment is written.
func TestCampaignNeedsTheStoresSecret(t *testing.T) {
	_, ns := startCampaignController(t)
	ctx := context.Background()
	c := env.Kube.Client
	if err := c.Delete(ctx, storesSecret(ns)); err != nil {
		t.Fatal(err)
	}
	campaign := newCampaign(ns, 1)
	create(t, twilioSecret(ns), campaign)
	key := client.ObjectKeyFromObject(campaign)
	degraded := func(reason string, words ...string) func() error {
		return func() error {
			got := getCampaign(t, key)
			if err := hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, reason); err != nil {
				return err
			}
			for _, w := range words {
				if !strings.Contains(fmt.Sprint(got.Status.Conditions), w) {
					return fmt.Errorf("the condition does not name %s: %v", w, got.Status.Conditions)
				}
			}
			return nil
		}
	}
	eventually(t, 10*time.Second, "Degraded StoresSecretMissing", degraded("StoresSecretMissing", "delauto-stores", stores.EnvRedisURL, stores.EnvMongoURI))
	workloadApplied(t, key)
	if ds, _ := workerDeployments(ns); len(ds) != 0 {
		t.Fatalf("Deployments written without the stores Secret: %s", deploymentNames(ds))
	}
	s := storesSecret(ns)
	delete(s.Data, stores.EnvMongoURI)
	if err := c.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Degraded StoresSecretKeyMissing", degraded("StoresSecretKeyMissing", "delauto-stores", stores.EnvMongoURI))
	workloadApplied(t, key)
	if ds, _ := workerDeployments(ns); len(ds) != 0 {
		t.Fatalf("Deployments written without MONGO_URI in the stores Secret: %s", deploymentNames(ds))
	}
	s.Data = map[string][]byte{stores.EnvRedisAddrs: []byte("r1:7000"), stores.EnvMongoURI: []byte("mongodb://m")}
	if err := c.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "workers once the stores Secret is complete", func() error {
		if ds, err := workerDeployments(ns); err != nil || len(ds) != 1 {
			return fmt.Errorf("Deployments %s: %v", deploymentNames(ds), err)
		}
		return hasCondition(getCampaign(t, key).Status.Conditions, v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
	})
}

// The workload and the status are written by two controllers, each under
// its own field manager: the worker Deployments, ConfigMap and Service by
// server-side apply as the operator, the status by the status controller.
func TestCampaignWorkloadAndStatusHaveTheirOwnFieldManagers(t *testing.T) {
	_, ns := startCampaignController(t)
	ctx := context.Background()
	campaign := newCampaign(ns, 1)
	create(t, twilioSecret(ns), campaign)
	key := client.ObjectKeyFromObject(campaign)
	eventually(t, 10*time.Second, "a worker Deployment and a status", func() error {
		if ds, err := workerDeployments(ns); err != nil || len(ds) != 1 {
			return fmt.Errorf("Deployments %s: %v", deploymentNames(ds), err)
		}
		if got := getCampaign(t, key); got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("status of generation %d, want %d", got.Status.ObservedGeneration, got.Generation)
		}
		return nil
	})
	managers := func(o client.Object) string {
		var out []string
		for _, m := range o.GetManagedFields() {
			out = append(out, fmt.Sprintf("%s/%s/%s", m.Manager, m.Operation, m.Subresource))
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	ds, _ := workerDeployments(ns)
	cm := &corev1.ConfigMap{}
	if err := env.Kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.CampaignConfigMapName("spree")}, cm); err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{&ds[0], cm} {
		if got := managers(o); !strings.Contains(got, controllers.FieldOwner+"/Apply/") {
			t.Errorf("%s is written by %s, want server-side apply by %s", o.GetName(), got, controllers.FieldOwner)
		}
	}
	got := managers(getCampaign(t, key))
	if !strings.Contains(got, controllers.StatusFieldOwner+"/Update/status") {
		t.Errorf("the campaign's status is written by %s, want %s", got, controllers.StatusFieldOwner)
	}
	if strings.Contains(got, controllers.FieldOwner+"/") {
		t.Errorf("the workload controller writes the campaign itself: %s", got)
	}
}

// A campaign whose workers are held (here: no stores Secret in its
// namespace) still moves the queued attempts of the shards it no longer
// has to the shards that own them now: once it runs, no attempt waits in a
// queue no worker reads.
func TestHeldCampaignMovesTheQueuesOfRemovedShards(t *testing.T) {
	q, ns := startCampaignController(t)
	ctx := context.Background()
	if err := env.Kube.Client.Delete(ctx, storesSecret(ns)); err != nil {
		t.Fatal(err)
	}
	c := newCampaign(ns, 1)
	c.Spec.Sharding.Count = 3
	create(t, twilioSecret(ns), c)
	key := client.ObjectKeyFromObject(c)
	eventually(t, 10*time.Second, "held: Degraded StoresSecretMissing and the campaign's ConfigMap", func() error {
		if err := env.Kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.CampaignConfigMapName("spree")}, &corev1.ConfigMap{}); err != nil {
			return err
		}
		return hasCondition(getCampaign(t, key).Status.Conditions, v1.ConditionDegraded, metav1.ConditionTrue, "StoresSecretMissing")
	})
	var entries []queue.Entry
	for i := range 60 {
		uid := fmt.Sprintf("uid-%03d", i)
		entries = append(entries, queue.Entry{Shard: queue.Shard{Namespace: ns, Campaign: "spree", Name: sharding.For(c.Spec.Sharding, uid, "")}, ID: uid + "-1", Due: time.Now()})
	}
	if _, err := q.ScheduleBatch(ctx, entries); err != nil {
		t.Fatal(err)
	}
	update(t, c, func(c *v1.CallCampaign) { c.Spec.Sharding.Count = 1 })
	shards := []queue.Shard{{Namespace: ns, Campaign: "spree", Name: "shard-0"}, {Namespace: ns, Campaign: "spree", Name: "shard-1"}, {Namespace: ns, Campaign: "spree", Name: "shard-2"}}
	eventually(t, 30*time.Second, "the removed shards' queues moved to shard-0 while held", func() error {
		st, err := q.StatsAt(ctx, shards, time.Now(), time.Minute)
		if err != nil {
			return err
		}
		if st[0].Waiting() != 60 || st[1].Waiting()+st[2].Waiting() != 0 {
			return fmt.Errorf("waiting per shard: %d, %d, %d", st[0].Waiting(), st[1].Waiting(), st[2].Waiting())
		}
		return nil
	})
	if ds, _ := workerDeployments(ns); len(ds) != 0 {
		t.Fatalf("held, yet worker Deployments were written: %s", deploymentNames(ds))
	}
}

// secretReads counts the Secrets read through it, by name.
type secretReads struct {
	client.Reader
	mu    sync.Mutex
	names map[string]int
}

func (r *secretReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		r.mu.Lock()
		r.names[key.Name]++
		r.mu.Unlock()
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// The workload and the status controller act on the same checks of a
// campaign's Secrets; one reconcile of both reads each Secret once, as one
// controller did, not twice.
func TestCampaignControllersShareTheirSecretChecks(t *testing.T) {
	ns := namespace(t)
	campaign := newCampaign(ns, 1)
	create(t, twilioSecret(ns), storesSecret(ns), campaign)
	reads := &secretReads{Reader: env.Kube.Client, names: map[string]int{}}
	r := &controllers.CallCampaignReconciler{Client: env.Kube.Client, APIReader: reads, Workers: controllers.WorkerDefaults{Image: "delauto:test"},
		StatusInterval: time.Hour, Recorder: events.NewFakeRecorder(100)}
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(campaign)}
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if reads.names["twilio"] != 2 || reads.names["delauto-stores"] != 1 {
		t.Fatalf("Secret reads %v: want the credentials' Secret twice (its two keys) and the stores Secret once", reads.names)
	}
	if c := getCampaign(t, req.NamespacedName); hasCondition(c.Status.Conditions, v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected") != nil {
		t.Fatalf("status conditions %v, want not degraded", c.Status.Conditions)
	}
	// A new generation is checked again.
	update(t, campaign, func(c *v1.CallCampaign) { c.Spec.Workers.MaxReplicas++ })
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if reads.names["twilio"] != 4 || reads.names["delauto-stores"] != 2 {
		t.Fatalf("Secret reads %v after a spec change: want the checks run again, once", reads.names)
	}
}
