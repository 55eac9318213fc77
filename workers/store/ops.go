package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// AnyFence passed to MarkCancelled cancels without a claim (the operator):
// only a queued or retry attempt can be cancelled that way.
const AnyFence int64 = -1

var e164RE = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

func checkNumber(what, n string) error {
	if !e164RE.MatchString(n) {
		return invalid("%s must be an E.164 number such as +14155550123", what)
	}
	return nil
}

// NewAttempt is what the operator plans: attempt Number of a delivery, due at Due.
type NewAttempt struct {
	// Delivery is the Delivery called for (UID, namespace and name required).
	Delivery DeliveryRef
	// Campaign is the CallCampaign as namespace/name (required).
	Campaign string
	// Shard is the campaign shard (required).
	Shard string
	// Number is the attempt's number, from 1.
	Number int32
	// Due is when to dial (required).
	Due time.Time
	// To is the recipient's E.164 number (required).
	To string
	// From is the caller ID, if already chosen.
	From string
	// Context is what the call says and relays about the delivery; workers
	// and the callback server read it from here (they have no Kubernetes
	// API access).
	Context *CallContext
	// Retention is how long the attempt is kept once finished (0: deleted
	// as soon as it ends); nil means the store's Config.Retention.
	Retention *time.Duration
}

func (n NewAttempt) validate() error {
	var errs []string
	if n.Delivery.UID == "" || n.Delivery.Namespace == "" || n.Delivery.Name == "" {
		errs = append(errs, "delivery UID, namespace and name are required")
	}
	if ns, name, ok := strings.Cut(n.Campaign, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		errs = append(errs, fmt.Sprintf("campaign %q must be namespace/name", n.Campaign))
	}
	if n.Shard == "" {
		errs = append(errs, "shard is required")
	}
	if n.Number < 1 {
		errs = append(errs, fmt.Sprintf("attempt number %d must be 1 or more", n.Number))
	}
	if n.Due.IsZero() {
		errs = append(errs, "due time is required")
	}
	if !e164RE.MatchString(n.To) {
		errs = append(errs, "to must be an E.164 number such as +14155550123")
	}
	if n.From != "" && !e164RE.MatchString(n.From) {
		errs = append(errs, "from must be an E.164 number such as +14155550123")
	}
	if n.Retention != nil && *n.Retention < 0 {
		errs = append(errs, fmt.Sprintf("retention %s must not be negative", *n.Retention))
	}
	if len(errs) > 0 {
		return invalid("new attempt: %s", strings.Join(errs, "; "))
	}
	return nil
}

// CreateAttempt inserts a queued attempt. It is idempotent: when the attempt
// (same delivery UID and number) already exists, it returns the stored one
// and created=false, not an error.
func (s *Store) CreateAttempt(ctx context.Context, n NewAttempt) (a *Attempt, created bool, err error) {
	if err := n.validate(); err != nil {
		return nil, false, err
	}
	now := s.now()
	doc := &Attempt{
		ID:           AttemptID(n.Delivery.UID, n.Number),
		Delivery:     n.Delivery,
		Campaign:     n.Campaign,
		Shard:        n.Shard,
		Number:       n.Number,
		Region:       n.Context.region(),
		Agent:        n.Context.agent(),
		State:        StateQueued,
		Rank:         StateQueued.rank(),
		Due:          n.Due.UTC().Truncate(time.Millisecond),
		To:           n.To,
		From:         n.From,
		Context:      n.Context,
		LastSeq:      -1,
		RetentionSec: retentionSec(n.Retention),
		Notify:       Notifications{SMS: Notification{State: NotifyPending}, Webhook: Notification{State: NotifyPending}},
		CreatedAt:    now,
		UpdatedAt:    now,
	}
	_, err = s.attempts.InsertOne(ctx, doc)
	if err == nil {
		return doc, true, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return nil, false, fmt.Errorf("store: create attempt %s: %w", doc.ID, err)
	}
	var existing Attempt
	err = s.attempts.FindOne(ctx, bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "_id", Value: doc.ID}},
		bson.D{{Key: "deliveryUID", Value: n.Delivery.UID}, {Key: "number", Value: n.Number}},
	}}}).Decode(&existing)
	if err != nil {
		return nil, false, fmt.Errorf("store: create attempt %s: duplicate, then read: %w", doc.ID, err)
	}
	return &existing, false, nil
}

