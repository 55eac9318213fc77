package testservices

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/runtime"
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
