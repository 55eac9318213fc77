package twiliosim_test

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/delauto/delauto/internal/twiliosim"
)

var allEvents = []string{"initiated/0", "ringing/1", "in-progress/2"}

func TestScenariosEndToEnd(t *testing.T) {
	cases := []struct {
		scenario string
		status   string
		events   []string // status callbacks, in order, without completed
		inputs   []string
		gather   url.Values // what the app's /gather received, nil for no request
	}{
		{"press1", "completed", allEvents, []string{"digits:1"}, url.Values{"Digits": {"1"}}},
		{"press2", "completed", allEvents, []string{"digits:2"}, url.Values{"Digits": {"2"}}},
		{"press3", "completed", allEvents, nil, url.Values{"Digits": {"3"}}},
		{"press9", "completed", allEvents, []string{"digits:9"}, url.Values{"Digits": {"9"}}},
		{"say-yes", "completed", allEvents, []string{"speech:yes"}, url.Values{"SpeechResult": {"yes"}}},
		{"say-reschedule", "completed", allEvents, []string{"speech:reschedule"}, url.Values{"SpeechResult": {"reschedule"}}},
		{"busy", "busy", []string{"initiated/0"}, nil, nil},
		{"no-answer", "no-answer", []string{"initiated/0", "ringing/1"}, nil, nil},
		{"failed", "failed", []string{"initiated/0"}, nil, nil},
		{"voicemail", "completed", allEvents, []string{"silence"}, nil},
		{"hangup", "completed", allEvents, []string{"hangup"}, nil},
		{"silence", "completed", allEvents, []string{"silence"}, nil},
	}
	sim, rc := startSim(t, twiliosim.Options{})
	a := newApp(t, sim)
	for i, tc := range cases {
		t.Run(tc.scenario, func(t *testing.T) {
			t.Parallel()
			to := fmt.Sprintf("+1415555%04d", 200+i)
			sim.SetScenario(to, twiliosim.MustNamed(tc.scenario))
			c, err := rc.Api.CreateCall(a.callParams(to, tc.scenario))
			if err != nil {
				t.Fatal(err)
			}
			final := waitCall(t, sim, *c.Sid)
			if final.Status != tc.status || final.Scenario != tc.scenario {
				t.Errorf("final status %s (scenario %s), want %s", final.Status, final.Scenario, tc.status)
			}
			if tc.inputs != nil && !reflect.DeepEqual(final.Inputs, tc.inputs) {
				t.Errorf("inputs %v, want %v", final.Inputs, tc.inputs)
			}
			want := append(append([]string(nil), tc.events...), fmt.Sprintf("%s/%d", tc.status, len(tc.events)))
			if got := a.statusEvents(*c.Sid); !reflect.DeepEqual(got, want) {
				t.Errorf("status callbacks %v, want %v", got, want)
			}
			last := a.hitsTo("/status", *c.Sid)
			done := last[len(last)-1].Params
			for _, k := range []string{"AccountSid", "From", "To", "Direction", "ApiVersion", "Timestamp", "CallbackSource", "CallDuration", "Called", "Caller"} {
				if done.Get(k) == "" {
					t.Errorf("completed callback lacks %s: %v", k, done)
				}
			}
			if _, err := time.Parse(time.RFC1123Z, done.Get("Timestamp")); err != nil {
				t.Errorf("Timestamp %q: %v", done.Get("Timestamp"), err)
			}
			answered := tc.status == "completed"
			if voice := a.hitsTo("/voice", *c.Sid); answered != (len(voice) == 1) {
				t.Errorf("voice requests: %d (answered %v)", len(voice), answered)
			} else if answered && voice[0].Params.Get("CallStatus") != "in-progress" {
				t.Errorf("voice request CallStatus %q", voice[0].Params.Get("CallStatus"))
			}
			g := a.hitsTo("/gather", *c.Sid)
			if tc.gather == nil {
				if len(g) != 0 {
					t.Errorf("gather action called %d times, want none", len(g))
				}
				return
			}
			if len(g) != 1 {
				t.Fatalf("gather action called %d times, want 1", len(g))
			}
			for k, v := range tc.gather {
				if g[0].Params.Get(k) != v[0] {
					t.Errorf("gather %s = %q, want %q", k, g[0].Params.Get(k), v[0])
				}
			}
			if g[0].Params.Get("SpeechResult") != "" && g[0].Params.Get("Confidence") == "" {
				t.Errorf("speech result without Confidence")
			}
		})
	}
}