// Claim takes attempt id for dialing: if it is queued or retry, due (within
// Config.EarlyClaim) and not leased, it becomes dialing, its fence goes up by
// one, and owner holds it until now+lease. It returns the claimed attempt;
// its Fence goes with every later write of this claim. Otherwise it returns
// a *NotClaimableError (errors.Is ErrNotClaimable) or ErrNotFound.
func (s *Store) Claim(ctx context.Context, id, owner string, lease time.Duration) (*Attempt, error) {
	if id == "" || owner == "" {
		return nil, invalid("claim: attempt id and owner are required")
	}
	if lease <= 0 {
		return nil, invalid("claim: lease must be positive (got %s)", lease)
	}
	// The recipient's number (never changed) names the line the claim
	// holds: one indexed read by _id.
	var line struct {
		To string `bson:"to"`
	}
	err := s.attempts.FindOne(ctx, bson.D{{Key: "_id", Value: id}}, toOnly).Decode(&line)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read attempt %s: %w", id, err)
	}
	now := s.now()
	filter := bson.D{
		{Key: "_id", Value: id},
		{Key: "state", Value: bson.D{{Key: "$in", Value: claimableStates}}},
		{Key: "due", Value: bson.D{{Key: "$lte", Value: now.Add(s.cfg.EarlyClaim)}}},
		notCancelRequested,
		{Key: "$or", Value: bson.A{
			bson.D{{Key: "leaseUntil", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "leaseUntil", Value: bson.D{{Key: "$lte", Value: now}}}},
		}},
	}
	update := bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "state", Value: StateDialing},
			{Key: "rank", Value: StateDialing.rank()},
			{Key: "owner", Value: owner},
			{Key: "leaseUntil", Value: now.Add(lease)},
			{Key: "claimedAt", Value: now},
			{Key: "updatedAt", Value: now},
			{Key: "lineHold", Value: s.numberHash(line.To)},
		}},
		{Key: "$inc", Value: bson.D{{Key: "fence", Value: int64(1)}}},
	}
	a, err := s.modify(ctx, id, filter, update)
	lineBusy := errors.Is(err, ErrDuplicate)
	if (err != nil && !lineBusy) || a != nil {
		return a, err
	}
	cur, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if cur.CancelRequested && cur.State.Claimable() {
		// Called off: it is never claimed again.
		if c, err := s.MarkCancelled(ctx, id, AnyFence, cur.CancelReason); err == nil {
			cur = c
		}
	}
	e := &NotClaimableError{ID: id, State: cur.State, Due: cur.Due, CancelRequested: cur.CancelRequested,
		LineBusy: lineBusy && cur.State.Claimable()}
	if cur.State.Claimable() && cur.LeaseUntil != nil && cur.LeaseUntil.After(now) {
		e.Owner, e.LeaseUntil = cur.Owner, cur.LeaseUntil
	}
	return nil, e
}

// Renew extends the lease of a dialing claim to now+lease.
func (s *Store) Renew(ctx context.Context, id string, fence int64, lease time.Duration) (*Attempt, error) {
	if lease <= 0 {
		return nil, invalid("renew: lease must be positive (got %s)", lease)
	}
	now := s.now()
	a, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "fence", Value: fence}, {Key: "state", Value: StateDialing}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "leaseUntil", Value: now.Add(lease)}, {Key: "updatedAt", Value: now}}}})
	if err != nil || a != nil {
		return a, err
	}
	return nil, s.explain(ctx, id, "renew", fence)
}

// explain says why a fenced update of id matched nothing.
func (s *Store) explain(ctx context.Context, id, op string, fence int64) error {
	cur, err := s.fenced(ctx, id, fence)
	if err != nil {
		return err
	}
	return &TransitionError{ID: id, Op: op, From: cur.State}
}

