package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twilioclient"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Kube: true}, &env)
}

const goodDelivery = `
apiVersion: delauto.io/v1alpha1
kind: Delivery
metadata: {name: x}
spec:
  recipient: {name: Anna, phone: "+4915112345678", timeZone: Europe/Berlin, language: de}
  address: {line1: Torstrasse 1, city: Berlin, country: DE}
  region: berlin-mitte
  window: {start: "2026-12-02T09:00:00Z", end: "2026-12-02T11:00:00Z"}
  agent: {name: Route 1, phone: "+4915187654321"}
  campaignRef: {name: c1}
`

const goodCampaign = `
apiVersion: delauto.io/v1alpha1
kind: CallCampaign
metadata: {name: x}
spec:
  schedule:
    leadTime: 2h
    callingHours: {start: "08:00", end: "20:00", days: [Monday]}
    defaultTimeZone: Europe/Berlin
  retry: {maxAttempts: 3, backoff: [15m], retryOn: [no-answer]}
  script: {companyName: Spree, timeLimit: 60s, callbackNumber: "+493012345678"}
  twilio:
    credentialsSecretRef: {name: twilio}
    fromNumbers: ["+493012345670"]
    callsPerSecond: 5
    callbackURL: https://calls.example.com
  relay:
    webhook: {url: "https://dispatch.example.com/hook", secretRef: {name: hook}}
  sharding: {by: Hash, count: 4}
  workers: {concurrency: 10, minReplicas: 1, maxReplicas: 5}
`

// object parses a manifest into an unstructured object in namespace ns.
func object(t *testing.T, manifest, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// set changes the field at the dotted path ("spec.window.end") to v;
// remove deletes it.
func set(path string, v any) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		if err := unstructured.SetNestedField(u.Object, v, strings.Split(path, ".")...); err != nil {
			panic(fmt.Sprintf("set %s: %v", path, err))
		}
	}
}

func remove(path string) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		unstructured.RemoveNestedField(u.Object, strings.Split(path, ".")...)
	}
}

