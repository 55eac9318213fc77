// Package localcluster runs a Kubernetes cluster on this machine without
// containers: a control plane from binaries (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) started by kwokctl, fake nodes
// run by kwok so Deployments get ReplicaSets and Running pods, and a Runner
// that turns each pod of the DelAuto image into a real process. It backs
// `make demo` and `make test-e2e`.
//
// Pod IPs are loopback addresses (each node's podCIDR is in 127.0.0.0/8),
// so a process bound to its pod's IP is reachable at that IP, like a pod.
package localcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options say where the binaries are and where the cluster lives.
type Options struct {
	// Name of the cluster (kwokctl's); default "delauto".
	Name string
	// Bin holds kwokctl, kwok, etcd, kube-apiserver,
	// kube-controller-manager and kube-scheduler.
	Bin string
	// Dir is the cluster's folder (KWOK_WORKDIR): certificates, etcd data,
	// component logs and the kubeconfig.
	Dir string
}

// Cluster is a running local cluster.
type Cluster struct {
	opts Options
	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig string
	// Config is the admin client configuration.
	Config *rest.Config
	// Client is an admin client.
	Client kubernetes.Interface
}

// Binaries are the programs a cluster needs in Options.Bin.
var Binaries = []string{"kwokctl", "kwok", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// Start creates and starts the cluster and waits until it is ready.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Name == "" {
		opts.Name = "delauto"
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(opts.Bin, b)); err != nil {
			return nil, fmt.Errorf("the local cluster needs %s in %s (make e2e-tools builds it): %w", b, opts.Bin, err)
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, Kubeconfig: filepath.Join(opts.Dir, "kubeconfig")}
	bin := func(n string) string { return filepath.Join(opts.Bin, n) }
	out, err := c.kwokctl(ctx, "create", "cluster", "--name", opts.Name, "--runtime", "binary",
		"--kube-apiserver-binary", bin("kube-apiserver"), "--kube-controller-manager-binary", bin("kube-controller-manager"),
		"--kube-scheduler-binary", bin("kube-scheduler"), "--etcd-binary", bin("etcd"), "--kwok-controller-binary", bin("kwok"),
		// One scheduler and one controller manager, and nothing restarts
		// them (a kubelet would): with leader election on, a lease renewal
		// that times out on a loaded apiserver ends them for good, and
		// Deployments get no more pods.
		"--extra-args", "kube-scheduler=leader-elect=false", "--extra-args", "kube-controller-manager=leader-elect=false",
		"--kubeconfig", c.Kubeconfig, "--wait", "2m")
	if err != nil {
		return nil, fmt.Errorf("kwokctl create cluster: %w\n%s", err, out)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return c, nil
}

// Server is the apiserver's URL.
func (c *Cluster) Server() string { return c.Config.Host }

// CAFile is the path of the cluster's CA certificate.
func (c *Cluster) CAFile() string { return c.Config.CAFile }

// LogsDir holds the control plane's component logs.
func (c *Cluster) LogsDir() string { return filepath.Join(c.opts.Dir, "clusters", c.opts.Name, "logs") }

// Stop deletes the cluster: its processes end and its folder is removed.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.kwokctl(ctx, "delete", "cluster", "--name", c.opts.Name)
	if err != nil {
		return fmt.Errorf("kwokctl delete cluster: %w\n%s", err, out)
	}
	return nil
}

func (c *Cluster) kwokctl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.opts.Bin, "kwokctl"), args...)
	cmd.Env = append(os.Environ(), "KWOK_WORKDIR="+c.opts.Dir)
	return cmd.CombinedOutput()
}

// AddNodes adds n fake nodes run by kwok. Node i gives its pods IPs from
// 127.(1+i).0.0/24, so each pod's process can bind its pod's IP.
func (c *Cluster) AddNodes(ctx context.Context, n int) error {
	for i := range n {
		cidr := fmt.Sprintf("127.%d.0.0/24", 1+i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        fmt.Sprintf("node-%d", i),
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
				Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": fmt.Sprintf("node-%d", i), "kubernetes.io/os": "linux"},
			},
			Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
			Status: corev1.NodeStatus{
				Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")},
				Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")},
			},
		}
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("node %s: %w", node.Name, err)
		}
	}
	return nil
}
