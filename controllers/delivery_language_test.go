package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

// TestDeliveryLanguageFallback: a recipient language the campaign has no
// wording for is called in the campaign's default language, and the
// Delivery and a metric say so; a built-in language or one the campaign
// adds is supported.
func TestDeliveryLanguageFallback(t *testing.T) {
	o := startOperator(t)
	o.campaign(t, func(c *v1.CallCampaign) {
		c.Spec.Script.DefaultLanguage = "de"
		c.Spec.Script.Languages = []v1.ScriptLanguage{{Code: "pt", SayLanguage: "pt-BR", SpeechLanguage: "pt-BR", Greeting: "Olá {{.Name}}",
			Prompts: &v1.MenuPrompts{Menu: "m", NoInput: "n", Invalid: "i", Confirmed: "c", Reschedule: "r", OptedOut: "o",
				Instructions: "i", InstructionsSaved: "s", NoInstructions: "n", Goodbye: "g", Voicemail: "v"},
			Words: &v1.MenuWords{Confirm: []string{"sim"}, Reschedule: []string{"outro dia"}, Instructions: []string{"instruções"},
				Stop: []string{"parar"}, Repeat: []string{"repetir"}}}}
	})
	for name, lang := range map[string]string{"japanese": "ja", "french": "fr-CA", "portuguese": "pt-BR", "none": ""} {
		o.delivery(t, name, func(d *v1.Delivery) { d.Spec.Recipient.Language = lang })
	}
	eventually(t, 15*time.Second, "LanguageFallback", func() error {
		d := o.get(t, "japanese")
		if err := hasCondition(d.Status.Conditions, v1.ConditionLanguageSupported, metav1.ConditionFalse, v1.ReasonLanguageFallback); err != nil {
			return err
		}
		for _, c := range d.Status.Conditions {
			if c.Type == v1.ConditionLanguageSupported && !(strings.Contains(c.Message, "no wording in ja") && strings.Contains(c.Message, "default language de")) {
				return fmt.Errorf("message %q", c.Message)
			}
		}
		return nil
	})
	for _, name := range []string{"french", "portuguese", "none"} {
		eventually(t, 15*time.Second, name+" supported", func() error {
			return hasCondition(o.get(t, name).Status.Conditions, v1.ConditionLanguageSupported, metav1.ConditionTrue, v1.ReasonWording)
		})
	}
	// Counted once, however often the Delivery is reconciled.
	o.waitPhase(t, "japanese", v1.DeliveryScheduled)
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "delauto_operator_language_fallbacks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got = append(got, fmt.Sprintf("%s->%s=%v", labels["requested"], labels["used"], m.GetCounter().GetValue()))
		}
	}
	if len(got) != 1 || got[0] != "ja->de=1" {
		t.Errorf("fallbacks counted %v, want [ja->de=1]", got)
	}
}
