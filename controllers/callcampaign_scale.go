package controllers

import (
	"fmt"
	"math"
	"time"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/internal/workerpod"
)

// The reasons of a scale decision (ScaleRecord.Reason, metric label).
const (
	ScaleReasonLoad        = "Load"
	ScaleReasonRateCeiling = "RateCeiling"
	ScaleReasonMinimum     = "Minimum"
	ScaleReasonMaximum     = "Maximum"
	ScaleReasonIdle        = "Idle"
	ScaleReasonOffHours    = "OffHours"
	ScaleReasonStepDown    = "ScaleDownStep"
	ScaleReasonWake        = "Wake"
	ScaleReasonHold        = "Hold"
	// ScaleReasonCallsInProgress: outside calling hours, one worker stays
	// while calls placed recently may still be going on.
	ScaleReasonCallsInProgress = "CallsInProgress"
	ScaleReasonStopped         = "Stopped"
)

// Scaling defaults, used when the campaign's fields are unset.
const (
	DefaultLookAhead           = 90 * time.Second
	DefaultAverageCallDuration = 60 * time.Second
	DefaultScaleDownDelay      = 5 * time.Minute
	DefaultScaleDownStep       = 5
	minStepInterval            = 15 * time.Second
)

// ScaleInputs are the figures one shard's decision is made from.
type ScaleInputs struct {
	// Now is the decision's time (the autoscaler's clock).
	Now time.Time
	// Waiting is attempts due and not yet picked up; InFlight is attempts
	// workers hold; DueSoon is attempts due within the look-ahead.
	Waiting, InFlight, DueSoon int64
	// ActiveShards is how many of the campaign's shards have load; they
	// share the account's rate.
	ActiveShards int
	// AverageCallDuration is the average length of the calls that ended
	// within callrate.DurationWindow; zero (fewer than
	// callrate.MinDurationCalls ended) uses the campaign's
	// averageCallDuration.
	AverageCallDuration time.Duration
	// EndedCalls is how many calls ended within the window.
	EndedCalls int64
	// CallsMayBeLive says a call the campaign placed may still be going on
	// (liveCallHold): outside calling hours the shard keeps one worker for
	// its status callbacks and for finishing calls whose final status was
	// lost.
	CallsMayBeLive bool
}

// finalStatusWait is how long after a call could have ended a worker's
// resolver waits for its final status before it asks Twilio (the workers'
// --final-status-margin default), plus one resolver pass.
const finalStatusWait = workerpod.DefaultFinalStatusMargin + 30*time.Second

// liveCallHold is how long after the campaign's last placed call a worker
// is kept outside calling hours: the call's ring timeout and time limit,
// then the wait for its final status.
func liveCallHold(c *v1.CallCampaign) time.Duration {
	set := campaignfile.Settings(&c.Spec)
	return set.RingTimeout + set.TimeLimit + finalStatusWait
}

// ScaleTarget is what a shard's figures call for, before the scale-down
// delay and steps are applied.
type ScaleTarget struct {
	// Replicas is the target within min/max and the rate ceiling.
	Replicas int32
	// Needed is the pods the load alone asks for (calls / calls per pod).
	Needed int32
	// Ceiling is the most pods the account's rate keeps busy.
	Ceiling int32
	// RateLimited is set when the ceiling cut the target.
	RateLimited bool
	// Reason and Message say why (see ScaleReason*).
	Reason, Message string
}

// scaleSettings are a campaign's scaling fields with defaults applied.
type scaleSettings struct {
	min, max, perPod, step int32
	delay, lookAhead, avg  time.Duration
	cps                    int32
}

func settingsOf(c *v1.CallCampaign) scaleSettings {
	w := c.Spec.Workers
	s := scaleSettings{min: 1, max: w.MaxReplicas, perPod: w.Concurrency, step: w.ScaleDownStep,
		delay: DefaultScaleDownDelay, lookAhead: DefaultLookAhead, avg: DefaultAverageCallDuration, cps: c.Spec.Twilio.CallsPerSecond}
	if w.MinReplicas != nil {
		s.min = max(0, *w.MinReplicas)
	}
	if s.max <= 0 {
		s.max = 10
	}
	s.min = min(s.min, s.max)
	if s.perPod < 1 {
		s.perPod = 50
	}
	if s.step < 1 {
		s.step = DefaultScaleDownStep
	}
	if w.ScaleDownDelay != nil {
		s.delay = max(0, w.ScaleDownDelay.Duration)
	}
	if w.LookAhead != nil {
		s.lookAhead = max(0, w.LookAhead.Duration)
	}
	if w.AverageCallDuration != nil && w.AverageCallDuration.Duration > 0 {
		s.avg = w.AverageCallDuration.Duration
	}
	if s.cps < 1 {
		s.cps = 1
	}
	return s
}

// stepInterval is the pause between two steps down: a quarter of the
// scale-down delay, at least 15 s.
func (s scaleSettings) stepInterval() time.Duration {
	return max(minStepInterval, s.delay/4)
}

