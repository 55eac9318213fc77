package callbacks

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/outcome"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/relay"
	"github.com/delauto/delauto/workers/store"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Redis: true, Mongo: true}, &env)
}

const (
	publicBase  = "https://calls.example.test"
	fromNumber  = "+14155550100"
	agentPhone  = "+14155550199"
	relaySecret = "relay-secret-for-tests"
)

// harness is a callback server on an httptest server with real Redis and
// FerretDB, the Twilio simulator calling it through its public URL, and a
// dispatch system receiving the relay webhook.
type harness struct {
	t     testing.TB
	st    *store.Store
	rdb   *redis.Client
	srv   *Server
	relay *relay.Sender // run beside srv, as the worker does
	ts    *httptest.Server
	sim   *twiliosim.Sim
	rc    *openapi.ApiService
	camp  *campaignfile.Config
	hooks *hookRecorder
	db    string
	src   *swapCampaign
	// lang is the recipient's language of new attempts (default en-US).
	lang string
}

// swapCampaign is a campaign source whose campaign a test replaces, as the
// campaign file watcher does.
type swapCampaign struct {
	p atomic.Pointer[campaignfile.Config]
}

func (s *swapCampaign) Current() *campaignfile.Config { return s.p.Load() }

type harnessOpts struct {
	machine   v1.AnsweringMachineAction
	faults    twiliosim.Faults
	noRun     bool
	prompts   *v1.MenuPrompts
	noWebhook bool
	hookFail  int // the dispatch system answers 500 this many times first
	edit      func(*Config)
}

var dbSeq atomic.Int64

var nonName = regexp.MustCompile(`[^A-Za-z0-9]+`)

