package callbacks

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/relay"
	"github.com/delauto/delauto/workers/store"
)

// assertNoRelay checks that nothing was sent to the agent for an attempt.
func assertNoRelay(t *testing.T, h *harness, a *store.Attempt) {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // give a wrong relay time to show
	if m := h.messagesTo(agentPhone); len(m) != 0 {
		t.Errorf("agent got %d SMS, want none: %q", len(m), m[0].Body)
	}
	if r := h.hooks.requests(); len(r) != 0 {
		t.Errorf("dispatch webhook got %d requests, want none", len(r))
	}
	b, _ := h.st.Get(context.Background(), a.ID)
	if b.Notify.SMS.State != store.NotifyPending || b.Notify.Webhook.State != store.NotifyPending {
		t.Errorf("notifications %+v, want both pending", b.Notify)
	}
}

// checkWebhook checks the dispatch system got one correctly signed relay
// for attempt a with the choice, and returns its payload.
func checkWebhook(t *testing.T, h *harness, a *store.Attempt, choice v1.ResponseChoice) relay.Payload {
	t.Helper()
	var reqs []hookRequest
	deadline := time.Now().Add(10 * time.Second)
	for len(reqs) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		reqs = h.hooks.requests()
	}
	if len(reqs) != 1 {
		t.Fatalf("dispatch webhook got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if err := relay.Verify([]byte(relaySecret), r.header.Get(relay.HeaderTimestamp), r.header.Get(relay.HeaderSignature), r.body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("relay webhook signature: %v", err)
	}
	if err := relay.Verify([]byte("another secret"), r.header.Get(relay.HeaderTimestamp), r.header.Get(relay.HeaderSignature), r.body, time.Now(), 5*time.Minute); err == nil {
		t.Error("relay webhook signature verifies with the wrong secret")
	}
	if got := r.header.Get(relay.HeaderIdempotencyKey); got != relay.IdempotencyKey(a.ID) {
		t.Errorf("Idempotency-Key %q, want %q", got, relay.IdempotencyKey(a.ID))
	}
	var p relay.Payload
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("relay webhook body: %v: %s", err, r.body)
	}
	if p.AttemptID != a.ID || p.Choice != choice || p.Delivery.Address != "12 Main Street, 10115 Berlin" || p.Delivery.Namespace != "shop" {
		t.Errorf("relay payload %+v", p)
	}
	return p
}

