// Package config_test applies the install manifests (kustomize and Helm) to
// a real apiserver, as users install DelAuto.
package config_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/delauto/delauto/internal/testservices"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Kube: true, Redis: true, Mongo: true}, &env)
}

// tools returns kubectl with a kubeconfig for the test apiserver, and the
// checkout's root.
func tools(t *testing.T) (kubectl func(stdin []byte, args ...string) (string, error), root string) {
	t.Helper()
	bin, err := testservices.Kubectl()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := env.Kube.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	root, err = testservices.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return func(stdin []byte, args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}, root
}

func TestKustomizeInstallApplies(t *testing.T) {
	kubectl, root := tools(t)
	out, err := kubectl(nil, "apply", "-k", filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatalf("kubectl apply -k config/default: %v\n%s", err, out)
	}
	for _, want := range []string{
		"namespace/delauto-system", "customresourcedefinition.apiextensions.k8s.io/deliveries.delauto.io",
		"clusterrole.rbac.authorization.k8s.io/delauto-operator", "deployment.apps/delauto-operator",
		"role.rbac.authorization.k8s.io/delauto-leader-election",
		"mutatingadmissionpolicy.admissionregistration.k8s.io/delauto-cancel-calls",
		"mutatingadmissionpolicybinding.admissionregistration.k8s.io/delauto-cancel-calls",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply -k config/default did not apply %s:\n%s", want, out)
		}
	}
	// The operator's ServiceAccount may do what the controllers need, and no more.
	can := func(verb, resource string) bool {
		out, _ := kubectl(nil, "auth", "can-i", verb, resource, "--as", "system:serviceaccount:delauto-system:delauto-operator")
		return strings.TrimSpace(out) == "yes"
	}
	if !can("list", "deliveries.delauto.io") || !can("patch", "deliveries.delauto.io/status") {
		t.Error("the operator cannot list Deliveries or patch their status")
	}
	if can("get", "secrets") && can("list", "secrets") && can("delete", "secrets") {
		t.Error("the operator may delete Secrets: RBAC is wider than needed")
	}
	if can("create", "clusterroles.rbac.authorization.k8s.io") {
		t.Error("the operator may create ClusterRoles: RBAC is wider than needed")
	}
}

func helm(t *testing.T, root string, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(root, "bin", "helm")
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return stderr.String(), err
	}
	return string(out), nil
}

func TestHelmChartInstalls(t *testing.T) {
	kubectl, root := tools(t)
	chart := filepath.Join(root, "charts", "delauto")

	// Without store settings the chart refuses with a clear message.
	out, err := helm(t, root, "template", "dl", chart, "--namespace", "delauto")
	if err == nil || !strings.Contains(out, "set stores.redisURL (or stores.existingSecret)") {
		t.Fatalf("helm template without stores: want a clear error, got %v\n%s", err, out)
	}

	// --api-versions: as on a cluster serving MutatingAdmissionPolicy (the
	// apiserver of the tests does), where the chart installs the finalizer's.
	rendered, err := helm(t, root, "template", "dl", chart, "--namespace", "delauto", "--include-crds",
		"--api-versions", "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
		"--set", "stores.redisURL=redis://redis:6379", "--set", "stores.mongoURI=mongodb://mongo:27017/delauto")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, rendered)
	}
	if out, err := kubectl(nil, "create", "namespace", "delauto"); err != nil {
		t.Fatalf("create namespace: %v\n%s", err, out)
	}
	out, err = kubectl([]byte(rendered), "apply", "--server-side", "--field-manager", "helm-test", "-f", "-")
	if err != nil {
		t.Fatalf("applying the rendered chart: %v\n%s", err, out)
	}
	if !strings.Contains(rendered, "--finalizer-policy=dl-delauto-cancel-calls") {
		t.Error("the chart does not name its admission policy to the operator")
	}
	// Where the cluster does not serve MutatingAdmissionPolicy the chart
	// installs none and the operator patches the finalizer itself.
	older, err := helm(t, root, "template", "dl", chart, "--namespace", "delauto",
		"--set", "stores.redisURL=redis://redis:6379", "--set", "stores.mongoURI=mongodb://mongo:27017/delauto")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, older)
	}
	if strings.Contains(older, "kind: MutatingAdmissionPolicy") || !strings.Contains(older, "--finalizer-policy=\n") {
		t.Error("without MutatingAdmissionPolicy in the cluster the chart still installs the policy or names it to the operator")
	}
	for _, want := range []string{"deployment.apps/dl-delauto-operator", "clusterrole.rbac.authorization.k8s.io/dl-delauto-operator", "secret/dl-delauto-stores",
		"mutatingadmissionpolicy.admissionregistration.k8s.io/dl-delauto-cancel-calls", "mutatingadmissionpolicybinding.admissionregistration.k8s.io/dl-delauto-cancel-calls",
		"deployment.apps/dl-delauto-api", "service/dl-delauto-api", "serviceaccount/dl-delauto-api", "clusterrole.rbac.authorization.k8s.io/dl-delauto-api"} {
		if !strings.Contains(out, want) {
			t.Errorf("the chart did not create %s:\n%s", want, out)
		}
	}
	// The chart's operator rules are the generated ones.
	out, err = kubectl(nil, "auth", "can-i", "patch", "deliveries.delauto.io/status", "--as", "system:serviceaccount:delauto:dl-delauto")
	if err != nil || strings.TrimSpace(out) != "yes" {
		t.Errorf("the chart's operator cannot patch Delivery status: %v %s", err, out)
	}
	// The insights API may check tokens and access, and read nothing itself.
	const apiSA = "system:serviceaccount:delauto:dl-delauto-api"
	for _, c := range []struct {
		verb, resource, want string
	}{{"create", "tokenreviews.authentication.k8s.io", "yes"}, {"create", "subjectaccessreviews.authorization.k8s.io", "yes"},
		{"list", "deliveries.delauto.io", "no"}, {"get", "secrets", "no"}} {
		out, _ := kubectl(nil, "auth", "can-i", c.verb, c.resource, "--as", apiSA, "-A")
		if strings.TrimSpace(out) != c.want {
			t.Errorf("can the chart's API %s %s: %q, want %s", c.verb, c.resource, out, c.want)
		}
	}
}
