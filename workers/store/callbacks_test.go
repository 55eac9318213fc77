package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/delauto/delauto/api/v1alpha1"
)

// dialedAttempt creates, claims and marks dialed an attempt with call SID sid.
func dialedAttempt(t *testing.T, s *Store, uid, sid string) *Attempt {
	t.Helper()
	c := mustClaim(t, s, mustCreate(t, s, newAttempt(uid, 1, s.now())).ID)
	a, err := s.MarkDialed(context.Background(), c.ID, c.Fence, sid, "")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var callLife = []StatusUpdate{
	{Status: "initiated", Seq: 0},
	{Status: "ringing", Seq: 1},
	{Status: "in-progress", Seq: 2},
	{Status: "completed", Seq: 3, DurationSec: 42},
}

func TestApplyCallStatusInOrder(t *testing.T) { inBothModes(t, testApplyCallStatusInOrder) }

func testApplyCallStatusInOrder(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	a := dialedAttempt(t, s, "u1", "CA1")
	want := []State{StateDialed, StateRinging, StateInProgress, StateCompleted}
	for i, u := range callLife {
		got, applied, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: a.ID}, u)
		if err != nil || !applied || got.State != want[i] || got.LastSeq != u.Seq || got.TwilioStatus != u.Status {
			t.Fatalf("status %s: applied=%v state=%s seq=%d err=%v", u.Status, applied, got.State, got.LastSeq, err)
		}
		if _, ok := got.StatusTimes[u.Status]; !ok {
			t.Fatalf("status %s: no timestamp recorded", u.Status)
		}
	}
	final, _ := s.Get(ctx, a.ID)
	if final.Result != v1alpha1.CallCompleted || final.DurationSec != 42 || final.EndedAt == nil {
		t.Fatalf("final = %+v", final)
	}
	// Replays and late arrivals change nothing.
	for _, u := range append(callLife, StatusUpdate{Status: "no-answer", Seq: 9}) {
		if got, applied, err := s.ApplyCallStatus(ctx, CallRef{CallSID: "CA1"}, u); err != nil || applied || got.State != StateCompleted {
			t.Fatalf("after completion, %s seq %d: applied=%v state=%v err=%v", u.Status, u.Seq, applied, got.State, err)
		}
	}
	again, _ := s.Get(ctx, a.ID)
	if !again.UpdatedAt.Equal(final.UpdatedAt) || again.Result != v1alpha1.CallCompleted {
		t.Fatal("ignored callbacks changed the attempt")
	}
}

// TestApplyCallStatusShuffled delivers the life of many calls with
// duplicates in random order, sequentially and concurrently: each ends
// completed with the highest sequence number, and once completed never moves.
func TestApplyCallStatusShuffled(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 12; i++ {
		sid := fmt.Sprintf("CA-shuf-%d", i)
		a := dialedAttempt(t, s, fmt.Sprintf("shuf-%d", i), sid)
		var events []StatusUpdate
		for _, u := range callLife {
			for d := 0; d < 1+rng.IntN(3); d++ {
				events = append(events, u)
			}
		}
		rng.Shuffle(len(events), func(x, y int) { events[x], events[y] = events[y], events[x] })
		concurrent := i%2 == 1
		var wg sync.WaitGroup
		var mu sync.Mutex
		applied := map[int64]int{}
		for _, u := range events {
			apply := func() {
				ref := CallRef{AttemptID: a.ID}
				if rng := u.Seq % 2; rng == 1 {
					ref = CallRef{CallSID: sid}
				}
				got, ok, err := s.ApplyCallStatus(ctx, ref, u)
				if err != nil {
					t.Errorf("apply %s: %v", u.Status, err)
					return
				}
				mu.Lock()
				if ok {
					applied[u.Seq]++
				}
				mu.Unlock()
				if ok && got.LastSeq != u.Seq {
					t.Errorf("applied seq %d but attempt has %d", u.Seq, got.LastSeq)
				}
			}
			if concurrent {
				wg.Add(1)
				go func() { defer wg.Done(); apply() }()
			} else {
				apply()
			}
		}
		wg.Wait()
		got, _ := s.Get(ctx, a.ID)
		if got.State != StateCompleted || got.LastSeq != 3 || got.Result != v1alpha1.CallCompleted || got.CallSID != sid {
			t.Fatalf("call %d (%v): ended %s seq %d result %s", i, events, got.State, got.LastSeq, got.Result)
		}
		for seq, n := range applied {
			if n > 1 {
				t.Fatalf("call %d: sequence %d applied %d times", i, seq, n)
			}
		}
	}
}

