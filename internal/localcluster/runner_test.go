package localcluster

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/delauto/delauto/internal/testservices"
)

// A pod stays in its Services' endpoints through a failed probe or two (a
// stalled machine), but a container that exited is out at once and comes
// back only when its readiness probe passes again, as the kubelet does: a
// restarted worker is not sent webhooks while it starts.
func TestRestartedContainerLeavesTheEndpointsUntilReady(t *testing.T) {
	var code atomic.Int32
	code.Store(http.StatusOK)
	probe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(int(code.Load())) }))
	defer probe.Close()
	host, port, _ := net.SplitHostPort(probe.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	pod := &corev1.Pod{}
	pod.UID = "pod-1"
	pod.Status.PodIP = host
	pod.Spec.Containers = []corev1.Container{{Name: "worker", ReadinessProbe: &corev1.Probe{
		// A period of 0 is the default (10 s): every call after the first
		// within it answers from the last probe.
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(int32(p))}},
	}}}
	r := &Runner{}
	ctx := context.Background()
	if !r.ready(ctx, pod) {
		t.Fatal("a pod whose probe passes is not ready")
	}
	code.Store(http.StatusServiceUnavailable)
	if !r.ready(ctx, pod) {
		t.Fatal("a ready pod left the endpoints within its probe period")
	}
	r.notReady(pod.UID)
	if r.ready(ctx, pod) {
		t.Fatal("a container that exited, whose probe fails, is still in the endpoints")
	}
	if r.ready(ctx, pod) {
		t.Fatal("a restarted container is back in the endpoints before its probe passed")
	}
	code.Store(http.StatusOK)
	r.notReady(pod.UID) // exited again, and started; its probe passes now
	if !r.ready(ctx, pod) {
		t.Fatal("a restarted container whose probe passes is not ready")
	}
}

// A deleted pod stays, Terminating, until its process has exited after
// SIGTERM, as the kubelet keeps it: kwok removes a deleted pod at once and
// gives its IP to the next pod, which then could not bind its ports while
// the old process drained (up to the 30 s grace period).
func TestDeletedPodStaysUntilItsProcessExits(t *testing.T) {
	kube, err := testservices.StartKube()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kube.Stop)
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "drain"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	marks := t.TempDir()
	started, exited := filepath.Join(marks, "started"), filepath.Join(marks, "exited")
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	root := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "drain", Name: "worker"},
		Spec: corev1.PodSpec{
			NodeName:        "node-1",
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: &root, RunAsGroup: &root},
			Containers: []corev1.Container{{Name: "worker", Image: "runner.test/drain:1",
				// Notes its start; drains for a second after SIGTERM, then
				// notes its exit.
				Args: []string{"-c", "trap 'sleep 1; touch " + exited + "; exit 0' TERM; touch " + started + "; while :; do sleep 0.1; done"}}},
		},
	}
	if pod, err = cs.CoreV1().Pods("drain").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase, pod.Status.PodIP = corev1.PodRunning, "127.0.0.1"
	if _, err := cs.CoreV1().Pods("drain").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := &Runner{Client: cs, Server: kube.Config.Host, Binary: sh, Image: "runner.test/drain", Dir: t.TempDir()}
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	waitFor(t, "the process started and the pod held", func() bool {
		p, err := cs.CoreV1().Pods("drain").Get(ctx, "worker", metav1.GetOptions{})
		_, serr := os.Stat(started)
		return err == nil && slices.Contains(p.Finalizers, ProcessFinalizer) && serr == nil
	})

	// Deleted at once, as kwok deletes a pod: grace period 0.
	if err := cs.CoreV1().Pods("drain").Delete(ctx, "worker", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pod gone", func() bool {
		_, err := cs.CoreV1().Pods("drain").Get(ctx, "worker", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if _, err := os.Stat(exited); err != nil {
		t.Fatalf("the pod was gone before its process exited: %v", err)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond every 50 ms for up to 60 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 60 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
