package workerpod_test

import (
	"path"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/controllers"
	"github.com/delauto/delauto/internal/workerpod"
)

// What a worker is told through its environment, it reads back unchanged.
func TestEnvRoundTrip(t *testing.T) {
	for _, e := range []workerpod.Env{
		workerpod.Pod("evening", "shard-0", 20, "https://calls.example.com"),
		{Namespace: "shop", PodName: "evening-shard-0-7d9f8-x2x4q", Campaign: "evening", Shards: []string{"shard-0", "shard-1"},
			Concurrency: 7, CallbackURL: "https://calls.example.com", TwilioDir: "/t", CampaignFile: "/c/campaign.json",
			DrainTokenFile: "/d/token", RelaySecretFile: "/r/secret", TwilioBaseURL: "http://127.0.0.1:8089", RelayAllowPrivate: true},
	} {
		vars := map[string]string{workerpod.EnvCampaignNamespace: e.Namespace, workerpod.EnvPodName: e.PodName}
		for _, v := range e.Vars() {
			if _, dup := vars[v.Name]; dup {
				t.Errorf("%s written twice", v.Name)
			}
			vars[v.Name] = v.Value
		}
		got, err := workerpod.Read(func(k string) string { return vars[k] })
		if err != nil || !reflect.DeepEqual(got, e) {
			t.Errorf("read back %+v (err %v), want %+v", got, err, e)
		}
	}
	if _, err := workerpod.Read(func(k string) string { return map[string]string{workerpod.EnvConcurrency: "many"}[k] }); err == nil || !strings.Contains(err.Error(), workerpod.EnvConcurrency) {
		t.Errorf("an unreadable concurrency: %v", err)
	}
}

// The worker Deployment the operator writes tells the worker its campaign,
// shard and settings, and every file it names lies in a volume the pod
// mounts, under the name the volume gives it.
func TestTheOperatorsPodReadsBack(t *testing.T) {
	c := &v1.CallCampaign{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "evening"}}
	c.Spec.Workers.Concurrency = 20
	c.Spec.Twilio.CallbackURL = "https://calls.example.com"
	c.Spec.Twilio.CredentialsSecretRef = v1.TwilioCredentials{Name: "twilio", AccountSIDKey: "sid", AuthTokenKey: "token"}
	c.Spec.Relay.Webhook = &v1.RelayWebhook{URL: "https://dispatch.example.com/hook", SecretRef: v1.SecretKeySelector{Name: "dispatch", Key: "key"}}
	d := controllers.WorkerDefaults{TwilioBaseURL: "http://127.0.0.1:8089", RelayAllowPrivate: true}.Deployment(c, "shard-3", 1)
	pod := d.Spec.Template.Spec
	ctr := pod.Containers[0]
	fields := map[string]string{"metadata.namespace": c.Namespace, "metadata.name": "evening-shard-3-7d9f8-x2x4q"}
	vars := map[string]string{}
	for _, e := range ctr.Env {
		switch {
		case e.Value != nil:
			vars[*e.Name] = *e.Value
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			vars[*e.Name] = fields[*e.ValueFrom.FieldRef.FieldPath]
		}
	}
	got, err := workerpod.Read(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := workerpod.Pod("evening", "shard-3", 20, "https://calls.example.com")
	want.Namespace, want.PodName = "shop", "evening-shard-3-7d9f8-x2x4q"
	want.TwilioBaseURL, want.RelayAllowPrivate = "http://127.0.0.1:8089", true
	want.RelaySecretFile = path.Join(workerpod.RelayDir, workerpod.RelaySecretFile)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the worker reads %+v, want %+v", got, want)
	}

	// Each file named is an item of a mounted volume.
	files := map[string]bool{}
	for _, m := range ctr.VolumeMounts {
		for _, v := range pod.Volumes {
			if *v.Name != *m.Name {
				continue
			}
			switch {
			case v.Secret != nil:
				for _, it := range v.Secret.Items {
					files[path.Join(*m.MountPath, *it.Path)] = true
				}
			case v.ConfigMap != nil:
				files[path.Join(*m.MountPath, workerpod.CampaignFile)] = true // the ConfigMap's one key
			}
		}
	}
	for _, f := range []string{got.CampaignFile, got.DrainTokenFile, got.RelaySecretFile,
		path.Join(got.TwilioDir, workerpod.TwilioAccountFile), path.Join(got.TwilioDir, workerpod.TwilioTokenFile)} {
		if !files[f] {
			t.Errorf("the worker is told to read %s, which no volume mounts (mounted: %v)", f, files)
		}
	}
	var ports []int32
	for _, p := range ctr.Ports {
		ports = append(ports, *p.ContainerPort)
	}
	if !reflect.DeepEqual(ports, []int32{workerpod.CallbackPort, workerpod.OpsPort}) {
		t.Errorf("container ports %v", ports)
	}
}