func quietLogger() *slog.Logger {
	if os.Getenv("CALLBACKS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func testCampaign(webhookURL string, o harnessOpts) *campaignfile.Config {
	yes := true
	c := &campaignfile.Config{Namespace: "shop", Name: "evening", Spec: v1.CallCampaignSpec{
		Schedule: v1.ScheduleSpec{DefaultTimeZone: "UTC"},
		Script: v1.CallScript{
			CompanyName:           "Example Logistics",
			Greeting:              "Hello {{.Name}}, this is {{.Company}}. Your parcel arrives on {{.Date}} between {{.WindowStart}} and {{.WindowEnd}}.",
			InstructionsMaxLength: &metav1.Duration{Duration: 30 * time.Second},
			AnsweringMachine:      o.machine,
			CallbackNumber:        "+14155550111",
			TimeLimit:             &metav1.Duration{Duration: 60 * time.Second},
			Prompts:               o.prompts,
		},
		Twilio: v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{fromNumber}, CallbackURL: publicBase},
		Relay:  v1.RelaySpec{SMS: &yes},
	}}
	if webhookURL != "" {
		c.Spec.Relay.Webhook = &v1.RelayWebhook{URL: webhookURL, SecretRef: v1.SecretKeySelector{Name: "relay", Key: "secret"}}
	}
	return c
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, hooks: &hookRecorder{failFirst: o.hookFail}}
	ctx := context.Background()

	h.rdb = env.Redis.Client()
	t.Cleanup(func() { h.rdb.Close() })
	if err := h.rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("flush redis: %v", err)
	}
	name := nonName.ReplaceAllString(t.Name(), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	h.db = fmt.Sprintf("cb%d_%s", dbSeq.Add(1), name)
	st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: h.db, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	h.st = st
	t.Cleanup(func() {
		_ = env.Mongo.DropDatabase(h.db)
		_ = st.Close(context.Background())
	})

	hookTS := httptest.NewServer(h.hooks)
	t.Cleanup(hookTS.Close)
	hookURL := hookTS.URL + "/dispatch"
	if o.noWebhook {
		hookURL = ""
	}
	h.camp = testCampaign(hookURL, o)
	h.src = &swapCampaign{}
	h.src.p.Store(h.camp)

	h.sim, err = twiliosim.New(twiliosim.Options{TimeScale: 0.01, Numbers: []string{fromNumber}, Faults: o.faults, CallbackBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("twiliosim: %v", err)
	}
	t.Cleanup(h.sim.Close)
	hc, err := twilioclient.HTTPClient(h.sim.URL(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := twilioclient.New(h.sim.AccountSID(), h.sim.AuthToken(), hc)
	if err != nil {
		t.Fatal(err)
	}
	h.rc = rc.Api

	cfg := Config{
		Campaign:             h.src,
		Store:                st,
		Redis:                h.rdb,
		AuthTokens:           []string{h.sim.AuthToken()},
		Twilio:               rc,
		Consumer:             "test-" + name,
		Logger:               quietLogger(),
		Notify:               relay.NewQueue(h.rdb, ""),
		JournalRetryInterval: 200 * time.Millisecond,
	}
	if o.edit != nil {
		o.edit(&cfg)
	}
	h.srv, err = New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.relay, err = relay.NewSender(relay.Config{
		Store: st, Queue: cfg.Notify, Campaign: cfg.Campaign, Twilio: rc, Owner: cfg.Consumer, Logger: cfg.Logger,
		Secret:            func() ([]byte, error) { return []byte(relaySecret), nil },
		Backoff:           50 * time.Millisecond,
		MaxBackoff:        200 * time.Millisecond,
		Poll:              20 * time.Millisecond,
		TranscriptionWait: 2 * time.Second,
		AllowPrivate:      true, // the dispatch endpoint is on 127.0.0.1
	})
	if err != nil {
		t.Fatalf("relay.NewSender: %v", err)
	}
	h.ts = httptest.NewServer(h.srv.Handler())
	t.Cleanup(h.ts.Close)
	if err := h.sim.SetWebhookRoute(publicBase, h.ts.URL); err != nil {
		t.Fatal(err)
	}
	if !o.noRun {
		h.run()
	}
	return h
}

// run starts the server's journal writer and the relay sender until the
// test ends.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = h.srv.Run(ctx) }()
	go func() { defer wg.Done(); _ = h.relay.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

var toSeq atomic.Int64

// newTo is a fresh valid recipient number.
func newTo() string { return fmt.Sprintf("+1415555%04d", 1000+toSeq.Add(1)%8000) }

// createAttempt creates a queued attempt due now, for number to.
func (h *harness) createAttempt(to string) *store.Attempt {
	h.t.Helper()
	uid := testservices.UUID()
	start := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	a, _, err := h.st.CreateAttempt(context.Background(), store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: "shop", Name: "parcel-" + uid[:8]},
		Campaign: "shop/evening", Shard: "s0", Number: 1, Due: time.Now(), To: to,
		Context: &store.CallContext{
			RecipientName: "Anna Schmidt", Language: cmp.Or(h.lang, "en-US"), TimeZone: "Europe/Berlin",
			WindowStart: start, WindowEnd: start.Add(2 * time.Hour),
			Address: "12 Main Street, 10115 Berlin", Region: "berlin", AgentName: "Kim", AgentPhone: agentPhone,
		},
	})
	if err != nil {
		h.t.Fatalf("CreateAttempt: %v", err)
	}
	return a
}

type dialOpts struct {
	amd   string // MachineDetection mode; async
	prime bool
	// timeLimit is the call's time limit in seconds; default 60. The
	// simulator runs at 100x, so every 10 ms the webhooks take is a
	// simulated second: a test that is not about the limit sets it far
	// beyond its call's length, or a loaded machine cuts the call short.
	timeLimit int
}

// dial does what the worker does: claim, prime the context, create the call
// with the callback URLs, mark dialed. It returns the claimed attempt and
// the call SID.
func (h *harness) dial(a *store.Attempt, o dialOpts) (*store.Attempt, string) {
	h.t.Helper()
	ctx := context.Background()
	c, err := h.st.Claim(ctx, a.ID, "worker-1", time.Minute)
	if err != nil {
		h.t.Fatalf("Claim: %v", err)
	}
	if o.prime {
		if err := h.srv.Prime(ctx, c); err != nil {
			h.t.Fatalf("Prime: %v", err)
		}
	}
	mk := func(path string) string {
		u, err := callurls.For(publicBase, path, c.ID, c.Fence)
		if err != nil {
			h.t.Fatal(err)
		}
		return u
	}
	p := &openapi.CreateCallParams{}
	p.SetTo(c.To).SetFrom(fromNumber).SetUrl(mk(callurls.VoicePath)).SetMethod("POST").
		SetStatusCallback(mk(callurls.StatusPath)).SetStatusCallbackMethod("POST").
		SetStatusCallbackEvent([]string{"initiated", "ringing", "answered", "completed"}).
		SetTimeout(20).SetTimeLimit(cmp.Or(o.timeLimit, 60))
	if o.amd != "" {
		p.SetMachineDetection(o.amd).SetAsyncAmd("true").SetAsyncAmdStatusCallback(mk(callurls.AMDPath)).SetAsyncAmdStatusCallbackMethod("POST")
	}
	call, err := h.rc.CreateCall(p)
	if err != nil {
		h.t.Fatalf("CreateCall: %v", err)
	}
	if _, err := h.st.MarkDialed(ctx, c.ID, c.Fence, *call.Sid, fromNumber); err != nil {
		h.t.Fatalf("MarkDialed: %v", err)
	}
	return c, *call.Sid
}

// call runs a whole call of scenario sc to a new attempt and waits until the
// call is over and the attempt is terminal in MongoDB.
func (h *harness) call(sc twiliosim.Scenario, o dialOpts) (*store.Attempt, twiliosim.Call) {
	h.t.Helper()
	to := newTo()
	h.sim.SetScenario(to, sc)
	a := h.createAttempt(to)
	a, sid := h.dial(a, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := h.sim.WaitCall(ctx, sid)
	if err != nil {
		h.t.Fatalf("WaitCall: %v", err)
	}
	final := h.waitAttempt(a.ID, "terminal", func(a *store.Attempt) bool { return a.State.Terminal() })
	return final, c
}

// waitAttempt polls the attempt until ok holds.
func (h *harness) waitAttempt(id, what string, ok func(*store.Attempt) bool) *store.Attempt {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: CI runs packages side by side on 2 cores
	for {
		a, err := h.st.Get(context.Background(), id)
		if err == nil && ok(a) {
			return a
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("attempt %s never became %s: %+v (err %v)", id, what, a, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle waits until the journal is drained and the simulator idle.
func (h *harness) settle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.sim.WaitIdle(ctx); err != nil {
		h.t.Fatal(err)
	}
	for {
		n, err := h.srv.JournalBacklog(ctx)
		if err == nil && n == 0 {
			return
		}
		if ctx.Err() != nil {
			h.t.Fatalf("journal not drained: %d entries left (err %v)", n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// outcomes returns the outcome events published for an attempt.
func (h *harness) outcomes(id string) []string {
	h.t.Helper()
	msgs, err := h.rdb.XRange(context.Background(), outcome.StreamKey, "-", "+").Result()
	if err != nil {
		h.t.Fatal(err)
	}
	var states []string
	for _, m := range msgs {
		if m.Values["attempt"] == id {
			states = append(states, fmt.Sprint(m.Values["state"]))
		}
	}
	return states
}

// messagesTo returns the simulator's SMS to a number.
func (h *harness) messagesTo(n string) []twiliosim.Message {
	var out []twiliosim.Message
	for _, m := range h.sim.Messages() {
		if m.To == n {
			out = append(out, m)
		}
	}
	return out
}

// post sends a webhook to the server, signed with token over the public
// URL (no signature when token is empty).
func (h *harness) post(path, query string, form url.Values, token string) *http.Response {
	h.t.Helper()
	u := publicBase + path
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequest(http.MethodPost, h.ts.URL+path+"?"+query, strings.NewReader(form.Encode()))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("X-Twilio-Signature", twiliosim.Sign(token, u, form))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// hookRecorder is the dispatch system's relay webhook endpoint.
type hookRecorder struct {
	mu        sync.Mutex
	failFirst int
	reqs      []hookRequest
}

type hookRequest struct {
	header http.Header
	body   []byte
	code   int
}

func (r *hookRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	code := http.StatusOK
	if r.failFirst > 0 {
		r.failFirst--
		code = http.StatusInternalServerError
	}
	r.reqs = append(r.reqs, hookRequest{header: req.Header.Clone(), body: body, code: code})
	r.mu.Unlock()
	w.WriteHeader(code)
	if code != http.StatusOK {
		// Like many dispatch systems, a refusal echoes what it got.
		_, _ = w.Write(body)
	}
}

func (r *hookRecorder) requests() []hookRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookRequest(nil), r.reqs...)
}

func callSIDFor(n int) string { return fmt.Sprintf("CA%032x", n) }

func refQuery(id string, fence int64) string {
	return url.Values{callurls.ParamAttempt: {id}, callurls.ParamFence: {fmt.Sprint(fence)}}.Encode()
}

// twimlForm is the form of a TwiML request (voice or action) of a call.
func twimlForm(sid string, extra map[string]string) url.Values {
	f := url.Values{"AccountSid": {twiliosim.DefaultAccountSID}, "CallSid": {sid}, "CallStatus": {"in-progress"},
		"From": {fromNumber}, "To": {"+14155550123"}, "Direction": {"outbound-api"}}
	for k, v := range extra {
		f.Set(k, v)
	}
	return f
}

// postTwiML sends a signed TwiML request and returns the TwiML.
func (h *harness) postTwiML(path, query string, form url.Values) string {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.ts.URL+path+"?"+query, strings.NewReader(form.Encode()))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign(h.sim.AuthToken(), publicBase+path+"?"+query, form))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "xml") {
		h.t.Fatalf("%s: %d %s: %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return string(b)
}

// request is a webhook request to the server, not yet signed.
func (h *harness) request(path, query string, form url.Values) *http.Request {
	h.t.Helper()
	var body io.Reader = http.NoBody
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(http.MethodPost, h.ts.URL+path+"?"+query, body)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

// do sends a request and returns the response, its body read.
func (h *harness) do(req *http.Request) *http.Response {
	h.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// postSig posts a form with the given signature.
func (h *harness) postSig(path, query string, form url.Values, sig string) *http.Response {
	h.t.Helper()
	req := h.request(path, query, form)
	req.Header.Set("X-Twilio-Signature", sig)
	return h.do(req)
}

// testCounter reads a counter of the server's metrics (label may be empty).
func testCounter(t *testing.T, h *harness, name, label, value string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := h.srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					match = true
				}
			}
			if match && m.GetCounter() != nil {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}
