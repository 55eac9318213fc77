package localcluster

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Runner plays the kubelet for the pods of one image: each pod of that image
// that is Running on a fake node becomes a real process of Binary with the
// pod's arguments, environment, files, user and ServiceAccount token, bound
// to the pod's IP (a loopback address, see Cluster.AddNodes). When the pod
// is deleted the process gets SIGTERM and, after the pod's grace period,
// SIGKILL. A process that exits while its pod lives is restarted with
// back-off, as restartPolicy Always does.
type Runner struct {
	// Client reads pods, Secrets and ConfigMaps and requests tokens.
	Client kubernetes.Interface
	// Server is the apiserver's URL, written into each pod's kubeconfig
	// with the pod's own ServiceAccount token and CA (kube-root-ca.crt).
	Server string
	// Binary is the program each matching container runs.
	Binary string
	// Image selects containers: an image equal to it or starting with it
	// followed by ':' or '@'.
	Image string
	// Dir holds a folder and a log file per pod.
	Dir string
	// Events receives one line per start, exit and stop. Nil: discarded.
	Events io.Writer
	// Env is added to every process's environment before the pod's own:
	// what a node gives its containers (SSL_CERT_FILE for a trust store).
	Env []string

	mu    sync.Mutex
	procs map[types.UID]*proc
	wg    sync.WaitGroup

	probeMu sync.Mutex
	probes  map[types.UID]*probeState
}

// probeState is a pod's readiness as the kubelet keeps it: probed at most
// once a period, ready after a success, unready after failureThreshold
// failures in a row.
type probeState struct {
	checked time.Time
	ready   bool
	fails   int32
}

// proc is the process of one pod.
type proc struct {
	pod      *corev1.Pod
	stop     chan struct{} // closed when the pod goes
	done     chan struct{} // closed when the process supervisor ends
	restarts int
}

// matches reports whether image is the Runner's.
func (r *Runner) matches(image string) bool {
	return image == r.Image || strings.HasPrefix(image, r.Image+":") || strings.HasPrefix(image, r.Image+"@")
}

