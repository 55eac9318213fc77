package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestOneAttemptPerNumberInFlight: two parcels to one recipient are due
// together. While one attempt holds the number (dialing, in doubt, or its
// call going on), a claim of the other fails with LineBusy: the recipient
// is never rung twice at once, and a call found at Twilio for the number
// can only be the holder's.
func TestOneAttemptPerNumberInFlight(t *testing.T) { inBothModes(t, testOneAttemptPerNumberInFlight) }

func testOneAttemptPerNumberInFlight(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	x := newAttempt("parcel-x", 1, clk.Now())
	y := newAttempt("parcel-y", 1, clk.Now())
	y.To = x.To
	other := newAttempt("parcel-z", 1, clk.Now())
	other.To = "+14155550999"
	for _, n := range []NewAttempt{x, y, other} {
		mustCreate(t, s, n)
	}
	cx := mustClaim(t, s, "parcel-x-1")
	mustClaim(t, s, "parcel-z-1") // another number is not held up
	busy := func(when string) {
		t.Helper()
		_, err := s.Claim(ctx, "parcel-y-1", "worker-2", time.Minute)
		var nc *NotClaimableError
		if !errors.As(err, &nc) || !nc.LineBusy {
			t.Fatalf("%s: claim of a second attempt to the same number: %v; want not claimable, line busy", when, err)
		}
	}
	busy("while the first is dialing")
	if _, err := s.MarkUnknown(ctx, cx.ID, cx.Fence, "timeout"); err != nil {
		t.Fatal(err)
	}
	busy("while the first is in doubt")
	if _, err := s.MarkDialed(ctx, cx.ID, cx.Fence, "CA-x", ""); err != nil {
		t.Fatal(err)
	}
	busy("while the first one's call goes on")
	if _, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: cx.ID}, StatusUpdate{Status: "completed", Seq: 5, CallSID: "CA-x"}); err != nil {
		t.Fatal(err)
	}
	cy := mustClaim(t, s, "parcel-y-1") // the first call ended: the number is free
	if _, err := s.Release(ctx, cy.ID, cy.Fence, clk.Now(), "rate limited"); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, "parcel-y-1") // released: free again
}

// TestMarkDialedWithAnotherAttemptsCallIsAConflict: a call SID already
// recorded on another attempt is not success: the attempt stays in doubt
// with the conflict recorded, so it is neither taken as dialed nor released
// for a new dial.
func TestMarkDialedWithAnotherAttemptsCallIsAConflict(t *testing.T) {
	inBothModes(t, func(t *testing.T, openStore opener) {
		ctx := context.Background()
		clk := newClock()
		s := openStore(t, withClock(clk))
		mustCreate(t, s, newAttempt("first", 1, clk.Now()))
		mustCreate(t, s, newAttempt("second", 1, clk.Now()))
		a := mustClaim(t, s, "first-1")
		if _, err := s.MarkDialed(ctx, a.ID, a.Fence, "CA-same", ""); err != nil {
			t.Fatal(err)
		}
		b := mustClaim(t, s, "second-1")
		_, err := s.MarkDialed(ctx, b.ID, b.Fence, "CA-same", "")
		if !errors.Is(err, ErrDuplicate) {
			t.Fatalf("MarkDialed with another attempt's call SID: %v, want ErrDuplicate", err)
		}
		cur, err := s.Get(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.State != StateUnknown || cur.ConflictSID != "CA-same" {
			t.Fatalf("after the conflict the attempt is %s (conflict %q), want unknown with the conflicting SID", cur.State, cur.ConflictSID)
		}
	})
}
