package twiliosim_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
)

func restErr(t *testing.T, err error) *client.TwilioRestError {
	t.Helper()
	var re *client.TwilioRestError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *client.TwilioRestError", err, err)
	}
	return re
}

func TestCreateFetchAndCallJSON(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{})
	a := newApp(t, sim)
	c, err := rc.Api.CreateCall(a.callParams("+14155550123", "att-1"))
	if err != nil {
		t.Fatalf("CreateCall: %v", err)
	}
	if c.Sid == nil || !strings.HasPrefix(*c.Sid, "CA") || len(*c.Sid) != 34 {
		t.Fatalf("sid = %v, want CA + 32 hex", c.Sid)
	}
	if *c.Status != "queued" || *c.To != "+14155550123" || *c.From != agentFrom || *c.Direction != "outbound-api" ||
		*c.AccountSid != sim.AccountSID() || *c.ApiVersion != "2010-04-01" || *c.ToFormatted != "(415) 555-0123" {
		t.Errorf("created call = %+v", c)
	}
	if c.Duration != nil || c.EndTime != nil {
		t.Errorf("a queued call has duration %v, end time %v; want none", c.Duration, c.EndTime)
	}
	if _, err := time.Parse(time.RFC1123Z, *c.DateCreated); err != nil {
		t.Errorf("date_created %q is not RFC 2822: %v", *c.DateCreated, err)
	}
	final := waitCall(t, sim, *c.Sid)
	if final.Status != "completed" || final.AttemptID != "att-1" {
		t.Errorf("final call = %+v", final)
	}
	got, err := rc.Api.FetchCall(*c.Sid, nil)
	if err != nil {
		t.Fatalf("FetchCall: %v", err)
	}
	if *got.Status != "completed" || got.Duration == nil || got.StartTime == nil || got.EndTime == nil || got.Price == nil {
		t.Errorf("fetched completed call = %+v", got)
	}
	if n, err := strconv.Atoi(*got.Duration); err != nil || n < 1 {
		t.Errorf("duration %q is not a positive number of seconds", *got.Duration)
	}
	if sim.CallsForAttempt("att-1") != 1 || sim.CallsTo("+14155550123") != 1 {
		t.Errorf("CallsForAttempt = %d, CallsTo = %d, want 1, 1", sim.CallsForAttempt("att-1"), sim.CallsTo("+14155550123"))
	}
	_, err = rc.Api.FetchCall("CA00000000000000000000000000000000", nil)
	if re := restErr(t, err); re.Status != 404 || re.Code != 20404 {
		t.Errorf("fetch of an unknown call: %+v", re)
	}
}

