package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	netv1ac "k8s.io/client-go/applyconfigurations/networking/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/workerpod"
)

// Labels on everything the operator owns. The operator's cache holds only
// Deployments and Services with LabelManagedBy=ManagedBy.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "delauto-operator"
	LabelName      = "app.kubernetes.io/name"
	LabelComponent = "app.kubernetes.io/component"
	LabelCampaign  = "delauto.io/campaign"
	LabelShard     = "delauto.io/shard"

	ComponentWorker = "worker"
)

// The worker contract (environment, mounted files, ports) is
// internal/workerpod's; these are the operator's own.
const (
	workerExtraGrace   = 30
	defaultWorkerImage = "ghcr.io/delauto/delauto:v0.1.0"
)

// WorkerDefaults is the operator's configuration of worker Deployments.
type WorkerDefaults struct {
	// Image is used when the campaign names none.
	Image string
	// AllowedImages are the worker images a campaign may name: exact
	// references, or prefixes. A prefix ending in "/" or ":" allows what
	// follows it; one without allows the same repository with any tag or
	// digest. Empty allows only the operator's own worker image.
	AllowedImages []string
	// StoresSecret names the Secret in each campaign's namespace with where
	// the workers' stores are and how to log in (REDIS_URL or REDIS_ADDRS
	// and REDIS_PASSWORD, MONGO_URI); empty is DefaultStoresSecret. Workers
	// get it as envFrom: the operator never copies its own connection
	// settings into a campaign's namespace.
	StoresSecret string
	// Stores are the operator's own store settings. Workers get only those
	// that are no credentials (the call log's database, pool size, timeout
	// and retention), so both sides use the same call log.
	Stores stores.Settings
	// OpsPeers are who may reach the workers' ops port (/metrics, /healthz,
	// /readyz, /drain) besides the operator's own pods, which always may:
	// NetworkPolicy peers, typically Prometheus' pods in the monitoring
	// namespace. Empty is DefaultOpsPeers.
	OpsPeers []netv1.NetworkPolicyPeer
	// TwilioBaseURL, when set, points the workers at another Twilio API
	// base URL (the Twilio simulator, for tests and demos). Empty: Twilio.
	TwilioBaseURL string
	// RelayAllowPrivate lets the workers' relay webhook use plain http and
	// private or loopback addresses (tests and demos, or a dispatch system
	// inside the cluster). Off by default.
	RelayAllowPrivate bool
}

// DefaultStoresSecret is the stores Secret's name without --worker-stores-secret.
const DefaultStoresSecret = "delauto-stores"

// StoresSecretName is the name of the stores Secret workers read.
func (w WorkerDefaults) StoresSecretName() string {
	if w.StoresSecret != "" {
		return w.StoresSecret
	}
	return DefaultStoresSecret
}

// WorkerUID and WorkerGID are the user and group worker containers run as;
// WorkerGID is also the pod's fsGroup, so the kubelet gives that group
// read access to every mounted Secret and ConfigMap file.
const (
	WorkerUID int64 = 65532
	WorkerGID int64 = 65532
)

// WorkerDeploymentName is the name of a shard's worker Deployment: the
// campaign and shard, shortened with a hash when over 63 characters.
func WorkerDeploymentName(campaign, shard string) string {
	return boundedName(campaign + "-" + shard)
}

// CallbackServiceName is the name of the campaign's callback Service.
func CallbackServiceName(campaign string) string { return boundedName(campaign + "-callbacks") }

func boundedName(n string) string {
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return strings.TrimRight(n[:54], "-.") + "-" + hex.EncodeToString(sum[:])[:8]
}

func workerLabels(campaign, shard string) map[string]string {
	return map[string]string{
		LabelName:      "delauto",
		LabelComponent: ComponentWorker,
		LabelManagedBy: ManagedBy,
		LabelCampaign:  campaign,
		LabelShard:     shard,
	}
}

