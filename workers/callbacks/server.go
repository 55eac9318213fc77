package callbacks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	"golang.org/x/sync/singleflight"

	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/defaults"
	"github.com/delauto/delauto/workers/relay"
	"github.com/delauto/delauto/workers/store"
)

// Config configures the callback server.
type Config struct {
	// Campaign is the campaign this worker serves (required): script,
	// callback URL, relay settings.
	Campaign campaignfile.Source
	// Store is the call log (required).
	Store *store.Store
	// Redis holds the call context cache, the write-behind journal, the
	// relay queue and the outcome stream (required).
	Redis redis.UniversalClient
	// AuthTokens are the Twilio auth tokens whose signatures are accepted
	// (required unless Tokens is set): the account's token, and during a
	// rotation the other one.
	AuthTokens []string
	// Tokens, when set, returns the accepted tokens at each request instead
	// of AuthTokens, so a rotated token takes effect without a restart
	// (twilioclient.Credentials.Tokens).
	Tokens func() []string
	// Twilio is the REST client for redirecting calls answered by a machine
	// (UpdateCall) and sending the relay SMS. Without it machines are not
	// redirected (async AMD) and SMS relays fail (and are retried).
	Twilio *twilio.RestClient

	// PublicURL is the base URL Twilio calls (scheme, host and any path
	// prefix); signatures are checked against it. Default: the campaign's
	// twilio.callbackURL.
	PublicURL string
	// TrustForwarded makes the server also accept signatures over the URL
	// named by X-Forwarded-Proto and X-Forwarded-Host (first values). Set it
	// only behind a proxy that sets those headers itself.
	TrustForwarded bool
	// MaxBodyBytes bounds a request body; larger requests get 413.
	// Default 64 KiB (Twilio's forms are a few KiB).
	MaxBodyBytes int64
	// Voice is the text-to-speech voice of <Say>, e.g. "Polly.Joanna";
	// empty is Twilio's default.
	Voice string

	// ContextTTL is how long a call context stays cached; default 2 h.
	ContextTTL time.Duration
	// WriteTimeout bounds one MongoDB write made while Twilio waits
	// (answers, recordings); after it the write goes to the journal.
	// Default 2 s: an opt-out makes two writes, each with a journal
	// fallback, well inside Twilio's 15 s.
	WriteTimeout time.Duration
	// UpdateTimeout bounds the UpdateCall request that redirects a call
	// answered by a machine; default 5 s.
	UpdateTimeout time.Duration

	// Consumer names this process in the journal's consumer group; default
	// the host name (the pod name).
	Consumer string
	// JournalBatch is how many journal entries are read at once; default 512.
	JournalBatch int
	// JournalConcurrency is how many attempts are written to MongoDB at
	// once by the journal writer. Default 8 on MongoDB; 2 where the store
	// serializes writes (FerretDB 1.x), where each write is three (lock,
	// update, unlock) and more writers mostly take CPU from the webhooks
	// when the database shares their hosts.
	JournalConcurrency int
	// JournalRetryInterval is how often this consumer's failed entries are
	// tried again; default 5 s.
	JournalRetryInterval time.Duration
	// JournalClaimIdle is how long another consumer's unacknowledged entry
	// waits before this one takes it over; default 30 s.
	JournalClaimIdle time.Duration
	// JournalKey overrides JournalKey (tests and benchmarks).
	JournalKey string

	// Notify is the queue of agent notifications an answer is put on
	// (the relay sender, run beside the server, sends them); default
	// relay.NewQueue(Redis, "").
	Notify *relay.Queue

	// Logger receives structured logs; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	defaults.Positive(&c.MaxBodyBytes, 64<<10)
	defaults.Positive(&c.ContextTTL, 2*time.Hour)
	defaults.Positive(&c.WriteTimeout, 2*time.Second)
	defaults.Positive(&c.UpdateTimeout, 5*time.Second)
	if c.Consumer == "" {
		c.Consumer, _ = os.Hostname()
		if c.Consumer == "" {
			c.Consumer = "callbacks"
		}
	}
	defaults.Positive(&c.JournalBatch, 512)
	if c.JournalConcurrency <= 0 {
		c.JournalConcurrency = 8
		if c.Store != nil && !c.Store.Features().AtomicUpdates {
			c.JournalConcurrency = 2
		}
	}
	defaults.Positive(&c.JournalRetryInterval, 5*time.Second)
	defaults.Positive(&c.JournalClaimIdle, 30*time.Second)
	defaults.Zero(&c.JournalKey, JournalKey)
	defaults.Zero(&c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Server is the Twilio callback server. It is safe for concurrent use.
type Server struct {
	cfg        Config
	log        *slog.Logger
	rdb        redis.UniversalClient
	journalKey string
	// tokens are the auth tokens whose signatures are accepted now.
	tokens    func() []string
	endpoints map[string]endpoint
	queue     *relay.Queue
	batch     *batcher
	m         *metrics
	stats     stats
	fills     singleflight.Group // call context fills in flight, by attempt and fence
	held      heldWrites         // journaled writes kept until written (held.go)
	hooks     testHooks

	base atomic.Pointer[baseURL]
	sv   atomic.Pointer[svMemo]
	// words is the campaign's wording resolved per recipient language.
	words atomic.Pointer[wordsMemo]
}

// testHooks are seams for tests; all nil in production.
type testHooks struct {
	// missed runs when a lookup did not find the call context in Redis,
	// before it joins or starts the attempt's fill.
	missed func(callurls.Ref)
	// read runs in a fill just before it reads MongoDB.
	read func(callurls.Ref)
}

// baseURL is the parsed public base URL of one campaign config.
type baseURL struct {
	from   *campaignfile.Config
	raw    string // without trailing slash
	scheme string
	path   string // path prefix, without trailing slash
}

type svMemo struct {
	from *campaignfile.Config
	v    string
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	var errs []string
	if cfg.Campaign == nil || cfg.Campaign.Current() == nil {
		errs = append(errs, "Campaign is required")
	}
	if cfg.Store == nil {
		errs = append(errs, "Store is required")
	}
	if cfg.Redis == nil {
		errs = append(errs, "Redis is required")
	}
	var tokens []string
	for _, t := range cfg.AuthTokens {
		if t != "" {
			tokens = append(tokens, t)
		}
	}
	if len(tokens) == 0 && cfg.Tokens == nil {
		errs = append(errs, "AuthTokens needs the Twilio auth token that signs webhooks")
	}
	if cfg.PublicURL != "" {
		if _, err := parseBase(cfg.PublicURL); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("callbacks: %s", strings.Join(errs, "; "))
	}
	cfg.defaults()
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "callbacks"), rdb: cfg.Redis, journalKey: cfg.JournalKey,
		batch: newBatcher(cfg.Redis, 4), held: heldWrites{wake: make(chan struct{}, 1)}}
	s.tokens = cfg.Tokens
	if s.tokens == nil {
		s.tokens = func() []string { return tokens }
	}
	s.queue = cfg.Notify
	if s.queue == nil {
		s.queue = relay.NewQueue(cfg.Redis, "")
	}
	s.m = newMetrics(s.backlogGauge)
	s.endpoints = map[string]endpoint{
		callurls.VoicePath:         {name: "voice", twiml: true, fn: s.handleVoice},
		callurls.GatherPath:        {name: "gather", twiml: true, fn: s.handleGather},
		callurls.RecordPath:        {name: "record", twiml: true, fn: s.handleRecord},
		callurls.RecordingPath:     {name: "recording", fn: s.handleRecording},
		callurls.TranscriptionPath: {name: "transcription", fn: s.handleTranscription},
		callurls.StatusPath:        {name: "status", fn: s.handleStatus},
		callurls.AMDPath:           {name: "amd", fn: s.handleAMD},
	}
	return s, nil
}

