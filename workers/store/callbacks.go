package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// CallRef names the attempt a callback is about: by attempt id (it rides in
// the callback URL) or, failing that, by Twilio's call SID.
type CallRef struct {
	// AttemptID is the attempt's id; preferred.
	AttemptID string
	// CallSID is the call's SID, used when AttemptID is empty.
	CallSID string
}

// StatusUpdate is one Twilio status callback.
type StatusUpdate struct {
	// Status is Twilio's CallStatus: queued, initiated, ringing, in-progress
	// (or answered), completed, busy, no-answer, failed or canceled.
	Status string
	// Seq is the callback's SequenceNumber (0 or more).
	Seq int64
	// At is the callback's Timestamp; zero means now.
	At time.Time
	// CallSID is the call's SID; recorded if the attempt has none yet.
	CallSID string
	// AnsweredBy is the answering-machine detection verdict, if any.
	AnsweredBy string
	// DurationSec is CallDuration, on final statuses.
	DurationSec int32
	// ErrorCode and ErrorMessage are Twilio's, when the call failed.
	ErrorCode int32
	// ErrorMessage is Twilio's error text.
	ErrorMessage string
}

// twilioState maps a Twilio CallStatus to the attempt state and, for final
// statuses, the result.
func twilioState(status string) (State, v1alpha1.CallResult, bool) {
	switch status {
	case "queued", "initiated":
		return StateDialed, "", true
	case "ringing":
		return StateRinging, "", true
	case "in-progress", "answered":
		return StateInProgress, "", true
	case "completed":
		return StateCompleted, v1alpha1.CallCompleted, true
	case "busy":
		return StateCompleted, v1alpha1.CallBusy, true
	case "no-answer":
		return StateCompleted, v1alpha1.CallNoAnswer, true
	case "failed":
		return StateCompleted, v1alpha1.CallFailed, true
	case "canceled":
		return StateCompleted, v1alpha1.CallCanceled, true
	}
	return "", "", false
}

// IsMachine reports whether an AnsweredBy verdict is a machine or fax.
func IsMachine(answeredBy string) bool {
	return strings.HasPrefix(answeredBy, "machine") || answeredBy == "fax"
}