func ownerRef(c *v1.CallCampaign) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(v1.GroupVersion.String()).WithKind("CallCampaign").
		WithName(c.Name).WithUID(c.UID).WithController(true).WithBlockOwnerDeletion(true)
}

// defaultImage is the operator's own worker image.
func (w WorkerDefaults) defaultImage() string {
	if w.Image != "" {
		return w.Image
	}
	return defaultWorkerImage
}

// WorkerImage is the image of the campaign's workers: its own, else the
// operator's.
func (w WorkerDefaults) WorkerImage(c *v1.CallCampaign) string {
	if c.Spec.Workers.Image != "" {
		return c.Spec.Workers.Image
	}
	return w.defaultImage()
}

// ImageAllowed reports whether workers may run image.
func (w WorkerDefaults) ImageAllowed(image string) bool {
	allow := w.AllowedImages
	if len(allow) == 0 {
		allow = []string{w.defaultImage()}
	}
	return imageAllowed(image, allow)
}

// imageAllowed matches image against exact references and prefixes (see
// WorkerDefaults.AllowedImages).
func imageAllowed(image string, allow []string) bool {
	for _, a := range allow {
		switch {
		case a == "" || image == "":
		case image == a:
			return true
		case strings.HasSuffix(a, "/") || strings.HasSuffix(a, ":"):
			if strings.HasPrefix(image, a) {
				return true
			}
		case strings.HasPrefix(image, a+":") || strings.HasPrefix(image, a+"@"):
			return true
		}
	}
	return false
}

