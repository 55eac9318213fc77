package twiliosim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/delauto/delauto/internal/phone"
)

// DefaultAccountSID and DefaultAuthToken are the credentials of a simulator
// built without any.
const (
	DefaultAccountSID = "AC00000000000000000000000000000001"
	DefaultAuthToken  = "simauthtoken0000000000000000000a"
)

// Options configure a simulator. The zero value works: default credentials,
// any valid From number accepted, no CPS limit, real time, everyone presses 1.
type Options struct {
	// AccountSID and AuthToken are the only credentials accepted (Basic auth)
	// and the key that signs every webhook.
	AccountSID string
	AuthToken  string
	// Numbers are the account's phone numbers, the only accepted From values
	// (others get 21210). Empty accepts any valid E.164 From.
	Numbers []string
	// CPS is the account's calls-per-second limit: calls created faster are
	// queued and start later, one every 1/CPS seconds (real time). 0 means no
	// limit (real Twilio accounts start at 1).
	CPS float64

	// Scenarios maps exact destination numbers to behaviours.
	Scenarios map[string]Scenario
	// Suffixes maps number suffixes to behaviours; the longest match wins.
	Suffixes map[string]Scenario
	// Route, when set, is asked before Suffixes; n counts earlier calls to
	// the same number. Returning false falls through.
	Route func(to string, n int) (Scenario, bool)
	// Mix is the weighted default for numbers no rule matched; empty means
	// everyone presses 1. The pick is seeded by Seed, the number and n.
	Mix []Weighted
	// Seed makes random choices (mix picks, fault rolls, SIDs) replayable.
	Seed int64

	// TimeScale multiplies every simulated duration (ring, speech, gather
	// timeouts, AMD, callback delays): 0.01 runs a one-minute call in 0.6 s.
	// 0 means 1 (real time).
	TimeScale float64
	// Instant makes every simulated duration zero (answer at once, no talk
	// time): for load runs.
	Instant bool
	// Lean keeps memory flat for long load runs: create records keep no
	// request body, callback records no parameters, and REST requests are
	// only counted. Attempt counts, statuses and per-second starts are kept.
	Lean bool

	// Faults are the random faults in force at start (see SetFaults).
	Faults Faults
	// CallbackRetries is how many times a failed callback (connection error
	// or 5xx) is retried; 0 means 3, negative means none.
	CallbackRetries int
	// CallbackBackoff is the first retry delay, doubled each time (simulated
	// time; default 1 s).
	CallbackBackoff time.Duration
	// WebhookTimeout bounds each webhook request (real time; default 15 s,
	// Twilio's).
	WebhookTimeout time.Duration
	// HTTPClient sends webhooks; default a client with WebhookTimeout.
	HTTPClient *http.Client
	// WebhookRoutes sends webhooks whose URL starts with a key to the value
	// instead (longest key wins), like an ingress in front of the app: the
	// signature still covers the URL as given, and the Host header keeps its
	// host. With it, a campaign's public https callback URL can be served by
	// a local http server. Example: {"https://calls.example.com": "http://127.0.0.1:8080"}.
	WebhookRoutes map[string]string

	// Listener, when set, is served instead of a new httptest server.
	Listener net.Listener
	// Logger receives structured logs; default discards them.
	Logger *slog.Logger
}

// Sim is a running Twilio Voice simulator. Its methods are safe for
// concurrent use.
type Sim struct {
	opts    Options
	token   atomic.Pointer[string] // the auth token in force (RotateAuthToken)
	scale   float64
	log     *slog.Logger
	hc      *http.Client
	handler http.Handler
	url     string
	ts      *httptest.Server
	hs      *http.Server

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	inflight atomic.Int64
	pending  atomic.Int64 // live calls and undelivered callbacks

	mu            sync.Mutex
	rng           *rand.Rand
	sidSeq        uint64
	sidBase       uint64
	numbers       map[string]bool
	scenarioByNum map[string]Scenario
	perNumber     map[string]int
	faults        Faults
	queued        map[Endpoint][]FaultKind
	calls         map[string]*call
	callOrder     []*call
	nextSlot      time.Time
	starts        map[int64]int
	creates       []CreateRecord
	callbacks     []CallbackRecord
	messages      []Message
	recordings    map[string]*Recording
	notifications []Notification
	requests      []RequestRecord
	faultCounts   map[FaultKind]int
	webhookRoutes map[string]string
}