func TestApplyCallStatusEdgeCases(t *testing.T) { inBothModes(t, testApplyCallStatusEdgeCases) }

func testApplyCallStatusEdgeCases(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	// Callbacks overtake the REST response; MarkDialed then only adds the SID.
	c := mustClaim(t, s, mustCreate(t, s, newAttempt("early", 1, time.Now())).ID)
	if got, ok, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: c.ID}, StatusUpdate{Status: "ringing", Seq: 1}); err != nil || !ok || got.State != StateRinging || got.DialedAt == nil {
		t.Fatalf("ringing before MarkDialed: %+v %v %v", got, ok, err)
	}
	d, err := s.MarkDialed(ctx, c.ID, c.Fence, "CA-early", "")
	if err != nil || d.State != StateRinging || d.CallSID != "CA-early" {
		t.Fatalf("MarkDialed after ringing = %+v, %v; want ringing with the SID", d, err)
	}
	// A callback for a queued attempt proves a call exists: it is no longer claimable.
	q := mustCreate(t, s, newAttempt("queued", 1, time.Now()))
	if got, ok, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: q.ID}, StatusUpdate{Status: "in-progress", Seq: 2, CallSID: "CA-q"}); err != nil || !ok || got.State != StateInProgress {
		t.Fatalf("callback on queued: %+v %v %v", got, ok, err)
	}
	if _, err := s.Claim(ctx, q.ID, "w", time.Minute); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim after a callback: %v", err)
	}
	// A callback with another call's SID is ignored.
	a := dialedAttempt(t, s, "mismatch", "CA-right")
	if got, ok, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: a.ID}, StatusUpdate{Status: "completed", Seq: 5, CallSID: "CA-wrong"}); err != nil || ok || got.State != StateDialed {
		t.Fatalf("foreign SID: %+v %v %v", got.State, ok, err)
	}
	// Terminal statuses and their results; AMD verdicts.
	for status, want := range map[string]v1alpha1.CallResult{"busy": v1alpha1.CallBusy, "no-answer": v1alpha1.CallNoAnswer,
		"failed": v1alpha1.CallFailed, "canceled": v1alpha1.CallCanceled} {
		b := dialedAttempt(t, s, "r-"+status, "CA-"+status)
		got, _, err := s.ApplyCallStatus(ctx, CallRef{CallSID: "CA-" + status}, StatusUpdate{Status: status, Seq: 1})
		if err != nil || got.State != StateCompleted || got.Result != want || b.ID != got.ID {
			t.Fatalf("%s: %s %s %v", status, got.State, got.Result, err)
		}
	}
	m := dialedAttempt(t, s, "machine", "CA-m")
	if got, _, _ := s.ApplyCallStatus(ctx, CallRef{AttemptID: m.ID}, StatusUpdate{Status: "completed", Seq: 3, AnsweredBy: "machine_end_beep"}); got.Result != v1alpha1.CallMachine {
		t.Fatalf("machine in final callback: result %s", got.Result)
	}
	m2 := dialedAttempt(t, s, "machine2", "CA-m2")
	if _, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: m2.ID}, StatusUpdate{Status: "completed", Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := s.RecordAnsweredBy(ctx, m2.ID, "machine_start"); err != nil || !ok || got.Result != v1alpha1.CallMachine {
		t.Fatalf("async AMD after completion: %+v %v %v", got.Result, ok, err)
	}
	if _, ok, _ := s.RecordAnsweredBy(ctx, m2.ID, "machine_start"); ok {
		t.Fatal("replayed AMD verdict reported as new")
	}
	m3 := dialedAttempt(t, s, "machine3", "CA-m3")
	if _, _, err := s.RecordAnsweredBy(ctx, m3.ID, "fax"); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.ApplyCallStatus(ctx, CallRef{AttemptID: m3.ID}, StatusUpdate{Status: "completed", Seq: 3}); got.Result != v1alpha1.CallMachine {
		t.Fatalf("async AMD before completion: result %s", got.Result)
	}
	// Bad input and unknown attempts.
	if _, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: a.ID}, StatusUpdate{Status: "exploded", Seq: 1}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("unknown status: %v", err)
	}
	if _, _, err := s.ApplyCallStatus(ctx, CallRef{CallSID: "CA-none"}, StatusUpdate{Status: "ringing", Seq: 1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown SID: %v", err)
	}
	if _, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: "none"}, StatusUpdate{Status: "ringing", Seq: 1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown attempt: %v", err)
	}
}