// Deployment is the desired worker Deployment of one shard.
func (w WorkerDefaults) Deployment(c *v1.CallCampaign, shard string, replicas int32) *appsv1ac.DeploymentApplyConfiguration {
	image := w.WorkerImage(c)
	concurrency := c.Spec.Workers.Concurrency
	if concurrency < 1 {
		concurrency = workerpod.DefaultConcurrency
	}
	grace := int64(workerExtraGrace) + int64(campaignfile.Settings(&c.Spec).TimeLimit.Seconds())
	labels := workerLabels(c.Name, shard)
	selector := map[string]string{LabelCampaign: c.Name, LabelShard: shard, LabelComponent: ComponentWorker}
	cred := c.Spec.Twilio.CredentialsSecretRef

	podEnv := workerpod.Pod(c.Name, shard, int(concurrency), c.Spec.Twilio.CallbackURL)
	podEnv.TwilioBaseURL, podEnv.RelayAllowPrivate = w.TwilioBaseURL, w.RelayAllowPrivate
	if c.Spec.Relay.Webhook != nil {
		podEnv.RelaySecretFile = path.Join(workerpod.RelayDir, workerpod.RelaySecretFile)
	}
	var env []*corev1ac.EnvVarApplyConfiguration
	for _, f := range workerpod.FieldRefs {
		env = append(env, corev1ac.EnvVar().WithName(f.Name).WithValueFrom(corev1ac.EnvVarSource().WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath(f.FieldPath))))
	}
	for _, v := range podEnv.Vars() {
		env = append(env, corev1ac.EnvVar().WithName(v.Name).WithValue(v.Value))
	}
	container := corev1ac.Container().
		WithName("worker").
		WithImage(image).
		WithArgs("worker").
		WithPorts(
			corev1ac.ContainerPort().WithName("http").WithContainerPort(workerpod.CallbackPort),
			corev1ac.ContainerPort().WithName("ops").WithContainerPort(workerpod.OpsPort),
		).
		WithLivenessProbe(corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/healthz").WithPort(intstr.FromString("ops"))).WithPeriodSeconds(10)).
		WithReadinessProbe(corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/readyz").WithPort(intstr.FromString("ops"))).WithPeriodSeconds(5)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL"))).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("twilio").WithMountPath(workerpod.TwilioDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("campaign").WithMountPath(workerpod.CampaignDir).WithReadOnly(true),
			corev1ac.VolumeMount().WithName("tmp").WithMountPath("/tmp"),
			corev1ac.VolumeMount().WithName("drain").WithMountPath(workerpod.DrainDir).WithReadOnly(true),
		)
	container.WithEnvFrom(corev1ac.EnvFromSource().WithSecretRef(corev1ac.SecretEnvSource().WithName(w.StoresSecretName())))
	for _, e := range w.Stores.Env(false) {
		env = append(env, corev1ac.EnvVar().WithName(e.Name).WithValue(e.Value))
	}
	volumes := []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName("twilio").WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(cred.Name).
			WithDefaultMode(0o440).
			WithItems(
				corev1ac.KeyToPath().WithKey(cred.AccountSIDKey).WithPath(workerpod.TwilioAccountFile),
				corev1ac.KeyToPath().WithKey(cred.AuthTokenKey).WithPath(workerpod.TwilioTokenFile),
			)),
		corev1ac.Volume().WithName("campaign").WithConfigMap(corev1ac.ConfigMapVolumeSource().
			WithName(CampaignConfigMapName(c.Name)).WithDefaultMode(0o444)),
		corev1ac.Volume().WithName("drain").WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(DrainSecretName(c.Name)).WithDefaultMode(0o440).
			WithItems(corev1ac.KeyToPath().WithKey(workerpod.DrainTokenFile).WithPath(workerpod.DrainTokenFile))),
		corev1ac.Volume().WithName("tmp").WithEmptyDir(corev1ac.EmptyDirVolumeSource().WithSizeLimit(resource.MustParse("64Mi"))),
	}
	if wh := c.Spec.Relay.Webhook; wh != nil {
		volumes = append(volumes, corev1ac.Volume().WithName("relay").WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(wh.SecretRef.Name).WithDefaultMode(0o440).
			WithItems(corev1ac.KeyToPath().WithKey(wh.SecretRef.Key).WithPath(workerpod.RelaySecretFile))))
		container.WithVolumeMounts(corev1ac.VolumeMount().WithName("relay").WithMountPath(workerpod.RelayDir).WithReadOnly(true))
	}
	container.WithEnv(env...)
	res := c.Spec.Workers.Resources
	if len(res.Requests) == 0 && len(res.Limits) == 0 {
		res = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		}
	}
	rr := corev1ac.ResourceRequirements()
	if len(res.Requests) > 0 {
		rr.WithRequests(res.Requests)
	}
	if len(res.Limits) > 0 {
		rr.WithLimits(res.Limits)
	}
	container.WithResources(rr)

	return appsv1ac.Deployment(WorkerDeploymentName(c.Name, shard), c.Namespace).
		WithLabels(labels).
		WithOwnerReferences(ownerRef(c)).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithStrategy(appsv1ac.DeploymentStrategy().WithType("RollingUpdate").
				WithRollingUpdate(appsv1ac.RollingUpdateDeployment().WithMaxUnavailable(intstr.FromInt32(0)).WithMaxSurge(intstr.FromInt32(1)))).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(labels).
				WithSpec(corev1ac.PodSpec().
					WithAutomountServiceAccountToken(false).
					WithEnableServiceLinks(false).
					WithTerminationGracePeriodSeconds(grace).
					WithSecurityContext(corev1ac.PodSecurityContext().
						WithRunAsNonRoot(true).
						WithRunAsUser(WorkerUID).WithRunAsGroup(WorkerGID).
						WithFSGroup(WorkerGID).
						WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
					WithContainers(container).
					WithVolumes(volumes...))))
}

// DrainSecretName is the name of the Secret with the campaign's drain token.
func DrainSecretName(campaign string) string { return boundedName(campaign + "-drain") }

// CampaignConfigMapName is the name of the ConfigMap holding the campaign
// for its workers.
func CampaignConfigMapName(campaign string) string { return boundedName(campaign + "-campaign") }

