package callbacks

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nyaruka/phonenumbers"
	"github.com/twilio/twilio-go/twiml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/language"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/internal/script"
	"github.com/delauto/delauto/workers/store"
)

// wording is the campaign's wording for the call's recipient: in their
// language, else the campaign's default language.
func (s *Server) wording(info *CallInfo, c *campaignfile.Config) *language.Wording {
	tag := ""
	if info != nil && info.Context != nil {
		tag = info.Context.Language
	}
	return s.resolve(c, tag).Wording
}

// resolve is language.Resolve, memoized per campaign config and language.
func (s *Server) resolve(c *campaignfile.Config, tag string) language.Resolution {
	m := s.words.Load()
	if m == nil || m.from != c {
		m = &wordsMemo{from: c}
		s.words.Store(m)
	}
	if r, ok := m.byTag.Load(tag); ok {
		return r.(language.Resolution)
	}
	r := language.Resolve(&c.Spec.Script, tag)
	if m.n.Add(1) <= maxWordsMemo {
		m.byTag.Store(tag, r)
	}
	return r
}

// maxWordsMemo bounds the languages memoized per campaign config.
const maxWordsMemo = 64

// wordsMemo holds the resolved wording of one campaign config by language.
type wordsMemo struct {
	from  *campaignfile.Config
	byTag sync.Map // language tag -> language.Resolution
	n     atomic.Int32
}

func (s *Server) say(text, lang string) *twiml.VoiceSay {
	return &twiml.VoiceSay{Message: text, Language: lang, Voice: s.cfg.Voice}
}

func render(verbs ...twiml.Element) string {
	x, err := twiml.Voice(verbs)
	if err != nil { // twiml.Voice only fails writing to a string builder
		return `<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>`
	}
	return x
}

// hangupTwiML ends the call at once.
func hangupTwiML() string { return render(&twiml.VoiceHangup{}) }

// menuGather is the <Gather> of the menu, with its spoken prompts inside so
// the recipient can answer while they play.
func (s *Server) menuGather(action string, w *language.Wording, prompts ...string) *twiml.VoiceGather {
	var inner []twiml.Element
	for _, p := range prompts {
		if p != "" {
			inner = append(inner, s.say(p, w.SayLanguage))
		}
	}
	return &twiml.VoiceGather{
		Input: "dtmf speech", Action: action, Method: "POST", NumDigits: "1", Timeout: "5",
		SpeechTimeout: "auto", Language: w.SpeechLanguage, Hints: w.HintList(), InnerElements: inner,
	}
}

// voiceTwiML is the call: greeting and menu, one repeat when nothing is
// heard, then a polite goodbye.
func (s *Server) voiceTwiML(info *CallInfo, w *language.Wording, gatherURL, retryURL string) string {
	return render(
		s.menuGather(gatherURL, w, info.Greeting, w.Menu),
		s.menuGather(retryURL, w, w.NoInput, w.Menu),
		s.say(w.Goodbye, w.SayLanguage),
		&twiml.VoiceHangup{},
	)
}

// retryTwiML answers an answer that is not an option: the menu once more.
func (s *Server) retryTwiML(w *language.Wording, retryURL string) string {
	return render(s.menuGather(retryURL, w, w.Invalid, w.Menu), s.say(w.Goodbye, w.SayLanguage), &twiml.VoiceHangup{})
}

// repeatTwiML plays the greeting and menu again when the recipient asked
// for it; nextURL counts the repeats.
func (s *Server) repeatTwiML(info *CallInfo, w *language.Wording, nextURL string) string {
	return render(s.menuGather(nextURL, w, info.Greeting, w.Menu), s.say(w.Goodbye, w.SayLanguage), &twiml.VoiceHangup{})
}

// sayHangupTwiML says text and hangs up.
func (s *Server) sayHangupTwiML(w *language.Wording, text string) string {
	return render(s.say(text, w.SayLanguage), &twiml.VoiceHangup{})
}

