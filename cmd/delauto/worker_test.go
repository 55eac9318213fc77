package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/queue"
	"github.com/delauto/delauto/workers/store"
)

func writeCampaign(t *testing.T, dir, ns string, edit func(*v1.CallCampaignSpec)) string {
	t.Helper()
	spec := v1.CallCampaignSpec{
		Schedule: v1.ScheduleSpec{CallingHours: v1.CallingHours{Start: "06:00", End: "18:00"}, DefaultTimeZone: v1.TimeZone(testservices.NoonZone())},
		Script:   v1.CallScript{CompanyName: "Parcels", TimeLimit: &metav1.Duration{Duration: time.Minute}},
		Twilio: v1.TwilioSpec{FromNumbers: []v1.PhoneNumber{"+14155550100"}, CallsPerSecond: 100,
			CallbackURL: "https://calls.example.com"},
	}
	if edit != nil {
		edit(&spec)
	}
	data, err := campaignfile.Marshal(campaignfile.Config{Namespace: ns, Name: "evening", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "campaign.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWorkerConfigErrorsAreClear(t *testing.T) {
	dir := t.TempDir()
	good := writeCampaign(t, dir, "shop", nil)
	badDir := t.TempDir()
	badCampaign := writeCampaign(t, badDir, "shop", func(s *v1.CallCampaignSpec) {
		s.Twilio.CallbackURL = "ftp://x"
		s.Schedule.DefaultTimeZone = "Mars/Olympus"
	})
	twilioDir := t.TempDir()
	_ = os.WriteFile(filepath.Join(twilioDir, "account-sid"), []byte("AC0123\n"), 0o600)
	base := []string{"--redis-url", "redis://127.0.0.1:6379", "--mongo-uri", "mongodb://127.0.0.1:27017/"}
	creds := map[string]string{"TWILIO_ACCOUNT_SID": twiliosim.DefaultAccountSID, "TWILIO_AUTH_TOKEN": twiliosim.DefaultAuthToken}
	envOf := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"nothing set", nil, nil, []string{
			"--campaign-file (env DELAUTO_CAMPAIGN_FILE) is required",
			"--shards (env DELAUTO_SHARDS) is required",
			"no Twilio credentials: mount the campaign's Secret and set --twilio-dir (env DELAUTO_TWILIO_DIR)",
			"set --redis-url (or REDIS_URL)", "set --mongo-uri (or MONGO_URI)"}},
		{"bad values", append([]string{"--campaign-file", good, "--shards", "shard-0,shard 1,shard-0", "--concurrency", "0",
			"--lease", "5s", "--twilio-timeout", "10s", "--twilio-base-url", "localhost:8089", "--callback-url", "calls.example.com",
			"--ops-addr", ":8080", "--log-level", "loud"}, base...), creds, []string{
			"--concurrency (env DELAUTO_CONCURRENCY) 0 must be between 1 and 1000",
			`--shards: queue shard "shop/evening/shard 1": shard name "shard 1" must not contain`,
			`--shards lists "shard-0" twice`,
			"lease-covers-request: lease 5s must exceed 1.5 x (Twilio timeout 10s + a tenth of the lease), at least 18s",
			"--twilio-base-url (env DELAUTO_TWILIO_BASE_URL)",
			`--callback-url (env DELAUTO_CALLBACK_URL): callback URL "calls.example.com" must be an absolute http(s) URL`,
			"--http-addr and --ops-addr are both :8080",
			`--log-level "loud"`}},
		// The timing rules that keep an attempt to one call (dialer.Timing).
		{"grace shorter than a late call", append([]string{"--campaign-file", good, "--shards", "shard-0",
			"--twilio-timeout", "4s", "--lease", "8s", "--stale-after", "1s", "--unknown-grace", "3s"}, base...), creds, []string{
			"grace: stale-after 1s + unknown grace 3s must be at least Twilio timeout 4s + clock skew 1s"}},
		{"concurrency from the environment", append([]string{"--campaign-file", good, "--shards", "shard-0"}, base...),
			map[string]string{"DELAUTO_CONCURRENCY": "many", "TWILIO_ACCOUNT_SID": twiliosim.DefaultAccountSID, "TWILIO_AUTH_TOKEN": twiliosim.DefaultAuthToken},
			[]string{`--concurrency: env DELAUTO_CONCURRENCY "many" is not a number`}},
		{"campaign mismatch and unusable campaign", append([]string{"--campaign-file", badCampaign, "--shards", "shard-0",
			"--campaign", "morning", "--campaign-namespace", "other"}, base...), creds, []string{
			`--campaign-namespace (env DELAUTO_CAMPAIGN_NAMESPACE) is "other" but the campaign file is of namespace "shop"`,
			`--campaign (env DELAUTO_CAMPAIGN) is "morning" but the campaign file is of campaign "evening"`,
			`schedule.defaultTimeZone: unknown time zone "Mars/Olympus"`,
			`callback URL "ftp://x" must be an absolute http(s) URL`}},
		{"missing campaign file", append([]string{"--campaign-file", filepath.Join(dir, "nope.json"), "--shards", "shard-0"}, base...), creds,
			[]string{"read the campaign file", "nope.json"}},
		{"credentials files", append([]string{"--campaign-file", good, "--shards", "shard-0", "--twilio-dir", twilioDir}, base...), nil, []string{
			"Twilio credentials from --twilio-dir (env DELAUTO_TWILIO_DIR)", "auth-token: no such file",
			`twilio account SID "AC0123" is not AC followed by 32 hexadecimal digits`}},
		{"bad token in the environment", append([]string{"--campaign-file", good, "--shards", "shard-0"}, base...),
			map[string]string{"TWILIO_ACCOUNT_SID": twiliosim.DefaultAccountSID, "TWILIO_AUTH_TOKEN": "s3cr3t!"},
			[]string{"twilio auth token must contain only letters and digits"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("REDIS_URL", "")
			t.Setenv("MONGO_URI", "")
			_, err := parseWorkerConfig(c.args, envOf(c.env))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("the error shows the auth token: %v", err)
			}
		})
	}
	cfg, err := parseWorkerConfig(append([]string{"--campaign-file", good, "--shards", "shard-0, shard-1"}, base...), envOf(creds))
	if err != nil {
		t.Fatalf("a good configuration: %v", err)
	}
	if cfg.Namespace != "shop" || cfg.Campaign != "evening" || len(cfg.ServedShards()) != 2 || cfg.ServedShards()[1] != (queue.Shard{Namespace: "shop", Campaign: "evening", Name: "shard-1"}) || cfg.Concurrency != 50 {
		t.Errorf("config = %+v", cfg)
	}
}

