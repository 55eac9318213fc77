package callbacks

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

func statusForm(sid, status string, seq int) url.Values {
	f := url.Values{"AccountSid": {twiliosim.DefaultAccountSID}, "CallSid": {sid}, "CallStatus": {status},
		"SequenceNumber": {itoa(seq)}, "Timestamp": {time.Now().UTC().Format(twilioTime)},
		"From": {fromNumber}, "To": {"+14155550123"}, "CallbackSource": {"call-progress-events"}}
	if terminalStatus(status) {
		f.Set("CallDuration", "12")
	}
	return f
}

func itoa(n int) string { return strconv.Itoa(n) }

// untouched checks that nothing was written: no journal entry, no change to
// the attempt, no outcome event.
func (h *harness) untouched(a *store.Attempt) {
	h.t.Helper()
	ctx := context.Background()
	if n, err := h.rdb.XLen(ctx, JournalKey).Result(); err != nil || n != 0 {
		h.t.Errorf("journal has %d entries (err %v), want none", n, err)
	}
	b, err := h.st.Get(ctx, a.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	if !b.UpdatedAt.Equal(a.UpdatedAt) || b.State != a.State || b.LastSeq != a.LastSeq || b.Response != nil {
		h.t.Errorf("attempt changed: %+v -> %+v", a, b)
	}
	if ev := h.outcomes(a.ID); len(ev) != 0 {
		h.t.Errorf("outcome events %v, want none", ev)
	}
}

func TestSignatureRequired(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	a := h.createAttempt(newTo())
	a, _ = h.st.Claim(context.Background(), a.ID, "w", time.Minute)
	q := refQuery(a.ID, a.Fence)
	sid := callSIDFor(1)
	form := statusForm(sid, "completed", 3)
	token := h.sim.AuthToken()

	cases := []struct {
		name string
		do   func() *http.Response
		code int
	}{
		{"missing signature", func() *http.Response { return h.post(callurls.StatusPath, q, form, "") }, 403},
		{"wrong token", func() *http.Response {
			return h.post(callurls.StatusPath, q, form, "forgedtoken0000000000000000000000")
		}, 403},
		{"signature of other params", func() *http.Response {
			return h.postSig(callurls.StatusPath, q, form, twiliosim.Sign(token, publicBase+callurls.StatusPath+"?"+q, statusForm(sid, "ringing", 1)))
		}, 403},
		{"signature replayed on another attempt", func() *http.Response {
			other := refQuery(testservices.UUID()+"-1", 1)
			return h.postSig(callurls.StatusPath, other, form, twiliosim.Sign(token, publicBase+callurls.StatusPath+"?"+q, form))
		}, 403},
		{"signature replayed on another endpoint", func() *http.Response {
			return h.postSig(callurls.GatherPath, q, form, twiliosim.Sign(token, publicBase+callurls.StatusPath+"?"+q, form))
		}, 403},
		{"signature over the internal URL", func() *http.Response {
			return h.postSig(callurls.StatusPath, q, form, twiliosim.Sign(token, h.ts.URL+callurls.StatusPath+"?"+q, form))
		}, 403},
		{"forwarded host not trusted", func() *http.Response {
			req := h.request(callurls.StatusPath, q, form)
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Forwarded-Host", "evil.example")
			req.Header.Set("X-Twilio-Signature", twiliosim.Sign(token, "https://evil.example"+callurls.StatusPath+"?"+q, form))
			return h.do(req)
		}, 403},
	}
	for _, c := range cases {
		if resp := c.do(); resp.StatusCode != c.code {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.code)
		}
	}
	h.untouched(a)
	if got := testCounter(t, h, "delauto_callbacks_rejected_total", "reason", "signature_invalid"); got != float64(len(cases)-1) {
		t.Errorf("signature_invalid counted %v times, want %d", got, len(cases)-1)
	}
	if got := testCounter(t, h, "delauto_callbacks_rejected_total", "reason", "signature_missing"); got != 1 {
		t.Errorf("signature_missing counted %v times, want 1", got)
	}

	// The genuine request goes through; replaying it byte for byte changes nothing more.
	if resp := h.post(callurls.StatusPath, q, form, token); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("signed status callback: %d", resp.StatusCode)
	}
	h.run()
	b := h.waitAttempt(a.ID, "completed", func(a *store.Attempt) bool { return a.State == store.StateCompleted })
	for range 3 {
		if resp := h.post(callurls.StatusPath, q, form, token); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("replayed status callback: %d", resp.StatusCode)
		}
	}
	h.settle()
	c, _ := h.st.Get(context.Background(), a.ID)
	if !c.UpdatedAt.Equal(b.UpdatedAt) || c.LastSeq != 3 || c.DurationSec != 12 {
		t.Errorf("replays changed the attempt: %+v -> %+v", b, c)
	}
}