// ApplyCallStatus applies a status callback in one conditional update. It is
// idempotent and order-proof: a sequence number at or below the last one
// applied changes nothing, a terminal attempt is never moved, and the state
// only moves forward. A callback whose call SID differs from the attempt's is
// ignored. It returns the attempt and whether this callback changed it.
func (s *Store) ApplyCallStatus(ctx context.Context, ref CallRef, u StatusUpdate) (a *Attempt, applied bool, err error) {
	state, result, ok := twilioState(u.Status)
	if !ok {
		return nil, false, invalid("unknown Twilio call status %q", u.Status)
	}
	if u.Seq < 0 {
		return nil, false, invalid("sequence number %d must not be negative", u.Seq)
	}
	sid := u.CallSID
	if sid == "" {
		sid = ref.CallSID
	}
	id := ref.AttemptID
	if id == "" {
		if sid == "" {
			return nil, false, invalid("status callback names neither an attempt id nor a call SID")
		}
		cur, err := s.GetByCallSID(ctx, sid)
		if err != nil {
			return nil, false, err
		}
		id = cur.ID
	}
	now := s.now()
	at := now
	if !u.At.IsZero() {
		at = u.At.UTC().Truncate(time.Millisecond)
	}
	filter := bson.D{
		{Key: "_id", Value: id},
		{Key: "state", Value: bson.D{{Key: "$nin", Value: terminalStates}}},
		{Key: "rank", Value: bson.D{{Key: "$lte", Value: state.rank()}}},
		{Key: "lastSeq", Value: bson.D{{Key: "$lt", Value: u.Seq}}},
	}
	set := bson.D{
		{Key: "state", Value: state},
		{Key: "rank", Value: state.rank()},
		{Key: "twilioStatus", Value: u.Status},
		{Key: "statusTimes." + u.Status, Value: at},
		{Key: "lastSeq", Value: u.Seq},
		{Key: "updatedAt", Value: now},
	}
	if sid != "" {
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "callSid", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "callSid", Value: sid}},
		}})
		set = append(set, bson.E{Key: "callSid", Value: sid})
	}
	if u.AnsweredBy != "" {
		set = append(set, bson.E{Key: "answeredBy", Value: u.AnsweredBy})
	}
	if u.DurationSec > 0 {
		set = append(set, bson.E{Key: "durationSec", Value: u.DurationSec})
	}
	if u.ErrorCode != 0 {
		set = append(set, bson.E{Key: "errorCode", Value: u.ErrorCode})
	}
	if u.ErrorMessage != "" {
		set = append(set, bson.E{Key: "errorMessage", Value: u.ErrorMessage})
	}
	unset := bson.D{{Key: "leaseUntil", Value: ""}}
	if state.Terminal() {
		if result == v1alpha1.CallCompleted && IsMachine(u.AnsweredBy) {
			result = v1alpha1.CallMachine
		}
		if set, err = s.terminalSet(ctx, id, set, now); err != nil {
			return nil, false, err
		}
		set = append(set, bson.E{Key: "result", Value: result})
		if u.DurationSec > 0 {
			set = append(set, bson.E{Key: "durB", Value: int32(insights.DurationBucket(u.DurationSec))})
		}
		unset = append(unset, bson.E{Key: "lineHold", Value: ""}) // the call ended: the number is free
	} else {
		unset = append(unset, bson.E{Key: "result", Value: ""})
	}
	update := bson.D{{Key: "$set", Value: set}, {Key: "$unset", Value: unset}}
	if state.rank() >= StateDialed.rank() {
		// The call exists: keep the earliest time it was known to.
		update = append(update, bson.E{Key: "$min", Value: bson.D{{Key: "dialedAt", Value: at}}})
	}
	a, err = s.modify(ctx, id, filter, update)
	if err != nil {
		return nil, false, err
	}
	if a == nil {
		cur, err := s.Get(ctx, id)
		return cur, false, err
	}
	if a.State.Terminal() {
		// The filter took only a non-terminal attempt: this update ended it.
		s.countAttemptEnd(a)
	}
	if a.State == StateCompleted && a.Result == v1alpha1.CallCompleted && IsMachine(a.AnsweredBy) {
		// The verdict came earlier, in an asynchronous AMD callback.
		return s.machineResult(ctx, id, a)
	}
	return a, true, nil
}

func (s *Store) machineResult(ctx context.Context, id string, a *Attempt) (*Attempt, bool, error) {
	b, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "state", Value: StateCompleted}, {Key: "result", Value: v1alpha1.CallCompleted}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "result", Value: v1alpha1.CallMachine}, {Key: "updatedAt", Value: s.now()}}}})
	if err != nil {
		return nil, false, err
	}
	if b == nil {
		return a, true, nil
	}
	s.countMachine(b)
	return b, true, nil
}

// RecordAnsweredBy records an asynchronous answering-machine verdict. A
// completed call answered by a machine gets result machine. It returns
// whether the verdict was new.
func (s *Store) RecordAnsweredBy(ctx context.Context, id, answeredBy string) (*Attempt, bool, error) {
	if answeredBy == "" {
		return nil, false, invalid("answeredBy is required")
	}
	a, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "answeredBy", Value: bson.D{{Key: "$ne", Value: answeredBy}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "answeredBy", Value: answeredBy}, {Key: "updatedAt", Value: s.now()}}}})
	if err != nil {
		return nil, false, err
	}
	if a == nil {
		cur, err := s.Get(ctx, id)
		return cur, false, err
	}
	if a.State == StateCompleted && a.Result == v1alpha1.CallCompleted && IsMachine(answeredBy) {
		return s.machineResult(ctx, id, a)
	}
	return a, true, nil
}

