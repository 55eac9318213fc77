package store

import (
	"fmt"
	"time"

	"github.com/delauto/delauto/api/v1alpha1"
)

// State is where one call attempt stands. The state machine:
//
//	queued ──Claim──▶ dialing ──MarkDialed──▶ dialed ──▶ ringing ──▶ in-progress ──▶ completed
//	retry  ──Claim──▶ dialing                   (callbacks: ApplyCallStatus)
//	dialing ──Release──▶ retry            (not dialed: rate limited, calling hours, Twilio 429)
//	dialing ──MarkUnknown──▶ unknown      (ambiguous dial: timeout or 5xx after sending)
//	dialing|unknown ──MarkFailed──▶ failed (Twilio refused the number: 4xx)
//	unknown ──MarkDialed / ApplyCallStatus──▶ dialed … completed (reconciled: the call exists)
//	unknown ──Release──▶ retry            (reconciled: no call was created)
//	queued|retry ──MarkCancelled──▶ cancelled; dialing ──MarkCancelled(fenced)──▶ cancelled
//	dialing|unknown ──RequestCancel──▶ (marked) ──Release──▶ cancelled; Claim refuses a marked attempt
//
// ApplyCallStatus moves any non-terminal state forward (a callback proves a
// call exists, so even a queued attempt moves past dialing and cannot be
// claimed again); completed, failed and cancelled are terminal and never left.
type State string

// The attempt states.
const (
	// StateQueued: planned by the operator, waiting for its due time.
	StateQueued State = "queued"
	// StateRetry: put back by a worker before a call was placed, due again later.
	StateRetry State = "retry"
	// StateDialing: claimed by a worker (fenced, leased); the create-call request may be in flight.
	StateDialing State = "dialing"
	// StateDialed: Twilio accepted the call (call SID known); queued or initiated at Twilio.
	StateDialed State = "dialed"
	// StateRinging: the recipient's phone is ringing.
	StateRinging State = "ringing"
	// StateInProgress: the call was answered and is going on.
	StateInProgress State = "in-progress"
	// StateCompleted: the call ended; Result says how (completed, busy, no-answer, machine, ...).
	StateCompleted State = "completed"
	// StateUnknown: the dial was ambiguous; reconcile from callbacks or Twilio's call list, never redial blindly.
	StateUnknown State = "unknown"
	// StateFailed: no call could be placed (Twilio refused the number permanently).
	StateFailed State = "failed"
	// StateCancelled: the attempt was called off before a call was placed.
	StateCancelled State = "cancelled"
)

// States lists every state.
var States = []State{StateQueued, StateRetry, StateDialing, StateDialed, StateRinging,
	StateInProgress, StateCompleted, StateUnknown, StateFailed, StateCancelled}

// Terminal reports whether the attempt is finished: nothing moves it again.
func (s State) Terminal() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// Claimable reports whether a worker may claim an attempt in this state.
func (s State) Claimable() bool { return s == StateQueued || s == StateRetry }

// Rank orders the states along a call's life: queued and retry 0, dialing
// 1, unknown 2, dialed 3, ringing 4, in-progress 5, the terminal states 9.
func (s State) Rank() int32 { return s.rank() }

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool { return s.rank() >= 0 }

// rank orders the states along a call's life; status updates only move an
// attempt to an equal or higher rank. It is stored beside the state so a
// single conditional update can compare it.
func (s State) rank() int32 {
	switch s {
	case StateQueued, StateRetry:
		return 0
	case StateDialing:
		return 1
	case StateUnknown:
		return 2
	case StateDialed:
		return 3
	case StateRinging:
		return 4
	case StateInProgress:
		return 5
	case StateCompleted, StateFailed, StateCancelled:
		return 9
	}
	return -1
}

var (
	claimableStates = []State{StateQueued, StateRetry}
	terminalStates  = []State{StateCompleted, StateFailed, StateCancelled}
	dialOutcomeFrom = []State{StateDialing, StateUnknown}
)