func newNamespace(t *testing.T, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Kube.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// ptLanguage is a complete Portuguese entry of script.languages without
// the field at path.
func ptLanguage(without string) map[string]any {
	words := func(w string) []any { return []any{w} }
	l := map[string]any{
		"code": "pt", "sayLanguage": "pt-BR", "speechLanguage": "pt-BR", "greeting": "Olá {{.Name}}",
		"prompts": map[string]any{"menu": "m", "noInput": "n", "invalid": "i", "confirmed": "c", "reschedule": "r", "optedOut": "o",
			"instructions": "i", "instructionsSaved": "s", "noInstructions": "n", "goodbye": "g", "voicemail": "v"},
		"words": map[string]any{"confirm": words("sim"), "reschedule": words("outro dia"), "instructions": words("instruções"),
			"stop": words("parar"), "repeat": words("repetir")},
	}
	unstructured.RemoveNestedField(l, strings.Split(without, ".")...)
	return l
}

// TestLanguagesAreAccepted: a campaign in German with overrides, and one
// adding a complete language without built-in wording.
func TestLanguagesAreAccepted(t *testing.T) {
	ns := newNamespace(t, "languages")
	for i, mutate := range []func(*unstructured.Unstructured){
		set("spec.script.defaultLanguage", "de"),
		set("spec.script.languages", []any{map[string]any{"code": "de-AT", "greeting": "Servus {{.Name}}", "words": map[string]any{"confirm": []any{"passt scho"}}}}),
		func(u *unstructured.Unstructured) {
			set("spec.script.defaultLanguage", "pt")(u)
			set("spec.script.languages", []any{ptLanguage("none")})(u)
		},
	} {
		u := object(t, goodCampaign, ns, fmt.Sprintf("lang-%d", i))
		mutate(u)
		if err := env.Kube.Client.Create(context.Background(), u); err != nil {
			t.Errorf("case %d refused: %v", i, err)
		}
	}
}

func TestGoodObjectsAreAccepted(t *testing.T) {
	ns := newNamespace(t, "good")
	ctx := context.Background()
	for _, m := range []string{goodDelivery, goodCampaign} {
		u := object(t, m, ns, "good")
		if err := env.Kube.Client.Create(ctx, u); err != nil {
			t.Errorf("create good %s: %v", u.GetKind(), err)
		}
	}
}

// TestBadInputIsRefused creates one bad object per case and checks that the
// apiserver refuses it with an error naming the field and the reason.
func TestBadInputIsRefused(t *testing.T) {
	ns := newNamespace(t, "bad")
	ctx := context.Background()
	cases := []struct {
		name      string
		base      string
		mutate    func(*unstructured.Unstructured)
		wantField string
		wantMsg   string
	}{
		{"phone without plus", goodDelivery, set("spec.recipient.phone", "4915112345678"), "spec.recipient.phone", "E.164"},
		{"phone with spaces", goodDelivery, set("spec.recipient.phone", "+49 151 1234567"), "spec.recipient.phone", "E.164"},
		{"phone too short", goodDelivery, set("spec.recipient.phone", "+12345"), "spec.recipient.phone", "E.164"},
		{"phone starting with zero", goodDelivery, set("spec.recipient.phone", "+0151123456"), "spec.recipient.phone", "E.164"},
		{"unknown time zone", goodDelivery, set("spec.recipient.timeZone", "Mars/Olympus_Mons"), "spec.recipient.timeZone", "IANA time zone"},
		{"offset instead of zone", goodDelivery, set("spec.recipient.timeZone", "+01:00"), "spec.recipient.timeZone", "IANA time zone"},
		{"language not BCP 47", goodDelivery, set("spec.recipient.language", "German"), "spec.recipient.language", "BCP 47"},
		{"window ends before it starts", goodDelivery, set("spec.window.end", "2026-12-02T08:00:00Z"), "spec.window", "window.end must be after window.start"},
		{"empty window", goodDelivery, set("spec.window.end", "2026-12-02T09:00:00Z"), "spec.window", "window.end must be after window.start"},
		{"window start not a time", goodDelivery, set("spec.window.start", "tomorrow"), "spec.window.start", "date-time"},
		{"no window", goodDelivery, remove("spec.window"), "spec.window", "Required"},
		{"no recipient name", goodDelivery, remove("spec.recipient.name"), "spec.recipient.name", "Required"},
		{"country in lower case", goodDelivery, set("spec.address.country", "de"), "spec.address.country", "ISO 3166-1"},
		{"region with spaces", goodDelivery, set("spec.region", "Berlin Mitte"), "spec.region", "lower-case"},
		{"agent phone national form", goodDelivery, set("spec.agent.phone", "015187654321"), "spec.agent.phone", "E.164"},
		{"no agent", goodDelivery, remove("spec.agent"), "spec.agent", "Required"},

		{"calling hours start not HH:MM", goodCampaign, set("spec.schedule.callingHours.start", "25:00"), "spec.schedule.callingHours.start", "HH:MM"},
		{"calling hours end with seconds", goodCampaign, set("spec.schedule.callingHours.end", "20:00:00"), "spec.schedule.callingHours.end", "HH:MM"},
		{"calling hours start after end", goodCampaign, set("spec.schedule.callingHours.start", "21:00"), "spec.schedule.callingHours", "start must be before callingHours.end"},
		{"unknown weekday", goodCampaign, set("spec.schedule.callingHours.days", []any{"Funday"}), "spec.schedule.callingHours.days[0]", "Unsupported value"},
		{"unknown default time zone", goodCampaign, set("spec.schedule.defaultTimeZone", "Nowhere/City"), "spec.schedule.defaultTimeZone", "IANA time zone"},
		{"negative lead time", goodCampaign, set("spec.schedule.leadTime", "-1h"), "spec.schedule.leadTime", "leadTime must be a duration between 0s and 168h"},
		{"lead time not a duration", goodCampaign, set("spec.schedule.leadTime", "2 hours"), "spec.schedule.leadTime", "leadTime must be a duration"},
		{"zero attempts", goodCampaign, set("spec.retry.maxAttempts", int64(0)), "spec.retry.maxAttempts", "greater than or equal to 1"},
		{"too many attempts", goodCampaign, set("spec.retry.maxAttempts", int64(11)), "spec.retry.maxAttempts", "less than or equal to 10"},
		{"retries without backoff", goodCampaign, set("spec.retry.backoff", []any{}), "spec.retry", "retry.backoff needs at least one step"},
		{"zero backoff step", goodCampaign, set("spec.retry.backoff", []any{"0s"}), "spec.retry.backoff", "each backoff step must be a duration between 1m and 48h"},
		{"negative backoff step", goodCampaign, set("spec.retry.backoff", []any{"15m", "-5m"}), "spec.retry.backoff", "each backoff step must be a duration between 1m and 48h"},
		{"retry on completed", goodCampaign, set("spec.retry.retryOn", []any{"completed"}), "spec.retry.retryOn", "retryOn may only hold"},
		{"call time limit too long", goodCampaign, set("spec.script.timeLimit", "10m"), "spec.script.timeLimit", "timeLimit must be between 15s and 5m"},
		{"call time limit too short", goodCampaign, set("spec.script.timeLimit", "5s"), "spec.script.timeLimit", "timeLimit must be between 15s and 5m"},
		{"no company name", goodCampaign, remove("spec.script.companyName"), "spec.script.companyName", "Required"},
		{"callback number not E.164", goodCampaign, set("spec.script.callbackNumber", "030 1234567"), "spec.script.callbackNumber", "E.164"},
		{"no from numbers", goodCampaign, set("spec.twilio.fromNumbers", []any{}), "spec.twilio.fromNumbers", "should have at least 1 items"},
		{"from number not E.164", goodCampaign, set("spec.twilio.fromNumbers", []any{"+493012345670", "12345"}), "spec.twilio.fromNumbers[1]", "E.164"},
		{"duplicate from numbers", goodCampaign, set("spec.twilio.fromNumbers", []any{"+493012345670", "+493012345670"}), "spec.twilio.fromNumbers[1]", "Duplicate value"},
		{"callback URL over plain http", goodCampaign, set("spec.twilio.callbackURL", "http://calls.example.com"), "spec.twilio.callbackURL", "https://"},
		{"callback URL not a URL", goodCampaign, set("spec.twilio.callbackURL", "calls dot example"), "spec.twilio.callbackURL", "https://"},
		{"zero calls per second", goodCampaign, set("spec.twilio.callsPerSecond", int64(0)), "spec.twilio.callsPerSecond", "greater than or equal to 1"},
		{"no credentials secret", goodCampaign, remove("spec.twilio.credentialsSecretRef"), "spec.twilio.credentialsSecretRef", "Required"},
		{"too many shards", goodCampaign, set("spec.sharding.count", int64(65)), "spec.sharding.count", "less than or equal to 64"},
		{"region sharding without regions", goodCampaign, set("spec.sharding.by", "Region"), "spec.sharding", "sharding.regions must list at least one region"},
		{"regions with hash sharding", goodCampaign, set("spec.sharding.regions", []any{"north"}), "spec.sharding", "sharding.regions is only used when sharding by Region"},
		{"unknown sharding mode", goodCampaign, set("spec.sharding.by", "Zip"), "spec.sharding.by", "Unsupported value"},
		{"min replicas above max", goodCampaign, set("spec.workers.minReplicas", int64(6)), "spec.workers", "minReplicas must not exceed workers.maxReplicas"},
		{"zero concurrency", goodCampaign, set("spec.workers.concurrency", int64(0)), "spec.workers.concurrency", "greater than or equal to 1"},
		{"greeting that loops", goodCampaign, set("spec.script.greeting", "Hi {{range 100000000}}{{.Name}}{{end}}"), "spec.script.greeting", "greeting may only hold text and field references"},
		{"greeting that loops with trim marker", goodCampaign, set("spec.script.greeting", "Hi {{- range 9223372036854775807}}{{end}}"), "spec.script.greeting", "range, with, if, template, define, block, functions and pipelines are not allowed"},
		{"greeting with with", goodCampaign, set("spec.script.greeting", "{{with .Name}}{{.}}{{end}}"), "spec.script.greeting", "field references"},
		{"greeting defining a template", goodCampaign, set("spec.script.greeting", `{{define "x"}}a{{end}}{{template "x"}}`), "spec.script.greeting", "field references"},
		{"greeting with a block", goodCampaign, set("spec.script.greeting", `{{block "x" .}}a{{end}}`), "spec.script.greeting", "field references"},
		{"greeting calling a function", goodCampaign, set("spec.script.greeting", `{{call .Name}}`), "spec.script.greeting", "field references"},
		{"greeting with a pipeline", goodCampaign, set("spec.script.greeting", `{{.Name | printf "%0999d"}}`), "spec.script.greeting", "field references"},
		{"relay webhook over ftp", goodCampaign, set("spec.relay.webhook.url", "ftp://dispatch.example.com"), "spec.relay.webhook.url", "https:// URL"},
		{"relay webhook over plain http", goodCampaign, set("spec.relay.webhook.url", "http://dispatch.example.com/hook"), "spec.relay.webhook.url", "relay webhook url must be an absolute https:// URL"},
		{"unknown answering machine action", goodCampaign, set("spec.script.answeringMachine", "Sing"), "spec.script.answeringMachine", "Unsupported value"},
		{"unknown recording deletion", goodCampaign, set("spec.recordingDeletion", "Never"), "spec.recordingDeletion", "Unsupported value"},
		{"default language without wording", goodCampaign, set("spec.script.defaultLanguage", "pt"), "spec.script", "defaultLanguage pt has no wording: use a built-in language (de, en, es, fr, it, nl, pl) or add an entry with code pt to languages"},
		{"default language not BCP 47", goodCampaign, set("spec.script.defaultLanguage", "German"), "spec.script.defaultLanguage", "BCP 47"},
		{"language code not BCP 47", goodCampaign, set("spec.script.languages", []any{map[string]any{"code": "Deutsch"}}), "spec.script.languages[0].code", "BCP 47"},
		{"language listed twice", goodCampaign, set("spec.script.languages", []any{map[string]any{"code": "de"}, map[string]any{"code": "de"}}), "spec.script.languages[1]", "Duplicate value"},
		{"new language without Twilio codes", goodCampaign, set("spec.script.languages", []any{ptLanguage("sayLanguage")}), "spec.script.languages[0]", "language pt has no built-in wording (built in: de, en, es, fr, it, nl, pl), so it needs sayLanguage and speechLanguage"},
		{"new language without greeting", goodCampaign, set("spec.script.languages", []any{ptLanguage("greeting")}), "spec.script.languages[0]", "so it needs a greeting"},
		{"new language without every prompt", goodCampaign, set("spec.script.languages", []any{ptLanguage("prompts.noInput")}), "spec.script.languages[0]", "so it needs every prompt: menu, noInput, invalid"},
		{"new language without words for repeat", goodCampaign, set("spec.script.languages", []any{ptLanguage("words.repeat")}), "spec.script.languages[0]", "so it needs words for every option: confirm, reschedule, instructions, stop and repeat"},
		{"say language without region", goodCampaign, set("spec.script.languages", []any{map[string]any{"code": "de", "sayLanguage": "de"}}), "spec.script.languages[0].sayLanguage", "sayLanguage must be a Twilio language code with a region"},
		{"language greeting that loops", goodCampaign, set("spec.script.languages", []any{map[string]any{"code": "de", "greeting": "{{range .Name}}x{{end}}"}}), "spec.script.languages[0].greeting", "field references"},
		{"empty option word", goodCampaign, set("spec.script.languages", []any{map[string]any{"code": "de", "words": map[string]any{"confirm": []any{""}}}}), "spec.script.languages[0].words.confirm[0]", "at least 1 chars long"},
		{"recordings deleted after a relay that never happens", goodCampaign, func(u *unstructured.Unstructured) {
			set("spec.recordingDeletion", "AfterRelay")(u)
			set("spec.relay", map[string]any{"sms": false})(u)
		}, "spec", "recordingDeletion AfterRelay deletes recordings once the agent was told, but no relay tells the agent"},
	}
	seen := map[string]bool{}
	for i, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			u := object(t, tc.base, ns, fmt.Sprintf("bad-%d", i))
			tc.mutate(u)
			err := env.Kube.Client.Create(ctx, u)
			if err == nil {
				t.Fatalf("the apiserver accepted a bad %s", u.GetKind())
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantField) || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error does not name %q and %q:\n%s", tc.wantField, tc.wantMsg, msg)
			}
		})
	}
	if len(cases) < 25 {
		t.Fatalf("only %d bad inputs; the API promises at least 25", len(cases))
	}
}