func TestTrustedForwardedHeaders(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true, edit: func(c *Config) { c.TrustForwarded = true }})
	a := h.createAttempt(newTo())
	q := refQuery(a.ID, 1)
	form := statusForm(callSIDFor(2), "ringing", 1)
	req := h.request(callurls.StatusPath, q, form)
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "other-name.example.test, proxy.internal")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign(h.sim.AuthToken(), "https://other-name.example.test"+callurls.StatusPath+"?"+q, form))
	if resp := h.do(req); resp.StatusCode != http.StatusNoContent {
		t.Errorf("signature over the forwarded URL with TrustForwarded: %d, want 204", resp.StatusCode)
	}
	// The configured public URL still works.
	if resp := h.post(callurls.StatusPath, q, form, h.sim.AuthToken()); resp.StatusCode != http.StatusNoContent {
		t.Errorf("signature over the public URL: %d", resp.StatusCode)
	}
}

func TestPublicURLPathPrefix(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true, edit: func(c *Config) { c.PublicURL = "https://gw.example.test/delauto/" }})
	a := h.createAttempt(newTo())
	q := refQuery(a.ID, 1)
	form := statusForm(callSIDFor(3), "ringing", 1)
	sig := twiliosim.Sign(h.sim.AuthToken(), "https://gw.example.test/delauto"+callurls.StatusPath+"?"+q, form)
	// Behind a proxy that keeps the prefix, and one that strips it.
	for _, path := range []string{"/delauto" + callurls.StatusPath, callurls.StatusPath} {
		if resp := h.postSig(path, q, form, sig); resp.StatusCode != http.StatusNoContent {
			t.Errorf("%s: %d, want 204", path, resp.StatusCode)
		}
	}
}

func TestBadRequestsTouchNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	a := h.createAttempt(newTo())
	a, _ = h.st.Claim(context.Background(), a.ID, "w", time.Minute)
	q := refQuery(a.ID, a.Fence)
	token := h.sim.AuthToken()
	sid := callSIDFor(4)

	get, _ := http.NewRequest(http.MethodGet, h.ts.URL+callurls.StatusPath+"?"+q, nil)
	get.Header.Set("X-Twilio-Signature", twiliosim.Sign(token, publicBase+callurls.StatusPath+"?"+q, nil))
	if resp := h.do(get); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %d Allow %q, want 405 POST", resp.StatusCode, resp.Header.Get("Allow"))
	}

	big := statusForm(sid, "completed", 3)
	big.Set("Padding", strings.Repeat("x", 70<<10))
	if resp := h.post(callurls.StatusPath, q, big, token); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("70 KiB body: %d, want 413", resp.StatusCode)
	}
	// Without a Content-Length (chunked), the limit still holds.
	req := h.request(callurls.StatusPath, q, big)
	req.ContentLength = -1
	req.Body = io.NopCloser(strings.NewReader(big.Encode()))
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign(token, publicBase+callurls.StatusPath+"?"+q, big))
	if resp := h.do(req); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked 70 KiB body: %d, want 413", resp.StatusCode)
	}

	raw := h.request(callurls.StatusPath, q, nil)
	raw.Body = io.NopCloser(strings.NewReader("CallSid=%zz&CallStatus=completed"))
	raw.ContentLength = -1
	if resp := h.do(raw); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("undecodable form: %d, want 400", resp.StatusCode)
	}

	js := h.request(callurls.StatusPath, q, statusForm(sid, "completed", 3))
	js.Header.Set("Content-Type", "application/json")
	if resp := h.do(js); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("JSON body: %d, want 415", resp.StatusCode)
	}

	for name, query := range map[string]string{
		"no attempt":        "fence=1",
		"malformed attempt": refQuery("not-an-attempt'$where", 1),
		"no fence":          url.Values{callurls.ParamAttempt: {a.ID}}.Encode(),
		"zero fence":        refQuery(a.ID, 0),
	} {
		if resp := h.post(callurls.StatusPath, query, statusForm(sid, "completed", 3), token); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s (signed): %d, want 400", name, resp.StatusCode)
		}
	}
	for name, f := range map[string]url.Values{
		"unknown status": statusForm(sid, "exploded", 3),
		"no sequence":    func() url.Values { f := statusForm(sid, "completed", 3); f.Del("SequenceNumber"); return f }(),
		"bad sequence":   func() url.Values { f := statusForm(sid, "completed", 3); f.Set("SequenceNumber", "-4"); return f }(),
		"bad call SID":   statusForm("CA123", "completed", 3),
		"bad duration":   func() url.Values { f := statusForm(sid, "completed", 3); f.Set("CallDuration", "lots"); return f }(),
		"bad timestamp":  func() url.Values { f := statusForm(sid, "completed", 3); f.Set("Timestamp", "yesterday"); return f }(),
	} {
		if resp := h.post(callurls.StatusPath, q, f, token); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, resp.StatusCode)
		}
	}
	for name, f := range map[string]url.Values{
		"gather digits":      twimlForm(sid, map[string]string{"Digits": "1; DROP"}),
		"recording sid":      twimlForm(sid, map[string]string{"RecordingSid": "RE1", "RecordingUrl": "https://x.test/r"}),
		"recording url":      twimlForm(sid, map[string]string{"RecordingSid": "RE" + strings.Repeat("a", 32), "RecordingUrl": "javascript:alert(1)"}),
		"transcription stat": twimlForm(sid, map[string]string{"RecordingSid": "RE" + strings.Repeat("a", 32), "TranscriptionStatus": "maybe"}),
		"amd verdict":        twimlForm(sid, map[string]string{"AnsweredBy": "robot"}),
	} {
		path := map[string]string{"gather digits": callurls.GatherPath, "recording sid": callurls.RecordPath, "recording url": callurls.RecordPath,
			"transcription stat": callurls.TranscriptionPath, "amd verdict": callurls.AMDPath}[name]
		if resp := h.post(path, q, f, token); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, resp.StatusCode)
		}
	}
	if resp := h.post("/twilio/elsewhere", q, statusForm(sid, "completed", 3), token); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path: %d, want 404", resp.StatusCode)
	}
	h.untouched(a)
}

func TestUnknownAttempt(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	id := testservices.UUID() + "-1"
	q := refQuery(id, 1)
	token := h.sim.AuthToken()
	if resp := h.post(callurls.StatusPath, q, statusForm(callSIDFor(5), "completed", 3), token); resp.StatusCode != http.StatusNotFound {
		t.Errorf("status for an unknown attempt: %d, want 404", resp.StatusCode)
	}
	x := h.postTwiML(callurls.VoicePath, q, twimlForm(callSIDFor(5), nil))
	if !strings.Contains(x, "<Hangup/>") || strings.Contains(x, "<Say") || strings.Contains(x, "<Gather") {
		t.Errorf("voice for an unknown attempt: %s, want a bare hang-up", x)
	}
	if n, _ := h.rdb.XLen(context.Background(), JournalKey).Result(); n != 0 {
		t.Errorf("journal has %d entries for an unknown attempt", n)
	}
	if n, _ := h.rdb.Exists(context.Background(), ContextKey(id)).Result(); n != 0 {
		t.Error("an unknown attempt was cached")
	}
}