// waitSMS waits for the agent's SMS.
func waitSMS(t *testing.T, h *harness) twiliosim.Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := h.messagesTo(agentPhone); len(m) > 0 {
			if len(m) > 1 {
				t.Errorf("agent got %d SMS, want 1", len(m))
			}
			if m[0].From != fromNumber {
				t.Errorf("SMS from %s, want the campaign's number %s", m[0].From, fromNumber)
			}
			if n := utf8.RuneCountInString(m[0].Body); n > relay.MaxSMSLen {
				t.Errorf("SMS is %d characters, more than %d: %q", n, relay.MaxSMSLen, m[0].Body)
			}
			return m[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the agent got no SMS")
	return twiliosim.Message{}
}

func TestConfirmByKey(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a, c := h.call(twiliosim.MustNamed("press1"), dialOpts{prime: true})
	if a.Result != v1.CallCompleted || a.Response == nil || a.Response.Choice != v1.ChoiceConfirm || a.Response.Digits != "1" {
		t.Fatalf("attempt %+v response %+v, want completed with Confirm by 1", a, a.Response)
	}
	if a.CallSID != c.Sid || a.DurationSec < 1 || a.LastSeq < 3 {
		t.Errorf("call SID %s duration %d lastSeq %d, want the call's, >0 and the final sequence", a.CallSID, a.DurationSec, a.LastSeq)
	}
	h.settle()
	if ev := h.outcomes(a.ID); len(ev) < 2 || ev[len(ev)-1] != "completed" {
		t.Errorf("outcome events %v, want the choice and the final status", ev)
	}
	assertNoRelay(t, h, a)
	if st := h.srv.Stats(); st.CacheMisses != 0 || st.CacheHits < 5 {
		t.Errorf("cache %+v: a primed call must only hit", st)
	}
}

func TestConfirmBySpeech(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a, c := h.call(twiliosim.MustNamed("say-yes"), dialOpts{})
	if a.Response == nil || a.Response.Choice != v1.ChoiceConfirm || a.Response.Speech != "yes" {
		t.Fatalf("response %+v, want Confirm by speech", a.Response)
	}
	if len(c.Inputs) != 1 || c.Inputs[0] != "speech:yes" {
		t.Errorf("inputs %v", c.Inputs)
	}
	// Not primed: MongoDB is read once (one miss); webhooks that missed the
	// cache meanwhile share that read, every later one hits.
	if st := h.srv.Stats(); st.CacheMisses != 1 {
		t.Errorf("cache %+v, want exactly one miss", st)
	}
}

func TestRescheduleRelaysToAgent(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a, _ := h.call(twiliosim.MustNamed("press2"), dialOpts{prime: true})
	if a.Response == nil || a.Response.Choice != v1.ChoiceReschedule {
		t.Fatalf("response %+v, want Reschedule", a.Response)
	}
	sms := waitSMS(t, h)
	for _, want := range []string{"RESCHEDULE", "Anna Schmidt", "12 Main Street, 10115 Berlin", "Wed Dec 2, 4:00 PM-6:00 PM CET", "shop/parcel-"} {
		if !strings.Contains(sms.Body, want) {
			t.Errorf("SMS %q lacks %q", sms.Body, want)
		}
	}
	checkWebhook(t, h, a, v1.ChoiceReschedule)
	b := h.waitAttempt(a.ID, "notified", func(a *store.Attempt) bool {
		return a.Notify.SMS.State == store.NotifySent && a.Notify.Webhook.State == store.NotifySent
	})
	if b.Notify.SMS.Attempts != 1 || b.Notify.Webhook.Attempts != 1 {
		t.Errorf("notification attempts %+v, want 1 each", b.Notify)
	}
}

func TestRescheduleBySpeech(t *testing.T) {
	h := newHarness(t, harnessOpts{noWebhook: true})
	a, _ := h.call(twiliosim.MustNamed("say-reschedule"), dialOpts{prime: true})
	if a.Response == nil || a.Response.Choice != v1.ChoiceReschedule || a.Response.Speech != "reschedule" {
		t.Fatalf("response %+v", a.Response)
	}
	waitSMS(t, h)
	b := h.waitAttempt(a.ID, "SMS sent", func(a *store.Attempt) bool { return a.Notify.SMS.State == store.NotifySent })
	if b.Notify.Webhook.State != store.NotifyPending || len(h.hooks.requests()) != 0 {
		t.Errorf("webhook %+v sent without being configured", b.Notify.Webhook)
	}
}

func TestInstructionsRecordedTranscribedRelayed(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a, c := h.call(twiliosim.MustNamed("press3"), dialOpts{prime: true, timeLimit: 600})
	want := "Please leave the parcel with the neighbour at number twelve"
	b := h.waitAttempt(a.ID, "transcribed", func(a *store.Attempt) bool {
		return a.Response != nil && a.Response.TranscriptionStatus != ""
	})
	r := b.Response
	if r.Choice != v1.ChoiceInstructions || r.Digits != "3" {
		t.Errorf("response %+v, want Instructions by 3", r)
	}
	recs := h.sim.Recordings()
	if len(recs) != 1 || r.RecordingSID != recs[0].Sid || r.RecordingURL != recs[0].URL || r.RecordingDurationSec != int32(recs[0].Duration) {
		t.Errorf("recording %+v, simulator made %+v", r, recs)
	}
	if r.Transcription != want || r.TranscriptionStatus != "completed" || r.TranscribedRecordingSID != r.RecordingSID {
		t.Errorf("transcription %q (%s), want %q", r.Transcription, r.TranscriptionStatus, want)
	}
	if len(c.Inputs) != 2 || !strings.HasPrefix(c.Inputs[1], "record:RE") {
		t.Errorf("inputs %v, want the key and a recording", c.Inputs)
	}
	sms := waitSMS(t, h)
	if !strings.Contains(sms.Body, "INSTRUCTIONS") || !strings.Contains(sms.Body, want) || !strings.Contains(sms.Body, "12 Main Street") {
		t.Errorf("SMS %q lacks the instructions or the address", sms.Body)
	}
	p := checkWebhook(t, h, a, v1.ChoiceInstructions)
	if p.Recording == nil || p.Recording.Transcription != want || p.Recording.SID != r.RecordingSID {
		t.Errorf("relay payload recording %+v", p.Recording)
	}
}

func TestOptOut(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a, _ := h.call(twiliosim.MustNamed("press9"), dialOpts{prime: true})
	if a.Response == nil || a.Response.Choice != v1.ChoiceOptOut {
		t.Fatalf("response %+v, want OptOut", a.Response)
	}
	opted, err := h.st.IsOptedOut(context.Background(), "shop", a.To)
	if err != nil || !opted {
		t.Fatalf("number not in optouts after pressing 9 (err %v)", err)
	}
	assertNoRelay(t, h, a)
}

func TestSilenceRepeatsOnceThenGoodbye(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a, c := h.call(twiliosim.MustNamed("silence"), dialOpts{prime: true})
	if a.Response != nil || a.Result != v1.CallCompleted {
		t.Errorf("attempt result %s response %+v, want completed without an answer", a.Result, a.Response)
	}
	if len(c.Inputs) != 2 || c.Inputs[0] != "silence" || c.Inputs[1] != "silence" {
		t.Errorf("inputs %v, want the menu twice, unanswered", c.Inputs)
	}
	if len(h.sim.CallbacksFor(c.Sid, "action")) != 0 {
		t.Error("a gather action was requested without input")
	}
	if c.Duration > 60 {
		t.Errorf("call lasted %d s, over the 60 s time limit", c.Duration)
	}
}

func TestInvalidKeyRepeatsMenu(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sc := twiliosim.Scenario{Name: "fumble", Inputs: []twiliosim.Input{{Digits: "5"}, {Digits: "1"}}}
	a, c := h.call(sc, dialOpts{prime: true})
	if a.Response == nil || a.Response.Choice != v1.ChoiceConfirm {
		t.Fatalf("response %+v, want Confirm after the repeat", a.Response)
	}
	if len(c.Inputs) != 2 {
		t.Errorf("inputs %v", c.Inputs)
	}
	// A second wrong answer ends the call politely, with no answer recorded.
	sc = twiliosim.Scenario{Name: "fumble2", Inputs: []twiliosim.Input{{Digits: "5"}, {Digits: "7"}, {Digits: "1"}}}
	a, c = h.call(sc, dialOpts{prime: true})
	if a.Response != nil || len(c.Inputs) != 2 {
		t.Errorf("response %+v inputs %v, want no answer after two wrong keys", a.Response, c.Inputs)
	}
}

func TestCampaignWordingOverridesDefaults(t *testing.T) {
	h := newHarness(t, harnessOpts{prompts: &v1.MenuPrompts{Menu: "Druecken Sie 1.", Confirmed: "Danke, bis bald."}})
	a := h.createAttempt(newTo())
	q := refQuery(a.ID, 1)
	voice := h.postTwiML("/twilio/voice", q, twimlForm(callSIDFor(7), nil))
	action := h.postTwiML("/twilio/gather", q, twimlForm(callSIDFor(7), map[string]string{"Digits": "1"}))
	if !strings.Contains(voice, "Druecken Sie 1.") || strings.Contains(voice, "To confirm, press 1") {
		t.Errorf("voice TwiML does not use the campaign's menu:\n%s", voice)
	}
	if !strings.Contains(voice, "Hello Anna Schmidt, this is Example Logistics. Your parcel arrives on Wednesday, December 2 between 4:00 PM and 6:00 PM.") {
		t.Errorf("greeting not rendered in the recipient's time zone:\n%s", voice)
	}
	if !strings.Contains(action, "Danke, bis bald.") {
		t.Errorf("confirmation does not use the campaign's wording:\n%s", action)
	}
}

func TestVoicemailOnMachine(t *testing.T) {
	h := newHarness(t, harnessOpts{machine: v1.MachineVoicemail})
	a, c := h.call(twiliosim.MustNamed("voicemail"), dialOpts{prime: true, amd: "DetectMessageEnd"})
	if a.Result != v1.CallMachine || !store.IsMachine(a.AnsweredBy) {
		t.Errorf("result %s answeredBy %q, want machine", a.Result, a.AnsweredBy)
	}
	if a.Response != nil {
		t.Errorf("a machine answered the menu: %+v", a.Response)
	}
	if updates := successfulUpdates(h); updates != 1 {
		t.Errorf("%d UpdateCall requests, want 1 redirecting the call to the voicemail", updates)
	}
	if len(h.sim.CallbacksFor(c.Sid, "amd")) != 1 {
		t.Error("no AMD callback")
	}
}

func TestHangUpOnMachine(t *testing.T) {
	h := newHarness(t, harnessOpts{machine: v1.MachineHangUp})
	sc := twiliosim.MustNamed("voicemail")
	sc.GreetingLength = 40 * time.Second
	a, _ := h.call(sc, dialOpts{prime: true, amd: "Enable"})
	if a.Result != v1.CallMachine || a.AnsweredBy != "machine_start" {
		t.Errorf("result %s answeredBy %q, want machine / machine_start", a.Result, a.AnsweredBy)
	}
	// Hung up through the API on detection (4 s), not left to the menu. The
	// call's simulated length is no measure: it grows with every
	// millisecond the webhooks take (the simulator runs at 100x).
	if n := successfulUpdates(h); n != 1 {
		t.Errorf("%d UpdateCall requests, want 1 hanging up the call", n)
	}
}

// successfulUpdates counts the UpdateCall requests the simulator accepted.
func successfulUpdates(h *harness) int {
	n := 0
	for _, r := range h.sim.Requests() {
		if r.Endpoint == twiliosim.EndpointUpdateCall && r.HTTPStatus == 200 {
			n++
		}
	}
	return n
}

func TestBusyAndNoAnswer(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for name, want := range map[string]v1.CallResult{"busy": v1.CallBusy, "no-answer": v1.CallNoAnswer, "failed": v1.CallFailed} {
		a, _ := h.call(twiliosim.MustNamed(name), dialOpts{prime: true})
		if a.Result != want || a.Response != nil {
			t.Errorf("%s: result %s response %+v", name, a.Result, a.Response)
		}
		h.settle()
		if ev := h.outcomes(a.ID); len(ev) == 0 || ev[len(ev)-1] != "completed" {
			t.Errorf("%s: outcome events %v", name, ev)
		}
	}
}

func TestCallbackFaultsChangeNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{faults: twiliosim.Faults{DuplicateCallback: 1, OutOfOrderCallback: 0.5}})
	a, _ := h.call(twiliosim.MustNamed("press2"), dialOpts{prime: true})
	h.settle()
	b, _ := h.st.Get(context.Background(), a.ID)
	if b.State != store.StateCompleted || b.Result != v1.CallCompleted || b.LastSeq != 3 || b.Response.Choice != v1.ChoiceReschedule {
		t.Errorf("attempt %s/%s lastSeq %d response %+v after duplicated and reordered callbacks", b.State, b.Result, b.LastSeq, b.Response)
	}
	waitSMS(t, h)
	// The webhook goes after the SMS; wait until both are recorded sent,
	// then give a duplicate time to show.
	h.waitAttempt(a.ID, "notified", func(a *store.Attempt) bool {
		return a.Notify.SMS.State == store.NotifySent && a.Notify.Webhook.State == store.NotifySent
	})
	time.Sleep(300 * time.Millisecond)
	if n := len(h.messagesTo(agentPhone)); n != 1 {
		t.Errorf("agent got %d SMS, want exactly 1", n)
	}
	if n := len(h.hooks.requests()); n != 1 {
		t.Errorf("dispatch got %d webhooks, want exactly 1", n)
	}
}

