package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
)

// writeCounter counts the API writes a client makes, by what they write.
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

// countWrites returns a copy of cfg whose requests are counted.
func countWrites(cfg *rest.Config) (*rest.Config, *writeCounter) {
	w := &writeCounter{counts: map[string]int{}}
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet {
				w.add(req.Method + " " + writeTarget(req.URL.Path))
			}
			return rt.RoundTrip(req)
		})
	})
	return cfg, w
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// writeTarget names what a request path writes: "deliveries",
// "deliveries/status", "events", ...
func writeTarget(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			rest := parts[i+2:]
			if len(rest) >= 3 {
				return rest[0] + "/" + rest[2]
			}
			return rest[0]
		}
	}
	return path
}

func (w *writeCounter) add(k string) {
	w.mu.Lock()
	w.counts[k]++
	w.mu.Unlock()
}

func (w *writeCounter) snapshot() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.counts {
		out[k] = v
	}
	return out
}

// installFinalizerPolicy creates config/admission's policy and binding as
// name, the binding limited to namespace ns (other tests share the
// apiserver), and waits until the apiserver applies it. Without bind, only
// the policy is created.
func installFinalizerPolicy(t *testing.T, name, ns string, bind bool) {
	t.Helper()
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join("..", "config", "admission", "finalizer_policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c := env.Kube.Client
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		u.SetName(name)
		if u.GetKind() == "MutatingAdmissionPolicyBinding" {
			if !bind {
				continue
			}
			u.Object["spec"] = map[string]any{
				"policyName": name,
				"matchResources": map[string]any{"namespaceSelector": map[string]any{
					"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns},
				}},
			}
		}
		if err := c.Create(ctx, u); err != nil {
			t.Fatalf("create %s: %v", u.GetKind(), err)
		}
		t.Cleanup(func() { _ = c.Delete(context.Background(), u) })
	}
	if !bind {
		return
	}
	eventually(t, 30*time.Second, "the admission policy sets the finalizer", func() error {
		d := newDelivery(ns, "probe", "spree")
		if err := c.Create(ctx, d, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(d.Finalizers, controllers.Finalizer) {
			return fmt.Errorf("a Delivery is created with finalizers %v", d.Finalizers)
		}
		return nil
	})
}

// newDelivery is a Delivery of campaign, due at once.
func newDelivery(ns, name, campaign string) *v1.Delivery {
	now := time.Now()
	return &v1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.DeliverySpec{
			CampaignRef: &v1.CampaignReference{Name: campaign},
			Recipient:   v1.Recipient{Name: "Anna", Phone: "+4915112345678", TimeZone: "Europe/Berlin"},
			Address:     v1.Address{Line1: "Torstrasse 1", City: "Berlin"},
			Window:      v1.DeliveryWindow{Start: metav1.NewTime(now.Add(-10 * time.Minute)), End: metav1.NewTime(now.Add(3 * time.Hour))},
			Agent:       v1.Agent{Name: "Route B-17"},
		},
	}
}

// scheduleAndCountWrites runs the Delivery controller in ns with its writes
// counted, creates n Deliveries, waits until each is Scheduled with the
// finalizer, and returns the controller's writes. A last Delivery naming a
// campaign that does not exist is the sentinel: its Warning Event is
// recorded after every earlier Event, so once it is visible no write of the
// n Deliveries is still on its way. Its own writes are taken off.
func scheduleAndCountWrites(t *testing.T, ns string, n int, mode controllers.FinalizerMode) map[string]int {
	t.Helper()
	ctx := context.Background()
	cfg, counter := countWrites(env.Kube.Config)
	o := startOperatorIn(t, ns, cfg, func(r *controllers.DeliveryReconciler) {
		r.FinalizerMode = mode
		// No summary Event during the test: it is one write per campaign
		// and interval, not per Delivery.
		r.PhaseSummaryInterval = time.Hour
	})
	o.campaign(t)
	for i := range n {
		create(t, newDelivery(ns, fmt.Sprintf("parcel-%d", i), "spree"))
	}
	for i := range n {
		name := fmt.Sprintf("parcel-%d", i)
		d := o.waitPhase(t, name, v1.DeliveryScheduled)
		if !slices.Contains(d.Finalizers, controllers.Finalizer) {
			t.Errorf("%s: finalizers %v", name, d.Finalizers)
		}
	}
	create(t, newDelivery(ns, "sentinel", "no-such-campaign"))
	eventually(t, 30*time.Second, "the sentinel's Event", func() error {
		var evs eventsv1.EventList
		if err := env.Kube.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "sentinel" && e.Reason == "CampaignNotFound" {
				return nil
			}
		}
		return fmt.Errorf("no CampaignNotFound Event on the sentinel yet")
	})
	writes := counter.snapshot()
	// The sentinel's status and Warning Event, and its finalizer patch when
	// there is no policy.
	writes["PATCH deliveries/status"]--
	writes["POST events"]--
	if mode == controllers.FinalizerByPatch {
		writes["PATCH deliveries"]--
	}
	for k, v := range writes {
		if v == 0 {
			delete(writes, k)
		}
	}
	return writes
}