// New starts a simulator: on Options.Listener when given, else on a new
// local httptest server. Close stops it.
func New(opts Options) (*Sim, error) {
	if opts.AccountSID == "" {
		opts.AccountSID = DefaultAccountSID
	}
	if opts.AuthToken == "" {
		opts.AuthToken = DefaultAuthToken
	}
	if !strings.HasPrefix(opts.AccountSID, "AC") || len(opts.AccountSID) != 34 {
		return nil, fmt.Errorf("account SID %q is not AC followed by 32 characters", opts.AccountSID)
	}
	if err := opts.Faults.Validate(); err != nil {
		return nil, err
	}
	if opts.CPS < 0 || opts.TimeScale < 0 {
		return nil, errors.New("CPS and TimeScale must not be negative")
	}
	for _, n := range opts.Numbers {
		if err := phone.Validate(n); err != nil {
			return nil, fmt.Errorf("account number: %w", err)
		}
	}
	for from, to := range opts.WebhookRoutes {
		if !validWebhookURL(from) || !validWebhookURL(to) {
			return nil, fmt.Errorf("webhook route %q => %q: both must be absolute http(s) URLs", from, to)
		}
	}
	for _, w := range opts.Mix {
		if w.Weight < 0 {
			return nil, fmt.Errorf("mix weight of %q is negative", w.Scenario.Name)
		}
	}
	if opts.WebhookTimeout <= 0 {
		opts.WebhookTimeout = 15 * time.Second
	}
	if opts.CallbackRetries == 0 {
		opts.CallbackRetries = 3
	}
	if opts.CallbackBackoff <= 0 {
		opts.CallbackBackoff = time.Second
	}
	if opts.Faults.LateCallbackDelay <= 0 {
		opts.Faults.LateCallbackDelay = 30 * time.Second
	}
	s := &Sim{
		opts:          opts,
		scale:         opts.TimeScale,
		log:           opts.Logger,
		hc:            opts.HTTPClient,
		rng:           rand.New(rand.NewSource(opts.Seed)),
		numbers:       map[string]bool{},
		scenarioByNum: map[string]Scenario{},
		perNumber:     map[string]int{},
		faults:        opts.Faults,
		queued:        map[Endpoint][]FaultKind{},
		calls:         map[string]*call{},
		starts:        map[int64]int{},
		recordings:    map[string]*Recording{},
		faultCounts:   map[FaultKind]int{},
	}
	s.token.Store(&opts.AuthToken)
	if s.scale == 0 {
		s.scale = 1
	}
	if opts.Instant {
		s.scale = 0
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 256 // load runs send many webhooks to one app
		s.hc = &http.Client{Timeout: opts.WebhookTimeout, Transport: tr}
	}
	s.sidBase = s.rng.Uint64()
	for _, n := range opts.Numbers {
		s.numbers[n] = true
	}
	for k, v := range opts.Scenarios {
		s.scenarioByNum[k] = v
	}
	s.webhookRoutes = map[string]string{}
	for k, v := range opts.WebhookRoutes {
		s.webhookRoutes[k] = v
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.handler = s.routes()
	if opts.Listener != nil {
		s.hs = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
		s.url = "http://" + opts.Listener.Addr().String()
		go func() {
			if err := s.hs.Serve(opts.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("simulator server stopped", "err", err)
			}
		}()
	} else {
		s.ts = httptest.NewServer(s.handler)
		s.url = s.ts.URL
	}
	return s, nil
}

// URL is the simulator's base URL (scheme and host), to give to
// twilioclient.HTTPClient.
func (s *Sim) URL() string { return s.url }

// AccountSID is the account the simulator accepts.
func (s *Sim) AccountSID() string { return s.opts.AccountSID }

// AuthToken is the token the simulator accepts and signs webhooks with.
func (s *Sim) AuthToken() string { return *s.token.Load() }

// RotateAuthToken makes token the account's auth token, as promoting a
// secondary token does at Twilio: from now on only it authenticates REST
// requests, and webhooks are signed with it.
func (s *Sim) RotateAuthToken(token string) { s.token.Store(&token) }

// Handler is the simulator's HTTP handler, for mounting it elsewhere.
func (s *Sim) Handler() http.Handler { return s.handler }

// Close stops every call and callback, unblocks hanging responses and shuts
// the server down. Calling it again does nothing.
func (s *Sim) Close() {
	s.closeOnce.Do(s.close)
}

func (s *Sim) close() {
	s.cancel()
	if s.ts != nil {
		s.ts.CloseClientConnections()
		s.ts.Close()
	}
	if s.hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.hs.Shutdown(ctx)
		cancel()
	}
	s.wg.Wait()
}

