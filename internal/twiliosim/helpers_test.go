package twiliosim_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	api "github.com/twilio/twilio-go/rest/api/v2010"
	"github.com/twilio/twilio-go/twiml"

	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
)

const (
	agentFrom = "+14155550100"
	fastScale = 0.01
)

// startSim starts a simulator with fast time and the given options, and a
// twilio-go client pointed at it.
func startSim(t *testing.T, opts twiliosim.Options) (*twiliosim.Sim, *twilio.RestClient) {
	t.Helper()
	if opts.TimeScale == 0 && !opts.Instant {
		opts.TimeScale = fastScale
	}
	if opts.Numbers == nil {
		opts.Numbers = []string{agentFrom}
	}
	sim, err := twiliosim.New(opts)
	if err != nil {
		t.Fatalf("twiliosim.New: %v", err)
	}
	t.Cleanup(sim.Close)
	return sim, restClient(t, sim, 5*time.Second)
}

func restClient(t *testing.T, sim *twiliosim.Sim, timeout time.Duration) *twilio.RestClient {
	t.Helper()
	hc, err := twilioclient.HTTPClient(sim.URL(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := twilioclient.New(sim.AccountSID(), sim.AuthToken(), hc)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// hit is one webhook request received by the app.
type hit struct {
	Path     string
	Method   string
	Params   url.Values
	Header   http.Header
	Received time.Time
}

// app is a DelAuto-like webhook server: a menu (1 confirm, 2 reschedule,
// 3 leave instructions, 9 opt out; speech yes/reschedule), recording and
// transcription, status and AMD callbacks. It checks every signature with
// twilio-go's RequestValidator.
type app struct {
	t      *testing.T
	srv    *httptest.Server
	token  string
	mu     sync.Mutex
	hits   []hit
	badSig []string
	// statusFailures makes the first N status callbacks answer 500.
	statusFailures int
	// onAMD runs when an async AMD callback arrives.
	onAMD func(params url.Values)
	// publicBase, when set, is the URL the app believes it is reached at
	// (behind an ingress); signatures are checked against it.
	publicBase string
}

// newApp starts the app for sim. At cleanup the simulator is closed before
// the app, so no webhook is left in flight against a closed server.
func newApp(t *testing.T, sim *twiliosim.Sim) *app {
	a := &app{t: t, token: sim.AuthToken()}
	mux := http.NewServeMux()
	mux.HandleFunc("/voice", a.voice)
	mux.HandleFunc("/gather", a.gather)
	mux.HandleFunc("/recorded", a.say("Thank you, your instructions were recorded. Goodbye."))
	mux.HandleFunc("/voicemail", a.say("Hello, this is DelAuto about your parcel delivery today. Goodbye."))
	mux.HandleFunc("/redirected", a.say("You were redirected."))
	mux.HandleFunc("/long", func(w http.ResponseWriter, r *http.Request) {
		a.record(w, r)
		writeTwiML(t, w, &twiml.VoicePause{Length: "600"})
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		a.record(w, r)
		a.mu.Lock()
		fail := a.statusFailures > 0
		if fail {
			a.statusFailures--
		}
		a.mu.Unlock()
		if fail {
			http.Error(w, "temporarily broken", http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("/amd", func(w http.ResponseWriter, r *http.Request) {
		p := a.record(w, r)
		if a.onAMD != nil {
			a.onAMD(p)
		}
	})
	mux.HandleFunc("/transcription", func(w http.ResponseWriter, r *http.Request) { a.record(w, r) })
	mux.HandleFunc("/recording-status", func(w http.ResponseWriter, r *http.Request) { a.record(w, r) })
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
		a.record(w, r)
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	a.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		sim.Close()
		a.srv.Close()
	})
	t.Cleanup(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, b := range a.badSig {
			t.Errorf("webhook with a bad X-Twilio-Signature: %s", b)
		}
	})
	return a
}

func (a *app) url(path string) string { return a.srv.URL + path }

// record validates the signature and stores the request.
func (a *app) record(_ http.ResponseWriter, r *http.Request) url.Values {
	body, _ := io.ReadAll(r.Body)
	full := "http://" + r.Host + r.URL.RequestURI()
	if a.publicBase != "" {
		full = a.publicBase + r.URL.RequestURI()
	}
	v := client.NewRequestValidator(a.token)
	sig := r.Header.Get("X-Twilio-Signature")
	var ok bool
	var params url.Values
	if r.Method == http.MethodGet {
		q := map[string]string{}
		ok = v.Validate(full, q, sig)
		params = r.URL.Query()
	} else {
		ok = v.ValidateBody(full, body, sig)
		params, _ = url.ParseQuery(string(body))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !ok {
		a.badSig = append(a.badSig, r.Method+" "+full)
	}
	a.hits = append(a.hits, hit{Path: r.URL.Path, Method: r.Method, Params: params, Header: r.Header.Clone(), Received: time.Now()})
	return params
}

func (a *app) hitsTo(path, callSid string) []hit {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []hit
	for _, h := range a.hits {
		if h.Path == path && (callSid == "" || h.Params.Get("CallSid") == callSid) {
			out = append(out, h)
		}
	}
	return out
}

func writeTwiML(t *testing.T, w http.ResponseWriter, verbs ...twiml.Element) {
	doc, err := twiml.Voice(verbs)
	if err != nil {
		t.Errorf("twiml.Voice: %v", err)
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = io.WriteString(w, doc)
}

func (a *app) say(text string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.record(w, r)
		writeTwiML(a.t, w, &twiml.VoiceSay{Message: text}, &twiml.VoiceHangup{})
	}
}

func (a *app) voice(w http.ResponseWriter, r *http.Request) {
	p := a.record(w, r)
	if strings.HasPrefix(p.Get("AnsweredBy"), "machine") {
		writeTwiML(a.t, w, &twiml.VoiceSay{Message: "Hello, this is DelAuto about your parcel delivery today. Goodbye."}, &twiml.VoiceHangup{})
		return
	}
	attempt := r.URL.Query().Get("attempt")
	writeTwiML(a.t, w,
		&twiml.VoiceGather{
			Input:     "dtmf speech",
			NumDigits: "1",
			Timeout:   "5",
			Action:    "/gather?attempt=" + url.QueryEscape(attempt),
			Hints:     "yes, reschedule",
			InnerElements: []twiml.Element{
				&twiml.VoiceSay{Message: "Hello, your parcel arrives today between ten and twelve. Press 1 to confirm, 2 to reschedule, 3 to leave instructions, 9 to stop these calls."},
			},
		},
		&twiml.VoiceSay{Message: "We did not get your answer. Goodbye."},
		&twiml.VoiceHangup{},
	)
}

func (a *app) gather(w http.ResponseWriter, r *http.Request) {
	p := a.record(w, r)
	choice := p.Get("Digits")
	switch strings.ToLower(p.Get("SpeechResult")) {
	case "yes":
		choice = "1"
	case "reschedule":
		choice = "2"
	}
	switch choice {
	case "1":
		writeTwiML(a.t, w, &twiml.VoiceSay{Message: "Thank you, see you soon."}, &twiml.VoiceHangup{})
	case "2":
		writeTwiML(a.t, w, &twiml.VoiceSay{Message: "We will call you to reschedule."}, &twiml.VoiceHangup{})
	case "3":
		writeTwiML(a.t, w,
			&twiml.VoiceSay{Message: "Please leave your instructions after the beep, then press the pound key."},
			&twiml.VoiceRecord{
				Action: "/recorded", MaxLength: "60", FinishOnKey: "#", Transcribe: "true",
				TranscribeCallback: "/transcription", RecordingStatusCallback: "/recording-status",
			},
			&twiml.VoiceSay{Message: "We did not get a recording. Goodbye."},
		)
	case "9":
		writeTwiML(a.t, w, &twiml.VoiceSay{Message: "You will not be called again."}, &twiml.VoiceHangup{})
	default:
		writeTwiML(a.t, w, &twiml.VoiceSay{Message: "Sorry, I did not understand. Goodbye."}, &twiml.VoiceHangup{})
	}
}

// callParams are DelAuto-style create parameters for an attempt.
func (a *app) callParams(to, attempt string) *api.CreateCallParams {
	p := &api.CreateCallParams{}
	p.SetTo(to)
	p.SetFrom(agentFrom)
	p.SetUrl(a.url("/voice?attempt=" + attempt))
	p.SetStatusCallback(a.url("/status?attempt=" + attempt))
	p.SetStatusCallbackEvent([]string{"initiated", "ringing", "answered", "completed"})
	p.SetStatusCallbackMethod("POST")
	p.SetTimeout(20)
	return p
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitCall(t *testing.T, sim *twiliosim.Sim, sid string) twiliosim.Call {
	t.Helper()
	c, err := sim.WaitCall(ctxT(t, 20*time.Second), sid)
	if err != nil {
		t.Fatalf("WaitCall: %v", err)
	}
	return c
}

// events lists the status callback events the app received for a call, in
// arrival order, as "event/seq".
func (a *app) statusEvents(callSid string) []string {
	var out []string
	for _, h := range a.hitsTo("/status", callSid) {
		out = append(out, h.Params.Get("CallStatus")+"/"+h.Params.Get("SequenceNumber"))
	}
	return out
}