// DeliveryRef identifies the Delivery an attempt calls for. Its fields are
// top-level fields of the attempt document: FerretDB filters top-level
// fields in PostgreSQL but loads every document of the collection to match
// a nested one.
type DeliveryRef struct {
	// UID is the Delivery's metadata.uid.
	UID string `bson:"deliveryUID"`
	// Namespace of the Delivery.
	Namespace string `bson:"deliveryNamespace"`
	// Name of the Delivery.
	Name string `bson:"deliveryName"`
}

// Response is what the recipient answered during the call.
type Response struct {
	// Choice is the menu option taken.
	Choice v1alpha1.ResponseChoice `bson:"choice,omitempty"`
	// Digits pressed on the keypad.
	Digits string `bson:"digits,omitempty"`
	// Speech recognised.
	Speech string `bson:"speech,omitempty"`
	// At is when the answer was given.
	At *time.Time `bson:"at,omitempty"`
	// RecordingSID is Twilio's SID of the recorded instructions.
	RecordingSID string `bson:"recordingSid,omitempty"`
	// RecordingURL is where the recording can be fetched.
	RecordingURL string `bson:"recordingUrl,omitempty"`
	// RecordingDurationSec is the recording's length in seconds.
	RecordingDurationSec int32 `bson:"recordingDurationSec,omitempty"`
	// Transcription is the recording's text.
	Transcription string `bson:"transcription,omitempty"`
	// TranscribedRecordingSID is the recording Transcription belongs to.
	TranscribedRecordingSID string `bson:"transcribedRecordingSid,omitempty"`
	// TranscriptionStatus is Twilio's transcription status (completed, failed).
	TranscriptionStatus string `bson:"transcriptionStatus,omitempty"`
}

// Channel is a way the delivery agent is told the recipient's answer.
type Channel string

// The notification channels.
const (
	// ChannelSMS is the relay SMS to the agent's phone.
	ChannelSMS Channel = "sms"
	// ChannelWebhook is the campaign's relay webhook.
	ChannelWebhook Channel = "webhook"
)

func (c Channel) valid() bool { return c == ChannelSMS || c == ChannelWebhook }

// NotifyState is where one notification stands.
type NotifyState string

// The notification states.
const (
	// NotifyPending: not sent yet.
	NotifyPending NotifyState = "pending"
	// NotifySending: a sender holds it (leased) and is sending.
	NotifySending NotifyState = "sending"
	// NotifySent: delivered to the channel; never sent again.
	NotifySent NotifyState = "sent"
	// NotifyFailed: the last try failed; it may be tried again.
	NotifyFailed NotifyState = "failed"
)

// Notification is the state of telling the agent through one channel.
type Notification struct {
	// State of the notification.
	State NotifyState `bson:"state"`
	// Attempts is how many times sending began.
	Attempts int32 `bson:"attempts"`
	// Owner is who holds the sending lease.
	Owner string `bson:"owner,omitempty"`
	// LeaseUntil is when the sending lease expires.
	LeaseUntil *time.Time `bson:"leaseUntil,omitempty"`
	// LastError is the last failure's message.
	LastError string `bson:"lastError,omitempty"`
	// SentAt is when it was sent.
	SentAt *time.Time `bson:"sentAt,omitempty"`
}

// Notifications holds the state of every channel.
type Notifications struct {
	// SMS is the relay SMS.
	SMS Notification `bson:"sms"`
	// Webhook is the relay webhook.
	Webhook Notification `bson:"webhook"`
}