// recordTwiML asks for instructions and records them, with transcription.
// If nothing is recorded Twilio goes on to the goodbye.
func (s *Server) recordTwiML(p *language.Wording, maxLen time.Duration, actionURL, recordingURL, transcriptionURL string) string {
	lang := p.SayLanguage
	return render(
		s.say(p.Instructions, lang),
		&twiml.VoiceRecord{
			Action: actionURL, Method: "POST", Timeout: "5", FinishOnKey: "#",
			MaxLength: strconv.Itoa(int(maxLen / time.Second)), PlayBeep: "true", Trim: "trim-silence",
			RecordingStatusCallback: recordingURL, RecordingStatusCallbackMethod: "POST", RecordingStatusCallbackEvent: "completed",
			Transcribe: "true", TranscribeCallback: transcriptionURL,
		},
		s.say(p.NoInstructions, lang),
		&twiml.VoiceHangup{},
	)
}

// voicemailTwiML is the message left on an answering machine: the
// campaign's wording, or the default with the delivery window, and the
// callback number, in the recipient's language.
func (s *Server) voicemailTwiML(info *CallInfo, c *campaignfile.Config) string {
	w := s.wording(info, c)
	return render(s.say(voicemailText(info, c, w), w.SayLanguage), &twiml.VoiceHangup{})
}

func voicemailText(info *CallInfo, c *campaignfile.Config, w *language.Wording) string {
	company := c.Spec.Script.CompanyName
	text := w.VoicemailNoWindow
	var d script.Data
	if info.Context != nil && !info.Context.WindowStart.IsZero() {
		loc := schedule.FirstLocation(info.Context.TimeZone, string(c.Spec.Schedule.DefaultTimeZone))
		d = dataFor(w, info.Context.RecipientName, company, info.Context.WindowStart, info.Context.WindowEnd, loc)
		text = w.Voicemail
	} else {
		d = script.Data{Company: company}
	}
	if t, err := script.Render(text, d); err == nil {
		text = t
	}
	if n := string(c.Spec.Script.CallbackNumber); n != "" && !strings.Contains(text, n) {
		text += " " + fmt.Sprintf(w.CallbackNumber, spokenNumber(n))
	}
	return text + " " + w.Bye
}

// dataFor fills a greeting's fields with the day and times as the
// language says them.
func dataFor(w *language.Wording, name, company string, start, end time.Time, loc *time.Location) script.Data {
	s, e := start.In(loc), end.In(loc)
	return script.Data{Name: name, Company: company, Date: w.Dates.Date(s), WindowStart: w.Dates.Clock(s), WindowEnd: w.Dates.Clock(e)}
}

// spokenNumber spells a phone number digit by digit in its usual groups, so
// a text-to-speech voice reads digits: "+14155550123" becomes
// "1, 4 1 5, 5 5 5, 0 1 2 3".
func spokenNumber(n string) string {
	formatted := n
	if p, err := phonenumbers.Parse(n, ""); err == nil {
		formatted = phonenumbers.Format(p, phonenumbers.INTERNATIONAL)
	}
	groups := strings.FieldsFunc(formatted, func(r rune) bool { return r < '0' || r > '9' })
	for i, g := range groups {
		groups[i] = strings.Join(strings.Split(g, ""), " ")
	}
	return strings.Join(groups, ", ")
}

// recordMaxLength is how long instructions may be: the campaign's
// instructionsMaxLength (30 s by default), cut so the call stays within its
// time limit after the greeting, menu, prompt and goodbye (about 30 s),
// never below 5 s.
func recordMaxLength(c *campaignfile.Config) time.Duration {
	set := campaignfile.Settings(&c.Spec)
	maxLen := min(set.InstructionsMaxLength, set.TimeLimit-30*time.Second)
	return max(maxLen, 5*time.Second).Truncate(time.Second)
}

// machineAction is what the campaign does when a machine answers.
func machineAction(c *campaignfile.Config) v1.AnsweringMachineAction {
	if c.Spec.Script.AnsweringMachine == v1.MachineVoicemail {
		return v1.MachineVoicemail
	}
	return v1.MachineHangUp
}

// isMachine reports an AMD verdict that is not a person.
func isMachine(answeredBy string) bool { return store.IsMachine(answeredBy) }