func TestDuplicatedAndReorderedCallbacks(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a := h.createAttempt(newTo())
	ctx := context.Background()
	a, _ = h.st.Claim(ctx, a.ID, "w", time.Minute)
	sid := callSIDFor(6)
	if _, err := h.st.MarkDialed(ctx, a.ID, a.Fence, sid, fromNumber); err != nil {
		t.Fatal(err)
	}
	q := refQuery(a.ID, a.Fence)
	token := h.sim.AuthToken()
	send := func(status string, seq int) {
		t.Helper()
		if resp := h.post(callurls.StatusPath, q, statusForm(sid, status, seq), token); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%s/%d: %d", status, seq, resp.StatusCode)
		}
	}
	// Final first, then the earlier ones, late; some twice.
	send("completed", 3)
	h.settle()
	done := h.waitAttempt(a.ID, "completed", func(a *store.Attempt) bool { return a.State == store.StateCompleted })
	send("ringing", 1)
	send("in-progress", 2)
	send("completed", 3)
	send("initiated", 0)
	send("ringing", 1)
	h.settle()
	b, _ := h.st.Get(ctx, a.ID)
	if b.State != store.StateCompleted || b.Result != v1.CallCompleted || b.LastSeq != 3 || !b.UpdatedAt.Equal(done.UpdatedAt) {
		t.Errorf("late callbacks moved the attempt: %s/%s lastSeq %d updated %v -> %v", b.State, b.Result, b.LastSeq, done.UpdatedAt, b.UpdatedAt)
	}
	// The final status was published (at least once) after it was stored.
	if ev := h.outcomes(a.ID); len(ev) == 0 || ev[0] != "completed" {
		t.Errorf("outcome events %v", ev)
	}

}

func TestCallbacksOfOneBatchCoalesce(t *testing.T) {
	// In one batch (drainer stopped), the callbacks of a call coalesce into
	// one write of the last.
	ctx := context.Background()
	sid := callSIDFor(6)
	token := twiliosim.DefaultAuthToken
	h2 := newHarness(t, harnessOpts{noRun: true})
	c := h2.createAttempt(newTo())
	c, _ = h2.st.Claim(ctx, c.ID, "w", time.Minute)
	q2 := refQuery(c.ID, c.Fence)
	for _, st := range []struct {
		s string
		n int
	}{{"ringing", 1}, {"initiated", 0}, {"completed", 3}, {"in-progress", 2}, {"completed", 3}} {
		if resp := h2.post(callurls.StatusPath, q2, statusForm(sid, st.s, st.n), token); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%s: %d", st.s, resp.StatusCode)
		}
	}
	h2.run()
	h2.settle()
	d, _ := h2.st.Get(ctx, c.ID)
	if d.State != store.StateCompleted || d.LastSeq != 3 || d.CallSID != sid || d.DurationSec != 12 {
		t.Errorf("coalesced batch: %+v", d)
	}
	if got := testCounter(t, h2, "delauto_callbacks_journal_coalesced_total", "", ""); got != 4 {
		t.Errorf("coalesced %v callbacks, want 4 of 5", got)
	}
}

func TestRedisDownWritesThrough(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	a := h.createAttempt(newTo())
	ctx := context.Background()
	a, _ = h.st.Claim(ctx, a.ID, "w", time.Minute)
	if err := h.srv.Prime(ctx, a); err != nil {
		t.Fatal(err)
	}
	env.Redis.Kill()
	t.Cleanup(func() {
		if err := env.Redis.Restart(); err != nil {
			t.Errorf("restart redis: %v", err)
		}
	})
	q := refQuery(a.ID, a.Fence)
	if resp := h.post(callurls.StatusPath, q, statusForm(callSIDFor(8), "completed", 3), h.sim.AuthToken()); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status with Redis down: %d, want 204 (written to MongoDB directly)", resp.StatusCode)
	}
	b, _ := h.st.Get(ctx, a.ID)
	if b.State != store.StateCompleted || b.LastSeq != 3 {
		t.Errorf("attempt %s lastSeq %d, want completed before the answer", b.State, b.LastSeq)
	}
}

