package callbacks

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/language"
	"github.com/delauto/delauto/workers/store"
)

// Twilio's SIDs: two letters and 32 hex digits.
var (
	callSIDRE      = regexp.MustCompile(`^CA[0-9a-fA-F]{32}$`)
	recordingSIDRE = regexp.MustCompile(`^RE[0-9a-fA-F]{32}$`)
)

// twilioTime is the layout of Twilio's Timestamp parameter.
const twilioTime = "Mon, 02 Jan 2006 15:04:05 -0700"

// Bounds on what a form may carry; anything longer is refused or cut.
const (
	maxSeq          = 1 << 20
	maxDurationSec  = 24 * 3600
	maxErrorMessage = 500
	maxDigits       = 32
	maxSpeech       = 500
	maxTranscript   = 5000
	maxURL          = 2048
)

// formError is a webhook form that does not make sense: 400.
type formError struct{ msg string }

func (e *formError) Error() string { return e.msg }

func badForm(format string, args ...any) error { return &formError{msg: fmt.Sprintf(format, args...)} }

// The Twilio CallStatus values a status callback may carry.
var callStatuses = map[string]bool{
	"queued": true, "initiated": true, "ringing": true, "in-progress": true, "answered": true,
	"completed": true, "busy": true, "no-answer": true, "failed": true, "canceled": true,
}

// terminalStatus reports whether a CallStatus ends the call.
func terminalStatus(s string) bool {
	switch s {
	case "completed", "busy", "no-answer", "failed", "canceled":
		return true
	}
	return false
}

// The AnsweredBy values of answering-machine detection.
var answeredByValues = map[string]bool{
	"human": true, "unknown": true, "fax": true, "machine_start": true,
	"machine_end_beep": true, "machine_end_silence": true, "machine_end_other": true,
}

func callSID(f url.Values) (string, error) {
	sid := f.Get("CallSid")
	if !callSIDRE.MatchString(sid) {
		return "", badForm("CallSid %q is not a call SID", clip(sid, 40))
	}
	return sid, nil
}

func optionalInt(f url.Values, name string, lo, hi int64) (int64, bool, error) {
	v := f.Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, false, badForm("%s %q must be a whole number from %d to %d", name, clip(v, 20), lo, hi)
	}
	return n, true, nil
}

func answeredBy(f url.Values, required bool) (string, error) {
	v := f.Get("AnsweredBy")
	if v == "" && !required {
		return "", nil
	}
	if !answeredByValues[v] {
		return "", badForm("AnsweredBy %q is not a detection result", clip(v, 30))
	}
	return v, nil
}

// parseStatus reads a call status callback.
func parseStatus(f url.Values) (store.StatusUpdate, error) {
	var u store.StatusUpdate
	var err error
	if u.CallSID, err = callSID(f); err != nil {
		return u, err
	}
	u.Status = f.Get("CallStatus")
	if !callStatuses[u.Status] {
		return u, badForm("CallStatus %q is not a Twilio call status", clip(u.Status, 30))
	}
	seq, ok, err := optionalInt(f, "SequenceNumber", 0, maxSeq)
	if err != nil {
		return u, err
	}
	if !ok {
		return u, badForm("SequenceNumber is missing: status callbacks cannot be ordered without it")
	}
	u.Seq = seq
	if ts := f.Get("Timestamp"); ts != "" {
		t, err := time.Parse(twilioTime, ts)
		if err != nil {
			return u, badForm("Timestamp %q is not in Twilio's format", clip(ts, 40))
		}
		u.At = t.UTC()
	}
	if u.AnsweredBy, err = answeredBy(f, false); err != nil {
		return u, err
	}
	d, _, err := optionalInt(f, "CallDuration", 0, maxDurationSec)
	if err != nil {
		return u, err
	}
	u.DurationSec = int32(d)
	code, _, err := optionalInt(f, "ErrorCode", 0, 999999)
	if err != nil {
		return u, err
	}
	u.ErrorCode = int32(code)
	u.ErrorMessage = clip(f.Get("ErrorMessage"), maxErrorMessage)
	return u, nil
}

// voiceForm is the voice (TwiML) request: the call and, with synchronous
// answering-machine detection, who answered.
type voiceForm struct {
	CallSID    string
	AnsweredBy string
}

func parseVoice(f url.Values) (voiceForm, error) {
	var v voiceForm
	var err error
	if v.CallSID, err = callSID(f); err != nil {
		return v, err
	}
	v.AnsweredBy, err = answeredBy(f, false)
	return v, err
}

// gatherForm is a <Gather> action request.
type gatherForm struct {
	CallSID string
	Digits  string
	Speech  string
}