// TestImmutableFields checks the rules that hold across updates.
func TestImmutableFields(t *testing.T) {
	ns := newNamespace(t, "immutable")
	ctx := context.Background()
	c := env.Kube.Client

	t.Run("campaignRef is fixed once calls began", func(t *testing.T) {
		u := object(t, goodDelivery, ns, "started")
		if err := c.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		// Before any call the campaign may still change.
		set("spec.campaignRef.name", "c2")(u)
		if err := c.Update(ctx, u); err != nil {
			t.Fatalf("changing campaignRef before any call: %v", err)
		}
		set("status.attempts", int64(1))(u)
		if err := c.Status().Update(ctx, u); err != nil {
			t.Fatal(err)
		}
		set("spec.campaignRef.name", "c3")(u)
		err := c.Update(ctx, u)
		if err == nil || !strings.Contains(err.Error(), "spec.campaignRef cannot change once calls began") {
			t.Fatalf("changing campaignRef after a call: got %v", err)
		}
	})

	t.Run("cancelled cannot be unset", func(t *testing.T) {
		u := object(t, goodDelivery, ns, "cancelled")
		set("spec.cancelled", true)(u)
		if err := c.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		set("spec.cancelled", false)(u)
		err := c.Update(ctx, u)
		if err == nil || !strings.Contains(err.Error(), "cancelled cannot be unset") {
			t.Fatalf("unsetting cancelled: got %v", err)
		}
	})

	t.Run("sharding mode is fixed", func(t *testing.T) {
		u := object(t, goodCampaign, ns, "sharded")
		if err := c.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		// The shard count may change (the operator adds and drains shards).
		set("spec.sharding.count", int64(8))(u)
		if err := c.Update(ctx, u); err != nil {
			t.Fatalf("changing the shard count: %v", err)
		}
		set("spec.sharding.by", "Region")(u)
		set("spec.sharding.regions", []any{"north"})(u)
		remove("spec.sharding.count")(u)
		err := c.Update(ctx, u)
		if err == nil || !strings.Contains(err.Error(), "spec.sharding.by cannot change") {
			t.Fatalf("changing the sharding mode: got %v", err)
		}
	})
}