var choices = map[v1alpha1.ResponseChoice]bool{
	v1alpha1.ChoiceConfirm: true, v1alpha1.ChoiceReschedule: true, v1alpha1.ChoiceInstructions: true,
	v1alpha1.ChoiceOptOut: true, v1alpha1.ChoiceNone: true,
}

// Answer is the recipient's menu answer (a gather callback).
type Answer struct {
	// Choice is the option taken (required).
	Choice v1alpha1.ResponseChoice
	// Digits pressed, if by keypad.
	Digits string
	// Speech recognised, if spoken.
	Speech string
	// At is when it was given; zero means now.
	At time.Time
}

// RecordResponse records the recipient's answer, in any state (the final
// status callback may overtake the gather callback). Replaying the same
// answer changes nothing; a later different answer replaces it. It returns
// whether the answer changed.
func (s *Store) RecordResponse(ctx context.Context, id string, ans Answer) (*Attempt, bool, error) {
	if !choices[ans.Choice] {
		return nil, false, invalid("response choice %q must be Confirm, Reschedule, Instructions, OptOut or None", ans.Choice)
	}
	now := s.now()
	at := now
	if !ans.At.IsZero() {
		at = ans.At.UTC().Truncate(time.Millisecond)
	}
	return s.modifyOrGet(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "$or", Value: bson.A{
			bson.D{{Key: "response.choice", Value: bson.D{{Key: "$ne", Value: ans.Choice}}}},
			bson.D{{Key: "response.digits", Value: bson.D{{Key: "$ne", Value: ans.Digits}}}},
			bson.D{{Key: "response.speech", Value: bson.D{{Key: "$ne", Value: ans.Speech}}}},
		}}},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "response.choice", Value: ans.Choice},
			{Key: "response.digits", Value: ans.Digits},
			{Key: "response.speech", Value: ans.Speech},
			{Key: "response.at", Value: at},
			{Key: "updatedAt", Value: now},
		}}})
}

// Recording is a recording-status callback.
type Recording struct {
	// SID is the RecordingSid (required).
	SID string
	// URL is the RecordingUrl (required).
	URL string
	// DurationSec is the RecordingDuration.
	DurationSec int32
}

// RecordRecording records the recipient's recorded instructions, deduplicated
// by recording SID: a replayed callback changes nothing. The recording is
// added to the ones to delete at Twilio (RecordingSIDs). It returns whether
// the recording was new.
func (s *Store) RecordRecording(ctx context.Context, id string, r Recording) (*Attempt, bool, error) {
	if r.SID == "" || r.URL == "" {
		return nil, false, invalid("recording SID and URL are required")
	}
	now := s.now()
	return s.modifyOrGet(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "response.recordingSid", Value: bson.D{{Key: "$ne", Value: r.SID}}}},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "response.recordingSid", Value: r.SID},
			{Key: "response.recordingUrl", Value: r.URL},
			{Key: "response.recordingDurationSec", Value: r.DurationSec},
			{Key: "recordings", Value: RecordingsPending},
			{Key: "updatedAt", Value: now},
		}}, {Key: "$addToSet", Value: bson.D{{Key: "recordingSids", Value: r.SID}}}})
}

