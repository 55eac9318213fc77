package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/stores"
)

// operatorRules reads the operator's rules as the chart installs them
// (charts/delauto/files/operator-rules.yaml, copied from config/rbac/role.yaml)
// and checks that they are the generated ones.
func operatorRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	read := func(p string) []rbacv1.PolicyRule {
		data, err := os.ReadFile(filepath.Join("..", p))
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal(data, &r); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return r.Rules
	}
	chart, generated := read("charts/delauto/files/operator-rules.yaml"), read("config/rbac/role.yaml")
	if fmt.Sprint(chart) != fmt.Sprint(generated) {
		t.Fatalf("the chart's operator rules differ from config/rbac/role.yaml: run make manifests")
	}
	return chart
}

// withoutVerb returns rules with verb removed from the rules on resource.
func withoutVerb(rules []rbacv1.PolicyRule, resource, verb string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		r = *r.DeepCopy()
		if slices.Contains(r.Resources, resource) {
			r.Verbs = slices.DeleteFunc(r.Verbs, func(v string) bool { return v == verb })
		}
		if len(r.Verbs) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// operatorIdentity installs rules as a ClusterRole bound to a new
// ServiceAccount in a fresh namespace and returns the namespace and a
// config acting as that account.
func operatorIdentity(t *testing.T, rules []rbacv1.PolicyRule) (string, *rest.Config) {
	t.Helper()
	c := env.Kube.Client
	ns := namespace(t)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "delauto-operator"}}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ns + "-operator"}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-operator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa.Name}},
	}
	create(t, sa, role, binding)
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), binding)
		_ = c.Delete(context.Background(), role)
	})
	cfg := rest.CopyConfig(env.Kube.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa.Name, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	return ns, cfg
}

// rbacWorkers is the worker configuration of the RBAC tests.
var rbacWorkers = controllers.WorkerDefaults{Image: "delauto:test", Stores: stores.Settings{MongoDatabase: "delauto"}}

// startCampaignControllerAs runs the CallCampaign controller with the
// rules, as the operator's ServiceAccount bound to them.
func startCampaignControllerAs(t *testing.T, rules []rbacv1.PolicyRule) string {
	t.Helper()
	ns, cfg := operatorIdentity(t, rules)
	mgr := newManagerAs(t, cfg, ns)
	r := &controllers.CallCampaignReconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Workers:        rbacWorkers,
		StatusInterval: 300 * time.Millisecond,
		Recorder:       mgr.GetEventRecorder("delauto-operator"),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	run(t, mgr)
	return ns
}

// reconcileOnceAs reconciles the campaign once as the operator's
// ServiceAccount bound to rules, reading straight from the apiserver.
func reconcileOnceAs(t *testing.T, rules []rbacv1.PolicyRule, setup func(ns string) *v1.CallCampaign) (string, error) {
	t.Helper()
	ns, cfg := operatorIdentity(t, rules)
	campaign := setup(ns)
	cl, err := client.New(cfg, client.Options{Scheme: env.Kube.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.CallCampaignReconciler{Client: cl, APIReader: cl, Workers: rbacWorkers, Recorder: events.NewFakeRecorder(100)}
	_, err = r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(campaign)})
	return ns, err
}

// The operator runs with the rules it is installed with, and needs each of
// them: no cluster-wide list or watch of Secrets.
func TestOperatorRunsWithItsGeneratedRBAC(t *testing.T) {
	rules := operatorRules(t)
	for _, r := range rules {
		if slices.Contains(r.Resources, "secrets") && (slices.Contains(r.Verbs, "list") || slices.Contains(r.Verbs, "watch") || slices.Contains(r.Verbs, "*")) {
			t.Errorf("the operator may %v every Secret of the cluster", r.Verbs)
		}
	}
	campaignIn := func(ns string) *v1.CallCampaign {
		create(t, twilioSecret(ns), storesSecret(ns), newCampaign(ns, 1))
		return newCampaign(ns, 1)
	}

	t.Run("generated rules", func(t *testing.T) {
		ns := startCampaignControllerAs(t, rules)
		key := client.ObjectKeyFromObject(campaignIn(ns))
		eventually(t, 20*time.Second, "campaign Ready with its workers written", func() error {
			got := getCampaign(t, key)
			if err := hasCondition(got.Status.Conditions, v1.ConditionDegraded, metav1.ConditionFalse, "AsExpected"); err != nil {
				return err
			}
			ds, err := workerDeployments(ns)
			if err != nil || len(ds) != 1 || *ds[0].Spec.Replicas != 2 {
				return fmt.Errorf("worker Deployments %v: %v", deploymentNames(ds), err)
			}
			return nil
		})
	})

	// Each verb taken away stops the reconcile before any worker runs.
	for _, missing := range []struct{ resource, verb string }{
		{"secrets", "get"},
		{"deployments", "patch"},
	} {
		t.Run("without "+missing.resource+" "+missing.verb, func(t *testing.T) {
			ns, err := reconcileOnceAs(t, withoutVerb(rules, missing.resource, missing.verb), campaignIn)
			if !apierrors.IsForbidden(err) {
				t.Errorf("reconcile = %v, want forbidden", err)
			}
			if ds, _ := workerDeployments(ns); len(ds) != 0 {
				t.Errorf("worker Deployments written: %s", deploymentNames(ds))
			}
		})
	}
}