func TestLeaveInstructionsRecordsAndTranscribes(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Scenarios: map[string]twiliosim.Scenario{"+14155550301": twiliosim.MustNamed("press3")}})
	a := newApp(t, sim)
	c, err := rc.Api.CreateCall(a.callParams("+14155550301", "rec"))
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, sim, *c.Sid)
	if err := sim.WaitIdle(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	recs := sim.Recordings()
	if len(recs) != 1 {
		t.Fatalf("recordings: %+v", recs)
	}
	rec := recs[0]
	action := a.hitsTo("/recorded", *c.Sid)
	if len(action) != 1 {
		t.Fatalf("record action called %d times", len(action))
	}
	p := action[0].Params
	if p.Get("RecordingSid") != rec.Sid || p.Get("RecordingUrl") != rec.URL || p.Get("RecordingDuration") == "" || p.Get("Digits") != "#" {
		t.Errorf("record action params %v", p)
	}
	tr := a.hitsTo("/transcription", *c.Sid)
	if len(tr) != 1 || tr[0].Params.Get("TranscriptionStatus") != "completed" ||
		!strings.Contains(tr[0].Params.Get("TranscriptionText"), "neighbour") || tr[0].Params.Get("RecordingSid") != rec.Sid {
		t.Errorf("transcription callbacks %+v", tr)
	}
	rs := a.hitsTo("/recording-status", *c.Sid)
	if len(rs) != 1 || rs[0].Params.Get("RecordingStatus") != "completed" || rs[0].Params.Get("RecordingSid") != rec.Sid {
		t.Errorf("recording status callbacks %+v", rs)
	}
	// The recording URL serves audio.
	resp, err := a.srv.Client().Get(rec.URL)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/x-wav" {
		t.Errorf("GET recording: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
}

func TestAnsweringMachineDetection(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{Scenarios: map[string]twiliosim.Scenario{
		"+14155550401": twiliosim.MustNamed("voicemail"),
		"+14155550402": twiliosim.MustNamed("voicemail"),
		"+14155550403": twiliosim.MustNamed("press1"),
		"+14155550404": twiliosim.MustNamed("fax"),
		"+14155550405": twiliosim.MustNamed("voicemail"),
		"+14155550406": twiliosim.MustNamed("amd-unknown"),
	}})
	a := newApp(t, sim)
	sync := func(to, mode, want string) {
		t.Helper()
		p := a.callParams(to, "amd-"+to)
		p.SetMachineDetection(mode)
		c, err := rc.Api.CreateCall(p)
		if err != nil {
			t.Fatal(err)
		}
		final := waitCall(t, sim, *c.Sid)
		v := a.hitsTo("/voice", *c.Sid)
		if len(v) != 1 || v[0].Params.Get("AnsweredBy") != want || final.AnsweredBy != want {
			t.Errorf("%s: voice request AnsweredBy %v, call %q; want %s", mode, v, final.AnsweredBy, want)
		}
		st := a.hitsTo("/status", *c.Sid)
		if got := st[len(st)-1].Params.Get("AnsweredBy"); got != want {
			t.Errorf("%s: completed callback AnsweredBy %q, want %s", mode, got, want)
		}
	}
	sync("+14155550401", "Enable", "machine_start")
	sync("+14155550402", "DetectMessageEnd", "machine_end_beep")
	sync("+14155550403", "Enable", "human")
	sync("+14155550404", "Enable", "fax")
	sync("+14155550406", "Enable", "unknown")
	if g := a.hitsTo("/gather", ""); len(g) != 2 || g[1].Params.Get("Digits") != "1" {
		t.Errorf("the human and the undetected callee should both reach the menu and press 1: %d gathers", len(g))
	}

	// Async AMD: the TwiML starts at once; the result comes to
	// AsyncAmdStatusCallback, and the app redirects the live call.
	a.onAMD = func(p url.Values) {
		if strings.HasPrefix(p.Get("AnsweredBy"), "machine") {
			u := &api.UpdateCallParams{}
			u.SetUrl(a.url("/voicemail"))
			if _, err := rc.Api.UpdateCall(p.Get("CallSid"), u); err != nil {
				t.Errorf("redirect to voicemail: %v", err)
			}
		}
	}
	p := a.callParams("+14155550405", "async")
	p.SetMachineDetection("DetectMessageEnd")
	p.SetAsyncAmd("true")
	p.SetAsyncAmdStatusCallback(a.url("/amd?attempt=async"))
	c, err := rc.Api.CreateCall(p)
	if err != nil {
		t.Fatal(err)
	}
	final := waitCall(t, sim, *c.Sid)
	v := a.hitsTo("/voice", *c.Sid)
	if len(v) != 1 || v[0].Params.Get("AnsweredBy") != "" {
		t.Errorf("async AMD voice request must not carry AnsweredBy: %v", v)
	}
	amd := a.hitsTo("/amd", *c.Sid)
	if len(amd) != 1 || amd[0].Params.Get("AnsweredBy") != "machine_end_beep" || amd[0].Params.Get("MachineDetectionDuration") == "" {
		t.Errorf("AMD callbacks %+v", amd)
	}
	if vm := a.hitsTo("/voicemail", *c.Sid); len(vm) != 1 {
		t.Errorf("voicemail redirect requested %d times, want 1", len(vm))
	}
	if final.AnsweredBy != "machine_end_beep" || final.Status != "completed" {
		t.Errorf("async AMD call = %+v", final)
	}
}