func parseBase(raw string) (*baseURL, error) {
	u, err := callurls.CheckBase(raw)
	if err != nil {
		return nil, err
	}
	return &baseURL{raw: strings.TrimRight(raw, "/"), scheme: u.Scheme, path: strings.TrimRight(u.EscapedPath(), "/")}, nil
}

// publicBase is the base URL Twilio calls for campaign c.
func (s *Server) publicBase(c *campaignfile.Config) (*baseURL, error) {
	if b := s.base.Load(); b != nil && b.from == c {
		return b, nil
	}
	raw := s.cfg.PublicURL
	if raw == "" {
		raw = c.Spec.Twilio.CallbackURL
	}
	b, err := parseBase(raw)
	if err != nil {
		return nil, err
	}
	b.from = c
	s.base.Store(b)
	return b, nil
}

// scriptVersionOf memoizes scriptVersion per campaign config.
func (s *Server) scriptVersionOf(c *campaignfile.Config) string {
	if m := s.sv.Load(); m != nil && m.from == c {
		return m.v
	}
	v := scriptVersion(c)
	s.sv.Store(&svMemo{from: c, v: v})
	return v
}

// Handler is the HTTP handler of every webhook path (callurls.*Path, under
// the public URL's path prefix if the proxy keeps it).
func (s *Server) Handler() http.Handler { return s }

// Run runs the journal writer (it writes status callbacks to MongoDB) and
// the writer of the held writes (held.go) until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.writeHeld(ctx)
	}()
	_ = s.writeJournal(ctx)
	<-done
	return ctx.Err()
}

// endpoint is one webhook path.
type endpoint struct {
	name  string
	twiml bool
	fn    func(w http.ResponseWriter, r *request) int
}

// request is a webhook request that passed the checks.
type request struct {
	ctx   context.Context
	http  *http.Request
	form  url.Values
	ref   callurls.Ref
	camp  *campaignfile.Config
	base  *baseURL
	start time.Time
}