// inCallingHours reports whether now is inside the campaign's calling hours
// in its default time zone; a schedule that does not compile counts as
// inside (the minimum then holds).
func inCallingHours(c *v1.CallCampaign, now time.Time) bool {
	p, err := schedule.Compile(&c.Spec)
	if err != nil {
		return true
	}
	return p.InCallingHours(p.DefaultLocation(), now)
}

// Target computes what one shard's figures call for: the calls due now, in
// flight and due within the look-ahead over the calls a pod handles, cut
// to the pods the account's rate keeps busy (calls per second x average
// call duration, shared by the shards with load), within min and max. The
// average is the measured one of recent calls when there is one, else the
// campaign's averageCallDuration; the message says which. The
// minimum drops to zero outside calling hours; with a minimum of zero an
// idle shard runs no pod and any due attempt wakes it with one or more.
func Target(c *v1.CallCampaign, in ScaleInputs, inHours bool) ScaleTarget {
	s := settingsOf(c)
	avg := s.avg
	window := fmt.Sprintf("%.0fm", callrate.DurationWindow.Minutes())
	source := fmt.Sprintf("averageCallDuration, not measured: %d calls ended in the last %s, %d needed", in.EndedCalls, window, callrate.MinDurationCalls)
	if in.AverageCallDuration > 0 {
		avg = in.AverageCallDuration
		source = fmt.Sprintf("measured over %d calls ended in the last %s", in.EndedCalls, window)
	}
	calls := max(0, in.Waiting) + max(0, in.InFlight) + max(0, in.DueSoon)
	t := ScaleTarget{Needed: int32(min(math.MaxInt32, ceilDiv(calls, int64(s.perPod))))}
	shards := max(1, in.ActiveShards)
	concurrent := float64(s.cps) * avg.Seconds() / float64(shards)
	t.Ceiling = int32(max(1, min(math.MaxInt32, math.Ceil(concurrent/float64(s.perPod)))))
	inputs := fmt.Sprintf("due %d + in flight %d + due within %s %d = %d calls / %d per pod = %d pods; rate %d/s x %s avg call (%s) / %d shards = %.0f calls at once = %d pods",
		in.Waiting, in.InFlight, s.lookAhead, in.DueSoon, calls, s.perPod, t.Needed, s.cps, avg.Round(time.Second), source, shards, concurrent, t.Ceiling)
	want, reason := t.Needed, ScaleReasonLoad
	if want > t.Ceiling {
		want, reason, t.RateLimited = t.Ceiling, ScaleReasonRateCeiling, true
	}
	lo, loReason := s.min, ScaleReasonMinimum
	if !inHours {
		lo = 0
		if in.CallsMayBeLive {
			lo, loReason = 1, ScaleReasonCallsInProgress
		}
	}
	switch {
	case want < lo:
		want, reason = lo, loReason
	case want == 0 && !inHours:
		reason = ScaleReasonOffHours
	case want == 0:
		reason = ScaleReasonIdle
	}
	if want > s.max {
		want, reason = s.max, ScaleReasonMaximum
	}
	t.Replicas, t.Reason, t.Message = want, reason, inputs
	return t
}

func ceilDiv(a, b int64) int64 {
	if b <= 0 {
		return a
	}
	return (a + b - 1) / b
}

// shardScaler is one shard's scale-down hysteresis.
type shardScaler struct {
	// surplusSince is when the target first fell below the replicas, zero
	// while it does not.
	surplusSince time.Time
	// lastStep is when the shard last stepped down.
	lastStep time.Time
}

// next applies the scale-down rules to a target: up at once; down only
// after the delay of sustained surplus, at most step pods at a time and
// stepInterval apart. It returns the replicas to run and the reason.
func (h *shardScaler) next(s scaleSettings, current int32, t ScaleTarget, now time.Time) (int32, string) {
	if t.Replicas >= current {
		h.surplusSince = time.Time{}
		if t.Replicas > current {
			if current == 0 {
				return t.Replicas, ScaleReasonWake
			}
			return t.Replicas, t.Reason
		}
		return current, t.Reason
	}
	if h.surplusSince.IsZero() {
		h.surplusSince = now
	}
	if now.Sub(h.surplusSince) < s.delay || (!h.lastStep.IsZero() && now.Sub(h.lastStep) < s.stepInterval()) {
		return current, ScaleReasonHold
	}
	return max(t.Replicas, current-s.step), ScaleReasonStepDown
}

// stepped records a step down taken at now.
func (h *shardScaler) stepped(now time.Time) { h.lastStep = now }

// InitialReplicas is the replicas of a shard's new Deployment, or of one
// the autoscaler has not decided yet: its current count within min and max,
// else (none yet, or stopped before) the campaign's minimum, at least one so
// a new shard can take calls; the autoscaler takes it from there.
//
// A suspended or degraded campaign runs no workers: the Deployment scales
// to zero, each worker drains (finishes its calls, keeps the queue) on
// SIGTERM, and calling resumes when the campaign is resumed or fixed.
func InitialReplicas(c *v1.CallCampaign, degraded bool, current *int32) int32 {
	if c.Spec.Suspend || degraded {
		return 0
	}
	s := settingsOf(c)
	if current != nil && *current > 0 {
		return min(max(*current, s.min), s.max)
	}
	return max(1, min(s.min, s.max))
}