// child is a `delauto worker` process.
type child struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	ops    string
	exited chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// fixture is what the worker processes of a test share.
type fixture struct {
	t        *testing.T
	db       string
	ns       string
	shard    queue.Shard
	st       *store.Store
	q        *queue.Queue
	sim      *twiliosim.Sim
	front    string // the simulator's URL, behind a create-request watcher
	creates  chan struct{}
	campaign string
}

func newFixture(t *testing.T, edit func(*v1.CallCampaignSpec)) *fixture {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	f := &fixture{t: t, db: "cmd_" + hex.EncodeToString(b[:]), ns: "w-" + hex.EncodeToString(b[:]), creates: make(chan struct{}, 1000)}
	f.shard = queue.Shard{Namespace: f.ns, Campaign: "evening", Name: "shard-0"}
	var err error
	f.st, err = store.Open(context.Background(), store.Config{URI: env.Mongo.URI, Database: f.db,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Mongo.DropDatabase(f.db)
		_ = f.st.Close(context.Background())
	})
	rdb := env.Redis.Client()
	t.Cleanup(func() { rdb.Close() })
	f.q = queue.New(rdb, queue.Options{})
	f.sim, err = twiliosim.New(twiliosim.Options{Instant: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sim.Close)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/Calls.json") {
			select {
			case f.creates <- struct{}{}:
			default:
			}
		}
		f.sim.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	f.front = front.URL
	f.campaign = writeCampaign(t, t.TempDir(), f.ns, edit)
	return f
}

// start runs `delauto worker` as a child process.
func (f *fixture) start(name string, extra ...string) *child {
	f.t.Helper()
	ops := freeAddr(f.t)
	args := append([]string{"worker", "--name", name, "--campaign-file", f.campaign, "--shards", "shard-0",
		"--redis-url", env.Redis.URL(), "--mongo-uri", env.Mongo.URI, "--mongo-database", f.db,
		"--twilio-base-url", f.front, "--http-addr", freeAddr(f.t), "--ops-addr", ops, "--log-level", "debug"}, extra...)
	return startChild(f.t, "worker "+name, args, ops,
		"TWILIO_ACCOUNT_SID="+f.sim.AccountSID(), "TWILIO_AUTH_TOKEN="+f.sim.AuthToken(), "REDIS_URL=", "MONGO_URI=")
}

// startChild runs this binary's main with args and the extra environment
// as a child process, and waits until its ops address answers /readyz.
func startChild(t *testing.T, name string, args []string, ops string, extraEnv ...string) *child {
	t.Helper()
	c := spawnChild(t, name, args, ops, extraEnv...)
	c.waitReady(t, name, "/readyz")
	return c
}