// TestDefaults creates the smallest objects and checks the defaults a user
// relies on appear on them.
func TestDefaults(t *testing.T) {
	ns := newNamespace(t, "defaults")
	ctx := context.Background()
	c := env.Kube.Client

	cc := &v1.CallCampaign{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "min"},
		Spec: v1.CallCampaignSpec{
			Script: v1.CallScript{CompanyName: "Example"},
			Twilio: v1.TwilioSpec{
				CredentialsSecretRef: v1.TwilioCredentials{Name: "twilio"},
				FromNumbers:          []v1.PhoneNumber{"+14155550100"},
				CallbackURL:          "https://calls.example.com",
			},
		},
	}
	if err := c.Create(ctx, cc); err != nil {
		t.Fatal(err)
	}
	got := &v1.CallCampaign{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(cc), got); err != nil {
		t.Fatal(err)
	}
	s := got.Spec
	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("schedule.leadTime", s.Schedule.LeadTime.Duration, 2*time.Hour)
	check("schedule.callingHours.start", s.Schedule.CallingHours.Start, "09:00")
	check("schedule.callingHours.end", s.Schedule.CallingHours.End, "20:00")
	check("schedule.defaultTimeZone", s.Schedule.DefaultTimeZone, "UTC")
	check("retry.maxAttempts", s.Retry.MaxAttempts, 3)
	check("retry.backoff", s.Retry.Backoff, []metav1.Duration{{Duration: 15 * time.Minute}, {Duration: time.Hour}})
	check("retry.retryOn", s.Retry.RetryOn, []v1.CallResult{v1.CallNoAnswer, v1.CallBusy, v1.CallFailed})
	check("script.timeLimit", s.Script.TimeLimit.Duration, 60*time.Second)
	check("script.ringTimeout", s.Script.RingTimeout.Duration, 30*time.Second)
	check("script.instructionsMaxLength", s.Script.InstructionsMaxLength.Duration, 30*time.Second)
	check("script.answeringMachine", s.Script.AnsweringMachine, v1.MachineHangUp)
	check("script.greeting", s.Script.Greeting, "") // the language's built-in greeting
	check("script.defaultLanguage", s.Script.DefaultLanguage, "en")
	check("twilio.callsPerSecond", s.Twilio.CallsPerSecond, 1)
	check("twilio.credentialsSecretRef.accountSIDKey", s.Twilio.CredentialsSecretRef.AccountSIDKey, "accountSID")
	check("twilio.credentialsSecretRef.authTokenKey", s.Twilio.CredentialsSecretRef.AuthTokenKey, "authToken")
	check("sharding.by", s.Sharding.By, v1.ShardByHash)
	check("sharding.count", s.Sharding.Count, 1)
	check("workers.concurrency", s.Workers.Concurrency, 50)
	check("workers.minReplicas", *s.Workers.MinReplicas, 1)
	check("workers.maxReplicas", s.Workers.MaxReplicas, 10)
	check("workers.scaleDownDelay", s.Workers.ScaleDownDelay.Duration, 5*time.Minute)
	check("recordingDeletion", s.RecordingDeletion, v1.RecordingsWithCallLog)
	if s.Relay.SMS == nil || !*s.Relay.SMS {
		t.Errorf("relay.sms default = %v, want true", s.Relay.SMS)
	}

	d := object(t, goodDelivery, ns, "lang")
	remove("spec.recipient.language")(d)
	if err := c.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	gotD := &v1.Delivery{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "lang"}, gotD); err != nil {
		t.Fatal(err)
	}
	check("recipient.language", gotD.Spec.Recipient.Language, "") // the campaign's default language
}

