package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/store"
)

// pod is a worker pod of a Deployment the operator wrote, laid out on this
// machine the way the kubelet lays it out (localcluster.LayOut): each
// volume a folder, each Secret and ConfigMap key a file with the owner,
// group and mode the kubelet gives it, and the environment with the
// downward API filled in.
type pod struct {
	*localcluster.Container
}

// newPod lays out the first container of d's pod template.
func newPod(t *testing.T, d *appsv1.Deployment, podName string, secrets, configMaps map[string]map[string]string) *pod {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test lays out files owned by root and runs the worker as the pod's user: run it as root (CI does)")
	}
	dir, err := os.MkdirTemp("", "pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: podName, Labels: d.Spec.Template.Labels}, Spec: d.Spec.Template.Spec}
	c, err := localcluster.LayOut(context.Background(), localcluster.Objects{Secrets: secrets, ConfigMaps: configMaps}, p, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	return &pod{c}
}

// start runs the pod's container as its user, group and fsGroup, with the
// binary of this test as `delauto` and extra arguments after the
// container's. The channel receives the process's exit.
func (p *pod) start(t *testing.T, out io.Writer, extra ...string) chan error {
	t.Helper()
	// The test binary lives in a folder only root may enter: run a copy.
	bin, err := os.MkdirTemp("", "podbin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	exe := filepath.Join(bin, "delauto")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append(append([]string(nil), p.Args...), extra...)...)
	cmd.Env = append([]string{childEnv + "=1", "PATH=/usr/bin:/bin", "HOME=/nonexistent"}, p.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.Cred}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case err := <-exited:
			exited <- err
		case <-time.After(30 * time.Second):
			t.Errorf("the worker did not exit after SIGKILL")
		}
	})
	return exited
}

// TestWorkerStartsFromTheDeploymentTheOperatorWrites lays out a worker pod
// exactly as the operator writes it and the kubelet mounts it (files owned
// by root, the pod's user and fsGroup), starts the worker as that user, and
// checks it serves its shard: it reads its own credentials and campaign,
// where the stores are from the namespace's stores Secret, and the other
// store settings the operator was given (here by flags, with a call log
// database of its own).
func TestWorkerStartsFromTheDeploymentTheOperatorWrites(t *testing.T) {
	f := newFixture(t, nil)
	op, err := parseOperatorConfig([]string{"--redis-url", env.Redis.URL(), "--mongo-uri", env.Mongo.URI, "--mongo-database", f.db,
		"--store-timeout", "4s", "--worker-twilio-base-url", f.front}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	camp := &v1.CallCampaign{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "evening", UID: types.UID("c0ffee00-0000-4000-8000-000000000001")}}
	cf, err := campaignfile.Load(f.campaign)
	if err != nil {
		t.Fatal(err)
	}
	camp.Spec = cf.Spec
	camp.Spec.Twilio.CredentialsSecretRef = v1.TwilioCredentials{Name: "twilio", AccountSIDKey: "accountSID", AuthTokenKey: "authToken"}
	camp.Spec.Relay.Webhook = &v1.RelayWebhook{URL: "https://dispatch.example.com/hook", SecretRef: v1.SecretKeySelector{Name: "dispatch", Key: "secret"}}
	ac := op.workers.Deployment(camp, "shard-0", 1)
	for _, e := range ac.Spec.Template.Spec.Containers[0].Env {
		switch *e.Name {
		case stores.EnvRedisURL, stores.EnvRedisAddrs, stores.EnvRedisPassword, stores.EnvMongoURI:
			t.Errorf("the operator copies its store credential %s into the worker's env", *e.Name)
		}
	}
	raw, err := json.Marshal(ac)
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	campaignJSON, err := campaignfile.Marshal(campaignfile.Config{Namespace: camp.Namespace, Name: camp.Name, Spec: camp.Spec})
	if err != nil {
		t.Fatal(err)
	}
	p := newPod(t, &d, d.Name+"-7d9f8-x2x4q",
		map[string]map[string]string{
			"twilio":                               {"accountSID": f.sim.AccountSID(), "authToken": f.sim.AuthToken()},
			"dispatch":                             {"secret": "a-long-random-signing-key"},
			controllers.DrainSecretName(camp.Name): {workerpod.DrainTokenFile: "the-operators-drain-token"},
			controllers.DefaultStoresSecret:        {stores.EnvRedisURL: env.Redis.URL(), stores.EnvMongoURI: env.Mongo.URI},
		},
		map[string]map[string]string{controllers.CampaignConfigMapName(camp.Name): {workerpod.CampaignFile: string(campaignJSON)}})
	out := &syncBuffer{}
	ops := freeAddr(t)
	exited := p.start(t, out, "--http-addr", freeAddr(t), "--ops-addr", ops)
	deadline := time.Now().Add(60 * time.Second)
	for ready := false; !ready; {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the worker exited (%v):\n%s", err, tail(out.String(), 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker never became ready:\n%s", tail(out.String(), 30))
		}
		if resp, err := http.Get("http://" + ops + "/readyz"); err == nil {
			resp.Body.Close()
			ready = resp.StatusCode == http.StatusOK
		}
		time.Sleep(100 * time.Millisecond)
	}
	// It serves its shard from the operator's Redis and call log database,
	// and places the call through the Twilio the operator named.
	a := f.create("+14155550123")
	got := f.waitState(a.ID, 30*time.Second, store.StateDialed)
	if n := f.sim.CallsForAttempt(a.ID); n != 1 || got.CallSID == "" {
		t.Fatalf("%d calls for the attempt (SID %q), want 1", n, got.CallSID)
	}
	// /drain answers only with the token the operator mounted.
	drain := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ops+"/drain", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := drain(""); c != http.StatusUnauthorized {
		t.Errorf("GET /drain without the token = %d, want 401", c)
	}
	if c := drain("Bearer the-operators-drain-token"); c != http.StatusOK {
		t.Errorf("GET /drain with the mounted token = %d, want 200", c)
	}
	if strings.Contains(out.String(), "permission denied") {
		t.Errorf("the worker was refused a file:\n%s", tail(out.String(), 30))
	}
}
