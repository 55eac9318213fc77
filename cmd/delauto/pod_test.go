package main

import (
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
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/workers/store"
)

// pod is a worker pod of a Deployment the operator wrote, laid out on this
// machine the way the kubelet lays it out: each volume a folder, each
// Secret and ConfigMap key a file with the owner, group and mode the kubelet
// gives it, and the environment with the downward API filled in.
type pod struct {
	spec corev1.PodSpec
	env  []string
	// mounts maps each container mount path to its folder here.
	mounts map[string]string
}

// kubeletFileMode is the mode and group the kubelet gives a file of a
// Secret or ConfigMap volume: the key's mode, else the volume's default
// mode, else 0644, owned by root; with an fsGroup the group becomes it and
// gets read access (volumes of Secrets and ConfigMaps are read-only:
// SetVolumeOwnership adds 0440).
func kubeletFileMode(item, def *int32, fsGroup *int64) (os.FileMode, int) {
	mode := os.FileMode(0o644)
	switch {
	case item != nil:
		mode = os.FileMode(*item)
	case def != nil:
		mode = os.FileMode(*def)
	}
	if fsGroup == nil {
		return mode, 0
	}
	return mode | 0o440, int(*fsGroup)
}

// layOut materializes the container's volumes under dir. secrets and
// configMaps hold the objects' data by name.
func layOut(t *testing.T, spec corev1.PodSpec, dir string, secrets, configMaps map[string]map[string]string) map[string]string {
	t.Helper()
	sc := spec.SecurityContext
	var fsGroup *int64
	if sc != nil {
		fsGroup = sc.FSGroup
	}
	folders := map[string]string{}
	for _, v := range spec.Volumes {
		vd := filepath.Join(dir, v.Name)
		if err := os.MkdirAll(vd, 0o755); err != nil {
			t.Fatal(err)
		}
		var data map[string]string
		var items []corev1.KeyToPath
		var def *int32
		switch {
		case v.Secret != nil:
			data, items, def = secrets[v.Secret.SecretName], v.Secret.Items, v.Secret.DefaultMode
			if data == nil {
				t.Fatalf("volume %s: no Secret %s", v.Name, v.Secret.SecretName)
			}
		case v.ConfigMap != nil:
			data, items, def = configMaps[v.ConfigMap.Name], v.ConfigMap.Items, v.ConfigMap.DefaultMode
			if data == nil {
				t.Fatalf("volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
			}
		case v.EmptyDir != nil:
			if err := os.Chmod(vd, 0o777); err != nil {
				t.Fatal(err)
			}
			folders[v.Name] = vd
			continue
		default:
			t.Fatalf("volume %s: a kind this test does not lay out", v.Name)
		}
		if len(items) == 0 {
			for k := range data {
				items = append(items, corev1.KeyToPath{Key: k, Path: k})
			}
		}
		for _, it := range items {
			val, ok := data[it.Key]
			if !ok {
				t.Fatalf("volume %s: no key %s", v.Name, it.Key)
			}
			p := filepath.Join(vd, it.Path)
			mode, gid := kubeletFileMode(it.Mode, def, fsGroup)
			if err := os.WriteFile(p, []byte(val), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, 0, gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
		folders[v.Name] = vd
	}
	return folders
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
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	folders := layOut(t, spec, dir, secrets, configMaps)
	c := spec.Containers[0]
	p := &pod{spec: spec, mounts: map[string]string{}}
	for _, m := range c.VolumeMounts {
		p.mounts[m.MountPath] = folders[m.Name]
	}
	local := func(v string) string {
		for mp, f := range p.mounts {
			if v == mp || strings.HasPrefix(v, mp+"/") {
				return f + strings.TrimPrefix(v, mp)
			}
		}
		return v
	}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			switch {
			case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
				v = d.Namespace
			case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
				v = podName
			default:
				t.Fatalf("env %s: a source this test does not fill in: %+v", e.Name, e.ValueFrom)
			}
		}
		p.env = append(p.env, e.Name+"="+local(v))
	}
	var fromSecrets []string
	for _, ef := range c.EnvFrom {
		if ef.SecretRef == nil || ef.ConfigMapRef != nil {
			t.Fatalf("envFrom %+v: a source this test does not fill in", ef)
		}
		data, ok := secrets[ef.SecretRef.Name]
		if !ok {
			t.Fatalf("envFrom: no Secret %s", ef.SecretRef.Name)
		}
		for k, v := range data {
			fromSecrets = append(fromSecrets, ef.Prefix+k+"="+v)
		}
	}
	// The kubelet puts envFrom first; env entries of the same name win.
	p.env = append(fromSecrets, p.env...)
	return p
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
	c := p.spec.Containers[0]
	cred := &syscall.Credential{Uid: 0, Gid: 0}
	sc := p.spec.SecurityContext
	if sc != nil {
		if sc.RunAsUser != nil {
			cred.Uid = uint32(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			cred.Gid = uint32(*sc.RunAsGroup)
		}
		if sc.FSGroup != nil {
			cred.Groups = append(cred.Groups, uint32(*sc.FSGroup))
		}
		for _, g := range sc.SupplementalGroups {
			cred.Groups = append(cred.Groups, uint32(g))
		}
	}
	if cs := c.SecurityContext; cs != nil && cs.RunAsUser != nil {
		cred.Uid = uint32(*cs.RunAsUser)
	}
	cmd := exec.Command(exe, append(append(append([]string(nil), c.Command...), c.Args...), extra...)...)
	cmd.Env = append([]string{childEnv + "=1", "PATH=/usr/bin:/bin", "HOME=/nonexistent"}, p.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
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
			controllers.DrainSecretName(camp.Name): {controllers.DrainTokenFile: "the-operators-drain-token"},
			controllers.DefaultStoresSecret:        {stores.EnvRedisURL: env.Redis.URL(), stores.EnvMongoURI: env.Mongo.URI},
		},
		map[string]map[string]string{controllers.CampaignConfigMapName(camp.Name): {controllers.CampaignFile: string(campaignJSON)}})
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
