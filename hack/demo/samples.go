package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/twiliosim"
)

// The German sample: config/samples' Berlin recipient, called in German by
// the sample campaign.
const (
	sampleNamespace = "default"
	sampleCampaign  = "berlin-parcels"
	sampleDelivery  = "parcel-4711"
	sampleAnswer    = "Ja, das passt."
)

// sample is what the demo follows of the German sample Delivery.
type sample struct {
	phone string
	// due reports that the call falls inside the sample campaign's calling
	// hours now, so the demo waits for it; otherwise why says when.
	due bool
	why string
}

// applySamples applies config/samples into the default namespace the way a
// user would after filling in the placeholders: the Twilio Secret holds the
// simulator's credentials, and the German Delivery's window is moved to an
// hour from now, so its call is due at once (the sample's lead time is 2h).
// The Secrets the samples name but do not hold (the workers' stores) are
// created too, the simulator's webhooks for the sample campaign's public
// callback URL go to its callback Service, and the recipient answers "Ja,
// das passt." by speech.
func applySamples(ctx context.Context, sys *localcluster.System, bin, repo string) (*sample, error) {
	if err := sys.Apply(ctx, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: delauto-stores, namespace: %s}
stringData: {REDIS_URL: %q, MONGO_URI: %q}
`, sampleNamespace, sys.Services.Redis.URL(), sys.Services.Mongo.URI)); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), "kustomize", filepath.Join(repo, "config", "samples")).Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize config/samples: %w", err)
	}
	var docs []string
	s := &sample{}
	var callbackURL string
	var hours v1.CallingHours
	var tz string
	start := time.Now().Add(time.Hour).UTC().Truncate(time.Minute)
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, err
		}
		meta, _ := obj["metadata"].(map[string]any)
		spec, _ := obj["spec"].(map[string]any)
		switch kind, name := obj["kind"], meta["name"]; {
		case kind == "Secret" && name == "twilio-credentials":
			obj["stringData"] = map[string]any{"accountSID": sys.Sim.AccountSID(), "authToken": sys.Sim.AuthToken()}
		case kind == "Delivery" && name == sampleDelivery:
			spec["window"] = map[string]any{"start": start.Format(time.RFC3339), "end": start.Add(2 * time.Hour).Format(time.RFC3339)}
			r, _ := spec["recipient"].(map[string]any)
			s.phone, _ = r["phone"].(string)
		case kind == "CallCampaign" && name == sampleCampaign:
			var cc v1.CallCampaign
			if err := yaml.Unmarshal([]byte(doc), &cc); err != nil {
				return nil, err
			}
			callbackURL, hours, tz = cc.Spec.Twilio.CallbackURL, cc.Spec.Schedule.CallingHours, string(cc.Spec.Schedule.DefaultTimeZone)
		}
		data, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		docs = append(docs, string(data))
	}
	if s.phone == "" || callbackURL == "" {
		return nil, fmt.Errorf("config/samples has no Delivery %s or no CallCampaign %s", sampleDelivery, sampleCampaign)
	}
	s.due, s.why = inHours(hours, tz, time.Now())
	sys.Sim.SetScenario(s.phone, twiliosim.Scenario{Name: "sample-de", Inputs: []twiliosim.Input{{Speech: sampleAnswer, Confidence: 0.92}}})
	if err := sys.RouteCallbackURL(callbackURL, sampleNamespace, sampleCampaign); err != nil {
		return nil, err
	}
	return s, sys.Apply(ctx, strings.Join(docs, "---\n"))
}

// inHours reports whether t is inside the calling hours (start-end in the
// time zone, on their days), and if not, says so.
func inHours(h v1.CallingHours, tz string, t time.Time) (bool, string) {
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return false, err.Error()
	}
	local := t.In(loc)
	hm := local.Format("15:04")
	day := len(h.Days) == 0
	for _, d := range h.Days {
		if string(d) == local.Weekday().String() {
			day = true
		}
	}
	// The call must fit before the hours end: a few minutes of margin.
	if day && hm >= string(h.Start) && local.Add(5*time.Minute).Format("15:04") < string(h.End) {
		return true, ""
	}
	return false, fmt.Sprintf("it is %s %s in %s, outside the sample campaign's calling hours (%s-%s, %v): it is called when they open",
		local.Weekday(), hm, tz, h.Start, h.End, h.Days)
}

// sampleStatus reads the German sample Delivery.
func sampleStatus(ctx context.Context, sys *localcluster.System) (*v1.Delivery, error) {
	var d v1.Delivery
	err := sys.Client.Get(ctx, client.ObjectKey{Namespace: sampleNamespace, Name: sampleDelivery}, &d)
	return &d, err
}

// sampleTwiML writes the TwiML the simulator got from the workers for the
// German sample's call (each voice and action request in order) into
// dir/german-sample.twiml and returns it.
func sampleTwiML(sys *localcluster.System, s *sample, dir string) (string, string, error) {
	var b strings.Builder
	for _, c := range sys.Sim.Calls() {
		if c.To != s.phone {
			continue
		}
		fmt.Fprintf(&b, "<!-- call %s: %s, answered %q -->\n", c.Sid, c.Status, strings.Join(c.Inputs, ", "))
		for _, cb := range sys.Sim.CallbacksFor(c.Sid, "") {
			if cb.TwiML == "" {
				continue
			}
			path := cb.URL
			if i := strings.Index(path, "://"); i >= 0 {
				if j := strings.Index(path[i+3:], "/"); j >= 0 {
					path = path[i+3+j:]
				}
			}
			if k := strings.Index(path, "?"); k >= 0 {
				path = path[:k]
			}
			speech := ""
			if sp := cb.Params.Get("SpeechResult"); sp != "" {
				speech = fmt.Sprintf(" SpeechResult=%q", sp)
			}
			fmt.Fprintf(&b, "<!-- %s %s %s%s: HTTP %d -->\n%s\n", cb.Time.Format("15:04:05.000"), cb.Kind, path, speech, cb.StatusCode, strings.TrimSpace(cb.TwiML))
		}
	}
	if b.Len() == 0 {
		return "", "", fmt.Errorf("the simulator saw no call for %s", sampleDelivery)
	}
	file := filepath.Join(dir, "german-sample.twiml")
	return b.String(), file, os.WriteFile(file, []byte(b.String()), 0o644)
}
