package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/outcome"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/store"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Redis: true, Mongo: true}, &env)
}

const (
	fromNumber = "+14155550100"
	agentPhone = "+14155550199"
)

func attempt(choice v1.ResponseChoice, transcription string) *store.Attempt {
	start := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	at := start.Add(-3 * time.Hour)
	return &store.Attempt{
		ID:       "0b5f7c6e-1c57-4f7e-9d5c-1f0d2b8e9a11-1",
		Delivery: store.DeliveryRef{UID: "0b5f7c6e-1c57-4f7e-9d5c-1f0d2b8e9a11", Namespace: "shop", Name: "parcel-42"},
		Campaign: "shop/evening",
		To:       "+14155550123",
		Context: &store.CallContext{RecipientName: "Anna Schmidt", TimeZone: "Europe/Berlin", WindowStart: start, WindowEnd: start.Add(2 * time.Hour),
			Address: "12 Main Street, 10115 Berlin", AgentName: "Kim", AgentPhone: agentPhone},
		Response: &store.Response{Choice: choice, Digits: "3", At: &at, Transcription: transcription,
			RecordingSID: "RE0123456789abcdef0123456789abcdef", RecordingURL: "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE0123"},
	}
}

func TestSMSText(t *testing.T) {
	cases := []struct {
		name string
		a    *store.Attempt
		want []string
	}{
		{"reschedule", attempt(v1.ChoiceReschedule, ""), []string{"Example Logistics: RESCHEDULE", "Anna Schmidt", "12 Main Street, 10115 Berlin", "Wed Dec 2, 4:00 PM-6:00 PM CET", "Ref shop/parcel-42"}},
		{"instructions", attempt(v1.ChoiceInstructions, "Leave it  with\nthe neighbour."), []string{"INSTRUCTIONS", `"Leave it with the neighbour."`, "12 Main Street"}},
		{"instructions without transcription", attempt(v1.ChoiceInstructions, ""), []string{"Voice message: https://api.twilio.com/", "Ref shop/parcel-42"}},
		{"long transcription", attempt(v1.ChoiceInstructions, strings.Repeat("Please ring twice and wait, I am upstairs. ", 20)), []string{`..."`, "Ref shop/parcel-42", "12 Main Street, 10115 Berlin"}},
		{"unicode", attempt(v1.ChoiceInstructions, strings.Repeat("Bitte beim Nachbarn abgeben, Hausnummer zwölf — danke! ", 10)), []string{"zwölf", "Ref shop/parcel-42"}},
	}
	for _, c := range cases {
		msg := SMSText(c.a, "Example Logistics", "UTC", nil)
		if n := utf8.RuneCountInString(msg); n > MaxSMSLen || n < 100 {
			t.Errorf("%s: %d characters, want 100..%d: %q", c.name, n, MaxSMSLen, msg)
		}
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q lacks %q", c.name, msg, w)
			}
		}
	}
	long := attempt(v1.ChoiceReschedule, "")
	long.Context.Address = strings.Repeat("Very Long Street Name ", 30)
	if n := utf8.RuneCountInString(SMSText(long, "Example Logistics", "UTC", nil)); n > MaxSMSLen {
		t.Errorf("long address: %d characters", n)
	}
}

