package campaignfile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

func write(t *testing.T, path string, c Config) {
	t.Helper()
	data, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func campaign(company string) Config {
	return Config{Namespace: "ns", Name: "spree", Spec: v1.CallCampaignSpec{
		Script: v1.CallScript{CompanyName: company},
		Twilio: v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{"+493012345670"}},
	}}
}

func TestWatcherFollowsChangesAndKeepsTheLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "campaign.json")
	write(t, path, campaign("Spree"))
	w, err := NewWatcher(path)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	w.OnError = func(err error) { errs = append(errs, err) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx, 10*time.Millisecond)

	write(t, path, campaign("Havel"))
	waitFor(t, func() bool { return w.Current().Spec.Script.CompanyName == "Havel" })

	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := w.Current().Spec.Script.CompanyName; got != "Havel" {
		t.Errorf("a broken file replaced the campaign: %s", got)
	}
	cancel()
	if len(errs) == 0 {
		t.Error("a broken file was not reported")
	}
}

func TestLoadRejectsIncompleteFiles(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]Config{
		"noname.json":    {Spec: campaign("x").Spec},
		"nonumbers.json": {Namespace: "ns", Name: "c"},
	} {
		p := filepath.Join(dir, name)
		write(t, p, c)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: Load = %v, want an error naming the file", name, err)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file loaded")
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if f() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

// TestSettingsFillTheCRDDefaults: a campaign without call settings is
// called with the CRD's defaults, and one with settings with its own.
func TestSettingsFillTheCRDDefaults(t *testing.T) {
	want := CallSettings{RingTimeout: 30 * time.Second, TimeLimit: 60 * time.Second, InstructionsMaxLength: 30 * time.Second, CallsPerSecond: 1}
	if got := Settings(&v1.CallCampaignSpec{}); got != want {
		t.Errorf("no settings: %+v, want the defaults %+v", got, want)
	}
	d := func(s time.Duration) *metav1.Duration { return &metav1.Duration{Duration: s} }
	spec := v1.CallCampaignSpec{
		Script: v1.CallScript{RingTimeout: d(20 * time.Second), TimeLimit: d(2 * time.Minute), InstructionsMaxLength: d(45 * time.Second)},
		Twilio: v1.TwilioSpec{CallsPerSecond: 7},
	}
	want = CallSettings{RingTimeout: 20 * time.Second, TimeLimit: 2 * time.Minute, InstructionsMaxLength: 45 * time.Second, CallsPerSecond: 7}
	if got := Settings(&spec); got != want {
		t.Errorf("settings %+v, want the campaign's %+v", got, want)
	}
}

// TestParseErrorsMaskNumbers: the JSON decoder quotes an unknown field's
// name, and a hand-written file can have a number there (found by
// FuzzParse); the error is logged, so the number is masked.
func TestParseErrorsMaskNumbers(t *testing.T) {
	_, err := Parse([]byte(`{"namespace":"ns","name":"c","+493012345670":1}`), "c.json")
	if err == nil || strings.Contains(err.Error(), "493012345670") || !strings.Contains(err.Error(), `unknown field "+493*******70"`) {
		t.Errorf("parse = %v, want the unknown field's number masked", err)
	}
}
