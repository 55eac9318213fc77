package relay

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/language"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/workers/store"
)

// Needed reports whether the agent is told about a choice: a reschedule
// request or recorded instructions change what the agent does. A
// confirmation does not (the Delivery's status shows it; a text per
// confirmed parcel would bury the two that matter), nor does an opt-out
// (the operator stops calling, the parcel still comes).
func Needed(c v1alpha1.ResponseChoice) bool { return slices.Contains(relayedChoices, c) }

// relayedChoices are the choices Needed reports.
var relayedChoices = []v1alpha1.ResponseChoice{v1alpha1.ChoiceReschedule, v1alpha1.ChoiceInstructions}

// MaxSMSLen bounds the relay SMS, in characters: two SMS segments.
const MaxSMSLen = 320

// window formats a delivery window in loc as w says it, e.g.
// "Wed Dec 2, 9:00 AM-11:00 AM CET" or "Mittwoch, 2. Dezember, 09:00-11:00 CET".
func window(start, end time.Time, loc *time.Location, w *language.Wording) string {
	if start.IsZero() {
		return ""
	}
	s, e := start.In(loc), end.In(loc)
	return w.Dates.ShortDate(s) + ", " + w.Dates.Clock(s) + "-" + w.Dates.Clock(e) + " " + e.Format("MST")
}

// SMSText is the agent's SMS about the answer of attempt a, at most
// MaxSMSLen characters, in the wording w (the campaign's default language;
// English when nil): who, where, when, what they chose and, for
// instructions, the transcription (or, without one, the recording's link).
// company names the sender; defaultTZ applies when the recipient has no time
// zone. The transcription, then the address, are shortened to fit.
func SMSText(a *store.Attempt, company, defaultTZ string, w *language.Wording) string {
	if w == nil {
		w = language.Builtin(language.DefaultCode)
	}
	var cc store.CallContext
	if a.Context != nil {
		cc = *a.Context
	}
	var r store.Response
	if a.Response != nil {
		r = *a.Response
	}
	name := cc.RecipientName
	if name == "" {
		name = w.SMS.Someone
	}
	when := window(cc.WindowStart, cc.WindowEnd, schedule.FirstLocation(cc.TimeZone, defaultTZ), w)
	if when != "" {
		when = " (" + when + ")"
	}
	ref := " Ref " + a.Delivery.Namespace + "/" + a.Delivery.Name
	prefix := ""
	if company != "" {
		prefix = company + ": "
	}
	addr := cc.Address
	if addr == "" {
		addr = w.SMS.NoAddress
	}

	tmpl, body := w.SMS.Answer, ""
	switch r.Choice {
	case v1alpha1.ChoiceReschedule:
		tmpl = w.SMS.Reschedule
	case v1alpha1.ChoiceInstructions:
		switch {
		case strings.TrimSpace(r.Transcription) != "":
			tmpl, body = w.SMS.Instructions, strings.Join(strings.Fields(r.Transcription), " ")
		case r.RecordingURL != "":
			tmpl, body = w.SMS.InstructionsVoice, r.RecordingURL
		default:
			tmpl = w.SMS.InstructionsNone
		}
	}
	build := func(addr, body string) string {
		return strings.NewReplacer("{company}", prefix, "{name}", name, "{address}", addr, "{when}", when,
			"{body}", body, "{choice}", string(r.Choice), "{ref}", ref).Replace(tmpl)
	}
	msg := build(addr, body)
	if n := utf8.RuneCountInString(msg); n > MaxSMSLen && body != "" && !strings.HasPrefix(body, "http") {
		body = shorten(body, utf8.RuneCountInString(body)-(n-MaxSMSLen))
		msg = build(addr, body)
	}
	if n := utf8.RuneCountInString(msg); n > MaxSMSLen {
		addr = shorten(addr, max(utf8.RuneCountInString(addr)-(n-MaxSMSLen), 12))
		msg = build(addr, body)
	}
	return shorten(msg, MaxSMSLen)
}

// shorten cuts s to at most n characters, marking the cut with "...".
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 3 {
		return string([]rune(s)[:max(n, 0)])
	}
	return strings.TrimSpace(string([]rune(s)[:n-3])) + "..."
}

