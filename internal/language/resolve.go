package language

import (
	"strings"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

// DefaultCode is the default language of a campaign that names none.
const DefaultCode = "en"

// Resolution is the wording a recipient's call is held in.
type Resolution struct {
	// Wording is the built-in wording with the campaign's overrides.
	*Wording
	// Requested is the recipient's language ("" when they have none).
	Requested string
	// Used is the language the call is held in.
	Used string
	// Fallback reports that the recipient's language has no wording, so the
	// call is held in the campaign's default language.
	Fallback bool
}

// DefaultOf is the campaign's default language.
func DefaultOf(s *v1.CallScript) string {
	if s == nil || strings.TrimSpace(s.DefaultLanguage) == "" {
		return DefaultCode
	}
	return s.DefaultLanguage
}

// Has reports whether the campaign has wording for a language tag: built
// in for its base language, or an entry in script.languages for the tag or
// its base.
func Has(s *v1.CallScript, tag string) bool {
	return Builtin(Base(tag)) != nil || override(s, tag) != nil
}

// override is the campaign's entry for tag: its exact tag, else its base.
func override(s *v1.CallScript, tag string) *v1.ScriptLanguage {
	if s == nil || tag == "" {
		return nil
	}
	for _, want := range []string{tag, Base(tag)} {
		for i := range s.Languages {
			if strings.EqualFold(s.Languages[i].Code, want) {
				return &s.Languages[i]
			}
		}
	}
	return nil
}

// Resolve picks the wording of a call to a recipient whose language is
// recipient: the campaign's entry for it over the built-in wording, else
// the campaign's default language's (Fallback when the recipient named a
// language). The campaign's top-level greeting and prompts apply to its
// default language.
func Resolve(s *v1.CallScript, recipient string) Resolution {
	def := DefaultOf(s)
	r := Resolution{Requested: recipient, Used: recipient}
	if recipient == "" || !Has(s, recipient) {
		r.Used, r.Fallback = def, recipient != ""
	}
	r.Wording = wordingFor(s, r.Used)
	if strings.EqualFold(r.Used, def) || strings.EqualFold(Base(r.Used), Base(def)) && override(s, r.Used) == override(s, def) {
		applyTopLevel(r.Wording, s)
	}
	r.Wording.prepared()
	return r
}

// ForCampaign is the wording of the campaign's default language, the
// language of the agent's SMS.
func ForCampaign(s *v1.CallScript) *Wording { return Resolve(s, "").Wording }

// wordingFor merges the campaign's entry for tag over the built-in wording
// of its base language. A language without built-in wording starts from
// English, so a field its entry lacks (admission requires them all) still
// says something.
func wordingFor(s *v1.CallScript, tag string) *Wording {
	w := Builtin(Base(tag))
	if w == nil {
		w = Builtin(DefaultCode)
		w.Code, w.Name, w.Regional = tag, tag, nil
	}
	for _, reg := range w.Regional {
		if strings.EqualFold(reg, tag) {
			w.SayLanguage, w.SpeechLanguage = reg, reg
		}
	}
	o := override(s, tag)
	if o == nil {
		return w
	}
	set(&w.SayLanguage, o.SayLanguage)
	set(&w.SpeechLanguage, o.SpeechLanguage)
	set(&w.Greeting, o.Greeting)
	applyPrompts(&w.Prompts, o.Prompts)
	if ws := o.Words; ws != nil {
		for opt, add := range map[Option][]string{Confirm: ws.Confirm, Reschedule: ws.Reschedule,
			Instructions: ws.Instructions, Stop: ws.Stop, Repeat: ws.Repeat} {
			w.Words[opt] = append(w.Words[opt], add...)
		}
	}
	if len(o.Hints) > 0 {
		w.Hints = append([]string(nil), o.Hints...)
	}
	if m := o.SMS; m != nil {
		set(&w.SMS.Reschedule, m.Reschedule)
		set(&w.SMS.Instructions, m.Instructions)
		set(&w.SMS.InstructionsVoice, m.InstructionsVoice)
		set(&w.SMS.InstructionsNone, m.InstructionsNone)
	}
	return w
}

// applyTopLevel puts the campaign's script.greeting and script.prompts over w.
func applyTopLevel(w *Wording, s *v1.CallScript) {
	if s == nil {
		return
	}
	set(&w.Greeting, s.Greeting)
	applyPrompts(&w.Prompts, s.Prompts)
}

func applyPrompts(p *Prompts, o *v1.MenuPrompts) {
	if o == nil {
		return
	}
	for _, f := range []struct {
		dst *string
		src string
	}{{&p.Menu, o.Menu}, {&p.NoInput, o.NoInput}, {&p.Invalid, o.Invalid}, {&p.Confirmed, o.Confirmed},
		{&p.Reschedule, o.Reschedule}, {&p.OptedOut, o.OptedOut}, {&p.Instructions, o.Instructions},
		{&p.InstructionsSaved, o.InstructionsSaved}, {&p.NoInstructions, o.NoInstructions},
		{&p.Goodbye, o.Goodbye}, {&p.Voicemail, o.Voicemail}} {
		set(f.dst, f.src)
	}
	if strings.TrimSpace(o.Voicemail) != "" {
		p.VoicemailNoWindow = o.Voicemail
	}
}

func set(dst *string, src string) {
	if strings.TrimSpace(src) != "" {
		*dst = src
	}
}