// kubectlOf returns the kubectl binary and the test apiserver's kubeconfig.
func kubectlOf(t *testing.T) (kubectl, kubeconfig string) {
	t.Helper()
	kubectl, err := testservices.Kubectl()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err = env.Kube.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	return kubectl, kubeconfig
}

// TestSamplesApply applies config/samples with kubectl, as a user would.
func TestSamplesApply(t *testing.T) {
	kubectl, kubeconfig := kubectlOf(t)
	root, err := testservices.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "apply", "-k", filepath.Join(root, "config", "samples")).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -k config/samples: %v\n%s", err, out)
	}
	// Every object of the samples is there, as applied.
	var dl v1.DeliveryList
	if err := env.Kube.Client.List(context.Background(), &dl, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	var cl v1.CallCampaignList
	if err := env.Kube.Client.List(context.Background(), &cl, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	if len(dl.Items) != 3 || len(cl.Items) != 2 {
		t.Fatalf("after applying the samples: %d Deliveries and %d CallCampaigns, want 3 and 2\n%s", len(dl.Items), len(cl.Items), out)
	}
	// Applying again changes no DelAuto object (Secrets with stringData always
	// show as configured).
	out, err = exec.Command(kubectl, "--kubeconfig", kubeconfig, "apply", "-k", filepath.Join(root, "config", "samples")).CombinedOutput()
	if err != nil {
		t.Fatalf("re-applying the samples: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "delauto.io/") && !strings.HasSuffix(line, " unchanged") {
			t.Errorf("re-applying the samples changed a DelAuto object: %s", line)
		}
	}
	// kubectl get shows the printer columns.
	out, err = exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "dlv,cc", "-n", "default").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get dlv,cc: %v\n%s", err, out)
	}
	for _, col := range []string{"PHASE", "NEXT CALL", "ATTEMPTS", "CAMPAIGN", "SHARDS", "REPLICAS", "QUEUED", "CONFIRMED"} {
		if !strings.Contains(string(out), col) {
			t.Errorf("kubectl get dlv,cc lacks the %s column:\n%s", col, out)
		}
	}
}