// campaignConfigMap is the desired ConfigMap of the campaign's spec.
func campaignConfigMap(c *v1.CallCampaign) (*corev1ac.ConfigMapApplyConfiguration, error) {
	data, err := campaignfile.Marshal(campaignfile.Config{Namespace: c.Namespace, Name: c.Name, Spec: c.Spec})
	if err != nil {
		return nil, err
	}
	return corev1ac.ConfigMap(CampaignConfigMapName(c.Name), c.Namespace).
		WithLabels(map[string]string{LabelName: "delauto", LabelComponent: "campaign-config", LabelManagedBy: ManagedBy, LabelCampaign: c.Name}).
		WithOwnerReferences(ownerRef(c)).
		WithData(map[string]string{workerpod.CampaignFile: string(data)}), nil
}

// callbackService is the Service in front of every worker of the campaign:
// Twilio's webhooks may reach any of them (an Ingress maps the campaign's
// callbackURL to it).
func callbackService(c *v1.CallCampaign) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(CallbackServiceName(c.Name), c.Namespace).
		WithLabels(map[string]string{LabelName: "delauto", LabelComponent: "callbacks", LabelManagedBy: ManagedBy, LabelCampaign: c.Name}).
		WithOwnerReferences(ownerRef(c)).
		WithSpec(corev1ac.ServiceSpec().
			WithSelector(map[string]string{LabelCampaign: c.Name, LabelComponent: ComponentWorker}).
			WithPorts(corev1ac.ServicePort().WithName("http").WithPort(80).WithTargetPort(intstr.FromString("http"))))
}

// OperatorOpsPeer is the operator's pods (in any namespace): they always
// reach the workers' ops port, to drain workers before a scale-down.
var OperatorOpsPeer = netv1.NetworkPolicyPeer{
	NamespaceSelector: &metav1.LabelSelector{},
	PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{LabelName: "delauto", LabelComponent: "operator"}},
}

// DefaultOpsPeers are who, besides the operator, may reach the workers' ops
// port without WorkerDefaults.OpsPeers: pods labelled
// app.kubernetes.io/name=prometheus in any namespace.
var DefaultOpsPeers = []netv1.NetworkPolicyPeer{{
	NamespaceSelector: &metav1.LabelSelector{},
	PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{LabelName: "prometheus"}},
}}

// ParseOpsPeers reads a JSON list of NetworkPolicy peers (podSelector,
// namespaceSelector, ipBlock), as the operator's --worker-ops-peers takes it.
// An empty string is no list (DefaultOpsPeers apply); a peer without any
// selector, which would let every pod in, is refused.
func ParseOpsPeers(s string) ([]netv1.NetworkPolicyPeer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var peers []netv1.NetworkPolicyPeer
	if err := dec.Decode(&peers); err != nil {
		return nil, fmt.Errorf("a JSON list of NetworkPolicy peers, like "+
			`[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}},"podSelector":{"matchLabels":{"app.kubernetes.io/name":"prometheus"}}}]: %w`, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("a JSON list of NetworkPolicy peers, and nothing after it")
	}
	for i, p := range peers {
		if p.PodSelector == nil && p.NamespaceSelector == nil && p.IPBlock == nil {
			return nil, fmt.Errorf("peer %d names no podSelector, namespaceSelector or ipBlock", i)
		}
		if err := checkIPBlock(p); err != nil {
			return nil, fmt.Errorf("peer %d: %w", i, err)
		}
		for _, sel := range []*metav1.LabelSelector{p.PodSelector, p.NamespaceSelector} {
			if sel == nil {
				continue
			}
			if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
				return nil, fmt.Errorf("peer %d: %w", i, err)
			}
		}
	}
	return peers, nil
}