// fenced reads attempt id after a fenced update of it matched nothing: a
// *StaleFenceError when a newer claim exists (fence AnyFence: never).
func (s *Store) fenced(ctx context.Context, id string, fence int64) (*Attempt, error) {
	cur, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if fence != AnyFence && cur.Fence != fence {
		return nil, &StaleFenceError{ID: id, Have: fence, Current: cur.Fence}
	}
	return cur, nil
}

func retentionSec(d *time.Duration) *int64 {
	if d == nil {
		return nil
	}
	sec := int64(d.Round(time.Second) / time.Second)
	return &sec
}

// terminalSet adds the fields every terminal transition of attempt id
// sets: when it ended, and when it expires by its retention. The retention
// is read from the attempt (it never changes after creation, so reading it
// before the conditional update is safe in either serialization mode).
func (s *Store) terminalSet(ctx context.Context, id string, set bson.D, now time.Time) (bson.D, error) {
	set = append(set, bson.E{Key: "endedAt", Value: now}, bson.E{Key: "endHour", Value: now.Truncate(time.Hour)})
	var doc struct {
		RetentionSec *int64     `bson:"retentionSec"`
		Due          time.Time  `bson:"due"`
		ClaimedAt    *time.Time `bson:"claimedAt"`
	}
	err := s.attempts.FindOne(ctx, bson.D{{Key: "_id", Value: id}},
		options.FindOne().SetProjection(bson.D{{Key: "retentionSec", Value: 1}, {Key: "due", Value: 1}, {Key: "claimedAt", Value: 1}})).Decode(&doc)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("store: read the retention of attempt %s: %w", id, err)
	}
	if doc.ClaimedAt != nil {
		// Due and the claim never change once a worker holds the attempt.
		set = append(set, bson.E{Key: "pickupB", Value: int32(insights.PickupBucket(doc.ClaimedAt.Sub(doc.Due)))})
	}
	switch {
	case doc.RetentionSec != nil:
		set = append(set, bson.E{Key: "expireAt", Value: now.Add(time.Duration(*doc.RetentionSec) * time.Second)})
	case s.cfg.Retention > 0:
		set = append(set, bson.E{Key: "expireAt", Value: now.Add(s.cfg.Retention)})
	}
	return set, nil
}

var (
	unsetLease = bson.E{Key: "$unset", Value: bson.D{{Key: "leaseUntil", Value: ""}, {Key: "lineHold", Value: ""}}}
	toOnly     = options.FindOne().SetProjection(bson.D{{Key: "to", Value: 1}})
)

// MarkDialed records that Twilio accepted the call of the claim with this
// fence: dialing (or unknown, when reconciliation found the call) becomes
// dialed with the call SID. If status callbacks already moved the attempt
// further, it only fills in the call SID. A stale fence changes nothing and
// returns *StaleFenceError; a call SID already used by another attempt
// returns ErrDuplicate.
func (s *Store) MarkDialed(ctx context.Context, id string, fence int64, callSID, from string) (*Attempt, error) {
	if callSID == "" {
		return nil, invalid("mark dialed: call SID is required")
	}
	if from != "" {
		if err := checkNumber("mark dialed: from", from); err != nil {
			return nil, err
		}
	}
	now := s.now()
	set := bson.D{
		{Key: "state", Value: StateDialed},
		{Key: "rank", Value: StateDialed.rank()},
		{Key: "callSid", Value: callSID},
		{Key: "dialedAt", Value: now},
		{Key: "updatedAt", Value: now},
	}
	if from != "" {
		set = append(set, bson.E{Key: "from", Value: from})
	}
	a, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "fence", Value: fence}, {Key: "state", Value: bson.D{{Key: "$in", Value: dialOutcomeFrom}}}},
		bson.D{{Key: "$set", Value: set}, {Key: "$unset", Value: bson.D{{Key: "leaseUntil", Value: ""}, {Key: "result", Value: ""}}}})
	if errors.Is(err, ErrDuplicate) {
		return nil, s.callConflict(ctx, id, fence, callSID, err)
	}
	if err != nil || a != nil {
		return a, err
	}
	// Callbacks may have overtaken the REST response.
	cur, err := s.fenced(ctx, id, fence)
	if err != nil {
		return nil, err
	}
	if cur.State.rank() <= StateDialing.rank() || cur.State == StateFailed || cur.State == StateCancelled {
		return nil, &TransitionError{ID: id, Op: "mark dialed", From: cur.State}
	}
	if cur.CallSID == callSID {
		return cur, nil
	}
	if cur.CallSID != "" {
		return nil, &TransitionError{ID: id, Op: "mark dialed", From: cur.State,
			Detail: fmt.Sprintf("call SID %s already recorded, not %s", cur.CallSID, callSID)}
	}
	set = bson.D{{Key: "callSid", Value: callSID}, {Key: "updatedAt", Value: now}}
	if from != "" {
		set = append(set, bson.E{Key: "from", Value: from})
	}
	a, err = s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "fence", Value: fence}, {Key: "callSid", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "$set", Value: set}, {Key: "$min", Value: bson.D{{Key: "dialedAt", Value: now}}}})
	if errors.Is(err, ErrDuplicate) {
		return nil, s.callConflict(ctx, id, fence, callSID, err)
	}
	if err != nil || a != nil {
		return a, err
	}
	return s.MarkDialed(ctx, id, fence, callSID, from) // raced with a callback setting the SID: judge again
}

