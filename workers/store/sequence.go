package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DialResult is what a successful create-call request returned.
type DialResult struct {
	// CallSID is Twilio's call SID.
	CallSID string
	// From is the caller ID used.
	From string
}

// DialErrorKind classifies a failed dial by what it means for the attempt.
type DialErrorKind int

// The kinds of failed dials.
const (
	// DialRetry: no call was placed and it may be tried later (Twilio 429,
	// rate limited, outside calling hours): Release until RetryAt.
	DialRetry DialErrorKind = iota + 1
	// DialRejected: Twilio refused the number permanently (4xx): MarkFailed.
	DialRejected
	// DialAmbiguous: the request may or may not have created a call (timeout,
	// 5xx after sending): MarkUnknown, never redial blindly.
	DialAmbiguous
	// DialCancelled: no call was placed and none may be (the delivery window
	// ends before the calling hours allow one): MarkCancelled.
	DialCancelled
)

// DialError is a failed dial, classified.
type DialError struct {
	// Kind says what the failure means.
	Kind DialErrorKind
	// RetryAt is when to try again, for DialRetry.
	RetryAt time.Time
	// Code is Twilio's error code, for DialRejected.
	Code int32
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *DialError) Error() string {
	kind := map[DialErrorKind]string{DialRetry: "retry later", DialRejected: "rejected", DialAmbiguous: "ambiguous", DialCancelled: "cancelled"}[e.Kind]
	return fmt.Sprintf("dial %s: %v", kind, e.Err)
}

// Unwrap returns the cause.
func (e *DialError) Unwrap() error { return e.Err }

// DialFunc places the call of a claimed attempt. A failure should be a
// *DialError; any other error counts as ambiguous.
type DialFunc func(ctx context.Context, a *Attempt) (DialResult, error)

// DialSequence is the exact sequence of store operations a worker performs
// for one due attempt, shared by the worker and the store benchmark so both
// measure the same thing:
//
//  1. Claim (fenced, leased);
//  2. IsOptedOut for the recipient in the delivery's namespace; if so,
//     MarkCancelled with the claim's fence, and return;
//  3. dial;
//  4. RecordDial: MarkDialed, or by the dial error's kind Release,
//     MarkFailed, MarkUnknown or MarkCancelled, all with the claim's fence.
//
// It returns the attempt after the last step. A dial error is returned
// (wrapped) after it was recorded. When a store write fails after the claim,
// it returns the claimed attempt (its Fence is the claim's) with the error,
// joined with the dial error if any: the caller may repeat RecordDial, or
// leave the claim's lease to run out, after which the attempt shows in
// StaleDialing.
func (s *Store) DialSequence(ctx context.Context, id, owner string, lease time.Duration, dial DialFunc) (*Attempt, error) {
	a, err := s.Claim(ctx, id, owner, lease)
	if err != nil {
		return nil, err
	}
	opted, err := s.IsOptedOut(ctx, a.Delivery.Namespace, a.To)
	if err != nil {
		return a, err
	}
	if opted {
		return s.MarkCancelled(ctx, id, a.Fence, "opted out")
	}
	res, dialErr := dial(ctx, a)
	b, err := s.RecordDial(ctx, id, a.Fence, res, dialErr)
	if err != nil {
		if dialErr != nil {
			return a, errors.Join(dialErr, err)
		}
		return a, err
	}
	return b, dialErr
}

// RecordDial records how the dial of the claim with this fence went, step 4
// of DialSequence: MarkDialed with res when dialErr is nil, else by the dial
// error's kind (any other error counts as ambiguous) Release (at RetryAt, or
// now), MarkFailed, MarkUnknown or MarkCancelled, all fenced. A worker whose
// write failed because the store was unreachable calls it again with the same
// arguments; a repeat of a write that did apply returns the attempt
// (MarkDialed, MarkUnknown, MarkCancelled) or a *TransitionError (Release,
// MarkFailed), never a second change.
func (s *Store) RecordDial(ctx context.Context, id string, fence int64, res DialResult, dialErr error) (*Attempt, error) {
	if dialErr == nil {
		return s.MarkDialed(ctx, id, fence, res.CallSID, res.From)
	}
	var de *DialError
	if !errors.As(dialErr, &de) {
		de = &DialError{Kind: DialAmbiguous, Err: dialErr}
	}
	switch de.Kind {
	case DialRetry:
		at := de.RetryAt
		if at.IsZero() {
			at = s.now()
		}
		return s.Release(ctx, id, fence, at, de.Error())
	case DialRejected:
		return s.MarkFailed(ctx, id, fence, de.Code, de.Error())
	case DialCancelled:
		return s.MarkCancelled(ctx, id, fence, de.Error())
	default:
		return s.MarkUnknown(ctx, id, fence, de.Error())
	}
}
