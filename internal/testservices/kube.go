package testservices

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	delautov1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

// Kube is a real kube-apiserver and etcd (envtest) with DelAuto's CRDs.
type Kube struct {
	// Config reaches the apiserver as an administrator.
	Config *rest.Config
	// Scheme knows the built-in types and DelAuto's.
	Scheme *runtime.Scheme
	// Client is a direct (uncached) client.
	Client client.Client
	env    *envtest.Environment
}

// StartKube starts kube-apiserver and etcd from $KUBEBUILDER_ASSETS (bin/ of
// the checkout by default) and installs the CRDs from config/crd/bases.
func StartKube() (*Kube, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make tools` (it builds Kubernetes 1.37.2 from the Go module proxy)", b, assets)
		}
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := delautov1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
		Scheme:                scheme,
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("start envtest (kube-apiserver and etcd from %s): %w", assets, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Kube{Config: cfg, Scheme: scheme, Client: c, env: env}, nil
}

// Stop ends the apiserver and etcd.
func (k *Kube) Stop() {
	if k == nil {
		return
	}
	_ = k.env.Stop()
}

// Kubeconfig writes a kubeconfig of an administrator of the apiserver to a
// temporary file and returns its path, for kubectl.
func (k *Kube) Kubeconfig() (string, error) {
	u, err := k.env.AddUser(envtest.User{Name: "delauto-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", err
	}
	data, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "delauto-kubeconfig-")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return "", err
	}
	return f.Name(), nil
}

// Kubectl finds the kubectl that `make tools` builds (bin/), or $KUBECTL.
func Kubectl() (string, error) {
	return lookBinary("KUBECTL", "kubectl", "run `make tools` to build bin/kubectl")
}

// RepoRoot is the root of the DelAuto checkout the tests run in.
func RepoRoot() (string, error) { return repoRoot() }

// ReaderToken makes, in namespace (created when missing), a ServiceAccount
// named name with a Role of rules bound to it, and returns a token of it
// from the TokenRequest API, valid for an hour: a caller that the
// apiserver authenticates (TokenReview) and authorizes by RBAC.
func (k *Kube) ReaderToken(ctx context.Context, namespace, name string, rules []rbacv1.PolicyRule) (string, error) {
	cs, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		return "", err
	}
	create := func(what string, err error) error {
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", what, err)
		}
		return nil
	}
	meta := metav1.ObjectMeta{Name: name}
	if err := create("namespace", func() error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return "", err
	}
	if err := create("ServiceAccount", func() error {
		_, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta}, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return "", err
	}
	if err := create("Role", func() error {
		_, err := cs.RbacV1().Roles(namespace).Create(ctx, &rbacv1.Role{ObjectMeta: meta, Rules: rules}, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return "", err
	}
	if err := create("RoleBinding", func() error {
		_, err := cs.RbacV1().RoleBindings(namespace).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta,
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}},
		}, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return "", err
	}
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request a token: %w", err)
	}
	return tr.Status.Token, nil
}