// SetScenario makes every later call to the number behave as sc.
func (s *Sim) SetScenario(to string, sc Scenario) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scenarioByNum[to] = sc
}

// SetFaults replaces the random faults in force.
func (s *Sim) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if f.LateCallbackDelay <= 0 {
		f.LateCallbackDelay = 30 * time.Second
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
	return nil
}

// QueueFaults makes the next requests to ep fail with kinds, one request per
// kind, in order (before any random fault). EndpointAny matches any
// request; AfterCreate kinds only match create-call requests.
func (s *Sim) QueueFaults(ep Endpoint, kinds ...FaultKind) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queued[ep] = append(s.queued[ep], kinds...)
}

// SetWebhookRoute adds or replaces a webhook route (see
// Options.WebhookRoutes).
func (s *Sim) SetWebhookRoute(from, to string) error {
	if !validWebhookURL(from) || !validWebhookURL(to) {
		return fmt.Errorf("webhook route %q => %q: both must be absolute http(s) URLs", from, to)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.webhookRoutes[from] = to
	return nil
}

// route applies the webhook routes to a webhook URL.
func (s *Sim) route(u string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	best := ""
	for from := range s.webhookRoutes {
		rest, ok := strings.CutPrefix(u, strings.TrimSuffix(from, "/"))
		if ok && (rest == "" || rest[0] == '/' || rest[0] == '?') && len(from) > len(best) {
			best = from
		}
	}
	if best == "" {
		return u
	}
	return strings.TrimSuffix(s.webhookRoutes[best], "/") + strings.TrimPrefix(u, strings.TrimSuffix(best, "/"))
}

// scaled turns a simulated duration into real time.
func (s *Sim) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.scale)
}

// newSID makes a Twilio-style SID: a two-letter prefix and 32 hex digits.
func (s *Sim) newSID(prefix string) string {
	s.mu.Lock()
	s.sidSeq++
	n := s.sidSeq
	s.mu.Unlock()
	return fmt.Sprintf("%s%016x%016x", prefix, s.sidBase, n)
}

// chooseScenario picks the behaviour of the next call to `to`. Called with
// s.mu held.
func (s *Sim) chooseScenario(to string) Scenario {
	n := s.perNumber[to]
	s.perNumber[to] = n + 1
	if sc, ok := s.scenarioByNum[to]; ok {
		return named(sc, "custom")
	}
	if s.opts.Route != nil {
		if sc, ok := s.opts.Route(to, n); ok {
			return named(sc, "routed")
		}
	}
	best := ""
	for suf := range s.opts.Suffixes {
		if strings.HasSuffix(to, suf) && len(suf) > len(best) {
			best = suf
		}
	}
	if best != "" {
		return named(s.opts.Suffixes[best], "suffix-"+best)
	}
	if len(s.opts.Mix) > 0 {
		return pickWeighted(s.opts.Mix, s.opts.Seed, to, n)
	}
	return MustNamed("press1")
}

func named(sc Scenario, fallback string) Scenario {
	if sc.Name == "" {
		sc.Name = fallback
	}
	return sc
}

// track counts pending work (for WaitIdle) around fn, run in a goroutine.
func (s *Sim) goTracked(fn func()) {
	s.pending.Add(1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.pending.Add(-1)
		fn()
	}()
}

// WaitIdle waits until no call is live and every callback has been
// delivered (or given up), or ctx ends.
func (s *Sim) WaitIdle(ctx context.Context) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for s.pending.Load() != 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("simulator not idle (%d calls or callbacks pending): %w", s.pending.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// WaitCall waits until the call has ended and all its status callbacks have
// been delivered, and returns its final state.
func (s *Sim) WaitCall(ctx context.Context, sid string) (Call, error) {
	s.mu.Lock()
	c := s.calls[sid]
	s.mu.Unlock()
	if c == nil {
		return Call{}, fmt.Errorf("no call %s", sid)
	}
	select {
	case <-c.finished:
	case <-ctx.Done():
		return s.snapshot(c), fmt.Errorf("call %s still %s: %w", sid, s.snapshot(c).Status, ctx.Err())
	}
	return s.snapshot(c), nil
}