// callConflict handles a call SID that is already recorded on another
// attempt (the unique index refused it): not a success. The attempt, if
// still dialing or unknown with this fence, becomes (or stays) unknown with
// the conflicting SID recorded, so it is neither taken as dialed nor ever
// released for a new dial by reconciliation: a person resolves it. It
// returns the duplicate error, naming the other attempt.
func (s *Store) callConflict(ctx context.Context, id string, fence int64, callSID string, dup error) error {
	holder := "?"
	if other, err := s.GetByCallSID(ctx, callSID); err == nil {
		holder = other.ID
	}
	now := s.now()
	if _, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "fence", Value: fence}, {Key: "state", Value: bson.D{{Key: "$in", Value: dialOutcomeFrom}}}},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "state", Value: StateUnknown},
			{Key: "rank", Value: StateUnknown.rank()},
			{Key: "result", Value: v1alpha1.CallUnknown},
			{Key: "conflictSid", Value: callSID},
			{Key: "reason", Value: "call SID " + callSID + " is already recorded on attempt " + holder},
			{Key: "updatedAt", Value: now},
		}}, bson.E{Key: "$unset", Value: bson.D{{Key: "leaseUntil", Value: ""}}}}); err != nil {
		return errors.Join(dup, err)
	}
	return fmt.Errorf("%w: attempt %s: call SID %s is already recorded on attempt %s", ErrDuplicate, id, callSID, holder)
}

// MarkUnknown records an ambiguous dial (timeout or 5xx after the request
// was sent): dialing becomes unknown, to be reconciled from callbacks or
// Twilio's call list; it is never redialed blindly. If callbacks already
// showed the call, the attempt is left as it is and returned.
func (s *Store) MarkUnknown(ctx context.Context, id string, fence int64, reason string) (*Attempt, error) {
	now := s.now()
	a, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "fence", Value: fence}, {Key: "state", Value: StateDialing}},
		bson.D{{Key: "$set", Value: bson.D{
			{Key: "state", Value: StateUnknown},
			{Key: "rank", Value: StateUnknown.rank()},
			{Key: "result", Value: v1alpha1.CallUnknown},
			{Key: "reason", Value: reason},
			{Key: "updatedAt", Value: now},
		}}, bson.E{Key: "$unset", Value: bson.D{{Key: "leaseUntil", Value: ""}}}})
	if err != nil || a != nil {
		return a, err
	}
	cur, err := s.fenced(ctx, id, fence)
	if err != nil {
		return nil, err
	}
	if cur.State == StateUnknown || cur.State.rank() >= StateDialed.rank() && cur.State != StateFailed && cur.State != StateCancelled {
		return cur, nil
	}
	return nil, &TransitionError{ID: id, Op: "mark unknown", From: cur.State}
}