// RecordTranscription records the transcription of recording recordingSID.
// It may arrive before the recording callback; a transcription of a
// recording other than the attempt's current one is ignored. Replays change
// nothing. It returns whether it was new.
func (s *Store) RecordTranscription(ctx context.Context, id, recordingSID, status, text string) (*Attempt, bool, error) {
	if recordingSID == "" {
		return nil, false, invalid("recording SID is required")
	}
	now := s.now()
	return s.modifyOrGet(ctx, id,
		bson.D{
			{Key: "_id", Value: id},
			{Key: "$and", Value: bson.A{
				bson.D{{Key: "$or", Value: bson.A{
					bson.D{{Key: "response.recordingSid", Value: bson.D{{Key: "$exists", Value: false}}}},
					bson.D{{Key: "response.recordingSid", Value: recordingSID}},
				}}},
				bson.D{{Key: "$or", Value: bson.A{
					bson.D{{Key: "response.transcribedRecordingSid", Value: bson.D{{Key: "$ne", Value: recordingSID}}}},
					bson.D{{Key: "response.transcription", Value: bson.D{{Key: "$ne", Value: text}}}},
					bson.D{{Key: "response.transcriptionStatus", Value: bson.D{{Key: "$ne", Value: status}}}},
				}}},
			}},
		},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "response.transcribedRecordingSid", Value: recordingSID},
			{Key: "response.transcription", Value: text},
			{Key: "response.transcriptionStatus", Value: status},
			{Key: "updatedAt", Value: now},
		}}})
}

// BeginNotification takes the sending lease of one notification channel of
// the attempt for owner, so only one sender tells the agent: pending or
// failed (or sending with an expired lease) becomes sending until now+lease.
// A notification already sent or being sent returns ErrNotClaimable.
func (s *Store) BeginNotification(ctx context.Context, id string, ch Channel, owner string, lease time.Duration) (*Attempt, error) {
	if !ch.valid() {
		return nil, invalid("notification channel %q must be sms or webhook", ch)
	}
	if owner == "" || lease <= 0 {
		return nil, invalid("notification owner and a positive lease are required")
	}
	now := s.now()
	p := "notify." + string(ch) + "."
	a, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "$or", Value: bson.A{
			bson.D{{Key: p + "state", Value: bson.D{{Key: "$in", Value: []NotifyState{NotifyPending, NotifyFailed}}}}},
			bson.D{{Key: p + "state", Value: NotifySending}, {Key: p + "leaseUntil", Value: bson.D{{Key: "$lte", Value: now}}}},
		}}},
		bson.D{
			{Key: "$set", Value: bson.D{
				{Key: p + "state", Value: NotifySending},
				{Key: p + "owner", Value: owner},
				{Key: p + "leaseUntil", Value: now.Add(lease)},
				{Key: "updatedAt", Value: now},
			}},
			{Key: "$inc", Value: bson.D{{Key: p + "attempts", Value: int32(1)}}},
		})
	if err != nil || a != nil {
		return a, err
	}
	cur, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	n := cur.notification(ch)
	return nil, fmt.Errorf("%w: %s notification of attempt %s is %s (owner %q)", ErrNotClaimable, ch, id, n.State, n.Owner)
}

// FinishNotification ends owner's sending of one channel: sent when sendErr
// is nil (never sent again), failed otherwise (it may be begun again). If
// owner no longer holds the lease it returns ErrStaleFence, unless the
// notification is already sent.
func (s *Store) FinishNotification(ctx context.Context, id string, ch Channel, owner string, sendErr error) (*Attempt, error) {
	if !ch.valid() {
		return nil, invalid("notification channel %q must be sms or webhook", ch)
	}
	now := s.now()
	p := "notify." + string(ch) + "."
	set := bson.D{{Key: p + "state", Value: NotifySent}, {Key: p + "sentAt", Value: now}, {Key: "updatedAt", Value: now}}
	unset := bson.D{{Key: p + "leaseUntil", Value: ""}, {Key: p + "lastError", Value: ""}}
	if sendErr != nil {
		set = bson.D{{Key: p + "state", Value: NotifyFailed}, {Key: p + "lastError", Value: sendErr.Error()}, {Key: "updatedAt", Value: now}}
		unset = bson.D{{Key: p + "leaseUntil", Value: ""}}
	}
	a, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: p + "state", Value: NotifySending}, {Key: p + "owner", Value: owner}},
		bson.D{{Key: "$set", Value: set}, {Key: "$unset", Value: unset}})
	if err != nil || a != nil {
		return a, err
	}
	cur, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if n := cur.notification(ch); n.State == NotifySent && sendErr == nil {
		return cur, nil
	}
	return nil, fmt.Errorf("%w: %s notification of attempt %s is no longer held by %q", ErrStaleFence, ch, id, owner)
}

