package dialer

import (
	"errors"
	"fmt"
	"time"
)

// Timing is the worker's timing that keeps an attempt to one call: the
// claim lease, the queue lease, the Twilio request timeout, the longest
// rate-limit wait, and the recovery resolver's periods. They are related; Derive
// fills in the defaults and the derived values and refuses the
// combinations that would allow a second call. It is the only place these
// relations are written down: `delauto worker` checks its flags with it,
// and worker.New and New apply it.
//
// Why a second call is otherwise possible: a worker that holds a claim but
// cannot renew it (MongoDB unreachable from it) keeps waiting, while
// another worker's recovery resolver marks the claim unknown StaleAfter after its
// lease ran out, finds no call during UnknownGrace and releases it for a
// new dial. The dialer therefore sends a create-call request only while
// its last confirmed lease covers the whole request (the guard:
// now + TwilioTimeout + Margin before the lease's end), waits for a
// rate-limit slot at most MaxWait, and the recovery resolver's periods must be
// long enough for a call created by a request that was still covered to
// show in Twilio's list before the attempt can be released.
type Timing struct {
	// Lease is the claim lease in MongoDB, renewed every RenewEvery while
	// the attempt is held. Default 30s.
	Lease time.Duration
	// QueueLease is how long a queue entry may go unextended (every third
	// of it) before another consumer takes it over. It needs no relation to
	// the others: an entry taken over while its attempt is claimed is
	// refused by the fenced claim (and acknowledged), so a queue takeover
	// never makes a second call. Default 15s.
	QueueLease time.Duration
	// TwilioTimeout bounds one Twilio REST request. Default 10s.
	TwilioTimeout time.Duration
	// MaxWait is the longest wait for a rate-limit slot; a slot further
	// away is not booked and the attempt is put back. Default (0): the
	// longest that still leaves a slot booked right after the claim inside
	// the claim's first lease, Lease - TwilioTimeout - Margin.
	MaxWait time.Duration
	// StaleAfter is how long past its lease a dialing claim is taken as
	// abandoned by the recovery resolver. Default 5s.
	StaleAfter time.Duration
	// UnknownGrace is how long an unknown attempt's call must stay absent
	// from Twilio's list before the attempt is released. Default 2m.
	UnknownGrace time.Duration
	// ClockSkew is the most the clocks of two workers may differ (the
	// lease is written on the claimant's clock and judged on the
	// resolver's). Default 1s.
	ClockSkew time.Duration
}

// Margin is the part of the lease kept free by the guard before a
// create-call request: the time between the check and the request leaving,
// and a renewal's round trip. A tenth of the lease.
func (t Timing) Margin() time.Duration { return t.Lease / 10 }

// RenewEvery is how often a held claim's lease is renewed: a third of it.
func (t Timing) RenewEvery() time.Duration { return t.Lease / 3 }

// The rules Derive enforces, named in its errors.
const (
	// RuleLeaseCoversRequest: TwilioTimeout + Margin <= Lease - RenewEvery.
	// A claim renewed on time always has enough confirmed lease left for a
	// create-call request; otherwise the guard would refuse dials of
	// attempts that waited, and a lease shorter than a request would let
	// a request outlive its claim.
	RuleLeaseCoversRequest = "lease-covers-request"
	// RuleMaxWait: 0 < MaxWait <= Lease - TwilioTimeout - Margin. A slot
	// booked right after the claim is dialed within the claim's first
	// lease, even if no renewal succeeds.
	RuleMaxWait = "max-wait"
	// RuleGrace: StaleAfter + UnknownGrace >= TwilioTimeout + ClockSkew. A
	// request sent on the last covered moment ends by the lease's end; if
	// Twilio still creates its call after the client gave up (allowing as
	// long again as the client's timeout), the call exists before the
	// resolver, on a clock up to ClockSkew ahead, can release the attempt.
	RuleGrace = "grace"
)

// Derive returns t with its defaults and derived values filled in, or an
// error naming every rule (RuleLeaseCoversRequest, RuleMaxWait, RuleGrace)
// the combination breaks.
func (t Timing) Derive() (Timing, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&t.Lease, 30*time.Second)
	def(&t.QueueLease, 15*time.Second)
	def(&t.TwilioTimeout, 10*time.Second)
	def(&t.StaleAfter, 5*time.Second)
	def(&t.UnknownGrace, 2*time.Minute)
	def(&t.ClockSkew, time.Second)
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"lease", t.Lease}, {"queue lease", t.QueueLease}, {"Twilio timeout", t.TwilioTimeout}, {"max wait", t.MaxWait},
		{"stale-after", t.StaleAfter}, {"unknown grace", t.UnknownGrace}, {"clock skew", t.ClockSkew}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s must not be negative", d.name, d.v))
		}
	}
	if len(errs) > 0 {
		return t, errors.Join(errs...)
	}
	if need := t.TwilioTimeout + t.Margin(); need > t.Lease-t.RenewEvery() {
		errs = append(errs, fmt.Errorf("%s: lease %s must exceed 1.5 x (Twilio timeout %s + a tenth of the lease), at least %s: a claim renewed every third of its lease must keep enough lease for a whole create-call request",
			RuleLeaseCoversRequest, t.Lease, t.TwilioTimeout, minLease(t.TwilioTimeout)))
	}
	longest := t.Lease - t.TwilioTimeout - t.Margin()
	switch {
	case t.MaxWait == 0 && longest > 0:
		t.MaxWait = longest
	case t.MaxWait == 0:
		// Reported by RuleLeaseCoversRequest.
	case t.MaxWait > longest:
		errs = append(errs, fmt.Errorf("%s: the longest rate-limit wait %s must be at most lease - Twilio timeout - a tenth of the lease (%s): a slot booked right after the claim must be dialed within the claim's first lease",
			RuleMaxWait, t.MaxWait, max(0, longest)))
	}
	if t.StaleAfter+t.UnknownGrace < t.TwilioTimeout+t.ClockSkew {
		errs = append(errs, fmt.Errorf("%s: stale-after %s + unknown grace %s must be at least Twilio timeout %s + clock skew %s: a call Twilio creates late for a request that timed out must be in its list before the recovery resolver releases the attempt",
			RuleGrace, t.StaleAfter, t.UnknownGrace, t.TwilioTimeout, t.ClockSkew))
	}
	return t, errors.Join(errs...)
}

// minLease is the shortest lease RuleLeaseCoversRequest accepts for a
// Twilio timeout, rounded up to a second: Lease*(2/3 - 1/10) >= timeout.
func minLease(twilioTimeout time.Duration) time.Duration {
	l := time.Duration(float64(twilioTimeout) * 30 / 17)
	return (l + time.Second - 1).Truncate(time.Second)
}
