package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The pieces a worker builds on: RecordDial repeated after a lost reply,
// DialCancelled, and the per-campaign reconciliation lists.

func TestDialCancelledCancelsTheClaim(t *testing.T) { inBothModes(t, testDialCancelledCancelsTheClaim) }

func testDialCancelledCancelsTheClaim(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	a := mustCreate(t, s, newAttempt("late", 1, time.Now()))
	got, err := s.DialSequence(ctx, a.ID, "w", time.Minute, func(context.Context, *Attempt) (DialResult, error) {
		return DialResult{}, &DialError{Kind: DialCancelled, Err: errors.New("the delivery window ended")}
	})
	if err == nil || got == nil || got.State != StateCancelled || got.EndedAt == nil {
		t.Fatalf("got %+v, %v; want cancelled with the dial error returned", got, err)
	}
	if _, err := s.Claim(ctx, a.ID, "w2", time.Minute); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim after cancel: %v, want ErrNotClaimable", err)
	}
}

func TestRecordDialRepeatedChangesNothingMore(t *testing.T) {
	inBothModes(t, testRecordDialRepeatedChangesNothingMore)
}

func testRecordDialRepeatedChangesNothingMore(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	retryAt := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	cases := []struct {
		name      string
		res       DialResult
		err       error
		state     State
		repeatErr error // nil: the repeat returns the attempt unchanged
	}{
		{"dialed", DialResult{CallSID: "CA-rec-1", From: "+14155550100"}, nil, StateDialed, nil},
		{"unknown", DialResult{}, &DialError{Kind: DialAmbiguous, Err: errors.New("timeout")}, StateUnknown, nil},
		{"cancelled", DialResult{}, &DialError{Kind: DialCancelled, Err: errors.New("window ended")}, StateCancelled, nil},
		{"released", DialResult{}, &DialError{Kind: DialRetry, RetryAt: retryAt, Err: errors.New("429")}, StateRetry, ErrInvalidTransition},
		{"failed", DialResult{}, &DialError{Kind: DialRejected, Code: 21211, Err: errors.New("bad number")}, StateFailed, ErrInvalidTransition},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := mustClaim(t, s, mustCreate(t, s, newAttempt("rec-"+c.name, 1, time.Now())).ID)
			got, err := s.RecordDial(ctx, a.ID, a.Fence, c.res, c.err)
			if err != nil || got.State != c.state {
				t.Fatalf("record: %+v, %v; want %s", got, err, c.state)
			}
			if c.state == StateRetry && !got.Due.Equal(retryAt) {
				t.Fatalf("released due %s, want %s", got.Due, retryAt)
			}
			again, err := s.RecordDial(ctx, a.ID, a.Fence, c.res, c.err)
			if c.repeatErr != nil {
				if !errors.Is(err, c.repeatErr) {
					t.Fatalf("repeat: %v, want %v", err, c.repeatErr)
				}
			} else if err != nil || again.State != c.state || !again.UpdatedAt.Equal(got.UpdatedAt) {
				t.Fatalf("repeat: %+v, %v; want %s unchanged", again, err, c.state)
			}
			cur, _ := s.Get(ctx, a.ID)
			if cur.State != c.state || cur.Fence != a.Fence || cur.Releases > 1 {
				t.Fatalf("after the repeat: state %s fence %d releases %d", cur.State, cur.Fence, cur.Releases)
			}
		})
	}
}

func TestReconciliationListsArePerCampaign(t *testing.T) {
	inBothModes(t, testReconciliationListsArePerCampaign)
}

func testReconciliationListsArePerCampaign(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	mine := mustClaim(t, s, mustCreate(t, s, newAttempt("mine", 1, clk.Now())).ID)
	other := newAttempt("other", 1, clk.Now())
	other.Campaign = "shop/morning"
	theirs := mustClaim(t, s, mustCreate(t, s, other).ID)
	clk.Add(2 * time.Minute) // both leases (1 minute) ran out
	got, err := s.StaleDialingIn(ctx, "shop/evening", clk.Now(), 10)
	if err != nil || len(got) != 1 || got[0].ID != mine.ID {
		t.Fatalf("StaleDialingIn = %v, %v; want only %s", ids(got), err, mine.ID)
	}
	for _, a := range []*Attempt{mine, theirs} {
		if _, err := s.MarkUnknown(ctx, a.ID, a.Fence, "lease expired"); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := s.UnknownIn(ctx, "shop/evening", clk.Now(), 10); len(got) != 0 {
		t.Fatalf("UnknownIn with olderThan at the update: %v, want none", ids(got))
	}
	clk.Add(time.Second)
	got, err = s.UnknownIn(ctx, "shop/evening", clk.Now(), 10)
	if err != nil || len(got) != 1 || got[0].ID != mine.ID {
		t.Fatalf("UnknownIn = %v, %v; want only %s", ids(got), err, mine.ID)
	}
	if _, err := s.UnknownIn(ctx, "", clk.Now(), 10); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("UnknownIn without campaign: %v", err)
	}
	if _, err := s.StaleDialingIn(ctx, "shop/evening", clk.Now(), 0); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("StaleDialingIn with limit 0: %v", err)
	}
}