func TestInstructionsWithoutTranscriptionSendLink(t *testing.T) {
	h := newHarness(t, harnessOpts{noWebhook: true})
	sc := twiliosim.MustNamed("press3")
	sc.TranscriptionFails = true
	a, _ := h.call(sc, dialOpts{prime: true, timeLimit: 600})
	b := h.waitAttempt(a.ID, "transcription failed", func(a *store.Attempt) bool {
		return a.Response != nil && a.Response.TranscriptionStatus == "failed"
	})
	sms := waitSMS(t, h)
	if !strings.Contains(sms.Body, "Voice message: "+b.Response.RecordingURL) {
		t.Errorf("SMS %q lacks the recording link %s", sms.Body, b.Response.RecordingURL)
	}
}

func TestRelayWebhookRetriedUntilAccepted(t *testing.T) {
	h := newHarness(t, harnessOpts{hookFail: 2})
	a, _ := h.call(twiliosim.MustNamed("press2"), dialOpts{prime: true})
	b := h.waitAttempt(a.ID, "webhook sent", func(a *store.Attempt) bool { return a.Notify.Webhook.State == store.NotifySent })
	reqs := h.hooks.requests()
	if b.Notify.Webhook.Attempts != 3 || len(reqs) != 3 || reqs[0].code != 500 || reqs[2].code != 200 {
		t.Errorf("webhook %+v after %d requests, want sent on the third", b.Notify.Webhook, len(reqs))
	}
	keys := map[string]bool{}
	for _, r := range reqs {
		keys[r.header.Get(relay.HeaderIdempotencyKey)] = true
	}
	if len(keys) != 1 {
		t.Errorf("idempotency keys %v, want one for every retry", keys)
	}
	if b.Notify.SMS.Attempts != 1 || len(h.messagesTo(agentPhone)) != 1 {
		t.Errorf("SMS %+v, want sent once while the webhook was retried", b.Notify.SMS)
	}
}