// Payload is the JSON body of the relay webhook: one answer of one call.
type Payload struct {
	// ID is the idempotency key, also sent as the Idempotency-Key header:
	// the same for every retry of this notification.
	ID string `json:"id"`
	// Type is "delivery.response".
	Type string `json:"type"`
	// AttemptID is the call attempt.
	AttemptID string `json:"attemptId"`
	// Delivery is the Delivery answered for.
	Delivery PayloadDelivery `json:"delivery"`
	// Campaign is the CallCampaign as namespace/name.
	Campaign string `json:"campaign"`
	// Choice is Reschedule or Instructions.
	Choice v1alpha1.ResponseChoice `json:"choice"`
	// Digits and Speech are how it was given.
	Digits string `json:"digits,omitempty"`
	Speech string `json:"speech,omitempty"`
	// AnsweredAt is when the recipient chose.
	AnsweredAt *time.Time `json:"answeredAt,omitempty"`
	// Recording is the recorded instructions, if any.
	Recording *PayloadRecording `json:"recording,omitempty"`
	// Agent is who delivers.
	Agent PayloadAgent `json:"agent"`
	// SentAt is when this request was made (each retry has its own).
	SentAt time.Time `json:"sentAt"`
}

// PayloadDelivery identifies the Delivery and where and when it goes.
type PayloadDelivery struct {
	Namespace     string    `json:"namespace"`
	Name          string    `json:"name"`
	UID           string    `json:"uid"`
	RecipientName string    `json:"recipientName,omitempty"`
	Address       string    `json:"address,omitempty"`
	Region        string    `json:"region,omitempty"`
	TimeZone      string    `json:"timeZone,omitempty"`
	WindowStart   time.Time `json:"windowStart,omitzero"`
	WindowEnd     time.Time `json:"windowEnd,omitzero"`
}

// PayloadRecording is the recorded instructions.
type PayloadRecording struct {
	SID                 string `json:"sid"`
	URL                 string `json:"url"`
	DurationSec         int32  `json:"durationSec"`
	Transcription       string `json:"transcription,omitempty"`
	TranscriptionStatus string `json:"transcriptionStatus,omitempty"`
}

// PayloadAgent is the delivery agent.
type PayloadAgent struct {
	Name  string `json:"name,omitempty"`
	Phone string `json:"phone,omitempty"`
}

// NewPayload builds the webhook body for attempt a.
func NewPayload(a *store.Attempt, now time.Time) Payload {
	p := Payload{
		ID:        IdempotencyKey(a.ID),
		Type:      "delivery.response",
		AttemptID: a.ID,
		Delivery:  PayloadDelivery{Namespace: a.Delivery.Namespace, Name: a.Delivery.Name, UID: a.Delivery.UID},
		Campaign:  a.Campaign,
		SentAt:    now.UTC(),
	}
	if c := a.Context; c != nil {
		p.Delivery.RecipientName, p.Delivery.Address, p.Delivery.Region = c.RecipientName, c.Address, c.Region
		p.Delivery.TimeZone, p.Delivery.WindowStart, p.Delivery.WindowEnd = c.TimeZone, c.WindowStart, c.WindowEnd
		p.Agent = PayloadAgent{Name: c.AgentName, Phone: c.AgentPhone}
	}
	if r := a.Response; r != nil {
		p.Choice, p.Digits, p.Speech, p.AnsweredAt = r.Choice, r.Digits, r.Speech, r.At
		if r.RecordingSID != "" || r.Transcription != "" {
			p.Recording = &PayloadRecording{SID: r.RecordingSID, URL: r.RecordingURL, DurationSec: r.RecordingDurationSec,
				Transcription: r.Transcription, TranscriptionStatus: r.TranscriptionStatus}
		}
	}
	return p
}

// IdempotencyKey is the key of attempt id's relay webhook: one per attempt
// (a call relays at most one answer), equal across retries.
func IdempotencyKey(attemptID string) string { return "delauto-relay-" + attemptID }

// The relay webhook's headers.
const (
	// HeaderSignature carries "sha256=" and the hex HMAC-SHA256 of the
	// timestamp, a dot and the body, keyed with the campaign's secret.
	HeaderSignature = "X-Delauto-Signature"
	// HeaderTimestamp is the Unix time of the request, in seconds; it is
	// signed, so a receiver can refuse old replays.
	HeaderTimestamp = "X-Delauto-Timestamp"
	// HeaderIdempotencyKey is the same for every retry of one notification.
	HeaderIdempotencyKey = "Idempotency-Key"
)

// Sign returns the HeaderSignature value of body sent at unix time ts.
func Sign(secret []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a relay webhook as a receiver should: the signature over the
// timestamp and body, and the timestamp within maxAge of now.
func Verify(secret []byte, timestamp, signature string, body []byte, now time.Time, maxAge time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("relay webhook: bad %s %q", HeaderTimestamp, timestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("relay webhook: timestamp %d is %s away from now", ts, d.Round(time.Second))
	}
	if !hmac.Equal([]byte(Sign(secret, ts, body)), []byte(signature)) {
		return fmt.Errorf("relay webhook: signature does not match")
	}
	return nil
}

func marshalPayload(p Payload) ([]byte, error) { return json.Marshal(p) }