// MarkFailed records that no call could be placed for the claim with this
// fence (Twilio refused the number: a permanent 4xx): dialing or unknown
// becomes failed with result rejected, Twilio's error code and message.
func (s *Store) MarkFailed(ctx context.Context, id string, fence int64, code int32, msg string) (*Attempt, error) {
	now := s.now()
	set, err := s.terminalSet(ctx, id, bson.D{
		{Key: "state", Value: StateFailed},
		{Key: "rank", Value: StateFailed.rank()},
		{Key: "result", Value: v1alpha1.CallRejected},
		{Key: "errorCode", Value: code},
		{Key: "errorMessage", Value: msg},
		{Key: "updatedAt", Value: now},
	}, now)
	if err != nil {
		return nil, err
	}
	a, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "fence", Value: fence}, {Key: "state", Value: bson.D{{Key: "$in", Value: dialOutcomeFrom}}}},
		bson.D{{Key: "$set", Value: set}, unsetLease})
	if a != nil {
		s.countAttemptEnd(a)
	}
	if err != nil || a != nil {
		return a, err
	}
	return nil, s.explain(ctx, id, "mark failed", fence)
}

// Release puts the claim with this fence back without a call having been
// placed (rate limited, outside calling hours, Twilio 429, or an unknown
// attempt that reconciliation proved was never created): it becomes retry,
// due at nextDue, unleased. The caller re-publishes it to the dispatch index;
// the sweeper (DueBefore) finds it otherwise. An attempt whose cancel was
// requested (RequestCancel) becomes cancelled instead, and is returned so.
func (s *Store) Release(ctx context.Context, id string, fence int64, nextDue time.Time, reason string) (*Attempt, error) {
	if nextDue.IsZero() {
		return nil, invalid("release: next due time is required")
	}
	now := s.now()
	held := bson.D{{Key: "_id", Value: id}, {Key: "fence", Value: fence}, {Key: "state", Value: bson.D{{Key: "$in", Value: dialOutcomeFrom}}}}
	a, err := s.modify(ctx, id,
		append(held, notCancelRequested),
		bson.D{
			{Key: "$set", Value: bson.D{
				{Key: "state", Value: StateRetry},
				{Key: "rank", Value: StateRetry.rank()},
				{Key: "due", Value: nextDue.UTC().Truncate(time.Millisecond)},
				{Key: "reason", Value: reason},
				{Key: "updatedAt", Value: now},
			}},
			{Key: "$inc", Value: bson.D{{Key: "releases", Value: int32(1)}}},
			{Key: "$unset", Value: bson.D{{Key: "leaseUntil", Value: ""}, {Key: "result", Value: ""}, {Key: "lineHold", Value: ""}}},
		})
	if err != nil || a != nil {
		return a, err
	}
	// Called off while held: cancelled, never put back.
	set, err := s.terminalSet(ctx, id, bson.D{
		{Key: "state", Value: StateCancelled},
		{Key: "rank", Value: StateCancelled.rank()},
		{Key: "reason", Value: "cancel requested, released: " + reason},
		{Key: "updatedAt", Value: now},
	}, now)
	if err != nil {
		return nil, err
	}
	a, err = s.modify(ctx, id, append(held, bson.E{Key: "cancelRequested", Value: true}),
		bson.D{{Key: "$set", Value: set}, {Key: "$unset", Value: bson.D{{Key: "leaseUntil", Value: ""}, {Key: "result", Value: ""}, {Key: "lineHold", Value: ""}}}})
	if err != nil || a != nil {
		return a, err
	}
	return nil, s.explain(ctx, id, "release", fence)
}

// notCancelRequested selects attempts whose cancel was not requested.
var notCancelRequested = bson.E{Key: "cancelRequested", Value: bson.D{{Key: "$ne", Value: true}}}