// spawnChild runs this binary's main with args and the extra environment
// as a child process, killed when the test ends.
func spawnChild(t *testing.T, name string, args []string, ops string, extraEnv ...string) *child {
	t.Helper()
	c := &child{out: &syncBuffer{}, ops: ops, exited: make(chan error, 1)}
	c.cmd = exec.Command(os.Args[0], args...)
	c.cmd.Env = append(append(os.Environ(), childEnv+"=1"), extraEnv...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.exited
		c.exited <- nil
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(c.out.String(), 60))
		}
	})
	return c
}

// waitReady waits until the child's ops address answers path with 200.
func (c *child) waitReady(t *testing.T, name, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + c.ops + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-c.exited:
			c.exited <- err
			t.Fatalf("%s exited: %v\n%s", name, err, tail(c.out.String(), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never ready:\n%s", name, tail(c.out.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (f *fixture) create(to string) *store.Attempt {
	f.t.Helper()
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	uid := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	a, _, err := f.st.CreateAttempt(context.Background(), store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: f.ns, Name: "parcel-" + uid[:8]},
		Campaign: f.ns + "/evening", Shard: "shard-0", Number: 1, Due: time.Now(), To: to,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.q.Schedule(context.Background(), f.shard, a.ID, a.Due); err != nil {
		f.t.Fatal(err)
	}
	return a
}

func (f *fixture) waitState(id string, timeout time.Duration, state store.State) *store.Attempt {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a, err := f.st.Get(context.Background(), id)
		if err != nil {
			f.t.Fatal(err)
		}
		if a.State == state {
			return a
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("attempt %s is %s (%q), want %s", id, a.State, a.Reason, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A worker that cannot reach the call log yet answers webhooks 503 with a
// Retry-After, never 404: a request that reaches a starting worker (a
// restarted container still in the Service's endpoints) is refused as
// unavailable, not as a wrong URL, and changes nothing.
func TestStartingWorkerAnswersWebhooksUnavailable(t *testing.T) {
	f := newFixture(t, nil)
	hooks, ops := freeAddr(t), freeAddr(t)
	args := []string{"worker", "--name", "starting", "--campaign-file", f.campaign, "--shards", "shard-0",
		"--redis-url", env.Redis.URL(), "--mongo-uri", "mongodb://" + freeAddr(t) + "/?serverSelectionTimeoutMS=200&connectTimeoutMS=200",
		"--mongo-database", f.db, "--twilio-base-url", f.front, "--http-addr", hooks, "--ops-addr", ops}
	c := spawnChild(t, "worker starting", args, ops,
		"TWILIO_ACCOUNT_SID="+f.sim.AccountSID(), "TWILIO_AUTH_TOKEN="+f.sim.AuthToken(), "REDIS_URL=", "MONGO_URI=")
	c.waitReady(t, "worker starting", "/healthz")
	for _, path := range []string{callurls.StatusPath, callurls.GatherPath, "/not-a-webhook"} {
		form := url.Values{"AccountSid": {f.sim.AccountSID()}, "CallSid": {"CA0123"}, "CallStatus": {"busy"}}
		resp, err := http.Post("http://"+hooks+path+"?attempt=a1", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("POST %s to a starting worker: %d (Retry-After %q) %q, want 503 with a Retry-After",
				path, resp.StatusCode, resp.Header.Get("Retry-After"), strings.TrimSpace(string(body)))
		}
	}
	resp, err := http.Get("http://" + ops + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz of a starting worker: %d, want 503", resp.StatusCode)
	}
}

// SIGTERM while a call is being placed: the worker finishes and records it,
// and exits 0.
func TestWorkerProcessDrainsOnSIGTERM(t *testing.T) {
	f := newFixture(t, nil)
	w := f.start("w1")
	if err := f.sim.SetFaults(twiliosim.Faults{Latency: 1500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	a := f.create("+14155550123")
	select {
	case <-f.creates:
	case <-time.After(10 * time.Second):
		t.Fatal("no create request")
	}
	start := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.exited:
		w.exited <- err
		if err != nil {
			t.Fatalf("worker exited with %v, want 0:\n%s", err, tail(w.out.String(), 30))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not exit after SIGTERM")
	}
	got := f.waitState(a.ID, time.Second, store.StateDialed)
	if got.CallSID == "" || f.sim.CallsForAttempt(a.ID) != 1 {
		t.Fatalf("the call in flight: %+v, %d calls", got, f.sim.CallsForAttempt(a.ID))
	}
	out := w.out.String()
	for _, want := range []string{`"msg":"signal: draining, then exiting"`, `"msg":"worker stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(out, "+14155550123") {
		t.Error("the log shows a phone number unmasked")
	}
	t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
}

// A worker SIGKILLed while dialing: a second worker recovers every attempt,
// and each has exactly one call in the simulator's log.
func TestWorkerKilledMidDialLosesNothingAndCallsOnce(t *testing.T) {
	f := newFixture(t, func(s *v1.CallCampaignSpec) { s.Twilio.CallsPerSecond = 4 })
	timing := []string{"--twilio-timeout", "4s", "--lease", "8s", "--queue-lease", "2s", "--stale-after", "1s",
		"--reconcile-interval", "500ms", "--unknown-grace", "4s", "--sweep-interval", "1s", "--sweep-overdue", "3s", "--concurrency", "8"}
	// The first three create requests make their calls and never answer.
	f.sim.QueueFaults(twiliosim.EndpointCreateCall, twiliosim.FaultHangAfterCreate, twiliosim.FaultHangAfterCreate, twiliosim.FaultHangAfterCreate)
	victim := f.start("victim", timing...)
	var ids []string
	for i := range 12 {
		ids = append(ids, f.create(fmt.Sprintf("+141555501%02d", 10+i)).ID)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		hung := 0
		for _, c := range f.sim.Creates() {
			if c.Fault == twiliosim.FaultHangAfterCreate {
				hung++
			}
		}
		if hung == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d hanging create requests", hung)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.exited
	victim.exited <- nil
	states := map[store.State]int{}
	for _, id := range ids {
		a, _ := f.st.Get(context.Background(), id)
		states[a.State]++
	}
	t.Logf("when the worker was killed: %v, %d calls created", states, len(f.sim.Calls()))
	killed := time.Now()
	f.start("rescuer", timing...)
	for _, id := range ids {
		f.waitState(id, 60*time.Second, store.StateDialed)
	}
	t.Logf("all %d attempts dialed %s after the kill", len(ids), time.Since(killed).Round(100*time.Millisecond))
	for _, id := range ids {
		if n := f.sim.CallsForAttempt(id); n != 1 {
			t.Errorf("attempt %s: %d calls in the simulator, want 1", id, n)
		}
		a, _ := f.st.Get(context.Background(), id)
		var simSID string
		for _, c := range f.sim.Calls() {
			if c.AttemptID == id {
				simSID = c.Sid
			}
		}
		if a.CallSID != simSID {
			t.Errorf("attempt %s recorded call %s, the simulator's is %s", id, a.CallSID, simSID)
		}
	}
	if d := f.sim.DuplicateAttempts(); len(d) != 0 {
		t.Errorf("attempts with more than one call: %v", d)
	}
}

// A rotated auth token in the mounted Secret takes effect without a restart:
// calls are placed with the new token, and webhooks signed with the old one
// (sent before the rotation) and with the new one are both accepted.
func TestWorkerFollowsARotatedAuthToken(t *testing.T) {
	f := newFixture(t, nil)
	dir := t.TempDir()
	write := func(token string) {
		for name, v := range map[string]string{"account-sid": f.sim.AccountSID(), "auth-token": token} {
			tmp := filepath.Join(dir, "."+name)
			if err := os.WriteFile(tmp, []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := f.sim.AuthToken()
	write(old)
	httpAddr := freeAddr(t)
	w := f.start("w1", "--twilio-dir", dir, "--credentials-poll", "100ms", "--token-overlap", "1h", "--http-addr", httpAddr)
	a := f.create("+14155550123")
	f.waitState(a.ID, 30*time.Second, store.StateDialed)

	const fresh = "0123456789abcdef0123456789abcdef"
	f.sim.RotateAuthToken(fresh)
	write(fresh)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(w.out.String(), "Twilio auth token changed") {
		if time.Now().After(deadline) {
			t.Fatalf("the worker never read the new token:\n%s", tail(w.out.String(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	b := f.create("+14155550124")
	f.waitState(b.ID, 30*time.Second, store.StateDialed)

	status := func(token string) int {
		u, err := callurls.For("https://calls.example.com", callurls.StatusPath, a.ID, 1)
		if err != nil {
			t.Fatal(err)
		}
		form := url.Values{"CallSid": {"CA" + strings.Repeat("0", 32)}, "CallStatus": {"ringing"}, "SequenceNumber": {"1"}}
		req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+strings.TrimPrefix(u, "https://calls.example.com"), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", twiliosim.Sign(token, u, form))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for token, want := range map[string]int{old: http.StatusOK, fresh: http.StatusOK, strings.Repeat("9", 32): http.StatusForbidden} {
		if got := status(token); (got < 300) != (want < 300) {
			t.Errorf("status callback signed with %s...: %d, want %d", token[:4], got, want)
		}
	}
}