// Run watches pods until ctx ends, then stops every process (SIGTERM, then
// SIGKILL after the grace period) and returns.
func (r *Runner) Run(ctx context.Context) error {
	r.procs = map[types.UID]*proc{}
	if err := os.MkdirAll(filepath.Join(r.Dir, "logs"), 0o755); err != nil {
		return err
	}
	f := informers.NewSharedInformerFactory(r.Client, 0)
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.sync(ctx, o.(*corev1.Pod), false) },
		UpdateFunc: func(_, o any) { r.sync(ctx, o.(*corev1.Pod), false) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if p, ok := o.(*corev1.Pod); ok {
				r.sync(ctx, p, true)
			}
		},
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	r.mu.Lock()
	for _, p := range r.procs {
		closeOnce(p.stop)
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// sync starts or stops the process of pod.
func (r *Runner) sync(ctx context.Context, pod *corev1.Pod, deleted bool) {
	if len(pod.Spec.Containers) == 0 || !r.matches(pod.Spec.Containers[0].Image) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p, running := r.procs[pod.UID]
	if deleted || pod.DeletionTimestamp != nil {
		if running {
			closeOnce(p.stop)
		}
		return
	}
	if running || pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || ctx.Err() != nil {
		return
	}
	p = &proc{pod: pod.DeepCopy(), stop: make(chan struct{}), done: make(chan struct{})}
	r.procs[pod.UID] = p
	r.wg.Add(1)
	go r.supervise(ctx, p)
}

func (r *Runner) event(format string, args ...any) {
	if r.Events != nil {
		fmt.Fprintf(r.Events, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
}

// supervise runs the pod's process until the pod goes, restarting it when
// it exits on its own.
func (r *Runner) supervise(ctx context.Context, p *proc) {
	defer r.wg.Done()
	defer close(p.done)
	name := p.pod.Namespace + "/" + p.pod.Name
	if err := r.patchFinalizer(ctx, p.pod, true); err != nil {
		r.event("pod %s: cannot hold it while its process runs: %v", name, err)
	}
	defer func() {
		if err := r.patchFinalizer(context.Background(), p.pod, false); err != nil {
			r.event("pod %s: cannot let it go: %v", name, err)
		}
	}()
	dir := filepath.Join(r.Dir, "pods", p.pod.Namespace+"_"+p.pod.Name)
	logPath := filepath.Join(r.Dir, "logs", p.pod.Namespace+"_"+p.pod.Name+".log")
	backoff := time.Second
	for {
		cmd, exited, err := r.start(ctx, p.pod, dir, logPath)
		if err != nil {
			r.event("pod %s: cannot start: %v", name, err)
		} else {
			r.event("pod %s: started pid %d on %s (log %s)", name, cmd.Process.Pid, p.pod.Status.PodIP, logPath)
			select {
			case err := <-exited:
				r.notReady(p.pod.UID)
				r.event("pod %s: exited (%v); restart %d in %s", name, err, p.restarts+1, backoff)
			case <-p.stop:
				r.terminate(p.pod, cmd, exited)
				return
			}
		}
		p.restarts++
		select {
		case <-p.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// ProcessFinalizer holds a pod the Runner started a process for until that
// process has exited, as a kubelet keeps a pod Terminating until its
// containers stopped. kwok deletes a pod at once and gives its IP to the
// next pod; without the hold a new pod got the IP of one still draining
// after SIGTERM and could not bind its ports until the old process exited.
const ProcessFinalizer = "localcluster.delauto.io/process"

// patchFinalizer adds (hold) or removes ProcessFinalizer on pod. A pod
// already gone needs neither.
func (r *Runner) patchFinalizer(ctx context.Context, pod *corev1.Pod, hold bool) error {
	patch := `{"metadata":{"$deleteFromPrimitiveList/finalizers":["` + ProcessFinalizer + `"]}}`
	if hold {
		patch = `{"metadata":{"finalizers":["` + ProcessFinalizer + `"]}}`
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := r.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// terminate sends SIGTERM and, after the pod's grace period, SIGKILL.
func (r *Runner) terminate(pod *corev1.Pod, cmd *exec.Cmd, exited <-chan error) {
	name := pod.Namespace + "/" + pod.Name
	grace := 30 * time.Second
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	r.event("pod %s: deleted, SIGTERM (grace %s)", name, grace)
	select {
	case err := <-exited:
		r.event("pod %s: stopped (%v)", name, err)
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		err := <-exited
		r.event("pod %s: SIGKILL after the grace period (%v)", name, err)
	}
}

// Kill sends SIGKILL to the process of the named pod (chaos); the pod stays,
// so the process is restarted like a crashed container.
func (r *Runner) Kill(namespace, name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.procs {
		if p.pod.Namespace == namespace && p.pod.Name == name {
			pidFile := filepath.Join(r.Dir, "pods", namespace+"_"+name, "pid")
			if b, err := os.ReadFile(pidFile); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					return syscall.Kill(pid, syscall.SIGKILL) == nil
				}
			}
		}
	}
	return false
}

// start lays the pod out afresh and starts its process.
func (r *Runner) start(ctx context.Context, pod *corev1.Pod, dir, logPath string) (*exec.Cmd, chan error, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, nil, err
	}
	c, err := LayOut(ctx, clusterSource{r.Client}, pod, "", dir)
	if err != nil {
		return nil, nil, err
	}
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, nil, err
	}
	exe := filepath.Join(bin, filepath.Base(r.Binary))
	if err := os.Link(r.Binary, exe); err != nil {
		data, rerr := os.ReadFile(r.Binary)
		if rerr != nil {
			return nil, nil, rerr
		}
		if err := os.WriteFile(exe, data, 0o755); err != nil {
			return nil, nil, err
		}
	}
	env := append([]string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "HOSTNAME=" + pod.Name}, r.Env...)
	if tok := c.Local(saDir + "/token"); tok != saDir+"/token" {
		kc := filepath.Join(dir, "kubeconfig")
		if err := os.WriteFile(kc, []byte(podKubeconfig(r.Server, c.Local(saDir+"/ca.crt"), tok, pod.Namespace)), 0o644); err != nil {
			return nil, nil, err
		}
		env = append(env, "KUBECONFIG="+kc)
	}
	env = append(env, c.Env...)
	args := bindToPodIP(c.Args, pod.Status.PodIP)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.Cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(logf, "--- %s start %s %s\n", time.Now().Format(time.RFC3339Nano), pod.Name, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, err
	}
	_ = os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		logf.Close()
		exited <- err
	}()
	return cmd, exited, nil
}

// saDir is where a pod's ServiceAccount token, CA and namespace are mounted.
const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// bindToPodIP makes the process listen on the pod's IP: listen addresses of
// the form ":port" in flags become "ip:port", and a worker gets its
// callbacks and ops servers on the pod's IP at their default ports.
func bindToPodIP(args []string, ip string) []string {
	out := make([]string, 0, len(args)+4)
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") && strings.HasPrefix(v, ":") {
			a = k + "=" + ip + v
			seen[k] = true
		} else if strings.HasPrefix(a, "--") && i+1 < len(args) && strings.HasPrefix(args[i+1], ":") {
			seen[a] = true
			out = append(out, a)
			i++
			a = ip + args[i]
		}
		out = append(out, a)
	}
	if len(args) > 0 && args[0] == "worker" {
		for flag, port := range map[string]string{"--http-addr": "8080", "--ops-addr": "8082"} {
			if !seen[flag] {
				out = append(out, flag+"="+net.JoinHostPort(ip, port))
			}
		}
	}
	if len(args) > 0 && args[0] == "operator" {
		for flag, port := range map[string]string{"--metrics-bind-address": "8443", "--health-probe-bind-address": "8081"} {
			if !seen[flag] {
				out = append(out, flag+"="+net.JoinHostPort(ip, port))
			}
		}
	}
	return out
}