// RequestCancel calls attempt id off for the operator (the delivery was
// cancelled, deleted or re-planned), whoever holds it: a queued or retry
// attempt becomes cancelled; a dialing or unknown one is marked
// CancelRequested, so no claim takes it again and the Release that puts it
// back cancels it (a call already placed goes on and is followed as usual).
// An attempt whose call exists or ended is left as it is. It returns the
// attempt after the change; the caller tells by its state (and
// CancelRequested) whether a call may still come of it.
func (s *Store) RequestCancel(ctx context.Context, id, reason string) (*Attempt, error) {
	for range 5 {
		a, err := s.MarkCancelled(ctx, id, AnyFence, reason)
		if err == nil {
			return a, nil
		}
		if !errors.Is(err, ErrInvalidTransition) {
			return nil, err
		}
		// Held by a worker (or reconciliation): mark it. updatedAt is left
		// alone: it times the reconciler's grace period.
		a, err = s.modify(ctx, id,
			bson.D{{Key: "_id", Value: id}, {Key: "state", Value: bson.D{{Key: "$in", Value: dialOutcomeFrom}}}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "cancelRequested", Value: true}, {Key: "cancelReason", Value: reason}}}})
		if err != nil || a != nil {
			return a, err
		}
		cur, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if !cur.State.Claimable() {
			return cur, nil // a call exists, or it ended
		}
		// Put back between the two updates: cancel it now.
	}
	return nil, fmt.Errorf("%w: attempt %s kept changing while being cancelled", ErrBusy, id)
}

// MoveToShard records that a queued or retry attempt is served by shard now
// (its campaign's shard count or regions changed and its shard was
// removed), so the sweeper and the dialer's reconciler queue it there. An
// attempt already taken up, or already on shard, is left as it is. It
// returns the attempt as it is afterwards.
func (s *Store) MoveToShard(ctx context.Context, id, shard string) (*Attempt, error) {
	if id == "" || shard == "" {
		return nil, invalid("move to shard: attempt id and shard are required")
	}
	filter := bson.D{{Key: "_id", Value: id}, {Key: "state", Value: bson.D{{Key: "$in", Value: claimableStates}}},
		{Key: "shard", Value: bson.D{{Key: "$ne", Value: shard}}}}
	a, err := s.modify(ctx, id, filter, bson.D{{Key: "$set", Value: bson.D{{Key: "shard", Value: shard}, {Key: "updatedAt", Value: s.now()}}}})
	if err != nil || a != nil {
		return a, err
	}
	return s.Get(ctx, id)
}

// MarkCancelled calls the attempt off before a call is placed. With
// AnyFence (the operator: delivery cancelled, window passed) it applies to a
// queued or retry attempt; with a claim's fence (a worker that found the
// number opted out) also to that dialing claim. Cancelling an already
// cancelled attempt returns it unchanged.
func (s *Store) MarkCancelled(ctx context.Context, id string, fence int64, reason string) (*Attempt, error) {
	now := s.now()
	filter := bson.D{{Key: "_id", Value: id}, {Key: "state", Value: bson.D{{Key: "$in", Value: claimableStates}}}}
	if fence != AnyFence {
		filter = bson.D{{Key: "_id", Value: id}, {Key: "fence", Value: fence},
			{Key: "state", Value: bson.D{{Key: "$in", Value: []State{StateQueued, StateRetry, StateDialing}}}}}
	}
	set, err := s.terminalSet(ctx, id, bson.D{
		{Key: "state", Value: StateCancelled},
		{Key: "rank", Value: StateCancelled.rank()},
		{Key: "reason", Value: reason},
		{Key: "updatedAt", Value: now},
	}, now)
	if err != nil {
		return nil, err
	}
	a, err := s.modify(ctx, id, filter, bson.D{{Key: "$set", Value: set}, unsetLease})
	if err != nil || a != nil {
		return a, err
	}
	cur, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if cur.State == StateCancelled {
		return cur, nil
	}
	if fence != AnyFence && cur.Fence != fence {
		return nil, &StaleFenceError{ID: id, Have: fence, Current: cur.Fence}
	}
	return nil, &TransitionError{ID: id, Op: "cancel", From: cur.State}
}

// Get returns attempt id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*Attempt, error) {
	return s.findOne(ctx, bson.D{{Key: "_id", Value: id}}, id)
}

// GetByCallSID returns the attempt of a Twilio call, or ErrNotFound.
func (s *Store) GetByCallSID(ctx context.Context, callSID string) (*Attempt, error) {
	if callSID == "" {
		return nil, invalid("call SID is required")
	}
	return s.findOne(ctx, bson.D{{Key: "callSid", Value: callSID}}, "with call SID "+callSID)
}

