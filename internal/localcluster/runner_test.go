package localcluster

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
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