// TestFutureTimesPrintReadably checks what `kubectl get dlv -o wide` shows
// for a call and a window still to come: a date column renders future times
// as <invalid>, so they are shown as timestamps.
func TestFutureTimesPrintReadably(t *testing.T) {
	ns := newNamespace(t, "columns")
	ctx := context.Background()
	start := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	u := object(t, goodDelivery, ns, "future")
	set("spec.window.start", start.Format(time.RFC3339))(u)
	set("spec.window.end", start.Add(2*time.Hour).Format(time.RFC3339))(u)
	if err := env.Kube.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	var d v1.Delivery
	if err := env.Kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "future"}, &d); err != nil {
		t.Fatal(err)
	}
	next := start.Add(-2 * time.Hour)
	d.Status.Phase = v1.DeliveryScheduled
	d.Status.NextCallTime = &metav1.Time{Time: next}
	if err := env.Kube.Client.Status().Update(ctx, &d); err != nil {
		t.Fatal(err)
	}
	kubectl, kubeconfig := kubectlOf(t)
	out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "dlv", "future", "-n", ns, "-o", "wide").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get dlv -o wide: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "<invalid>") {
		t.Errorf("kubectl get dlv shows <invalid> for a future time:\n%s", out)
	}
	for _, want := range []string{next.Format(time.RFC3339), start.Format(time.RFC3339)} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kubectl get dlv -o wide lacks %s:\n%s", want, out)
		}
	}
}