// With the admission policy installed, scheduling a Delivery costs the
// operator exactly one API write: its status. The finalizer comes with the
// create, the Scheduled transition is no Event of its own.
func TestSchedulingCostsOneWriteWithTheAdmissionPolicy(t *testing.T) {
	ns := namespace(t)
	name := ns + "-cancel-calls"
	installFinalizerPolicy(t, name, ns, true)
	disc := discovery.NewDiscoveryClientForConfigOrDie(env.Kube.Config)
	mode, why := controllers.DetectFinalizerMode(context.Background(), disc, env.Kube.Client, name)
	if mode != controllers.FinalizerByAdmissionPolicy {
		t.Fatalf("mode %s (%s), want %s", mode, why, controllers.FinalizerByAdmissionPolicy)
	}
	const n = 5
	writes := scheduleAndCountWrites(t, ns, n, mode)
	want := map[string]int{"PATCH deliveries/status": n}
	if fmt.Sprint(writes) != fmt.Sprint(want) {
		t.Errorf("the operator's writes for %d Deliveries: %v, want %v (one per Delivery)", n, writes, want)
	}
}

// Without the policy the operator says so at start-up and patches the
// finalizer itself: two writes per Delivery.
func TestFinalizerPatchedWithoutTheAdmissionPolicy(t *testing.T) {
	ns := namespace(t)
	disc := discovery.NewDiscoveryClientForConfigOrDie(env.Kube.Config)
	mode, why := controllers.DetectFinalizerMode(context.Background(), disc, env.Kube.Client, ns+"-absent")
	if mode != controllers.FinalizerByPatch || !strings.Contains(why, "not installed") {
		t.Errorf("without the policy: mode %s (%s), want %s, not installed", mode, why, controllers.FinalizerByPatch)
	}
	// A policy nobody bound sets nothing.
	unbound := ns + "-unbound"
	installFinalizerPolicy(t, unbound, ns, false)
	mode, why = controllers.DetectFinalizerMode(context.Background(), disc, env.Kube.Client, unbound)
	if mode != controllers.FinalizerByPatch || !strings.Contains(why, "no binding") {
		t.Errorf("with an unbound policy: mode %s (%s), want %s, no binding", mode, why, controllers.FinalizerByPatch)
	}
	if mode, why := controllers.DetectFinalizerMode(context.Background(), disc, env.Kube.Client, ""); mode != controllers.FinalizerByPatch {
		t.Errorf("with no policy named: mode %s (%s)", mode, why)
	}

	const n = 5
	writes := scheduleAndCountWrites(t, ns, n, controllers.FinalizerByPatch)
	want := map[string]int{"PATCH deliveries": n, "PATCH deliveries/status": n}
	if fmt.Sprint(writes) != fmt.Sprint(want) {
		t.Errorf("the operator's writes for %d Deliveries: %v, want %v (finalizer and status)", n, writes, want)
	}
}

// The cache keeps neither managed fields nor kubectl's copy of the spec, and
// keeps every other annotation.
func TestCacheTransformTrimsObjects(t *testing.T) {
	d := newDelivery("ns", "d", "spree")
	d.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"spec":{}}`, "team": "b17"}
	d.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	out, err := controllers.CacheTransform()(d)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*v1.Delivery)
	if len(got.ManagedFields) != 0 || fmt.Sprint(got.Annotations) != "map[team:b17]" {
		t.Errorf("managed fields %v, annotations %v", got.ManagedFields, got.Annotations)
	}
}