// podKubeconfig is what in-cluster configuration gives a pod: the apiserver,
// its CA and the pod's own ServiceAccount token (re-read by client-go).
func podKubeconfig(server, caFile, tokenFile, namespace string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: %q, certificate-authority: %q}
users:
- name: pod
  user: {tokenFile: %q}
contexts:
- name: pod
  context: {cluster: local, user: pod, namespace: %q}
current-context: pod
`, server, caFile, tokenFile, namespace)
}

// Pods returns the pods whose processes run now.
func (r *Runner) Pods() []*corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*corev1.Pod
	for _, p := range r.procs {
		select {
		case <-p.stop:
		default:
			out = append(out, p.pod)
		}
	}
	return out
}

// Restarts is the number of restarts of the named pod's process.
func (r *Runner) Restarts(namespace, name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.procs {
		if p.pod.Namespace == namespace && p.pod.Name == name {
			return p.restarts
		}
	}
	return 0
}

// DialService connects to a running pod behind the Service: the local
// cluster's kube-proxy. host is "<service>.<namespace>.svc" (a suffix
// ".cluster.local" is allowed), port the Service port.
func (r *Runner) DialService(ctx context.Context, host string, port int) (net.Conn, error) {
	host = strings.TrimSuffix(strings.TrimSuffix(host, "."), ".cluster.local")
	parts := strings.Split(host, ".")
	if len(parts) != 3 || parts[2] != "svc" {
		return nil, fmt.Errorf("%s is not a Service host (<service>.<namespace>.svc)", host)
	}
	svc, err := r.Client.CoreV1().Services(parts[1]).Get(ctx, parts[0], metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var target *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if int(svc.Spec.Ports[i].Port) == port {
			target = &svc.Spec.Ports[i]
		}
	}
	if target == nil {
		return nil, fmt.Errorf("Service %s/%s has no port %d", parts[1], parts[0], port)
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var addrs []string
	for _, p := range r.Pods() {
		if p.Namespace != svc.Namespace || len(svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		if tp := targetPort(p, target); tp > 0 && r.ready(ctx, p) {
			addrs = append(addrs, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(tp)))
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("Service %s/%s: no running pod", parts[1], parts[0])
	}
	var d net.Dialer
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	var last error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

// ready reports whether the pod is in its Services' endpoints, as the
// kubelet decides: its readiness probe run at most once per periodSeconds
// (default 10), the pod ready from its first success until
// failureThreshold (default 3) failures in a row. A one-second stall of a
// loaded machine does not take every pod out of a Service at once.
func (r *Runner) ready(ctx context.Context, pod *corev1.Pod) bool {
	period, threshold := 10*time.Second, int32(3)
	if p := pod.Spec.Containers[0].ReadinessProbe; p != nil {
		if p.PeriodSeconds > 0 {
			period = time.Duration(p.PeriodSeconds) * time.Second
		}
		if p.FailureThreshold > 0 {
			threshold = p.FailureThreshold
		}
	}
	r.probeMu.Lock()
	if r.probes == nil {
		r.probes = map[types.UID]*probeState{}
	}
	st := r.probes[pod.UID]
	if st == nil {
		st = &probeState{}
		r.probes[pod.UID] = st
	}
	if !st.checked.IsZero() && time.Since(st.checked) < period {
		ok := st.ready
		r.probeMu.Unlock()
		return ok
	}
	r.probeMu.Unlock()
	ok := probeReady(ctx, pod)
	r.probeMu.Lock()
	defer r.probeMu.Unlock()
	st.checked = time.Now()
	if ok {
		st.ready, st.fails = true, 0
	} else if st.fails++; st.fails >= threshold {
		st.ready = false
	}
	return st.ready
}

// notReady takes the pod out of its Services' endpoints until its
// readiness probe passes again, as the kubelet does when a container
// exits: the restarted process is not sent requests while it starts.
func (r *Runner) notReady(uid types.UID) {
	r.probeMu.Lock()
	defer r.probeMu.Unlock()
	delete(r.probes, uid)
}

// probeReady runs the pod's HTTP readiness probe once. A pod without one
// is ready.
func probeReady(ctx context.Context, pod *corev1.Pod) bool {
	c := pod.Spec.Containers[0]
	probe := c.ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		return true
	}
	port := probe.HTTPGet.Port.IntValue()
	if port == 0 {
		for _, cp := range c.Ports {
			if cp.Name == probe.HTTPGet.Port.String() {
				port = int(cp.ContainerPort)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port))+probe.HTTPGet.Path, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// targetPort is the container port of pod that sp targets.
func targetPort(pod *corev1.Pod, sp *corev1.ServicePort) int {
	if sp.TargetPort.IntValue() > 0 {
		return sp.TargetPort.IntValue()
	}
	name := sp.TargetPort.String()
	if name == "" || name == "0" {
		return int(sp.Port)
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name {
				return int(cp.ContainerPort)
			}
		}
	}
	return 0
}

// clusterSource reads a pod's references from the apiserver.
type clusterSource struct{ c kubernetes.Interface }

func (s clusterSource) Secret(ctx context.Context, ns, name string) (map[string][]byte, error) {
	o, err := s.c.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return o.Data, nil
}

func (s clusterSource) ConfigMap(ctx context.Context, ns, name string) (map[string]string, error) {
	o, err := s.c.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return o.Data, nil
}

func (s clusterSource) Token(ctx context.Context, pod *corev1.Pod, audience string, exp int64) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if audience != "" {
		tr.Spec.Audiences = []string{audience}
	}
	out, err := s.c.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return out.Status.Token, nil
}

// ProxyErrorHeader marks a ServiceProxy answer that did not come from a
// pod: 502 when no pod behind the Service could be reached.
const ProxyErrorHeader = "X-Local-Service-Proxy"

// ServiceProxy serves plain HTTP on a loopback port and forwards each
// request to a running pod behind the Service at host ("<service>.<namespace>.svc")
// and port: how the simulator's webhooks reach a campaign's callback
// Service, as an Ingress would. It stops when ctx ends.
func (r *Runner) ServiceProxy(ctx context.Context, host string, port int) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	target := &url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port))}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{
		DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return r.DialService(ctx, host, port) },
		IdleConnTimeout: 10 * time.Second,
	}
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		w.Header().Set(ProxyErrorHeader, "unreachable")
		http.Error(w, err.Error(), http.StatusBadGateway)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return "http://" + ln.Addr().String(), nil
}
