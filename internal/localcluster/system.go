package localcluster

import (
	"cmp"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/relay"
)

// Image is the image name the chart is installed with and the Runner runs.
const Image = "delauto.local/delauto"

// SystemOptions describe a whole DelAuto installation on this machine.
type SystemOptions struct {
	// Repo is the repository's root: the chart and cmd/delauto are built
	// from it.
	Repo string
	// Bin holds the tools (Binaries, helm).
	Bin string
	// Dir is the run's folder: the cluster, each pod's files and every
	// component's log.
	Dir string
	// OperatorReplicas is the chart's operator.replicas (leader election
	// is on); default 2.
	OperatorReplicas int
	// Nodes is the number of fake nodes; default 2.
	Nodes int
	// Sim configures the Twilio simulator (its URL is handed to workers).
	Sim twiliosim.Options
	// Progress receives a line per step. Nil: discarded.
	Progress io.Writer
}

// System is a running installation: Redis, FerretDB, the Twilio simulator,
// a dispatch system receiving relay webhooks, the local cluster, DelAuto
// installed by its Helm chart, and the Runner turning its pods into
// processes.
type System struct {
	opts     SystemOptions
	Cluster  *Cluster
	Runner   *Runner
	Sim      *twiliosim.Sim
	Services *testservices.Env
	Dispatch *Dispatch
	// Client reads and writes DelAuto's objects as the cluster admin.
	Client client.Client
	// Binary is the delauto binary the pods run.
	Binary string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *System) step(format string, args ...any) func() {
	start := time.Now()
	msg := fmt.Sprintf(format, args...)
	if s.opts.Progress != nil {
		fmt.Fprintf(s.opts.Progress, ">> %s ...\n", msg)
	}
	return func() {
		if s.opts.Progress != nil {
			fmt.Fprintf(s.opts.Progress, ">> %s: done in %s\n", msg, time.Since(start).Round(100*time.Millisecond))
		}
	}
}

// StartSystem builds delauto, starts every service and the cluster, and
// installs the chart. On error what was started is stopped.
func StartSystem(ctx context.Context, opts SystemOptions) (_ *System, err error) {
	if opts.OperatorReplicas == 0 {
		opts.OperatorReplicas = 2
	}
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the local cluster runs each pod as its own user, which needs root")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	// Pods run as their own users: they must reach their folders.
	for d := opts.Dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o005); err != nil {
				return nil, err
			}
		}
	}
	s := &System{opts: opts, done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()

	end := s.step("building delauto")
	s.Binary = filepath.Join(opts.Dir, "delauto")
	build := exec.CommandContext(ctx, "go", "build", "-o", s.Binary, "./cmd/delauto")
	build.Dir = opts.Repo
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/delauto: %w\n%s", err, out)
	}
	end()

	end = s.step("starting Redis and FerretDB on PostgreSQL")
	if s.Services, err = testservices.Start(testservices.Want{Redis: true, Mongo: true}); err != nil {
		return nil, err
	}
	end()

	end = s.step("starting the Twilio simulator and a dispatch system")
	if s.Sim, err = twiliosim.New(opts.Sim); err != nil {
		return nil, err
	}
	var dispatchCA string
	if s.Dispatch, dispatchCA, err = startDispatch(opts.Dir); err != nil {
		return nil, err
	}
	end()

	end = s.step("starting the cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)")
	if s.Cluster, err = Start(ctx, Options{Bin: opts.Bin, Dir: filepath.Join(opts.Dir, "cluster")}); err != nil {
		return nil, err
	}
	if err := s.Cluster.AddNodes(ctx, opts.Nodes); err != nil {
		return nil, err
	}
	ctrllog.SetLogger(logr.Discard())
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1.AddToScheme(scheme)
	if s.Client, err = client.New(s.Cluster.Config, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	end()

	s.Runner = &Runner{Client: s.Cluster.Client, Server: s.Cluster.Server(),
		Binary: s.Binary, Image: Image, Dir: filepath.Join(opts.Dir, "pods"), Env: []string{"SSL_CERT_FILE=" + dispatchCA}}
	events, err := os.Create(filepath.Join(opts.Dir, "pod-runner.log"))
	if err != nil {
		return nil, err
	}
	s.Runner.Events = events
	go func() {
		defer close(s.done)
		defer events.Close()
		_ = s.Runner.Run(s.ctx)
	}()

	end = s.step("installing the chart (operator replicas %d, leader election)", opts.OperatorReplicas)
	helm := exec.CommandContext(ctx, filepath.Join(opts.Bin, "helm"), "install", "delauto", filepath.Join(opts.Repo, "charts", "delauto"),
		"--kubeconfig", s.Cluster.Kubeconfig, "-n", "delauto-system", "--create-namespace",
		"--set", "image.repository="+Image, "--set", "image.tag=dev",
		"--set", "stores.redisURL="+s.Services.Redis.URL(), "--set", "stores.mongoURI="+s.Services.Mongo.URI,
		"--set", fmt.Sprintf("operator.replicas=%d", opts.OperatorReplicas),
		"--set", "operator.extraArgs={--worker-twilio-base-url="+s.Sim.URL()+",--worker-relay-allow-private,--status-interval=2s}")
	if out, err := helm.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("helm install: %w\n%s", err, out)
	}
	// The chart installs the CRDs with everything else: objects of their
	// kinds can be created once the apiserver serves them.
	wait := exec.CommandContext(ctx, filepath.Join(opts.Bin, "kubectl"), "--kubeconfig", s.Cluster.Kubeconfig, "wait",
		"--for=condition=Established", "--timeout=2m", "crd/deliveries.delauto.io", "crd/callcampaigns.delauto.io")
	if out, err := wait.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("waiting for the CRDs: %w\n%s", err, out)
	}
	end()
	return s, nil
}