// modifyOrGet applies update to attempt id where filter matches, and
// reports whether it did; either way it returns the attempt as it is now.
func (s *Store) modifyOrGet(ctx context.Context, id string, filter, update bson.D) (*Attempt, bool, error) {
	a, err := s.modify(ctx, id, filter, update)
	if err != nil {
		return nil, false, err
	}
	if a == nil {
		cur, err := s.Get(ctx, id)
		return cur, false, err
	}
	return a, true, nil
}

func (a *Attempt) notification(ch Channel) Notification {
	if ch == ChannelSMS {
		return a.Notify.SMS
	}
	return a.Notify.Webhook
}

// PendingNotificationQuery selects the answers of one campaign whose agent
// notification is still to be sent.
type PendingNotificationQuery struct {
	// Campaign is the campaign, namespace/name (required).
	Campaign string
	// Choices are the answers that are relayed (required).
	Choices []v1alpha1.ResponseChoice
	// Channels are the channels the campaign relays through; ChannelSMS
	// counts only for attempts with an agent phone.
	Channels []Channel
	// MaxAttempts is the tries per channel: a failed channel with fewer is
	// still to be sent, one with as many was given up.
	MaxAttempts int32
	// Since is the earliest last update of the attempts looked at.
	Since time.Time
	// Limit is the most ids returned (required).
	Limit int
}

// PendingNotifications returns the ids of the attempts q selects with a
// notification channel still to be sent: pending, failed below the attempt
// limit, or sending with a lease that has run out (its sender went away).
// The relay sender's sweep finds lost work with it; BeginNotification still
// decides who sends.
func (s *Store) PendingNotifications(ctx context.Context, q PendingNotificationQuery) ([]string, error) {
	if q.Campaign == "" || len(q.Choices) == 0 {
		return nil, invalid("campaign and choices are required")
	}
	if q.Limit <= 0 {
		return nil, invalid("limit must be positive (got %d)", q.Limit)
	}
	now := s.now()
	open := func(ch Channel) bson.D {
		p := "notify." + string(ch) + "."
		return bson.D{{Key: "$or", Value: bson.A{
			bson.D{{Key: p + "state", Value: NotifyPending}},
			bson.D{{Key: p + "state", Value: NotifyFailed}, {Key: p + "attempts", Value: bson.D{{Key: "$lt", Value: q.MaxAttempts}}}},
			bson.D{{Key: p + "state", Value: NotifySending}, {Key: p + "leaseUntil", Value: bson.D{{Key: "$lte", Value: now}}}},
		}}}
	}
	var or bson.A
	for _, ch := range q.Channels {
		switch ch {
		case ChannelSMS:
			or = append(or, bson.D{{Key: "context.agentPhone", Value: bson.D{{Key: "$exists", Value: true}, {Key: "$ne", Value: ""}}},
				{Key: "$and", Value: bson.A{open(ch)}}})
		case ChannelWebhook:
			or = append(or, open(ch))
		default:
			return nil, invalid("notification channel %q must be sms or webhook", ch)
		}
	}
	if len(or) == 0 {
		return nil, nil
	}
	cur, err := s.attempts.Find(ctx, bson.D{
		{Key: "campaign", Value: q.Campaign},
		{Key: "response.choice", Value: bson.D{{Key: "$in", Value: q.Choices}}},
		{Key: "updatedAt", Value: bson.D{{Key: "$gte", Value: q.Since.UTC()}}},
		{Key: "$or", Value: or},
	}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(q.Limit)))
	if err != nil {
		return nil, fmt.Errorf("store: find pending notifications: %w", err)
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("store: read pending notifications: %w", err)
	}
	ids := make([]string, len(docs))
	for i, d := range docs {
		ids[i] = d.ID
	}
	return ids, nil
}