func TestCreateValidation(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Scenarios: map[string]twiliosim.Scenario{"+14155550199": twiliosim.MustNamed("unreachable")}})
	a := newApp(t, sim)
	cases := []struct {
		name   string
		mutate func(p *api.CreateCallParams)
		code   int
	}{
		{"missing To", func(p *api.CreateCallParams) { p.To = nil }, 21201},
		{"missing From", func(p *api.CreateCallParams) { p.From = nil }, 21213},
		{"missing Url and Twiml", func(p *api.CreateCallParams) { p.Url = nil }, 21205},
		{"relative Url", func(p *api.CreateCallParams) { p.SetUrl("/voice") }, 21205},
		{"To not E.164", func(p *api.CreateCallParams) { p.SetTo("4155550123") }, 21211},
		{"To not a valid number", func(p *api.CreateCallParams) { p.SetTo("+1415555012") }, 21211},
		{"From not a number", func(p *api.CreateCallParams) { p.SetFrom("DelAuto") }, 21212},
		{"From not the account's", func(p *api.CreateCallParams) { p.SetFrom("+14155550177") }, 21210},
		{"unreachable To", func(p *api.CreateCallParams) { p.SetTo("+14155550199") }, 21214},
		{"bad MachineDetection", func(p *api.CreateCallParams) { p.SetMachineDetection("Maybe") }, 20001},
		{"bad StatusCallbackEvent", func(p *api.CreateCallParams) { p.SetStatusCallbackEvent([]string{"picked-up"}) }, 20001},
	}
	for _, tc := range cases {
		p := a.callParams("+14155550123", "v")
		tc.mutate(p)
		_, err := rc.Api.CreateCall(p)
		re := restErr(t, err)
		if re.Code != tc.code || re.Status != 400 || !strings.HasPrefix(re.MoreInfo, "https://www.twilio.com/docs/errors/") || re.Message == "" {
			t.Errorf("%s: got %+v, want code %d status 400", tc.name, re, tc.code)
		}
		if strings.Contains(re.Message, "4155550") {
			t.Errorf("%s: error message reveals a phone number: %q", tc.name, re.Message)
		}
	}
	// Inline TwiML is accepted in place of Url.
	p := a.callParams("+14155550123", "inline")
	p.Url = nil
	p.SetTwiml("<Response><Say>Hello</Say></Response>")
	if _, err := rc.Api.CreateCall(p); err != nil {
		t.Errorf("create with Twiml: %v", err)
	}
	// Bad credentials.
	hc, _ := twilioclient.HTTPClient(sim.URL(), time.Second)
	bad, err := twilioclient.New(sim.AccountSID(), "wrongtoken", hc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Api.CreateCall(a.callParams("+14155550123", "x"))
	if re := restErr(t, err); re.Code != 20003 || re.Status != 401 {
		t.Errorf("bad credentials: %+v", re)
	}
	other, _ := twilioclient.New("AC"+strings.Repeat("f", 32), sim.AuthToken(), hc)
	if _, err := other.Api.CreateCall(a.callParams("+14155550123", "x")); restErr(t, err).Code != 20003 {
		t.Errorf("another account SID was accepted: %v", err)
	}
	var refused, created int
	for _, r := range sim.Creates() {
		if r.Created() {
			created++
		} else {
			refused++
		}
	}
	if refused != len(cases)+2 || created != 1 {
		t.Errorf("create records: %d refused, %d created; want %d, 1", refused, created, len(cases)+2)
	}
}