// Attempt is one call attempt: a document of the attempts collection, the
// call log. Its _id is deterministic, AttemptID(delivery UID, number).
type Attempt struct {
	// ID is AttemptID(Delivery.UID, Number).
	ID string `bson:"_id"`
	// Delivery is the Delivery called for (inlined: deliveryUID, ...).
	Delivery DeliveryRef `bson:",inline"`
	// Campaign is the CallCampaign, as namespace/name.
	Campaign string `bson:"campaign"`
	// Shard is the campaign shard whose workers call it.
	Shard string `bson:"shard"`
	// Number is the attempt's number for its delivery, from 1.
	Number int32 `bson:"number"`
	// Region is the Delivery's region (Context.Region, kept here for the
	// insights rollups: erasing the context leaves it).
	Region string `bson:"region,omitempty"`
	// Agent is the name of the agent told the answer (Context.AgentName,
	// kept like Region); never a phone number.
	Agent string `bson:"agent,omitempty"`

	// State is where the attempt stands.
	State State `bson:"state"`
	// Rank orders State for order-proof conditional updates (internal).
	Rank int32 `bson:"rank"`
	// Fence increases with every claim; a worker's writes carry the fence it claimed with.
	Fence int64 `bson:"fence"`
	// Owner is the worker that claimed it last.
	Owner string `bson:"owner,omitempty"`
	// LeaseUntil is when the current claim expires.
	LeaseUntil *time.Time `bson:"leaseUntil,omitempty"`
	// Due is when the attempt should be dialed.
	Due time.Time `bson:"due"`
	// Releases counts how often a worker put it back (Release).
	Releases int32 `bson:"releases"`
	// Reason is why it was last released, marked unknown or cancelled.
	Reason string `bson:"reason,omitempty"`
	// CancelRequested says the attempt was called off while a worker held
	// it (dialing or unknown): Claim refuses it, and Release cancels it
	// instead of putting it back. Set by RequestCancel.
	CancelRequested bool `bson:"cancelRequested,omitempty"`
	// CancelReason is why the cancel was requested.
	CancelReason string `bson:"cancelReason,omitempty"`
	// LineHold is the salted hash of To while the attempt holds its number:
	// from its claim until it is put back or ends. A unique index lets one
	// attempt per number hold it, fleet-wide.
	LineHold string `bson:"lineHold,omitempty"`
	// ConflictSID is a call SID Twilio returned for this attempt that was
	// already recorded on another attempt: the attempt stays unknown, never
	// released for a new dial by reconciliation.
	ConflictSID string `bson:"conflictSid,omitempty"`

	// To is the recipient's number (E.164). Never log it unmasked.
	To string `bson:"to"`
	// From is the caller ID used.
	From string `bson:"from,omitempty"`
	// Context is the delivery as the call needs it (greeting, relay).
	Context *CallContext `bson:"context,omitempty"`

	// CallSID is Twilio's call SID once known.
	CallSID string `bson:"callSid,omitempty"`
	// TwilioStatus is the latest Twilio CallStatus applied.
	TwilioStatus string `bson:"twilioStatus,omitempty"`
	// StatusTimes is when each Twilio status was reported.
	StatusTimes map[string]time.Time `bson:"statusTimes,omitempty"`
	// LastSeq is the highest status-callback SequenceNumber applied (-1: none).
	LastSeq int64 `bson:"lastSeq"`
	// AnsweredBy is the answering-machine detection verdict.
	AnsweredBy string `bson:"answeredBy,omitempty"`
	// DurationSec is the call's length in seconds.
	DurationSec int32 `bson:"durationSec,omitempty"`
	// ErrorCode is Twilio's error code when the dial or call failed.
	ErrorCode int32 `bson:"errorCode,omitempty"`
	// ErrorMessage is the error's text.
	ErrorMessage string `bson:"errorMessage,omitempty"`
	// Result is how the attempt ended, once terminal (empty for cancelled).
	Result v1alpha1.CallResult `bson:"result,omitempty"`
	// Response is what the recipient answered.
	Response *Response `bson:"response,omitempty"`
	// Notify is the state of telling the agent.
	Notify Notifications `bson:"notify"`

	// ClaimedAt is when it was last claimed.
	ClaimedAt *time.Time `bson:"claimedAt,omitempty"`
	// DialedAt is when Twilio accepted the call.
	DialedAt *time.Time `bson:"dialedAt,omitempty"`
	// EndedAt is when it reached a terminal state.
	EndedAt *time.Time `bson:"endedAt,omitempty"`
	// EndHour is EndedAt's hour: the insights rollup bucket the attempt
	// is counted in.
	EndHour *time.Time `bson:"endHour,omitempty"`
	// DurB is the call duration histogram bucket of DurationSec
	// (insights.DurationBucket), set with a reported duration above 0.
	DurB *int32 `bson:"durB,omitempty"`
	// PickupB is the pickup latency histogram bucket (insights.PickupBucket)
	// of the time from Due to ClaimedAt, set when a claimed attempt ends.
	PickupB *int32 `bson:"pickupB,omitempty"`
	// ExpireAt is when the call log entry may be deleted: its retention
	// (RetentionSec, else Config.Retention) after it ended.
	ExpireAt *time.Time `bson:"expireAt,omitempty"`
	// RetentionSec is how long the attempt is kept once finished, in
	// seconds, fixed when it is created (the campaign's retention); nil
	// means the store's Config.Retention.
	RetentionSec *int64 `bson:"retentionSec,omitempty"`
	// Recordings says whether recordings of the call are still held at
	// Twilio (RecordingsPending) or were deleted there (RecordingsDeleted).
	Recordings RecordingsState `bson:"recordings,omitempty"`
	// RecordingSIDs are the recordings of the call still to be deleted at Twilio.
	RecordingSIDs []string `bson:"recordingSids,omitempty"`
	// RecordingsDeletedAt is when they were last deleted at Twilio.
	RecordingsDeletedAt *time.Time `bson:"recordingsDeletedAt,omitempty"`
	// RecordingsTries counts failed deletions since the last success.
	RecordingsTries int32 `bson:"recordingsTries,omitempty"`
	// RecordingsRetryAt is when a failed deletion is tried again.
	RecordingsRetryAt *time.Time `bson:"recordingsRetryAt,omitempty"`
	// RecordingsError is the last failed deletion's error.
	RecordingsError string `bson:"recordingsError,omitempty"`
	// ErasedAt is when the recipient's personal data was erased from the
	// attempt (Erase); To is then empty.
	ErasedAt *time.Time `bson:"erasedAt,omitempty"`
	// CreatedAt is when the operator created it.
	CreatedAt time.Time `bson:"createdAt"`
	// UpdatedAt is the last change.
	UpdatedAt time.Time `bson:"updatedAt"`
}