func (s *Store) findOne(ctx context.Context, filter bson.D, what string) (*Attempt, error) {
	var a Attempt
	err := s.attempts.FindOne(ctx, filter).Decode(&a)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get attempt %s: %w", what, err)
	}
	return &a, nil
}

// ForDelivery returns a delivery's attempts by attempt number.
func (s *Store) ForDelivery(ctx context.Context, deliveryUID string) ([]Attempt, error) {
	if deliveryUID == "" {
		return nil, invalid("delivery UID is required")
	}
	return s.findMany(ctx, bson.D{{Key: "deliveryUID", Value: deliveryUID}},
		options.Find().SetSort(bson.D{{Key: "number", Value: 1}}))
}

// DueBefore returns up to limit attempts of a campaign shard that are
// queued or retry, due before t and after cursor c (the zero DueCursor is
// the start), earliest first: what the sweeper re-publishes to Redis,
// page by page. An empty shard means every shard of the campaign.
func (s *Store) DueBefore(ctx context.Context, campaign, shard string, t time.Time, c DueCursor, limit int) ([]Attempt, error) {
	filter := bson.D{{Key: "due", Value: bson.D{{Key: "$lt", Value: t}}}}
	return s.claimable(ctx, campaign, shard, append(filter, c.filter()...), limit)
}

// DueCursor is a position in a shard's claimable attempts, which are
// ordered by due time, then id. The zero DueCursor is the start.
type DueCursor struct {
	Due time.Time
	ID  string
}

// After returns the cursor just past a.
func (c DueCursor) After(a *Attempt) DueCursor { return DueCursor{Due: a.Due, ID: a.ID} }

// filter selects the attempts after c.
func (c DueCursor) filter() bson.D {
	if c == (DueCursor{}) {
		return nil
	}
	return bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "due", Value: bson.D{{Key: "$gt", Value: c.Due}}}},
		bson.D{{Key: "due", Value: c.Due}, {Key: "_id", Value: bson.D{{Key: "$gt", Value: c.ID}}}},
	}}}
}

// ClaimableAfter returns up to limit attempts of a campaign shard that are
// queued or retry and come after c, whatever their due time: a shard's
// whole queue page by page, for a Redis that may have lost it. An empty
// shard means every shard of the campaign.
func (s *Store) ClaimableAfter(ctx context.Context, campaign, shard string, c DueCursor, limit int) ([]Attempt, error) {
	return s.claimable(ctx, campaign, shard, c.filter(), limit)
}

