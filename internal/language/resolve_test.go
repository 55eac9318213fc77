package language

import (
	"strings"
	"testing"
	"time"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

func TestResolve(t *testing.T) {
	s := &v1.CallScript{
		DefaultLanguage: "de",
		Greeting:        "Moin {{.Name}}",
		Prompts:         &v1.MenuPrompts{Confirmed: "Danke!"},
		Languages: []v1.ScriptLanguage{
			{Code: "fr", Words: &v1.MenuWords{Confirm: []string{"volontiers"}}, Hints: []string{"oui"}},
			{Code: "pt", SayLanguage: "pt-BR", SpeechLanguage: "pt-BR", Greeting: "Olá {{.Name}}",
				Prompts: &v1.MenuPrompts{Menu: "Para confirmar, prima 1."},
				Words:   &v1.MenuWords{Confirm: []string{"sim"}, Reschedule: []string{"outro dia"}, Instructions: []string{"instruções"}, Stop: []string{"parar"}, Repeat: []string{"repetir"}}},
		},
	}
	cases := []struct {
		recipient, used, say string
		fallback             bool
		greeting             string
	}{
		{"", "de", "de-DE", false, "Moin {{.Name}}"},
		{"de", "de", "de-DE", false, "Moin {{.Name}}"},
		{"de-AT", "de-AT", "de-AT", false, "Moin {{.Name}}"},
		{"de-LU", "de-LU", "de-DE", false, "Moin {{.Name}}"},
		{"fr-CA", "fr-CA", "fr-CA", false, builtin["fr"].Greeting},
		{"pt-BR", "pt-BR", "pt-BR", false, "Olá {{.Name}}"},
		{"ja", "de", "de-DE", true, "Moin {{.Name}}"},
		{"en-GB", "en-GB", "en-GB", false, builtin["en"].Greeting},
	}
	for _, c := range cases {
		r := Resolve(s, c.recipient)
		if r.Used != c.used || r.SayLanguage != c.say || r.SpeechLanguage != c.say || r.Fallback != c.fallback || r.Greeting != c.greeting {
			t.Errorf("%q: used %s say %s speech %s fallback %v greeting %q; want %s %s %v %q",
				c.recipient, r.Used, r.SayLanguage, r.SpeechLanguage, r.Fallback, r.Greeting, c.used, c.say, c.fallback, c.greeting)
		}
	}
	// The top-level prompts are the default language's only.
	if de, fr := Resolve(s, "de"), Resolve(s, "fr"); de.Confirmed != "Danke!" || fr.Confirmed != builtin["fr"].Confirmed {
		t.Errorf("confirmed: de %q fr %q", de.Confirmed, fr.Confirmed)
	}
	// A campaign's words add to the built-in ones; its hints replace them.
	fr := Resolve(s, "fr")
	for speech, want := range map[string]Option{"Volontiers !": Confirm, "oui": Confirm, "plus tard": Reschedule} {
		if o, _ := fr.Match(speech); o != want {
			t.Errorf("fr %q chose %q, want %s", speech, o, want)
		}
	}
	if fr.HintList() != "oui" {
		t.Errorf("fr hints %q", fr.HintList())
	}
	pt := Resolve(s, "pt")
	if o, _ := pt.Match("Sim, obrigado"); o != Confirm || pt.Menu != "Para confirmar, prima 1." {
		t.Errorf("pt: %q chose %q, menu %q", "Sim, obrigado", o, pt.Menu)
	}
	// The catalogue is not changed by a campaign.
	if o, ok := Builtin("fr").Match("volontiers"); ok {
		t.Errorf("the built-in French wording learnt a campaign's word: %s", o)
	}
	if Has(s, "ja") || !Has(s, "pt-PT") || !Has(nil, "pl") {
		t.Error("Has")
	}
	if DefaultOf(nil) != "en" || ForCampaign(s).Code != "de" {
		t.Error("default language")
	}
}

// Each built-in wording is complete, names in its menu a word that chooses
// each option it offers, and keeps the menu short enough that greeting,
// menu, its repeat and the goodbye fit the default 60 s call.
func TestBuiltinWordingIsComplete(t *testing.T) {
	for _, code := range Codes() {
		w := Builtin(code)
		for name, v := range map[string]string{"greeting": w.Greeting, "greetingNoWindow": w.GreetingNoWindow, "menu": w.Menu,
			"noInput": w.NoInput, "invalid": w.Invalid, "confirmed": w.Confirmed, "reschedule": w.Reschedule, "optedOut": w.OptedOut,
			"instructions": w.Instructions, "instructionsSaved": w.InstructionsSaved, "noInstructions": w.NoInstructions,
			"goodbye": w.Goodbye, "voicemail": w.Voicemail, "voicemailNoWindow": w.VoicemailNoWindow, "callbackNumber": w.CallbackNumber,
			"bye": w.Bye, "sms.reschedule": w.SMS.Reschedule, "sms.instructions": w.SMS.Instructions, "sms.instructionsVoice": w.SMS.InstructionsVoice,
			"sms.instructionsNone": w.SMS.InstructionsNone, "sms.answer": w.SMS.Answer, "sms.someone": w.SMS.Someone, "sms.noAddress": w.SMS.NoAddress,
			"say": w.SayLanguage, "speech": w.SpeechLanguage, "day": w.Dates.Day, "time": w.Dates.Time} {
			if strings.TrimSpace(v) == "" {
				t.Errorf("%s: %s is empty", code, name)
			}
		}
		if !strings.Contains(w.CallbackNumber, "%s") {
			t.Errorf("%s: callbackNumber has no %%s", code)
		}
		if n := len(strings.Fields(w.Menu)); n > 40 {
			t.Errorf("%s: the menu has %d words; at most 40 keep the call short", code, n)
		}
		for _, k := range []string{"1", "2", "3", "9"} {
			if !strings.Contains(w.Menu, k) {
				t.Errorf("%s: the menu does not offer key %s", code, k)
			}
		}
		for _, h := range w.Hints {
			if _, ok := w.Match(h); !ok {
				t.Errorf("%s: hint %q chooses nothing", code, h)
			}
		}
		if d := w.Dates.Date(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)); !strings.Contains(d, "2") || len(d) < 8 {
			t.Errorf("%s: date %q", code, d)
		}
	}
	en := Builtin("en").Dates
	if d := en.Date(time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC)); d != "Wednesday, December 2" {
		t.Errorf("English date %q", d)
	}
	de := Builtin("de").Dates
	if d, c := de.Date(time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC)), de.Clock(time.Date(2026, 12, 2, 16, 5, 0, 0, time.UTC)); d != "Mittwoch, 2. Dezember" || c != "16:05" {
		t.Errorf("German date %q time %q", d, c)
	}
}