func TestListCallsFiltersAndPaging(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Instant: true})
	a := newApp(t, sim)
	before := time.Now().UTC().Add(-time.Second)
	var sids []string
	for i := range 7 {
		to := "+14155550123"
		if i%2 == 1 {
			to = "+14155550124"
		}
		c, err := rc.Api.CreateCall(a.callParams(to, fmt.Sprintf("att-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, *c.Sid)
	}
	if err := sim.WaitIdle(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	to := "+14155550123"
	after := before
	p := &api.ListCallParams{To: &to, StartTimeAfter: &after}
	p.SetPageSize(2) // forces twilio-go to follow next_page_uri through the redirect
	got, err := rc.Api.ListCall(p)
	if err != nil {
		t.Fatalf("ListCall: %v", err)
	}
	if len(got) != 4 {
		t.Fatalf("ListCall(To, StartTime>) returned %d calls, want 4", len(got))
	}
	for i, c := range got {
		if *c.To != to {
			t.Errorf("call %s to %s passed the To filter", *c.Sid, *c.To)
		}
		if i > 0 && *c.Sid == *got[i-1].Sid {
			t.Errorf("call %s listed twice", *c.Sid)
		}
	}
	if *got[0].Sid != sids[6] {
		t.Errorf("first listed call %s, want the newest %s", *got[0].Sid, sids[6])
	}
	future := time.Now().UTC().Add(time.Hour)
	none, err := rc.Api.ListCall(&api.ListCallParams{StartTimeAfter: &future})
	if err != nil || len(none) != 0 {
		t.Errorf("ListCall(StartTime> future) = %d calls, %v; want none", len(none), err)
	}
	status := "completed"
	all, err := rc.Api.ListCall(&api.ListCallParams{Status: &status})
	if err != nil || len(all) != 7 {
		t.Errorf("ListCall(Status=completed) = %d calls, %v; want 7", len(all), err)
	}
	limit := 3
	some, err := rc.Api.ListCall(&api.ListCallParams{Limit: &limit})
	if err != nil || len(some) != 3 {
		t.Errorf("ListCall(Limit=3) = %d calls, %v", len(some), err)
	}
}

func TestUpdateCall(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{CPS: 1})
	a := newApp(t, sim)

	// The first call starts at once; the second waits a second in the CPS
	// queue, long enough to be canceled there.
	long := a.callParams("+14155550123", "live")
	long.SetUrl(a.url("/long"))
	live, err := rc.Api.CreateCall(long)
	if err != nil {
		t.Fatal(err)
	}
	queued, err := rc.Api.CreateCall(a.callParams("+14155550124", "queued"))
	if err != nil {
		t.Fatal(err)
	}
	cancel := &api.UpdateCallParams{}
	cancel.SetStatus("canceled")
	got, err := rc.Api.UpdateCall(*queued.Sid, cancel)
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if *got.Status != "canceled" {
		t.Errorf("canceled queued call has status %s", *got.Status)
	}
	if c := waitCall(t, sim, *queued.Sid); c.Status != "canceled" || !c.Started.IsZero() {
		t.Errorf("canceled call = %+v", c)
	}

	// Redirect the live call once it is in progress, then complete it.
	deadline := time.Now().Add(5 * time.Second)
	for len(a.hitsTo("/long", *live.Sid)) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	redirect := &api.UpdateCallParams{}
	redirect.SetUrl(a.url("/long?again=1"))
	if _, err := rc.Api.UpdateCall(*live.Sid, redirect); err != nil {
		t.Fatalf("redirect: %v", err)
	}
	for len(a.hitsTo("/long", *live.Sid)) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if h := a.hitsTo("/long", *live.Sid); len(h) != 2 || h[1].Params.Get("CallStatus") != "in-progress" {
		t.Fatalf("redirected call fetched /long %d times", len(h))
	}
	complete := &api.UpdateCallParams{}
	complete.SetStatus("completed")
	got, err = rc.Api.UpdateCall(*live.Sid, complete)
	if err != nil {
		t.Fatalf("complete: %v", err)
	}
	if *got.Status != "completed" {
		t.Errorf("completed call has status %s", *got.Status)
	}
	c := waitCall(t, sim, *live.Sid)
	if c.Status != "completed" {
		t.Errorf("call = %+v", c)
	}
	ev := a.statusEvents(*live.Sid)
	if len(ev) == 0 || ev[len(ev)-1] != "completed/3" {
		t.Errorf("status events %v, want completed/3 last", ev)
	}
	// A finished call cannot be updated: 21220.
	_, err = rc.Api.UpdateCall(*live.Sid, redirect)
	if re := restErr(t, err); re.Code != 21220 || re.Status != 400 {
		t.Errorf("update of a completed call: %+v", re)
	}
	if err := rc.Api.DeleteCall(*live.Sid, nil); err != nil {
		t.Errorf("DeleteCall: %v", err)
	}
	if _, err := rc.Api.FetchCall(*live.Sid, nil); restErr(t, err).Code != 20404 {
		t.Errorf("a deleted call is still fetchable")
	}
	if sim.CallsForAttempt("live") != 1 {
		t.Errorf("deleting the call log must not forget the call was made")
	}
}

func TestMessages(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{})
	p := &api.CreateMessageParams{}
	p.SetTo("+14155550142")
	p.SetFrom(agentFrom)
	p.SetBody("Parcel 123: the recipient asks to leave it with the neighbour.")
	m, err := rc.Api.CreateMessage(p)
	if err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	if !strings.HasPrefix(*m.Sid, "SM") || *m.Status != "queued" || *m.NumSegments != "1" || *m.Body != *p.Body {
		t.Errorf("message = %+v", m)
	}
	msgs := sim.Messages()
	if len(msgs) != 1 || msgs[0].To != "+14155550142" || msgs[0].Body != *p.Body {
		t.Errorf("recorded messages = %+v", msgs)
	}
	listed, err := rc.Api.ListMessage(&api.ListMessageParams{To: p.To})
	if err != nil || len(listed) != 1 {
		t.Errorf("ListMessage = %d, %v", len(listed), err)
	}
	p.Body = nil
	_, err = rc.Api.CreateMessage(p)
	if re := restErr(t, err); re.Code != 21602 {
		t.Errorf("message without body: %+v", re)
	}
	p.SetBody("x")
	p.SetFrom("+14155550177")
	if _, err := rc.Api.CreateMessage(p); restErr(t, err).Code != 21606 {
		t.Errorf("message from a number not on the account: %v", err)
	}
}

func TestDeleteRecordingsAndTranscriptions(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{})
	withText := sim.AddRecording("CA00000000000000000000000000000001", 7, "leave it with the neighbour")
	bare := sim.AddRecording("CA00000000000000000000000000000002", 3, "")

	trs, err := rc.Api.ListRecordingTranscription(withText.Sid, nil)
	if err != nil {
		t.Fatalf("ListRecordingTranscription: %v", err)
	}
	if len(trs) != 1 || *trs[0].Sid != withText.TranscriptionSid || *trs[0].TranscriptionText != "leave it with the neighbour" || *trs[0].RecordingSid != withText.Sid {
		t.Fatalf("transcriptions of %s = %+v, want its one transcription", withText.Sid, trs)
	}
	if trs, err := rc.Api.ListRecordingTranscription(bare.Sid, nil); err != nil || len(trs) != 0 {
		t.Fatalf("transcriptions of an untranscribed recording = %v, %v; want none", trs, err)
	}

	// A transcription goes alone; deleting it twice is a 404.
	if err := rc.Api.DeleteTranscription(withText.TranscriptionSid, nil); err != nil {
		t.Fatalf("DeleteTranscription: %v", err)
	}
	if re := restErr(t, rc.Api.DeleteTranscription(withText.TranscriptionSid, nil)); re.Status != 404 || re.Code != twiliosim.CodeNotFound {
		t.Fatalf("second DeleteTranscription = %d/%d, want 404/20404", re.Status, re.Code)
	}
	if trs, err := rc.Api.ListRecordingTranscription(withText.Sid, nil); err != nil || len(trs) != 0 {
		t.Fatalf("transcriptions after deleting it = %v, %v; want none", trs, err)
	}

	// The recording: gone from the API and its media once deleted.
	if _, err := rc.Api.FetchRecording(withText.Sid, nil); err != nil {
		t.Fatalf("FetchRecording before delete: %v", err)
	}
	if err := rc.Api.DeleteRecording(withText.Sid, nil); err != nil {
		t.Fatalf("DeleteRecording: %v", err)
	}
	if re := restErr(t, rc.Api.DeleteRecording(withText.Sid, nil)); re.Status != 404 {
		t.Fatalf("second DeleteRecording = %d, want 404", re.Status)
	}
	if _, err := rc.Api.FetchRecording(withText.Sid, nil); restErr(t, err).Status != 404 {
		t.Fatalf("FetchRecording after delete: %v, want 404", err)
	}
	// A recording deleted with its transcription still in place takes it along.
	other := sim.AddRecording("CA00000000000000000000000000000003", 2, "ring twice")
	if err := rc.Api.DeleteRecording(other.Sid, nil); err != nil {
		t.Fatal(err)
	}
	if re := restErr(t, rc.Api.DeleteTranscription(other.TranscriptionSid, nil)); re.Status != 404 {
		t.Fatalf("transcription of a deleted recording: %d, want 404 (deleted with it)", re.Status)
	}
	for _, r := range sim.Recordings() {
		want := r.Sid != bare.Sid
		if r.Deleted != want || (r.TranscriptionSid != "" && r.TranscriptionDeleted != want) {
			t.Errorf("recording %s: deleted=%v transcription deleted=%v, want %v", r.Sid, r.Deleted, r.TranscriptionDeleted, want)
		}
	}

	// Faults reach the delete endpoints like the others, and wrong credentials are refused.
	sim.QueueFaults(twiliosim.EndpointDeleteRecording, twiliosim.FaultServerError)
	if re := restErr(t, rc.Api.DeleteRecording(bare.Sid, nil)); re.Status != 500 {
		t.Fatalf("DeleteRecording with a queued 500 = %d", re.Status)
	}
	hc, _ := twilioclient.HTTPClient(sim.URL(), 5*time.Second)
	wrong, err := twilioclient.New(sim.AccountSID(), "wrongtoken", hc)
	if err != nil {
		t.Fatal(err)
	}
	if re := restErr(t, wrong.Api.DeleteRecording(bare.Sid, nil)); re.Status != 401 {
		t.Fatalf("DeleteRecording with a wrong token = %d, want 401", re.Status)
	}
	if err := rc.Api.DeleteRecording(bare.Sid, nil); err != nil {
		t.Fatalf("DeleteRecording after the fault: %v", err)
	}
}
