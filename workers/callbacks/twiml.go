package callbacks

import (
	"strconv"
	"strings"
	"time"

	"github.com/nyaruka/phonenumbers"
	"github.com/twilio/twilio-go/twiml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/script"
	"github.com/delauto/delauto/workers/store"
)

// Prompts is the wording of a call. The campaign's script.prompts override
// the defaults, field by field.
type Prompts struct {
	// Menu lists the options after the greeting.
	Menu string
	// NoInput opens the one repeat of the menu when nothing was heard.
	NoInput string
	// Invalid opens the one repeat of the menu after an answer that is not an option.
	Invalid string
	// Confirmed, Reschedule and OptedOut end the call after those choices.
	Confirmed, Reschedule, OptedOut string
	// Instructions asks for the instructions before the recording tone.
	Instructions string
	// InstructionsSaved ends the call after a recording.
	InstructionsSaved string
	// NoInstructions ends the call when nothing was recorded.
	NoInstructions string
	// Goodbye ends a call that got no answer.
	Goodbye string
	// Voicemail is left on an answering machine ({{.Company}}, {{.Date}},
	// {{.WindowStart}}, {{.WindowEnd}} are filled in for the default).
	Voicemail string
}

// DefaultPrompts is the English wording used where the campaign says nothing.
var DefaultPrompts = Prompts{
	Menu: "To confirm, press 1 or say yes. For another day, press 2 or say reschedule. " +
		"For instructions to the driver, press 3. To stop these calls, press 9 or say stop.",
	NoInput:           "Sorry, I did not hear an answer.",
	Invalid:           "Sorry, that is not one of the options.",
	Confirmed:         "Thank you, your delivery is confirmed. Goodbye.",
	Reschedule:        "Thank you. The driver will contact you to arrange another time. Goodbye.",
	OptedOut:          "You will not get these calls again. Your parcel still arrives as planned. Goodbye.",
	Instructions:      "Please say your instructions for the driver after the tone, then press the pound key.",
	InstructionsSaved: "Thank you, the driver will get your instructions. Goodbye.",
	NoInstructions:    "We did not hear any instructions. Your parcel arrives as planned. Goodbye.",
	Goodbye:           "We did not get an answer. Your parcel arrives as planned. Goodbye.",
	Voicemail: "Hello, this is {{.Company}} about your parcel delivery on {{.Date}} between {{.WindowStart}} and {{.WindowEnd}}. " +
		"If that does not suit you, please call us back.",
}

// promptsFor is the campaign's wording over the defaults.
func promptsFor(c *campaignfile.Config) Prompts {
	p := DefaultPrompts
	o := c.Spec.Script.Prompts
	if o == nil {
		return p
	}
	for _, f := range []struct {
		dst *string
		src string
	}{{&p.Menu, o.Menu}, {&p.Confirmed, o.Confirmed}, {&p.Reschedule, o.Reschedule}, {&p.Instructions, o.Instructions},
		{&p.OptedOut, o.OptedOut}, {&p.Goodbye, o.Goodbye}, {&p.Voicemail, o.Voicemail}} {
		if strings.TrimSpace(f.src) != "" {
			*f.dst = f.src
		}
	}
	return p
}

// speechHints help the recogniser with the menu's words.
const speechHints = "yes, reschedule, instructions, stop"

// sayLanguage is the language of <Say> and of speech recognition: the
// recipient's, else American English.
func sayLanguage(info *CallInfo) string {
	if info != nil && info.Context != nil && info.Context.Language != "" {
		return info.Context.Language
	}
	return "en-US"
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
func (s *Server) menuGather(action, lang string, prompts ...string) *twiml.VoiceGather {
	var inner []twiml.Element
	for _, p := range prompts {
		if p != "" {
			inner = append(inner, s.say(p, lang))
		}
	}
	return &twiml.VoiceGather{
		Input: "dtmf speech", Action: action, Method: "POST", NumDigits: "1", Timeout: "5",
		SpeechTimeout: "auto", Language: lang, Hints: speechHints, InnerElements: inner,
	}
}

// voiceTwiML is the call: greeting and menu, one repeat when nothing is
// heard, then a polite goodbye.
func (s *Server) voiceTwiML(info *CallInfo, p Prompts, gatherURL, retryURL string) string {
	lang := sayLanguage(info)
	return render(
		s.menuGather(gatherURL, lang, info.Greeting, p.Menu),
		s.menuGather(retryURL, lang, p.NoInput, p.Menu),
		s.say(p.Goodbye, lang),
		&twiml.VoiceHangup{},
	)
}

// retryTwiML answers an answer that is not an option: the menu once more.
func (s *Server) retryTwiML(info *CallInfo, p Prompts, retryURL string) string {
	lang := sayLanguage(info)
	return render(s.menuGather(retryURL, lang, p.Invalid, p.Menu), s.say(p.Goodbye, lang), &twiml.VoiceHangup{})
}

// sayHangupTwiML says text and hangs up.
func (s *Server) sayHangupTwiML(info *CallInfo, text string) string {
	return render(s.say(text, sayLanguage(info)), &twiml.VoiceHangup{})
}

// recordTwiML asks for instructions and records them, with transcription.
// If nothing is recorded Twilio goes on to the goodbye.
func (s *Server) recordTwiML(info *CallInfo, p Prompts, maxLen time.Duration, actionURL, recordingURL, transcriptionURL string) string {
	lang := sayLanguage(info)
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
// callback number.
func (s *Server) voicemailTwiML(info *CallInfo, c *campaignfile.Config) string {
	return render(s.say(voicemailText(info, c), sayLanguage(info)), &twiml.VoiceHangup{})
}

func voicemailText(info *CallInfo, c *campaignfile.Config) string {
	p := promptsFor(c)
	text := p.Voicemail
	if text == DefaultPrompts.Voicemail {
		company := c.Spec.Script.CompanyName
		if info.Context != nil && !info.Context.WindowStart.IsZero() {
			loc := location(info.Context.TimeZone, string(c.Spec.Schedule.DefaultTimeZone))
			d := script.NewData(info.Context.RecipientName, company, info.Context.WindowStart, info.Context.WindowEnd, loc)
			if t, err := script.Render(text, d); err == nil {
				text = t
			}
		} else {
			text = "Hello, this is " + company + " about your parcel delivery. If you have questions, please call us back."
		}
	}
	if n := string(c.Spec.Script.CallbackNumber); n != "" && !strings.Contains(text, n) {
		text += " Our number is " + spokenNumber(n) + "."
	}
	return text + " Goodbye."
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
	maxLen := 30 * time.Second
	if d := c.Spec.Script.InstructionsMaxLength; d != nil && d.Duration > 0 {
		maxLen = d.Duration
	}
	maxLen = min(maxLen, timeLimit(c)-30*time.Second)
	return max(maxLen, 5*time.Second).Truncate(time.Second)
}

// timeLimit is the campaign's call time limit (60 s by default).
func timeLimit(c *campaignfile.Config) time.Duration {
	if d := c.Spec.Script.TimeLimit; d != nil && d.Duration > 0 {
		return d.Duration
	}
	return 60 * time.Second
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