func parseGather(f url.Values) (gatherForm, error) {
	var g gatherForm
	var err error
	if g.CallSID, err = callSID(f); err != nil {
		return g, err
	}
	g.Digits = f.Get("Digits")
	if len(g.Digits) > maxDigits || strings.Trim(g.Digits, "0123456789*#") != "" {
		return g, badForm("Digits %q are not keypad digits", clip(g.Digits, 40))
	}
	g.Speech = f.Get("SpeechResult")
	if utf8.RuneCountInString(g.Speech) > maxSpeech || !utf8.ValidString(g.Speech) {
		return g, badForm("SpeechResult is longer than %d characters or not UTF-8", maxSpeech)
	}
	return g, nil
}

// choose maps a menu answer to an option: a key (1, 2, 3, 9, 0) or the
// spoken words of the call's language (see language.Wording.Match).
func choose(g gatherForm, w *language.Wording) (language.Option, bool) {
	if g.Digits != "" {
		return language.Key(g.Digits)
	}
	return w.Match(g.Speech)
}

// choices are the recorded answers of the menu's options (Repeat records none).
var choices = map[language.Option]v1alpha1.ResponseChoice{
	language.Confirm: v1alpha1.ChoiceConfirm, language.Reschedule: v1alpha1.ChoiceReschedule,
	language.Instructions: v1alpha1.ChoiceInstructions, language.Stop: v1alpha1.ChoiceOptOut,
}

// recordingForm is a <Record> action or a recording status callback.
type recordingForm struct {
	CallSID string
	store.Recording
	// Status is RecordingStatus (status callback only): completed, absent, failed.
	Status string
	// Digits is the key that ended the recording, or "hangup".
	Digits string
}

func parseRecording(f url.Values, statusCallback bool) (recordingForm, error) {
	var r recordingForm
	var err error
	if r.CallSID, err = callSID(f); err != nil {
		return r, err
	}
	if statusCallback {
		r.Status = f.Get("RecordingStatus")
		switch r.Status {
		case "completed", "absent", "failed", "in-progress":
		default:
			return r, badForm("RecordingStatus %q is not a recording status", clip(r.Status, 30))
		}
	}
	r.SID = f.Get("RecordingSid")
	if !recordingSIDRE.MatchString(r.SID) {
		return r, badForm("RecordingSid %q is not a recording SID", clip(r.SID, 40))
	}
	r.URL = f.Get("RecordingUrl")
	if r.URL != "" || r.Status == "" || r.Status == "completed" {
		if err := checkURL("RecordingUrl", r.URL); err != nil {
			return r, err
		}
	}
	d, _, err := optionalInt(f, "RecordingDuration", -1, maxDurationSec)
	if err != nil {
		return r, err
	}
	r.DurationSec = int32(max(d, 0))
	r.Digits = f.Get("Digits")
	if len(r.Digits) > maxDigits {
		return r, badForm("Digits is longer than %d characters", maxDigits)
	}
	return r, nil
}

func checkURL(name, v string) error {
	if v == "" || len(v) > maxURL {
		return badForm("%s is missing or longer than %d characters", name, maxURL)
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return badForm("%s %q is not an absolute http(s) URL", name, clip(v, 80))
	}
	return nil
}

// transcriptionForm is a transcription callback.
type transcriptionForm struct {
	CallSID      string
	RecordingSID string
	Status       string
	Text         string
}

func parseTranscription(f url.Values) (transcriptionForm, error) {
	var t transcriptionForm
	var err error
	if t.CallSID, err = callSID(f); err != nil {
		return t, err
	}
	t.RecordingSID = f.Get("RecordingSid")
	if !recordingSIDRE.MatchString(t.RecordingSID) {
		return t, badForm("RecordingSid %q is not a recording SID", clip(t.RecordingSID, 40))
	}
	t.Status = f.Get("TranscriptionStatus")
	if t.Status != "completed" && t.Status != "failed" {
		return t, badForm("TranscriptionStatus %q must be completed or failed", clip(t.Status, 30))
	}
	t.Text = f.Get("TranscriptionText")
	if !utf8.ValidString(t.Text) {
		return t, badForm("TranscriptionText is not UTF-8")
	}
	t.Text = clip(strings.TrimSpace(t.Text), maxTranscript)
	return t, nil
}

// amdForm is an asynchronous answering-machine detection callback.
type amdForm struct {
	CallSID    string
	AnsweredBy string
}

func parseAMD(f url.Values) (amdForm, error) {
	var a amdForm
	var err error
	if a.CallSID, err = callSID(f); err != nil {
		return a, err
	}
	a.AnsweredBy, err = answeredBy(f, true)
	return a, err
}

// clip cuts s to n characters (at a rune boundary) for messages and storage.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := 0
	for i := range s {
		if i > n {
			break
		}
		cut = i
	}
	return s[:cut]
}