// ServeHTTP checks a webhook request, in this order, and answers before
// touching any state when a check fails: a known path (404), POST (405),
// body size (413), form content type (415), a parsable form (400), the
// X-Twilio-Signature over the public URL and form (403), a well-formed
// attempt reference in the query (400), then the endpoint's own form fields
// (400) and the attempt's existence (404 for data callbacks, a hang-up for
// TwiML requests).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	camp := s.cfg.Campaign.Current()
	base, err := s.publicBase(camp)
	if err != nil {
		s.log.Error("no usable public callback URL", "error", err)
		http.Error(w, "callback URL not configured", http.StatusServiceUnavailable)
		return
	}
	path := r.URL.Path
	if base.path != "" && strings.HasPrefix(path, base.path+"/") {
		path = path[len(base.path):]
	}
	ep, ok := s.endpoints[path]
	if !ok {
		s.reject(w, "unknown", "unknown_path", http.StatusNotFound, start)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.reject(w, ep.name, "method", http.StatusMethodNotAllowed, start)
		return
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		s.reject(w, ep.name, "too_large", http.StatusRequestEntityTooLarge, start)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/x-www-form-urlencoded" {
			s.reject(w, ep.name, "content_type", http.StatusUnsupportedMediaType, start)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.reject(w, ep.name, "too_large", http.StatusRequestEntityTooLarge, start)
		} else {
			s.reject(w, ep.name, "malformed_body", http.StatusBadRequest, start)
		}
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		s.reject(w, ep.name, "malformed_body", http.StatusBadRequest, start)
		return
	}
	sig := r.Header.Get("X-Twilio-Signature")
	if sig == "" {
		s.reject(w, ep.name, "signature_missing", http.StatusForbidden, start)
		return
	}
	if !s.verify(r, base, path, form, sig) {
		s.log.Warn("webhook signature does not match", "endpoint", ep.name, "remote", r.RemoteAddr)
		s.reject(w, ep.name, "signature_invalid", http.StatusForbidden, start)
		return
	}
	ref, err := callurls.Parse(r.URL.Query())
	if err != nil {
		s.log.Warn("webhook names no valid attempt", "endpoint", ep.name, "error", err)
		s.reject(w, ep.name, "malformed_attempt", http.StatusBadRequest, start)
		return
	}
	code := ep.fn(w, &request{ctx: r.Context(), http: r, form: form, ref: ref, camp: camp, base: base, start: start})
	s.observe(ep.name, code, start)
}

func (s *Server) observe(endpoint string, code int, start time.Time) {
	s.m.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
	s.m.duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
}

func (s *Server) reject(w http.ResponseWriter, endpoint, reason string, code int, start time.Time) {
	s.m.rejected.WithLabelValues(reason).Inc()
	http.Error(w, http.StatusText(code), code)
	s.observe(endpoint, code, start)
}

// verify checks the X-Twilio-Signature against the public URL of the
// request (and, when trusted, the URL the proxy's forwarded headers name)
// with each accepted auth token.
func (s *Server) verify(r *http.Request, base *baseURL, path string, form url.Values, sig string) bool {
	params := make(map[string]string, len(form))
	for k, v := range form {
		params[k] = v[0]
	}
	query := ""
	if r.URL.RawQuery != "" {
		query = "?" + r.URL.RawQuery
	}
	urls := []string{base.raw + path + query}
	if s.cfg.TrustForwarded {
		proto, host := firstValue(r.Header.Get("X-Forwarded-Proto")), firstValue(r.Header.Get("X-Forwarded-Host"))
		if proto != "" || host != "" {
			if proto == "" {
				proto = base.scheme
			}
			if host == "" {
				host = r.Host
			}
			urls = append(urls, proto+"://"+host+base.path+path+query)
		}
	}
	for _, t := range s.tokens() {
		v := client.NewRequestValidator(t)
		for _, u := range urls {
			if v.Validate(u, params, sig) {
				return true
			}
		}
	}
	return false
}

func firstValue(h string) string {
	if i := strings.IndexByte(h, ','); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSpace(h)
}

// urlFor builds the URL of path for the request's attempt, with extra
// query parameters.
func (r *request) urlFor(path string, extra ...string) string {
	u, err := callurls.For(r.base.raw, path, r.ref.AttemptID, r.ref.Fence)
	if err != nil {
		return "" // the base was parsed already; cannot happen
	}
	for i := 0; i+1 < len(extra); i += 2 {
		u += "&" + url.QueryEscape(extra[i]) + "=" + url.QueryEscape(extra[i+1])
	}
	return u
}

func writeTwiML(w http.ResponseWriter, x string) int {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, x)
	return http.StatusOK
}

func writeStatus(w http.ResponseWriter, code int) int {
	w.WriteHeader(code)
	return code
}