func TestTimeLimitEndsCall(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{})
	a := newApp(t, sim)
	p := a.callParams("+14155550123", "limit")
	p.SetUrl(a.url("/long"))
	p.SetTimeLimit(30)
	c, err := rc.Api.CreateCall(p)
	if err != nil {
		t.Fatal(err)
	}
	final := waitCall(t, sim, *c.Sid)
	if final.Status != "completed" || final.Duration < 30 || final.Duration > 60 {
		t.Errorf("call with TimeLimit 30 = %s after %d s", final.Status, final.Duration)
	}
}

func TestHangupMidMenu(t *testing.T) {
	// A slower clock than the other tests: the menu prompt (about 12 s
	// simulated) lasts 0.6 s, far longer than scheduling noise.
	impatient := twiliosim.Scenario{Name: "impatient", HangupAfter: 2 * time.Second, Inputs: []twiliosim.Input{{Digits: "1", Delay: 30 * time.Second}}}
	sim, rc := startSim(t, twiliosim.Options{TimeScale: 0.05, Scenarios: map[string]twiliosim.Scenario{
		"+14155550123": twiliosim.MustNamed("hangup"),
		"+14155550124": impatient,
	}})
	a := newApp(t, sim)
	for _, to := range []string{"+14155550123", "+14155550124"} {
		c, err := rc.Api.CreateCall(a.callParams(to, "hangup"))
		if err != nil {
			t.Fatal(err)
		}
		final := waitCall(t, sim, *c.Sid)
		if final.Status != "completed" || final.Duration >= 10 || len(a.hitsTo("/gather", *c.Sid)) != 0 {
			t.Errorf("%s: %+v, want a hang-up during the 12 s prompt", final.Scenario, final)
		}
	}
}

func TestFallbackURLAndNotifications(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{})
	a := newApp(t, sim)
	p := a.callParams("+14155550123", "fb")
	p.SetUrl(a.url("/broken"))
	p.SetFallbackUrl(a.url("/voice?attempt=fb"))
	c, err := rc.Api.CreateCall(p)
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, sim, *c.Sid)
	if len(a.hitsTo("/broken", *c.Sid)) != 1 || len(a.hitsTo("/gather", *c.Sid)) != 1 {
		t.Errorf("fallback not followed: broken %d, gather %d", len(a.hitsTo("/broken", *c.Sid)), len(a.hitsTo("/gather", *c.Sid)))
	}
	p = a.callParams("+14155550124", "nofb")
	p.SetUrl(a.url("/broken"))
	c, err = rc.Api.CreateCall(p)
	if err != nil {
		t.Fatal(err)
	}
	final := waitCall(t, sim, *c.Sid)
	found := false
	for _, n := range sim.Notifications() {
		found = found || (n.CallSid == *c.Sid && n.Code == 11200)
	}
	if !found || final.Status != "completed" {
		t.Errorf("failed webhook without fallback: status %s, notifications %+v", final.Status, sim.Notifications())
	}
}

func TestGETWebhooksAreSigned(t *testing.T) {
	sim, rc := startSim(t, twiliosim.Options{})
	a := newApp(t, sim)
	p := a.callParams("+14155550123", "get")
	p.SetMethod("GET")
	p.SetStatusCallbackMethod("GET")
	c, err := rc.Api.CreateCall(p)
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, sim, *c.Sid)
	v := a.hitsTo("/voice", *c.Sid)
	st := a.hitsTo("/status", *c.Sid)
	if len(v) != 1 || v[0].Method != "GET" || v[0].Params.Get("attempt") != "get" || len(st) != 4 || st[0].Method != "GET" {
		t.Errorf("GET webhooks: voice %+v, status %d", v, len(st))
	}
	// The app's cleanup fails the test on any bad signature.
}