// LogsDir is where every component's log is: the pods' (logs/), the control
// plane's (cluster/.../logs) and the pod runner's.
func (s *System) LogsDir() string { return s.opts.Dir }

// Stop stops everything StartSystem started: pods get SIGTERM, then the
// cluster, the simulator and the services end.
func (s *System) Stop() {
	s.cancel()
	if s.Runner != nil {
		select {
		case <-s.done:
		case <-time.After(60 * time.Second):
		}
	}
	if s.Cluster != nil {
		_ = s.Cluster.Stop()
	}
	if s.Sim != nil {
		s.Sim.Close()
	}
	if s.Dispatch != nil {
		s.Dispatch.Close()
	}
	if s.Services != nil {
		s.Services.Stop()
	}
}

// CampaignHost is the callback host of a campaign: its callback Service's
// cluster name. A campaign's spec.twilio.callbackURL is https://CampaignHost.
func CampaignHost(namespace, campaign string) string {
	return controllers.CallbackServiceName(campaign) + "." + namespace + ".svc"
}

// RouteCallbacks sends the simulator's webhooks for the campaign to its
// callback Service, as an Ingress in front of the Service would. The
// campaign's spec.twilio.callbackURL is https://CampaignHost (as Campaign
// writes it).
func (s *System) RouteCallbacks(namespace, campaign string) error {
	return s.RouteCallbackURL("https://"+CampaignHost(namespace, campaign), namespace, campaign)
}

// RouteCallbackURL sends the simulator's webhooks for callbackURL (a
// campaign's public spec.twilio.callbackURL, such as the samples') to the
// campaign's callback Service.
func (s *System) RouteCallbackURL(callbackURL, namespace, campaign string) error {
	local, err := s.Runner.ServiceProxy(s.ctx, CampaignHost(namespace, campaign), 80)
	if err != nil {
		return err
	}
	return s.Sim.SetWebhookRoute(callbackURL, local)
}

// Apply applies YAML with kubectl as the cluster admin (server-side, so a
// repeat is harmless). Right after the chart installed the CRDs, the
// apiserver may answer ServiceUnavailable for their kinds for a while
// (admission policies learn new types late): that is retried for a minute.
func (s *System) Apply(ctx context.Context, yaml string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		cmd := exec.CommandContext(ctx, filepath.Join(s.opts.Bin, "kubectl"), "--kubeconfig", s.Cluster.Kubeconfig, "apply", "--server-side", "-f", "-")
		cmd.Stdin = strings.NewReader(yaml)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		if !strings.Contains(string(out), "ServiceUnavailable") || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("kubectl apply: %w\n%s", err, applyErrors(out))
		}
		time.Sleep(2 * time.Second)
	}
}

// applyErrors is kubectl apply's output without the objects it applied,
// at most 20 lines.
func applyErrors(out []byte) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasSuffix(l, " serverside-applied") || strings.HasSuffix(l, " unchanged") {
			continue
		}
		if len(keep) == 20 {
			keep = append(keep, "...")
			break
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// Dispatch is a dispatch system receiving the relay's webhooks.
type Dispatch struct {
	// URL is where it listens: https on loopback (workers need
	// --relay-allow-private, which the system's operator hands them).
	URL string
	srv *httptest.Server
	mu  sync.Mutex
	got []DispatchRequest
}

// DispatchRequest is one webhook received.
type DispatchRequest struct {
	Path, Timestamp, Signature string
	Body                       []byte
}

// startDispatch starts the dispatch system on https with a certificate of
// its own, written as a PEM file into dir: the pods trust it through the
// Runner's SSL_CERT_FILE, as a node's trust store would.
func startDispatch(dir string) (*Dispatch, string, error) {
	d := &Dispatch{}
	d.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		d.mu.Lock()
		d.got = append(d.got, DispatchRequest{Path: r.URL.Path, Timestamp: r.Header.Get(relay.HeaderTimestamp), Signature: r.Header.Get(relay.HeaderSignature), Body: body})
		d.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	d.srv.StartTLS()
	d.URL = d.srv.URL
	ca := filepath.Join(dir, "dispatch-ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemData, 0o644); err != nil {
		d.srv.Close()
		return nil, "", err
	}
	return d, ca, nil
}

// Requests returns the webhooks received so far.
func (d *Dispatch) Requests() []DispatchRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]DispatchRequest(nil), d.got...)
}

// Close stops the server.
func (d *Dispatch) Close() { d.srv.Close() }

