package store

import (
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Sentinel errors; match them with errors.Is. The typed errors below wrap
// them with details.
var (
	// ErrNotFound: no such attempt.
	ErrNotFound = errors.New("store: attempt not found")
	// ErrNotClaimable: the attempt is not in a claimable state, not due yet,
	// or leased to another worker. See NotClaimableError.
	ErrNotClaimable = errors.New("store: attempt not claimable")
	// ErrStaleFence: the caller's fence is no longer the attempt's fence
	// (another claim happened); nothing was changed. See StaleFenceError.
	ErrStaleFence = errors.New("store: stale fence")
	// ErrInvalidTransition: the attempt's state does not allow the operation;
	// nothing was changed. See TransitionError.
	ErrInvalidTransition = errors.New("store: invalid state transition")
	// ErrDuplicate: a unique key (call SID, delivery UID + attempt number)
	// already belongs to another document.
	ErrDuplicate = errors.New("store: duplicate key")
	// ErrBusy: the attempt stayed locked by another writer for longer than
	// Config.LockWait (serialized mode only); retry later.
	ErrBusy = errors.New("store: attempt busy")
	// ErrInvalidInput: an argument is missing or malformed.
	ErrInvalidInput = errors.New("store: invalid input")
)

// NotClaimableError says why Claim found nothing to claim.
type NotClaimableError struct {
	// ID of the attempt.
	ID string
	// State the attempt is in.
	State State
	// Due is the attempt's due time.
	Due time.Time
	// Owner holds the attempt's current lease, if any.
	Owner string
	// LeaseUntil is when that lease expires.
	LeaseUntil *time.Time
	// CancelRequested: the attempt was called off (RequestCancel).
	CancelRequested bool
	// LineBusy: another attempt to the same number holds it (dialing, in
	// doubt, or its call going on); try again a little later.
	LineBusy bool
}

// Error implements error.
func (e *NotClaimableError) Error() string {
	switch {
	case e.CancelRequested:
		return fmt.Sprintf("store: attempt %s not claimable: cancel requested (state %s)", e.ID, e.State)
	case !e.State.Claimable():
		return fmt.Sprintf("store: attempt %s not claimable: state %s", e.ID, e.State)
	case e.LeaseUntil != nil:
		return fmt.Sprintf("store: attempt %s not claimable: leased to %q until %s", e.ID, e.Owner, e.LeaseUntil.Format(time.RFC3339Nano))
	default:
		return fmt.Sprintf("store: attempt %s not claimable: state %s, due %s", e.ID, e.State, e.Due.Format(time.RFC3339Nano))
	}
}

// Is matches ErrNotClaimable.
func (e *NotClaimableError) Is(target error) bool { return target == ErrNotClaimable }

// StaleFenceError says a fenced write carried an old fence.
type StaleFenceError struct {
	// ID of the attempt.
	ID string
	// Have is the fence the caller passed.
	Have int64
	// Current is the attempt's fence.
	Current int64
}

// Error implements error.
func (e *StaleFenceError) Error() string {
	return fmt.Sprintf("store: attempt %s: stale fence %d (current %d)", e.ID, e.Have, e.Current)
}

// Is matches ErrStaleFence.
func (e *StaleFenceError) Is(target error) bool { return target == ErrStaleFence }

// TransitionError says an operation is not allowed in the attempt's state.
type TransitionError struct {
	// ID of the attempt.
	ID string
	// Op is the refused operation.
	Op string
	// From is the attempt's state.
	From State
	// Detail adds context, if any.
	Detail string
}

// Error implements error.
func (e *TransitionError) Error() string {
	s := fmt.Sprintf("store: attempt %s: %s not allowed in state %s", e.ID, e.Op, e.From)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is matches ErrInvalidTransition.
func (e *TransitionError) Is(target error) bool { return target == ErrInvalidTransition }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, args...)...)
}

// isNamespaceNotFound reports whether err is the server's "no such
// collection" (NamespaceNotFound, code 26).
func isNamespaceNotFound(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && (ce.Code == 26 || ce.Name == "NamespaceNotFound")
}

// isIndexNotFound reports whether err is the server's "no index of that
// name" (IndexNotFound, code 27).
func isIndexNotFound(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && (ce.Code == 27 || ce.Name == "IndexNotFound")
}