// TestSampleCredentialsPassTheWorkersCheck: a newcomer who replaces only
// one placeholder of the sample Twilio Secret must not fail on the other.
func TestSampleCredentialsPassTheWorkersCheck(t *testing.T) {
	root, err := testservices.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "samples", "twilio_credentials_secret.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, doc := range strings.Split(string(data), "\n---") {
		var s corev1.Secret
		if err := yaml.Unmarshal([]byte(doc), &s); err != nil {
			t.Fatal(err)
		}
		if s.Name != "twilio-credentials" {
			continue
		}
		found = true
		// The keys a campaign's credentialsSecretRef reads by default.
		sid, token := s.StringData["accountSID"], s.StringData["authToken"]
		if err := twilioclient.ValidateCredentials(sid, token); err != nil {
			t.Errorf("the sample Twilio Secret fails the worker's check: %v", err)
		}
	}
	if !found {
		t.Fatal("no twilio-credentials Secret in the samples")
	}
}

// TestPlainGreetingsAreAccepted checks that the greeting rule leaves field
// references, spaces, trim markers, comments and ordinary punctuation alone.
func TestPlainGreetingsAreAccepted(t *testing.T) {
	ns := newNamespace(t, "greeting")
	for i, g := range []string{
		"Hi {{ .Name }}, {{- .Company -}} (we call about your parcel) | {{.Date}} {{/* note */}}",
		"Hello {{.Name}}, this is {{.Company}}.",
		// A comment may hold a pipe or a parenthesis (found by the script
		// package's FuzzRender).
		"{{/* (a|b) */}}{{.Name}}",
	} {
		u := object(t, goodCampaign, ns, fmt.Sprintf("greeting-%d", i))
		set("spec.script.greeting", g)(u)
		if err := env.Kube.Client.Create(context.Background(), u); err != nil {
			t.Errorf("greeting %q refused: %v", g, err)
		}
	}
}