// DispatchKey signs the relay webhooks of the campaigns Campaign writes.
const DispatchKey = "local-dispatch-signing-key"

// CampaignOptions say what Campaign writes.
type CampaignOptions struct {
	// Namespace and Name of the CallCampaign (the namespace is created).
	Namespace, Name string
	// HoursStart and HoursEnd are the calling hours ("15:04", UTC).
	HoursStart, HoursEnd string
	// MaxAttempts per Delivery: 1 (default) or more, then no-answer and
	// busy are retried after 1m.
	MaxAttempts int
	// Regions are the shards (sharded by region).
	Regions []string
	// ScaleDownDelay is spec.workers.scaleDownDelay; 0 keeps the API's
	// default (5m).
	ScaleDownDelay time.Duration
	// CallsPerSecond is spec.twilio.callsPerSecond; default 20.
	CallsPerSecond int
	// Concurrency and MaxReplicas are spec.workers' calls per worker and
	// workers per shard; default 20 and 4.
	Concurrency, MaxReplicas int
}

// Campaign is the YAML of a namespace with what a campaign needs (Twilio
// credentials of the simulator, the stores Secret, the dispatch signing key)
// and a CallCampaign: calling hours start-end UTC, one attempt per Delivery
// (or maxAttempts with 1m back-off), sharded by region, 1 to 4 workers of
// 20 calls per shard and 20 calls a second (unless o says otherwise), relaying by SMS and signed webhook to the system's
// dispatch. It starts with a document separator, so campaigns and
// Deliveries concatenate into one YAML stream. Apply it, then RouteCallbacks.
func (s *System) Campaign(o CampaignOptions) string {
	retry := "{maxAttempts: 1}"
	if o.MaxAttempts > 1 {
		retry = fmt.Sprintf("{maxAttempts: %d, backoff: [1m], retryOn: [no-answer, busy]}", o.MaxAttempts)
	}
	cps, concurrency, maxReplicas := cmp.Or(o.CallsPerSecond, 20), cmp.Or(o.Concurrency, 20), cmp.Or(o.MaxReplicas, 4)
	scaleDown := ""
	if o.ScaleDownDelay > 0 {
		scaleDown = fmt.Sprintf("\n    scaleDownDelay: %s", o.ScaleDownDelay)
	}
	return fmt.Sprintf(`---
apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: v1
kind: Secret
metadata: {name: twilio-credentials, namespace: %[1]s}
stringData: {accountSID: %[3]s, authToken: %[4]s}
---
apiVersion: v1
kind: Secret
metadata: {name: delauto-stores, namespace: %[1]s}
stringData: {REDIS_URL: %[5]q, MONGO_URI: %[6]q}
---
apiVersion: v1
kind: Secret
metadata: {name: dispatch-webhook, namespace: %[1]s}
stringData: {secret: %[7]s}
---
apiVersion: delauto.io/v1alpha1
kind: CallCampaign
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  deliverySelector:
    matchLabels: {delauto.io/campaign: %[2]s}
  schedule:
    leadTime: 5m
    callingHours: {start: "%[9]s", end: "%[10]s"}
    defaultTimeZone: UTC
  retry: %[12]s
  script:
    companyName: Local Parcels
    answeringMachine: Voicemail
  twilio:
    credentialsSecretRef: {name: twilio-credentials}
    fromNumbers: ["+14155550100"]
    callsPerSecond: %[15]d
    callbackURL: https://%[8]s
  relay:
    sms: true
    webhook:
      url: %[11]s/hooks/delauto
      secretRef: {name: dispatch-webhook, key: secret}
  sharding:
    by: Region
    regions: [%[13]s]
  workers:
    concurrency: %[16]d
    minReplicas: 1
    maxReplicas: %[17]d%[14]s
`, o.Namespace, o.Name, s.Sim.AccountSID(), s.Sim.AuthToken(), s.Services.Redis.URL(), s.Services.Mongo.URI, DispatchKey,
		CampaignHost(o.Namespace, o.Name), o.HoursStart, o.HoursEnd, s.Dispatch.URL, retry, strings.Join(o.Regions, ", "), scaleDown, cps, concurrency, maxReplicas)
}

// Delivery is the YAML of one Delivery of campaign whose window opens at
// start (UTC, two hours long), to recipient and agent numbers.
func Delivery(namespace, campaign, name, region, recipient, agent string, start time.Time) string {
	start = start.UTC().Truncate(time.Second)
	return fmt.Sprintf(`---
apiVersion: delauto.io/v1alpha1
kind: Delivery
metadata: {name: %[1]s, namespace: %[2]s, labels: {delauto.io/campaign: %[3]s}}
spec:
  recipient: {name: Recipient %[1]s, phone: "%[4]s", timeZone: UTC, language: en-US}
  address: {line1: 1 Main St, city: Springfield, postalCode: "12345", country: US}
  region: %[5]s
  window: {start: "%[6]s", end: "%[7]s"}
  agent: {name: Route %[1]s, phone: "%[8]s"}
`, name, namespace, campaign, recipient, region, start.Format(time.RFC3339), start.Add(2*time.Hour).Format(time.RFC3339), agent)
}