func TestSignMatchesTwilioGoValidator(t *testing.T) {
	params := url.Values{"CallSid": {"CA1"}, "Digits": {"1"}, "AccountSid": {"AC1"}, "Empty": {""}}
	u := "https://example.com/voice?attempt=a1"
	sig := twiliosim.Sign("token123", u, params)
	// twilio-go's validator, over the same URL and body.
	v := client.NewRequestValidator("token123")
	if !v.ValidateBody(u, []byte(params.Encode()), sig) {
		t.Errorf("twilio-go does not accept the simulator's signature")
	}
	if v.ValidateBody(u, []byte(params.Encode()), twiliosim.Sign("other", u, params)) {
		t.Errorf("a signature with another token was accepted")
	}
}

func TestMixIsReplayable(t *testing.T) {
	run := func(seed int64) []string {
		sim, rc := startSim(t, twiliosim.Options{Instant: true, Mix: twiliosim.DefaultMix(), Seed: seed})
		a := newApp(t, sim)
		var out []string
		for i := range 30 {
			c, err := rc.Api.CreateCall(a.callParams(fmt.Sprintf("+1415555%04d", 500+i), "mix"))
			if err != nil {
				t.Fatal(err)
			}
			cl, _ := sim.Call(*c.Sid)
			out = append(out, cl.Scenario)
		}
		if err := sim.WaitIdle(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b, c := run(7), run(7), run(8)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different scenarios:\n%v\n%v", a, b)
	}
	if reflect.DeepEqual(a, c) {
		t.Errorf("different seeds gave the same 30 scenarios")
	}
	kinds := map[string]bool{}
	for _, s := range a {
		kinds[s] = true
	}
	if len(kinds) < 4 {
		t.Errorf("the default mix gave only %v", kinds)
	}
}

func TestParseMixAndRules(t *testing.T) {
	mix, err := twiliosim.ParseMix("press1=60, busy=10,no-answer=30")
	if err != nil || len(mix) != 3 || mix[1].Scenario.Name != "busy" || mix[2].Weight != 30 {
		t.Errorf("ParseMix = %+v, %v", mix, err)
	}
	for _, bad := range []string{"press1", "press7=1", "press1=-1", "press1=0", ""} {
		if _, err := twiliosim.ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
	rules, err := twiliosim.ParseSuffixRules("01=press1,1=busy")
	if err != nil || len(rules) != 2 {
		t.Fatalf("ParseSuffixRules = %v, %v", rules, err)
	}
	sim, rc := startSim(t, twiliosim.Options{Instant: true, Suffixes: rules})
	a := newApp(t, sim)
	for to, want := range map[string]string{"+14155550601": "press1", "+14155550611": "busy", "+14155550612": "press1"} {
		c, err := rc.Api.CreateCall(a.callParams(to, "r"))
		if err != nil {
			t.Fatal(err)
		}
		cl, _ := sim.Call(*c.Sid)
		if cl.Scenario != want {
			t.Errorf("%s got scenario %s, want %s", to, cl.Scenario, want)
		}
	}
}

func TestWebhookRoutesKeepThePublicURLSigned(t *testing.T) {
	const public = "https://calls.example.test"
	sim, rc := startSim(t, twiliosim.Options{})
	a := newApp(t, sim)
	a.publicBase = public
	if err := sim.SetWebhookRoute(public, a.srv.URL); err != nil {
		t.Fatal(err)
	}
	if err := sim.SetWebhookRoute("calls.example.test", a.srv.URL); err == nil {
		t.Errorf("a route from a relative URL was accepted")
	}
	p := a.callParams("+14155550123", "routed")
	p.SetUrl(public + "/voice?attempt=routed")
	p.SetStatusCallback(public + "/status?attempt=routed")
	c, err := rc.Api.CreateCall(p)
	if err != nil {
		t.Fatal(err)
	}
	waitCall(t, sim, *c.Sid)
	v := a.hitsTo("/voice", *c.Sid)
	g := a.hitsTo("/gather", *c.Sid)
	if len(v) != 1 || len(g) != 1 || len(a.hitsTo("/status", *c.Sid)) != 4 {
		t.Fatalf("routed webhooks: voice %d, gather %d", len(v), len(g))
	}
	cbs := sim.CallbacksFor(*c.Sid, "action")
	if len(cbs) != 1 || !strings.HasPrefix(cbs[0].URL, public+"/gather") {
		t.Errorf("the relative action must resolve against the public URL: %+v", cbs)
	}
	// The app's cleanup checks every signature against the public URL.
}