func TestResponses(t *testing.T) { inBothModes(t, testResponses) }

func testResponses(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	a := dialedAttempt(t, s, "u1", "CA1")
	r, ok, err := s.RecordResponse(ctx, a.ID, Answer{Choice: v1alpha1.ChoiceInstructions, Digits: "3"})
	if err != nil || !ok || r.Response.Choice != v1alpha1.ChoiceInstructions || r.Response.Digits != "3" || r.Response.At == nil {
		t.Fatalf("response = %+v %v %v", r.Response, ok, err)
	}
	if _, ok, _ := s.RecordResponse(ctx, a.ID, Answer{Choice: v1alpha1.ChoiceInstructions, Digits: "3"}); ok {
		t.Fatal("replayed answer reported as new")
	}
	if _, _, err := s.RecordResponse(ctx, a.ID, Answer{Choice: "Maybe"}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("bad choice: %v", err)
	}
	// The transcription may come before the recording callback.
	tr, ok, err := s.RecordTranscription(ctx, a.ID, "RE1", "completed", "leave it at the back door")
	if err != nil || !ok || tr.Response.Transcription != "leave it at the back door" {
		t.Fatalf("transcription = %+v %v %v", tr.Response, ok, err)
	}
	rec, ok, err := s.RecordRecording(ctx, a.ID, Recording{SID: "RE1", URL: "https://api.twilio.test/RE1", DurationSec: 7})
	if err != nil || !ok || rec.Response.RecordingURL == "" || rec.Response.Transcription == "" || rec.Response.Choice != v1alpha1.ChoiceInstructions {
		t.Fatalf("recording = %+v %v %v", rec.Response, ok, err)
	}
	if _, ok, _ := s.RecordRecording(ctx, a.ID, Recording{SID: "RE1", URL: "https://api.twilio.test/RE1", DurationSec: 7}); ok {
		t.Fatal("replayed recording reported as new")
	}
	if _, ok, _ := s.RecordTranscription(ctx, a.ID, "RE1", "completed", "leave it at the back door"); ok {
		t.Fatal("replayed transcription reported as new")
	}
	if _, ok, _ := s.RecordTranscription(ctx, a.ID, "RE-other", "completed", "something else"); ok {
		t.Fatal("transcription of another recording applied")
	}
	final, _ := s.Get(ctx, a.ID)
	if final.Response.Transcription != "leave it at the back door" || final.Response.TranscribedRecordingSID != "RE1" {
		t.Fatalf("final response = %+v", final.Response)
	}
}

func TestNotificationsSentOnce(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	a := dialedAttempt(t, s, "u1", "CA1")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var holders []string
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("sender-%d", i)
			if _, err := s.BeginNotification(ctx, a.ID, ChannelSMS, owner, time.Minute); err == nil {
				mu.Lock()
				holders = append(holders, owner)
				mu.Unlock()
			} else if !errors.Is(err, ErrNotClaimable) {
				t.Errorf("begin: %v", err)
			}
		}()
	}
	wg.Wait()
	if len(holders) != 1 {
		t.Fatalf("%d senders got the SMS lease, want 1", len(holders))
	}
	// The sender fails; later it is taken again and sent.
	if n, err := s.FinishNotification(ctx, a.ID, ChannelSMS, holders[0], errors.New("carrier down")); err != nil || n.Notify.SMS.State != NotifyFailed {
		t.Fatalf("finish failed: %+v %v", n, err)
	}
	if _, err := s.BeginNotification(ctx, a.ID, ChannelSMS, "sender-x", time.Minute); err != nil {
		t.Fatal(err)
	}
	// sender-x dies; its lease expires and sender-y takes over; sender-x's late finish is refused.
	clk.Add(2 * time.Minute)
	if _, err := s.BeginNotification(ctx, a.ID, ChannelSMS, "sender-y", time.Minute); err != nil {
		t.Fatalf("take over an expired sending lease: %v", err)
	}
	if _, err := s.FinishNotification(ctx, a.ID, ChannelSMS, "sender-x", nil); !errors.Is(err, ErrStaleFence) {
		t.Fatalf("finish by the old holder: %v", err)
	}
	n, err := s.FinishNotification(ctx, a.ID, ChannelSMS, "sender-y", nil)
	if err != nil || n.Notify.SMS.State != NotifySent || n.Notify.SMS.Attempts != 3 || n.Notify.SMS.SentAt == nil {
		t.Fatalf("sent = %+v, %v", n.Notify.SMS, err)
	}
	if _, err := s.BeginNotification(ctx, a.ID, ChannelSMS, "sender-z", time.Minute); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("begin after sent: %v", err)
	}
	if n.Notify.Webhook.State != NotifyPending {
		t.Fatalf("webhook state %s, want pending", n.Notify.Webhook.State)
	}
}

