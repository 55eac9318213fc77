package dialer

import (
	"strings"
	"testing"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/campaignfile"
)

// TestCompileRefusesAGreetingThatIsNotPlainFields checks that the worker
// will not use a campaign whose greeting could loop or call functions, even
// when it got past admission (an older CRD, a hand-written campaign file).
func TestCompileRefusesAGreetingThatIsNotPlainFields(t *testing.T) {
	c := &campaignfile.Config{Namespace: "ns", Name: "evening", Spec: v1.CallCampaignSpec{
		Script: v1.CallScript{CompanyName: "Parcels", Greeting: "Hi {{range 9223372036854775807}}{{end}}"},
		Twilio: v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{"+493012345670"}, CallbackURL: "https://calls.example.com"},
	}}
	_, err := Compile(c, "")
	if err == nil || !strings.Contains(err.Error(), "cannot be dialed") || !strings.Contains(err.Error(), "script.greeting") || !strings.Contains(err.Error(), "range is not allowed") {
		t.Fatalf("Compile = %v, want the greeting named as the problem", err)
	}
	c.Spec.Script.Greeting = "Hi {{.Name}}"
	if _, err := Compile(c, ""); err != nil {
		t.Fatalf("a plain greeting: %v", err)
	}
}