// RecordingsState is whether an attempt's recordings are held at Twilio.
type RecordingsState string

// The recordings states.
const (
	// RecordingsPending: recordings (and their transcriptions) exist at
	// Twilio and must be deleted before the attempt goes.
	RecordingsPending RecordingsState = "pending"
	// RecordingsDeleted: every recording was deleted at Twilio.
	RecordingsDeleted RecordingsState = "deleted"
)

// CallContext is a snapshot of the Delivery taken when the attempt is
// planned: what the greeting says and what the agent is told.
type CallContext struct {
	// RecipientName is how the greeting addresses the recipient.
	RecipientName string `bson:"recipientName"`
	// Language is the recipient's BCP 47 language tag.
	Language string `bson:"language,omitempty"`
	// TimeZone is the recipient's IANA time zone.
	TimeZone string `bson:"timeZone"`
	// WindowStart and WindowEnd are the promised delivery window.
	WindowStart time.Time `bson:"windowStart"`
	WindowEnd   time.Time `bson:"windowEnd"`
	// Address is the delivery address on one line.
	Address string `bson:"address"`
	// Region is the delivery region, if any.
	Region string `bson:"region,omitempty"`
	// AgentName and AgentPhone are who is told the answer.
	AgentName  string `bson:"agentName"`
	AgentPhone string `bson:"agentPhone,omitempty"`
}

func (c *CallContext) region() string {
	if c == nil {
		return ""
	}
	return c.Region
}

func (c *CallContext) agent() string {
	if c == nil {
		return ""
	}
	return c.AgentName
}

// AttemptID is the deterministic id of attempt number n of a delivery.
func AttemptID(deliveryUID string, n int32) string {
	return fmt.Sprintf("%s-%d", deliveryUID, n)
}