// checkIPBlock applies the apiserver's rules for a peer's ipBlock, so that a
// bad --worker-ops-peers stops the operator at start rather than failing
// every worker NetworkPolicy: cidr is a CIDR, each except a CIDR strictly
// inside it, and no selector beside it.
func checkIPBlock(p netv1.NetworkPolicyPeer) error {
	b := p.IPBlock
	if b == nil {
		return nil
	}
	if p.PodSelector != nil || p.NamespaceSelector != nil {
		return fmt.Errorf("ipBlock goes alone: a peer with it has no podSelector or namespaceSelector")
	}
	_, cidr, err := net.ParseCIDR(b.CIDR)
	if err != nil {
		return fmt.Errorf("ipBlock.cidr %q is not a CIDR such as 10.0.0.0/8", b.CIDR)
	}
	size, _ := cidr.Mask.Size()
	for _, e := range b.Except {
		_, ex, err := net.ParseCIDR(e)
		if err != nil {
			return fmt.Errorf("ipBlock.except %q is not a CIDR such as 10.1.0.0/16", e)
		}
		if exSize, _ := ex.Mask.Size(); !cidr.Contains(ex.IP) || exSize <= size || len(ex.IP) != len(cidr.IP) {
			return fmt.Errorf("ipBlock.except %q must lie strictly inside ipBlock.cidr %s", e, b.CIDR)
		}
	}
	return nil
}

func peerApply(p netv1.NetworkPolicyPeer) *netv1ac.NetworkPolicyPeerApplyConfiguration {
	sel := func(s *metav1.LabelSelector) *metav1ac.LabelSelectorApplyConfiguration {
		a := metav1ac.LabelSelector()
		if len(s.MatchLabels) > 0 {
			a.WithMatchLabels(s.MatchLabels)
		}
		for _, r := range s.MatchExpressions {
			a.WithMatchExpressions(metav1ac.LabelSelectorRequirement().WithKey(r.Key).WithOperator(r.Operator).WithValues(r.Values...))
		}
		return a
	}
	a := netv1ac.NetworkPolicyPeer()
	if p.PodSelector != nil {
		a.WithPodSelector(sel(p.PodSelector))
	}
	if p.NamespaceSelector != nil {
		a.WithNamespaceSelector(sel(p.NamespaceSelector))
	}
	if p.IPBlock != nil {
		a.WithIPBlock(netv1ac.IPBlock().WithCIDR(p.IPBlock.CIDR).WithExcept(p.IPBlock.Except...))
	}
	return a
}

// NetworkPolicyName is the name of the campaign's worker NetworkPolicy.
func NetworkPolicyName(campaign string) string { return boundedName(campaign + "-workers") }

// NetworkPolicy is the desired NetworkPolicy of the campaign's workers: the
// callbacks port is open to all (Twilio comes through the ingress), the ops
// port only to the operator's pods and the OpsPeers.
func (w WorkerDefaults) NetworkPolicy(c *v1.CallCampaign) *netv1ac.NetworkPolicyApplyConfiguration {
	peers := w.OpsPeers
	if len(peers) == 0 {
		peers = DefaultOpsPeers
	}
	ops := []*netv1ac.NetworkPolicyPeerApplyConfiguration{peerApply(OperatorOpsPeer)}
	for _, p := range peers {
		ops = append(ops, peerApply(p))
	}
	port := func(p int) *netv1ac.NetworkPolicyPortApplyConfiguration {
		return netv1ac.NetworkPolicyPort().WithProtocol(corev1.ProtocolTCP).WithPort(intstr.FromInt(p))
	}
	return netv1ac.NetworkPolicy(NetworkPolicyName(c.Name), c.Namespace).
		WithLabels(map[string]string{LabelName: "delauto", LabelComponent: "network-policy", LabelManagedBy: ManagedBy, LabelCampaign: c.Name}).
		WithOwnerReferences(ownerRef(c)).
		WithSpec(netv1ac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{LabelCampaign: c.Name, LabelComponent: ComponentWorker})).
			WithPolicyTypes("Ingress").
			WithIngress(
				netv1ac.NetworkPolicyIngressRule().WithPorts(port(workerpod.CallbackPort)),
				netv1ac.NetworkPolicyIngressRule().WithPorts(port(workerpod.OpsPort)).WithFrom(ops...),
			))
}