// callWithMongoDown gives a harness whose journal writer is not running
// yet, with a claimed attempt of a call under way whose context is cached,
// and a call log the server cannot reach (its client is closed); set
// h.srv.cfg.Store = h.st to bring MongoDB back.
func callWithMongoDown(t *testing.T) (*harness, *store.Attempt) {
	t.Helper()
	h := newHarness(t, harnessOpts{noRun: true, edit: func(c *Config) { c.WriteTimeout = 500 * time.Millisecond }})
	a := h.createAttempt(newTo())
	ctx := context.Background()
	a, _ = h.st.Claim(ctx, a.ID, "w", time.Minute)
	if err := h.srv.Prime(ctx, a); err != nil {
		t.Fatal(err)
	}
	broken, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: h.db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_ = broken.Close(ctx)
	h.srv.cfg.Store = broken
	return h, a
}

func TestMongoDownJournalsAnswers(t *testing.T) {
	h, a := callWithMongoDown(t)
	ctx := context.Background()
	q := refQuery(a.ID, a.Fence)
	x := h.postTwiML(callurls.GatherPath, q, twimlForm(callSIDFor(9), map[string]string{"Digits": "2"}))
	if !strings.Contains(x, "driver will contact you") {
		t.Errorf("gather with MongoDB down: %s", x)
	}
	if n, _ := h.rdb.XLen(ctx, JournalKey).Result(); n != 1 {
		t.Fatalf("journal has %d entries, want the answer", n)
	}
	// MongoDB is back: the drainer writes the answer and the relay follows.
	h.srv.cfg.Store = h.st
	h.run()
	h.settle()
	b := h.waitAttempt(a.ID, "answered", func(a *store.Attempt) bool { return a.Response != nil })
	if b.Response.Choice != v1.ChoiceReschedule {
		t.Errorf("response %+v", b.Response)
	}
	waitSMS(t, h)
}

// An opt-out taken while MongoDB is down goes to the journal in Redis. If
// Redis then restarts empty before MongoDB is back, the journal has lost it;
// the worker that took it still writes it once MongoDB answers, so the
// number is not called again.
func TestOptOutSurvivesRedisLosingTheJournal(t *testing.T) {
	h, a := callWithMongoDown(t)
	ctx := context.Background()
	x := h.postTwiML(callurls.GatherPath, refQuery(a.ID, a.Fence), twimlForm(callSIDFor(10), map[string]string{"Digits": "9"}))
	if strings.Contains(x, "<Redirect") || strings.Contains(strings.ToLower(x), "error") {
		t.Fatalf("opt-out with MongoDB down: %s", x)
	}
	if n, _ := h.rdb.XLen(ctx, JournalKey).Result(); n != 2 {
		t.Fatalf("journal has %d entries, want the opt-out and the answer", n)
	}
	// Redis restarts empty: the journal is gone. Then MongoDB is back.
	if err := h.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	h.srv.cfg.Store = h.st
	h.run()
	waitOptedOut(t, h, a)
}

// An opt-out in the journal is not in MongoDB yet, where a claim looks for
// it: it is marked pending in Redis, which a worker asks before it dials,
// until the journal writer has written it. make chaos (seed 89939) found
// three numbers called 11 s after they opted out during a PostgreSQL stop,
// dialed before the journal writer had written their opt-outs.
func TestJournaledOptOutIsPendingUntilWritten(t *testing.T) {
	h, a := callWithMongoDown(t)
	ctx := context.Background()
	h.postTwiML(callurls.GatherPath, refQuery(a.ID, a.Fence), twimlForm(callSIDFor(11), map[string]string{"Digits": "9"}))
	pending := func() bool {
		t.Helper()
		p, err := queue.IsOptOutPending(ctx, h.rdb, a.Delivery.Namespace, a.To)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if !pending() {
		t.Fatal("an opt-out waiting in the journal is not marked pending: a worker would dial the number")
	}
	if other, err := queue.IsOptOutPending(ctx, h.rdb, a.Delivery.Namespace, "+14155550100"); err != nil || other {
		t.Fatalf("another number is pending (%v, %v)", other, err)
	}
	h.srv.cfg.Store = h.st
	h.run()
	waitOptedOut(t, h, a)
	for deadline := time.Now().Add(10 * time.Second); pending(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pending mark stays after MongoDB has the opt-out")
		}
	}
}