// claimable returns up to limit queued or retry attempts of a campaign
// shard that also match filter, by due time, then id.
//
// It asks once per claimable state, with the state as an equality, and
// merges: MongoDB answers each from the campaign/shard/state/due/_id index
// as it would a $in, and FerretDB, which pushes equalities down to PostgreSQL
// but not $in or ranges, then reads only the attempts in that state
// instead of the campaign's whole call log.
func (s *Store) claimable(ctx context.Context, campaign, shard string, filter bson.D, limit int) ([]Attempt, error) {
	if err := checkQuery(campaign, limit); err != nil {
		return nil, err
	}
	var out []Attempt
	for _, state := range claimableStates {
		f := bson.D{{Key: "campaign", Value: campaign}}
		if shard != "" {
			f = append(f, bson.E{Key: "shard", Value: shard})
		}
		f = append(append(f, bson.E{Key: "state", Value: state}), filter...)
		got, err := s.findMany(ctx, f, options.Find().SetSort(bson.D{{Key: "due", Value: 1}, {Key: "_id", Value: 1}}).SetLimit(int64(limit)))
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	slices.SortFunc(out, func(a, b Attempt) int {
		if c := a.Due.Compare(b.Due); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out[:min(len(out), limit)], nil
}

// StaleDialing returns up to limit attempts still dialing whose lease ended
// before t: claims whose worker died or hung mid-dial, candidates for
// ambiguity reconciliation (MarkUnknown with their fence).
func (s *Store) StaleDialing(ctx context.Context, before time.Time, limit int) ([]Attempt, error) {
	if limit <= 0 {
		return nil, invalid("limit must be positive (got %d)", limit)
	}
	return s.findMany(ctx, bson.D{
		{Key: "state", Value: StateDialing},
		{Key: "leaseUntil", Value: bson.D{{Key: "$lt", Value: before}}},
	}, options.Find().SetSort(bson.D{{Key: "leaseUntil", Value: 1}}).SetLimit(int64(limit)))
}

// Unknown returns up to limit attempts in state unknown not updated since
// olderThan, oldest first: the reconciler's work list.
func (s *Store) Unknown(ctx context.Context, olderThan time.Time, limit int) ([]Attempt, error) {
	if limit <= 0 {
		return nil, invalid("limit must be positive (got %d)", limit)
	}
	return s.findMany(ctx, bson.D{
		{Key: "state", Value: StateUnknown},
		{Key: "updatedAt", Value: bson.D{{Key: "$lt", Value: olderThan}}},
	}, options.Find().SetSort(bson.D{{Key: "updatedAt", Value: 1}}).SetLimit(int64(limit)))
}

func (s *Store) findMany(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]Attempt, error) {
	cur, err := s.attempts.Find(ctx, filter, opts)
	if err != nil {
		return nil, fmt.Errorf("store: find attempts: %w", err)
	}
	var out []Attempt
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("store: read attempts: %w", err)
	}
	return out, nil
}

// checkQuery checks the campaign (namespace/name) and the limit of a query
// of one campaign's attempts.
func checkQuery(campaign string, limit int) error {
	if campaign == "" {
		return invalid("campaign is required")
	}
	if limit <= 0 {
		return invalid("limit must be positive (got %d)", limit)
	}
	return nil
}

// StaleDialingIn is StaleDialing restricted to one campaign (namespace/name):
// a worker reconciles only the attempts of its own campaign, whose Twilio
// account it can ask.
func (s *Store) StaleDialingIn(ctx context.Context, campaign string, before time.Time, limit int) ([]Attempt, error) {
	if err := checkQuery(campaign, limit); err != nil {
		return nil, err
	}
	return s.findMany(ctx, bson.D{
		{Key: "campaign", Value: campaign},
		{Key: "state", Value: StateDialing},
		{Key: "leaseUntil", Value: bson.D{{Key: "$lt", Value: before}}},
	}, options.Find().SetSort(bson.D{{Key: "leaseUntil", Value: 1}}).SetLimit(int64(limit)))
}

// UnknownIn is Unknown restricted to one campaign (namespace/name).
func (s *Store) UnknownIn(ctx context.Context, campaign string, olderThan time.Time, limit int) ([]Attempt, error) {
	if err := checkQuery(campaign, limit); err != nil {
		return nil, err
	}
	return s.findMany(ctx, bson.D{
		{Key: "campaign", Value: campaign},
		{Key: "state", Value: StateUnknown},
		{Key: "updatedAt", Value: bson.D{{Key: "$lt", Value: olderThan}}},
	}, options.Find().SetSort(bson.D{{Key: "updatedAt", Value: 1}}).SetLimit(int64(limit)))
}

// unfinishedStates are the states of a call Twilio accepted that has not
// reported its end yet.
var unfinishedStates = []State{StateDialed, StateRinging, StateInProgress}

// UnfinishedCallsIn returns up to limit attempts of one campaign
// (namespace/name) whose call Twilio accepted but whose final status never
// arrived: dialed, ringing or in progress, unchanged since olderThan. Twilio
// does not retry status callbacks, so these are looked up at Twilio. It asks
// once per state, so FerretDB pushes each filter down.
func (s *Store) UnfinishedCallsIn(ctx context.Context, campaign string, olderThan time.Time, limit int) ([]Attempt, error) {
	if err := checkQuery(campaign, limit); err != nil {
		return nil, err
	}
	var out []Attempt
	for _, st := range unfinishedStates {
		got, err := s.findMany(ctx, bson.D{
			{Key: "campaign", Value: campaign},
			{Key: "state", Value: st},
			{Key: "updatedAt", Value: bson.D{{Key: "$lt", Value: olderThan}}},
		}, options.Find().SetSort(bson.D{{Key: "updatedAt", Value: 1}}).SetLimit(int64(limit-len(out))))
		if err != nil {
			return nil, err
		}
		if out = append(out, got...); len(out) >= limit {
			break
		}
	}
	return out, nil
}
