package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The operator reads (never writes) the admission policy that sets the
// finalizer, to know at start-up whether it is in place.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingadmissionpolicies;mutatingadmissionpolicybindings,verbs=get

// DefaultFinalizerPolicy names the MutatingAdmissionPolicy, and its binding,
// that config/default and the chart (release "delauto") install to set the
// Finalizer on every Delivery when it is created.
const DefaultFinalizerPolicy = "delauto-cancel-calls"

// FinalizerMode is how new Deliveries get the Finalizer.
type FinalizerMode string

const (
	// FinalizerByAdmissionPolicy: the apiserver sets it at create; the
	// operator writes nothing for it.
	FinalizerByAdmissionPolicy FinalizerMode = "AdmissionPolicy"
	// FinalizerByPatch: the operator patches each new Delivery, one API
	// write of its own.
	FinalizerByPatch FinalizerMode = "Patch"
)

const admissionGroup = "admissionregistration.k8s.io"

// DetectFinalizerMode says whether the cluster serves MutatingAdmissionPolicy
// (admissionregistration.k8s.io/v1 from Kubernetes 1.36; v1beta1 on 1.34 and
// 1.35 with the MutatingAdmissionPolicy feature gate and the v1beta1 API
// enabled) and holds the policy name and a binding of the same name that set
// the Finalizer. Anything else, an error included, is FinalizerByPatch; why
// is the second result, for the log. The reconciler adds a missing finalizer
// in either mode, so a wrong answer costs writes, never safety.
func DetectFinalizerMode(ctx context.Context, disc discovery.DiscoveryInterface, c client.Reader, name string) (FinalizerMode, string) {
	if name == "" {
		return FinalizerByPatch, "no admission policy named (--finalizer-policy is empty)"
	}
	version := ""
	for _, v := range []string{"v1", "v1beta1"} {
		list, err := disc.ServerResourcesForGroupVersion(admissionGroup + "/" + v)
		if err != nil {
			continue
		}
		var names []string
		for _, r := range list.APIResources {
			names = append(names, r.Name)
		}
		if slices.Contains(names, "mutatingadmissionpolicies") && slices.Contains(names, "mutatingadmissionpolicybindings") {
			version = v
			break
		}
	}
	if version == "" {
		return FinalizerByPatch, "the cluster does not serve MutatingAdmissionPolicy (" + admissionGroup + "/v1 from Kubernetes 1.36, v1beta1 behind the MutatingAdmissionPolicy feature gate on 1.34 and 1.35)"
	}
	get := func(kind string) (*unstructured.Unstructured, error) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: admissionGroup, Version: version, Kind: kind})
		return u, c.Get(ctx, types.NamespacedName{Name: name}, u)
	}
	policy, err := get("MutatingAdmissionPolicy")
	switch {
	case apierrors.IsNotFound(err):
		return FinalizerByPatch, fmt.Sprintf("MutatingAdmissionPolicy %s is not installed (the chart's admissionPolicy.enabled, config/default's admission component)", name)
	case err != nil:
		return FinalizerByPatch, fmt.Sprintf("cannot read MutatingAdmissionPolicy %s: %v", name, err)
	}
	spec, _ := json.Marshal(policy.Object["spec"])
	if !strings.Contains(string(spec), Finalizer) {
		return FinalizerByPatch, fmt.Sprintf("MutatingAdmissionPolicy %s does not set the finalizer %s", name, Finalizer)
	}
	binding, err := get("MutatingAdmissionPolicyBinding")
	switch {
	case apierrors.IsNotFound(err):
		return FinalizerByPatch, fmt.Sprintf("MutatingAdmissionPolicy %s has no binding named %s", name, name)
	case err != nil:
		return FinalizerByPatch, fmt.Sprintf("cannot read MutatingAdmissionPolicyBinding %s: %v", name, err)
	}
	if ref, _, _ := unstructured.NestedString(binding.Object, "spec", "policyName"); ref != name {
		return FinalizerByPatch, fmt.Sprintf("MutatingAdmissionPolicyBinding %s binds policy %q, not %s", name, ref, name)
	}
	return FinalizerByAdmissionPolicy, fmt.Sprintf("MutatingAdmissionPolicy %s (%s/%s) and its binding set the finalizer at create", name, admissionGroup, version)
}
