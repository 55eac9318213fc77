// Package language is the catalogue of what a call says and understands in
// each language: the built-in wording of every language DelAuto speaks (the
// greeting, the menu, the confirmations, the voicemail message, the
// instruction prompt, the goodbye and the agent's SMS), the words and
// phrases that choose each menu option, the speech hints, and the Twilio
// <Say> and <Gather> language codes.
//
// A campaign overrides any of it per language (spec.script.languages[]);
// Resolve merges the campaign's wording over the built-in one and picks the
// wording for a recipient's language, falling back to the campaign's
// default language when there is none. Match reads a spoken answer or a key
// as a menu option.
package language

import (
	"sort"
	"strings"
	"time"
)

// Option is one choice of the call's menu.
type Option string

// The menu's options, in the order of consequence Match applies when an
// answer names several.
const (
	// Stop asks not to be called again.
	Stop Option = "stop"
	// Reschedule asks for another delivery time.
	Reschedule Option = "reschedule"
	// Instructions leaves instructions for the driver.
	Instructions Option = "instructions"
	// Repeat plays the menu again.
	Repeat Option = "repeat"
	// Confirm confirms the delivery.
	Confirm Option = "confirm"
)

// Options lists the menu's options in the order Match tries them.
var Options = []Option{Stop, Reschedule, Instructions, Repeat, Confirm}

// Keys maps each option to its key on the phone's keypad, the same in
// every language.
var Keys = map[Option]string{Confirm: "1", Reschedule: "2", Instructions: "3", Stop: "9", Repeat: "0"}

// Prompts is what the call says around the greeting.
type Prompts struct {
	// Menu lists the options after the greeting.
	Menu string
	// NoInput opens the repeat of the menu when nothing was heard.
	NoInput string
	// Invalid opens the repeat of the menu after an answer that is not an option.
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
	// Voicemail is left on an answering machine: a template with the
	// greeting's fields ({{.Company}}, {{.Date}}, {{.WindowStart}},
	// {{.WindowEnd}}). A campaign's own voicemail is spoken as is.
	Voicemail string
	// VoicemailNoWindow is the voicemail when the delivery window is unknown.
	VoicemailNoWindow string
	// CallbackNumber follows the voicemail; %s is the number spoken digit by digit.
	CallbackNumber string
	// Bye closes the voicemail.
	Bye string
}

// SMS is the wording of the agent's SMS. Each message is a template with
// the placeholders {company} (the sender and a colon, or nothing), {name},
// {address}, {when} (the window in parentheses, or nothing), {body} (the
// transcription or the recording's link), {choice} and {ref}.
type SMS struct {
	Reschedule        string
	Instructions      string
	InstructionsVoice string
	InstructionsNone  string
	Answer            string
	// Someone names a recipient without a name; NoAddress an unknown address.
	Someone, NoAddress string
}

// Dates formats the delivery day and times the way the language says them.
type Dates struct {
	// Weekdays from Sunday and Months from January.
	Weekdays [7]string
	Months   [12]string
	// Day is the day's pattern: {weekday}, {day} and {month}.
	Day string
	// Time is the Go layout of a time of day, e.g. "3:04 PM" or "15:04".
	Time string
	// Short is the day's pattern in the agent's SMS, where {wd} and {mon}
	// are the first three letters of the weekday and month; empty: Day.
	Short string
}

// ShortDate formats the day of t for the agent's SMS, e.g. "Wed Dec 2".
func (d Dates) ShortDate(t time.Time) string {
	if d.Short == "" {
		return d.Date(t)
	}
	return strings.NewReplacer("{wd}", first3(d.Weekdays[t.Weekday()]), "{day}", itoa(t.Day()),
		"{mon}", first3(d.Months[t.Month()-1])).Replace(d.Short)
}

func first3(s string) string {
	r := []rune(s)
	return string(r[:min(3, len(r))])
}

// Date formats the day of t, e.g. "Wednesday, December 2" or "Mittwoch, 2. Dezember".
func (d Dates) Date(t time.Time) string {
	return strings.NewReplacer("{weekday}", d.Weekdays[t.Weekday()], "{day}", itoa(t.Day()),
		"{month}", d.Months[t.Month()-1]).Replace(d.Day)
}

// Clock formats the time of day of t.
func (d Dates) Clock(t time.Time) string { return t.Format(d.Time) }

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return string(rune('0'+n/10)) + string(rune('0'+n%10))
}

// Wording is everything a call says and understands in one language.
type Wording struct {
	// Code is the language's BCP 47 tag, e.g. "de".
	Code string
	// Name is the language's English name.
	Name string
	// SayLanguage is the language of Twilio's <Say>, e.g. "de-DE".
	SayLanguage string
	// SpeechLanguage is the speech recognition language of <Gather>.
	SpeechLanguage string
	// Regional lists the regional variants (e.g. "de-AT") Twilio speaks and
	// recognizes with this wording: a recipient with one of them is spoken
	// to and understood in it.
	Regional []string
	// Greeting opens the call: a template with {{.Name}}, {{.Company}},
	// {{.Date}}, {{.WindowStart}} and {{.WindowEnd}}.
	Greeting string
	// GreetingNoWindow opens a call whose delivery window is unknown ({{.Company}}).
	GreetingNoWindow string
	Prompts
	// SMS is the agent's message.
	SMS SMS
	// Words are the words and phrases that choose each option.
	Words map[Option][]string
	// Negations are the words that, next to a confirming word, undo it
	// ("not", "nicht"): "passt nicht" confirms nothing.
	Negations []string
	// Hints are the speech hints of the menu's <Gather>.
	Hints []string
	// Dates formats the delivery day and times.
	Dates Dates

	m *matcher // Words and Negations normalized, built on first use
}

// clone copies w deeply enough that a campaign's overrides do not touch
// the catalogue.
func (w *Wording) clone() *Wording {
	c := *w
	c.Words = make(map[Option][]string, len(w.Words))
	for o, ws := range w.Words {
		c.Words[o] = append([]string(nil), ws...)
	}
	c.Hints = append([]string(nil), w.Hints...)
	c.Negations = append([]string(nil), w.Negations...)
	c.Regional = append([]string(nil), w.Regional...)
	c.m = nil
	return &c
}

// prepared normalizes w's words for Match once; w must not change after.
func (w *Wording) prepared() *Wording {
	w.m = newMatcher(w)
	return w
}

// HintList is the speech hints as Twilio's hints attribute wants them.
func (w *Wording) HintList() string { return strings.Join(w.Hints, ", ") }

// Builtin returns the built-in wording of a base language code ("de"), or nil.
func Builtin(code string) *Wording {
	w, ok := builtin[strings.ToLower(code)]
	if !ok {
		return nil
	}
	return w.clone().prepared()
}

// Codes lists the built-in languages' codes, sorted.
func Codes() []string {
	codes := make([]string, 0, len(builtin))
	for c := range builtin {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	return codes
}

// Base is the language part of a BCP 47 tag, lower case: "de-AT" is "de".
func Base(tag string) string {
	base, _, _ := strings.Cut(tag, "-")
	return strings.ToLower(base)
}