// TestPendingNotifications checks the relay sweep's query: the answers of
// one campaign that are relayed and still have a channel to send, and no
// others.
func TestPendingNotifications(t *testing.T) { inBothModes(t, testPendingNotifications) }

func testPendingNotifications(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	since := clk.Now().Add(-time.Minute)
	answered := func(uid string, choice v1alpha1.ResponseChoice, agentPhone, campaign string) *Attempt {
		t.Helper()
		n := newAttempt(uid, 1, s.now())
		n.Context = &CallContext{RecipientName: "Anna", TimeZone: "UTC", AgentPhone: agentPhone}
		if campaign != "" {
			n.Campaign = campaign
		}
		c := mustClaim(t, s, mustCreate(t, s, n).ID)
		if _, err := s.MarkDialed(ctx, c.ID, c.Fence, "CA"+uid, ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.RecordResponse(ctx, c.ID, Answer{Choice: choice, Digits: "2"}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	const agent = "+14155550199"
	fail := func(a *Attempt, ch Channel, times int) {
		t.Helper()
		for i := 0; i < times; i++ {
			if _, err := s.BeginNotification(ctx, a.ID, ch, "sender", time.Minute); err != nil {
				t.Fatal(err)
			}
			if _, err := s.FinishNotification(ctx, a.ID, ch, "sender", errors.New("down")); err != nil {
				t.Fatal(err)
			}
		}
	}
	send := func(a *Attempt, ch Channel) {
		t.Helper()
		if _, err := s.BeginNotification(ctx, a.ID, ch, "sender", time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := s.FinishNotification(ctx, a.ID, ch, "sender", nil); err != nil {
			t.Fatal(err)
		}
	}
	pending := answered("pending", v1alpha1.ChoiceReschedule, agent, "")
	answered("confirmed", v1alpha1.ChoiceConfirm, agent, "")
	answered("rival", v1alpha1.ChoiceReschedule, agent, "rival/morning")
	noAgent := answered("noagent", v1alpha1.ChoiceInstructions, "", "")
	smsSent := answered("smssent", v1alpha1.ChoiceReschedule, agent, "")
	send(smsSent, ChannelSMS)
	failedOnce := answered("failedonce", v1alpha1.ChoiceReschedule, agent, "")
	fail(failedOnce, ChannelSMS, 1)
	gaveUp := answered("gaveup", v1alpha1.ChoiceReschedule, agent, "")
	fail(gaveUp, ChannelSMS, 3)
	sending := answered("sending", v1alpha1.ChoiceReschedule, agent, "")
	if _, err := s.BeginNotification(ctx, sending.ID, ChannelSMS, "sender", time.Minute); err != nil {
		t.Fatal(err)
	}

	query := func(chs ...Channel) []string {
		t.Helper()
		ids, err := s.PendingNotifications(ctx, PendingNotificationQuery{Campaign: "shop/evening",
			Choices:  []v1alpha1.ResponseChoice{v1alpha1.ChoiceReschedule, v1alpha1.ChoiceInstructions},
			Channels: chs, MaxAttempts: 3, Since: since, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(ids)
		return ids
	}
	sorted := func(as ...*Attempt) []string {
		var ids []string
		for _, a := range as {
			ids = append(ids, a.ID)
		}
		slices.Sort(ids)
		return ids
	}
	if got, want := query(ChannelSMS), sorted(pending, failedOnce); !slices.Equal(got, want) {
		t.Errorf("SMS still to send: %v, want %v (not sent, given up, held, confirmed, of another campaign or without an agent phone)", got, want)
	}
	// Every answer of the campaign still has its webhook to send, an
	// attempt without an agent phone too.
	if got, want := query(ChannelSMS, ChannelWebhook), sorted(pending, noAgent, smsSent, failedOnce, gaveUp, sending); !slices.Equal(got, want) {
		t.Errorf("SMS or webhook still to send: %v, want %v", got, want)
	}
	// The held SMS's lease runs out: its sender went away.
	clk.Add(2 * time.Minute)
	if got, want := query(ChannelSMS), sorted(pending, failedOnce, sending); !slices.Equal(got, want) {
		t.Errorf("SMS still to send after the lease ran out: %v, want %v", got, want)
	}
	if got := query(); len(got) != 0 {
		t.Errorf("no channel relayed, yet %v are pending", got)
	}
	ids, err := s.PendingNotifications(ctx, PendingNotificationQuery{Campaign: "shop/evening",
		Choices: []v1alpha1.ResponseChoice{v1alpha1.ChoiceReschedule}, Channels: []Channel{ChannelSMS},
		MaxAttempts: 3, Since: clk.Now().Add(time.Minute), Limit: 100})
	if err != nil || len(ids) != 0 {
		t.Errorf("answers updated before Since: %v (%v), want none", ids, err)
	}
	if _, err := s.PendingNotifications(ctx, PendingNotificationQuery{Campaign: "shop/evening", Limit: 1}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("a query without choices: %v, want ErrInvalidInput", err)
	}
}

func TestOptOuts(t *testing.T) { inBothModes(t, testOptOuts) }

func testOptOuts(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	num := "+14155550123"
	if created, err := s.AddOptOut(ctx, "shop", num, "a-1", "menu"); err != nil || !created {
		t.Fatalf("add: %v %v", created, err)
	}
	if created, err := s.AddOptOut(ctx, "shop", num, "a-2", "menu"); err != nil || created {
		t.Fatalf("second add: created=%v err=%v, want idempotent", created, err)
	}
	for _, c := range []struct {
		ns, num string
		want    bool
	}{{"shop", num, true}, {"other", num, false}, {"shop", "+14155550124", false}} {
		if got, err := s.IsOptedOut(ctx, c.ns, c.num); err != nil || got != c.want {
			t.Errorf("IsOptedOut(%s, %s) = %v, %v", c.ns, c.num, got, err)
		}
	}
	if _, err := s.IsOptedOut(ctx, "shop", "555-0123"); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("malformed number: %v", err)
	}
	// A worker that claims an opted-out number cancels instead of dialing.
	optedOut := newAttempt("u1", 1, time.Now())
	optedOut.To = num
	a := mustCreate(t, s, optedOut)
	dialed := false
	got, err := s.DialSequence(ctx, a.ID, "w", time.Minute, func(context.Context, *Attempt) (DialResult, error) {
		dialed = true
		return DialResult{CallSID: "CA"}, nil
	})
	if err != nil || dialed || got.State != StateCancelled || got.Reason != "opted out" {
		t.Fatalf("dial sequence for an opted-out number: dialed=%v %+v %v", dialed, got, err)
	}
	if removed, err := s.RemoveOptOut(ctx, "shop", num); err != nil || !removed {
		t.Fatalf("remove: %v %v", removed, err)
	}
	if got, _ := s.IsOptedOut(ctx, "shop", num); got {
		t.Fatal("still opted out after removal")
	}
}

func TestDialSequence(t *testing.T) { inBothModes(t, testDialSequence) }

func testDialSequence(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	cases := []struct {
		name  string
		dial  DialFunc
		state State
		err   bool
	}{
		{"ok", func(_ context.Context, a *Attempt) (DialResult, error) {
			return DialResult{CallSID: "CA-" + a.ID, From: "+14155550100"}, nil
		}, StateDialed, false},
		{"retry", func(context.Context, *Attempt) (DialResult, error) {
			return DialResult{}, &DialError{Kind: DialRetry, RetryAt: time.Now().Add(time.Minute), Err: errors.New("429")}
		}, StateRetry, true},
		{"rejected", func(context.Context, *Attempt) (DialResult, error) {
			return DialResult{}, &DialError{Kind: DialRejected, Code: 21211, Err: errors.New("invalid number")}
		}, StateFailed, true},
		{"ambiguous", func(context.Context, *Attempt) (DialResult, error) {
			return DialResult{}, context.DeadlineExceeded
		}, StateUnknown, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := mustCreate(t, s, newAttempt("seq-"+c.name, 1, time.Now()))
			got, err := s.DialSequence(ctx, a.ID, "w", time.Minute, c.dial)
			if (err != nil) != c.err || got == nil || got.State != c.state {
				t.Fatalf("got %+v, %v; want state %s, error %v", got, err, c.state, c.err)
			}
			if _, err := s.DialSequence(ctx, a.ID, "w2", time.Minute, c.dial); !errors.Is(err, ErrNotClaimable) && c.state != StateRetry {
				t.Fatalf("second run: %v, want ErrNotClaimable", err)
			}
		})
	}
}