func TestSignVerify(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"id":"x"}`)
	now := time.Unix(1_800_000_000, 0)
	sig := Sign(secret, now.Unix(), body)
	if !strings.HasPrefix(sig, "sha256=") || len(sig) != 7+64 {
		t.Fatalf("signature %q", sig)
	}
	ts := fmt.Sprint(now.Unix())
	if err := Verify(secret, ts, sig, body, now, time.Minute); err != nil {
		t.Errorf("valid signature refused: %v", err)
	}
	for name, err := range map[string]error{
		"other body":   Verify(secret, ts, sig, []byte(`{"id":"y"}`), now, time.Minute),
		"other secret": Verify([]byte("x"), ts, sig, body, now, time.Minute),
		"old":          Verify(secret, ts, sig, body, now.Add(10*time.Minute), time.Minute),
		"other time":   Verify(secret, fmt.Sprint(now.Unix()+1), sig, body, now, time.Minute),
		"bad time":     Verify(secret, "soon", sig, body, now, time.Minute),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestQueueLeases(t *testing.T) {
	rdb := env.Redis.Client()
	defer rdb.Close()
	ctx := context.Background()
	q := NewQueue(rdb, fmt.Sprintf("{relaytest}:%d", time.Now().UnixNano()))
	now := time.Now()
	if err := q.Enqueue(ctx, "a", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	_ = q.Enqueue(ctx, "a", now.Add(time.Hour)) // never later
	_ = q.Enqueue(ctx, "b", now)
	l, err := q.take(ctx, now, time.Hour, 10)
	if err != nil || len(l.ids) != 1 || l.ids[0] != "b" {
		t.Fatalf("take: %v %v, want [b]", l.ids, err)
	}
	if l2, _ := q.take(ctx, now, 10*time.Second, 10); len(l2.ids) != 0 {
		t.Errorf("a leased entry was taken again: %v", l2.ids)
	}
	l3, _ := q.take(ctx, now.Add(time.Minute), 10*time.Second, 10)
	if len(l3.ids) != 1 || l3.ids[0] != "a" {
		t.Errorf("a is due after a minute, not an hour: %v", l3.ids)
	}
	// A wake-up while leased survives the lease's settle.
	_ = q.Enqueue(ctx, "b", now)
	if err := q.settle(ctx, l, "b", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.Due(ctx, now); n != 1 {
		t.Errorf("a woken entry was removed by a stale settle (due %d)", n)
	}
	l4, _ := q.take(ctx, now, 10*time.Second, 10)
	_ = q.settle(ctx, l4, "b", time.Time{})
	_ = q.settle(ctx, l3, "a", now.Add(time.Hour))
	if n, _ := q.Len(ctx); n != 1 {
		t.Errorf("queue has %d entries, want a only", n)
	}
}

// fixture is a sender against real Redis and FerretDB, the Twilio simulator
// and a dispatch endpoint.
type fixture struct {
	st    *store.Store
	rdb   *redis.Client
	sim   *twiliosim.Sim
	camp  *campaignfile.Config
	s     *Sender
	hooks atomic.Int64
	fail  atomic.Int64
	mu    sync.Mutex
	last  *http.Request
	db    string
}

var dbSeq atomic.Int64

func newFixture(t *testing.T, secret func() ([]byte, error), edit ...func(*Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{db: fmt.Sprintf("relay%d_%d", dbSeq.Add(1), time.Now().UnixNano()%1e6)}
	var err error
	f.st, err = store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: f.db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Mongo.DropDatabase(f.db); _ = f.st.Close(ctx) })
	f.rdb = env.Redis.Client()
	t.Cleanup(func() { f.rdb.Close() })
	f.sim, err = twiliosim.New(twiliosim.Options{Numbers: []string{fromNumber}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sim.Close)
	hc, _ := twilioclient.HTTPClient(f.sim.URL(), 5*time.Second)
	rc, err := twilioclient.New(f.sim.AccountSID(), f.sim.AuthToken(), hc)
	if err != nil {
		t.Fatal(err)
	}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		f.hooks.Add(1)
		if f.fail.Add(-1) >= 0 {
			http.Error(w, "dispatch is down", http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(hook.Close)
	yes := true
	f.camp = &campaignfile.Config{Namespace: "shop", Name: "evening", Spec: v1.CallCampaignSpec{
		Script: v1.CallScript{CompanyName: "Example Logistics"},
		Twilio: v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{fromNumber}},
		Relay:  v1.RelaySpec{SMS: &yes, Webhook: &v1.RelayWebhook{URL: hook.URL}},
	}}
	cfg := Config{
		Store: f.st, Queue: NewQueue(f.rdb, fmt.Sprintf("{relaytest}:%s", f.db)), Campaign: campaignfile.Static{Config: f.camp},
		Twilio: rc, Secret: secret, Owner: "test", MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
		// The dispatch endpoint is an http server on 127.0.0.1.
		AllowPrivate: true,
	}
	for _, e := range edit {
		e(&cfg)
	}
	f.s, err = NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) answered(t *testing.T, choice v1.ResponseChoice) *store.Attempt {
	t.Helper()
	ctx := context.Background()
	uid := testservices.UUID()
	a, _, err := f.st.CreateAttempt(ctx, store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: "shop", Name: "parcel"}, Campaign: "shop/evening", Shard: "s0",
		Number: 1, Due: time.Now(), To: "+14155550123",
		Context: &store.CallContext{RecipientName: "Anna", TimeZone: "UTC", Address: "12 Main Street", AgentPhone: agentPhone},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.st.RecordResponse(ctx, a.ID, store.Answer{Choice: choice, Digits: "2"}); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestProcessRetriesThenSends(t *testing.T) {
	f := newFixture(t, func() ([]byte, error) { return []byte("k"), nil })
	ctx := context.Background()
	a := f.answered(t, v1.ChoiceReschedule)
	f.fail.Store(2)
	var next time.Time
	var err error
	for i := 0; i < 3; i++ {
		next, err = f.s.Process(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
	}
	if !next.IsZero() {
		t.Errorf("everything sent, but asked to come back at %v", next)
	}
	b, _ := f.st.Get(ctx, a.ID)
	if b.Notify.SMS.State != store.NotifySent || b.Notify.SMS.Attempts != 1 {
		t.Errorf("SMS %+v, want sent once", b.Notify.SMS)
	}
	if b.Notify.Webhook.State != store.NotifySent || b.Notify.Webhook.Attempts != 3 || f.hooks.Load() != 3 {
		t.Errorf("webhook %+v after %d requests, want sent on the third", b.Notify.Webhook, f.hooks.Load())
	}
	if n := len(f.sim.Messages()); n != 1 {
		t.Errorf("%d SMS, want 1", n)
	}
	// Processing again sends nothing.
	if next, err := f.s.Process(ctx, a.ID); err != nil || !next.IsZero() || f.hooks.Load() != 3 || len(f.sim.Messages()) != 1 {
		t.Errorf("second process: next %v err %v, %d webhooks, %d SMS", next, err, f.hooks.Load(), len(f.sim.Messages()))
	}
}

func TestProcessGivesUpAndSweepSkips(t *testing.T) {
	f := newFixture(t, func() ([]byte, error) { return []byte("k"), nil })
	ctx := context.Background()
	a := f.answered(t, v1.ChoiceReschedule)
	f.fail.Store(100)
	for i := 0; i < 5; i++ {
		if _, err := f.s.Process(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := f.st.Get(ctx, a.ID)
	if b.Notify.Webhook.State != store.NotifyFailed || b.Notify.Webhook.Attempts != 3 || !strings.Contains(b.Notify.Webhook.LastError, "502") {
		t.Errorf("webhook %+v, want failed after 3 tries with the error", b.Notify.Webhook)
	}
	if f.hooks.Load() != 3 {
		t.Errorf("%d webhook requests, want 3 (the attempt limit)", f.hooks.Load())
	}
	if n, err := f.s.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("sweep found %d (err %v); a given-up and a sent channel need nothing", n, err)
	}
}

func TestMissingSecretNeverSendsUnsigned(t *testing.T) {
	f := newFixture(t, func() ([]byte, error) { return nil, ErrNoSecret })
	ctx := context.Background()
	a := f.answered(t, v1.ChoiceReschedule)
	next, err := f.s.Process(ctx, a.ID)
	if err != nil || next.IsZero() {
		t.Fatalf("next %v err %v, want a retry", next, err)
	}
	b, _ := f.st.Get(ctx, a.ID)
	if b.Notify.SMS.State != store.NotifySent {
		t.Errorf("SMS %+v, want sent regardless of the webhook", b.Notify.SMS)
	}
	if f.hooks.Load() != 0 || b.Notify.Webhook.State != store.NotifyFailed || !strings.Contains(b.Notify.Webhook.LastError, workerpod.EnvRelaySecretFile) {
		t.Errorf("webhook %+v with %d requests, want failed naming %s and nothing sent", b.Notify.Webhook, f.hooks.Load(), workerpod.EnvRelaySecretFile)
	}
}

func TestSweepFindsLostWork(t *testing.T) {
	f := newFixture(t, func() ([]byte, error) { return []byte("k"), nil })
	ctx := context.Background()
	a := f.answered(t, v1.ChoiceReschedule)
	f.answered(t, v1.ChoiceConfirm) // nothing to relay
	n, err := f.s.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep found %d (err %v), want the unsent reschedule", n, err)
	}
	l, err := f.s.cfg.Queue.take(ctx, time.Now().Add(time.Second), time.Minute, 10)
	if err != nil || len(l.ids) != 1 || l.ids[0] != a.ID {
		t.Errorf("queued %v (err %v), want %s", l.ids, err, a.ID)
	}
}

func TestSecretSource(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/secret"
	if _, err := SecretSource(path, "xyz")(); !errors.Is(err, ErrNoSecret) {
		t.Errorf("missing file: %v", err)
	}
	if err := writeFile(path, "abc\n"); err != nil {
		t.Fatal(err)
	}
	if s, err := SecretSource(path, "xyz")(); err != nil || string(s) != "abc" {
		t.Errorf("secret %q err %v", s, err)
	}
	if s, err := SecretSource("", "xyz")(); err != nil || string(s) != "xyz" {
		t.Errorf("secret set by hand %q err %v", s, err)
	}
	if _, err := SecretSource("", "")(); !errors.Is(err, ErrNoSecret) {
		t.Errorf("no secret: %v", err)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// outcomeEvents are the outcome stream's events about attempt id.
func outcomeEvents(t *testing.T, rdb redis.UniversalClient, id string) []string {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), outcome.StreamKey, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		if m.Values["attempt"] == id {
			out = append(out, fmt.Sprint(m.Values["ns"], "/", m.Values["name"], " ", m.Values["state"]))
		}
	}
	return out
}

// Recorded instructions are relayed after their transcription, which comes
// after the call's final status: the Delivery is finished by then, and only
// an outcome event makes the operator show when the agent was told.
func TestRelayAfterTheTranscriptionTellsTheOperator(t *testing.T) {
	f := newFixture(t, func() ([]byte, error) { return []byte("k"), nil })
	ctx := context.Background()
	a := f.answered(t, v1.ChoiceInstructions)
	if _, _, err := f.st.RecordRecording(ctx, a.ID, store.Recording{SID: "RE0123456789abcdef0123456789abcdef", URL: "https://api.twilio.com/rec/RE0123", DurationSec: 7}); err != nil {
		t.Fatal(err)
	}
	next, err := f.s.Process(ctx, a.ID)
	if err != nil || next.IsZero() {
		t.Fatalf("Process before the transcription = %v, %v; want a time to look again", next, err)
	}
	if ev := outcomeEvents(t, f.rdb, a.ID); len(ev) != 0 {
		t.Fatalf("outcome events %v before anything was sent", ev)
	}
	if _, _, err := f.st.RecordTranscription(ctx, a.ID, "RE0123456789abcdef0123456789abcdef", "completed", "Leave it with the neighbour."); err != nil {
		t.Fatal(err)
	}
	if next, err := f.s.Process(ctx, a.ID); err != nil || !next.IsZero() {
		t.Fatalf("Process after the transcription = %v, %v; want everything sent", next, err)
	}
	ev := outcomeEvents(t, f.rdb, a.ID)
	if len(ev) == 0 || !strings.HasPrefix(ev[0], "shop/parcel ") {
		t.Fatalf("outcome events %v, want one for shop/parcel once the agent was told", ev)
	}
}