// Opt-outs given while both Redis and MongoDB are down (a PostgreSQL stop
// and a Redis restart at once): the calls' context cannot be read and the
// journal cannot take the writes. The answers are still taken, with the
// number each signed request names, acknowledged in the campaign's wording,
// and written once MongoDB answers, even while Redis is still down (a
// write whose outcome event cannot be published does not hold back the
// others); the numbers are never called again. The chaos run found them
// answered 503 and lost (seed 80656: four numbers called 11 to 26 s after
// they opted out).
func TestOptOutTakenWhileRedisAndMongoAreDown(t *testing.T) {
	u, err := url.Parse(env.Redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := testservices.StartProxy(t, u.Host)
	h := newHarness(t, harnessOpts{noRun: true, edit: func(c *Config) {
		c.WriteTimeout = 500 * time.Millisecond
		opts, err := redis.ParseURL(proxy.URL(t, env.Redis.URL()))
		if err != nil {
			t.Fatal(err)
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.MaxRetries = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond, -1
		rdb := redis.NewClient(opts)
		t.Cleanup(func() { rdb.Close() })
		c.Redis = rdb
	}})
	ctx := context.Background()
	var calls []*store.Attempt
	for range 2 {
		a := h.createAttempt(newTo())
		a, _ = h.st.Claim(ctx, a.ID, "w", time.Minute)
		calls = append(calls, a)
	}
	broken, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: h.db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_ = broken.Close(ctx)
	h.srv.cfg.Store = broken
	proxy.Down()

	for i, a := range calls {
		x := h.postTwiML(callurls.GatherPath, refQuery(a.ID, a.Fence), twimlForm(callSIDFor(11+i), map[string]string{"Digits": "9", "To": a.To}))
		if !strings.Contains(x, "<Hangup") || strings.Contains(strings.ToLower(x), "error") {
			t.Fatalf("opt-out with Redis and MongoDB down: %s", x)
		}
	}
	// MongoDB is back (Redis is not): the held writes go in.
	h.srv.cfg.Store = h.st
	h.run()
	for _, a := range calls {
		waitOptedOut(t, h, a)
	}
}

// waitOptedOut waits until attempt a has the opt-out as its answer and its
// number is on the namespace's opt-out list.
func waitOptedOut(t *testing.T, h *harness, a *store.Attempt) {
	t.Helper()
	h.waitAttempt(a.ID, "answered with an opt-out", func(b *store.Attempt) bool {
		return b.Response != nil && b.Response.Choice == v1.ChoiceOptOut
	})
	deadline := time.Now().Add(time.Minute)
	for {
		opted, err := h.st.IsOptedOut(context.Background(), "shop", a.To)
		if err == nil && opted {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the number is not in the opt-outs (err %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A held write the journal does not have is never dropped to make room: a
// full hold refuses another (the webhook answers 503, Twilio's caller hears
// the error rather than an acknowledgment of a write that is then lost), and
// makes room by leaving a journaled write to the journal. Once the writer
// has stopped, nothing more is held.
func TestHeldWritesTheJournalDoesNotHaveAreNeverDropped(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	e := func(i int) entry {
		return entry{Kind: kindOptOut, Attempt: fmt.Sprintf("a%d-1", i), Body: entryBody{Namespace: "shop", Number: "+14155550123"}}
	}
	if !h.srv.hold(e(0), true) {
		t.Fatal("a journaled write was not held")
	}
	for i := 1; i < MaxHeldWrites; i++ {
		if !h.srv.hold(e(i), false) {
			t.Fatalf("write %d not held below the bound", i)
		}
	}
	// Full: the journaled one makes room; then nothing can.
	if !h.srv.hold(e(MaxHeldWrites), false) {
		t.Fatal("a full hold did not leave its journaled write to the journal to make room")
	}
	if h.srv.hold(e(MaxHeldWrites+1), false) {
		t.Fatal("a full hold of writes the journal does not have dropped one to hold another")
	}
	next, _ := h.srv.held.next()
	if next.Attempt != "a1-1" {
		t.Fatalf("oldest held write is %s, want a1-1 (a0-1, journaled, left to the journal)", next.Attempt)
	}
	h.srv.held.stop()
	if h.srv.hold(e(0), false) {
		t.Fatal("a write was held after the writer stopped")
	}
}
