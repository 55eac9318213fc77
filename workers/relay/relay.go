// Package relay tells the delivery agent what a recipient answered: when a
// call ends with a reschedule request or recorded instructions, the agent
// gets an SMS through Twilio Messages (from the campaign's number) and, if
// the campaign configures one, the user's dispatch system gets a signed JSON
// webhook.
//
// The work is queued, never done inside a Twilio webhook: the callback server
// records the answer in MongoDB and enqueues the attempt id (Queue, a Redis
// sorted set); the Sender loop, run by every worker process, takes due ids,
// reads the attempt, and sends each channel once. Send-once is MongoDB's
// notification state (store.BeginNotification leases a channel to one sender,
// FinishNotification marks it sent or failed and counts attempts); failures
// are retried with exponential backoff up to Config.MaxAttempts. A crash
// between a send and its recording may send that channel again once its
// lease ends (at least once; the webhook's Idempotency-Key lets the receiver
// drop the repeat). Queue entries lost with Redis are found again by the
// sender's periodic sweep of MongoDB.
//
// Recorded instructions wait for their transcription (Twilio sends it a
// minute or so after the recording) up to Config.TranscriptionWait; after
// that the SMS carries the recording's link instead.
package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twilio/twilio-go"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/defaults"
	"github.com/delauto/delauto/internal/language"
	"github.com/delauto/delauto/internal/outcome"
	"github.com/delauto/delauto/internal/periodic"
	"github.com/delauto/delauto/internal/phone"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/store"
)

// ErrNoSecret is returned when the campaign has a relay webhook but no
// signing secret is available; the webhook is not sent unsigned.
var ErrNoSecret = errors.New("relay webhook signing secret is not available: mount the campaign's relay webhook Secret key and set " + workerpod.EnvRelaySecretFile)

// SecretSource returns a secret source reading file (trailing newlines
// trimmed) on every call, so a rotated Secret takes effect without a
// restart, or, when file is empty, giving value (a key set by hand).
func SecretSource(file, value string) func() ([]byte, error) {
	return func() ([]byte, error) {
		if file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("%w (%s: %v)", ErrNoSecret, workerpod.EnvRelaySecretFile, err)
			}
			b = bytes.TrimRight(b, "\r\n")
			if len(b) == 0 {
				return nil, fmt.Errorf("%w (%s is empty)", ErrNoSecret, file)
			}
			return b, nil
		}
		if value != "" {
			return []byte(value), nil
		}
		return nil, ErrNoSecret
	}
}

// Config configures a Sender.
type Config struct {
	// Store is the call log (required).
	Store *store.Store
	// Queue is the work list (required).
	Queue *Queue
	// Campaign is the campaign in force (required): relay settings, from
	// numbers, company name.
	Campaign campaignfile.Source
	// Twilio sends the SMS (required when the campaign relays by SMS).
	Twilio *twilio.RestClient
	// HTTPClient posts the webhook; default NewHTTPClient(AllowPrivate):
	// a 10 s timeout, no redirects, no private addresses.
	HTTPClient *http.Client
	// AllowPrivate lets the webhook reach private, loopback and link-local
	// addresses and use plain http (tests, a dispatch system inside the
	// cluster); by default only https to public addresses is sent.
	AllowPrivate bool
	// Secret returns the webhook's signing secret (SecretSource); without
	// it a webhook fails with ErrNoSecret.
	Secret func() ([]byte, error)
	// Owner names this sender in notification leases (the pod name).
	Owner string
	// Lease is how long one send may take before another sender may retry
	// it; default 30 s.
	Lease time.Duration
	// MaxAttempts bounds the tries per channel; default 8.
	MaxAttempts int32
	// Backoff is the first retry delay, doubled per failed try up to
	// MaxBackoff; defaults 5 s and 10 min.
	Backoff, MaxBackoff time.Duration
	// TranscriptionWait is how long after the call's time limit recorded
	// instructions wait for their transcription; default 2 min.
	TranscriptionWait time.Duration
	// Poll is how often the queue is checked for due work; default 200 ms.
	Poll time.Duration
	// Concurrency is how many attempts are processed at once; default 4.
	Concurrency int
	// SweepInterval is how often the call log is searched for answers whose
	// notifications are not sent (lost queue entries); default 5 min,
	// negative: no sweep.
	SweepInterval time.Duration
	// SweepWindow bounds how far back the sweep looks; default 24 h.
	SweepWindow time.Duration
	// Logger receives structured logs; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.HTTPClient == nil {
		c.HTTPClient = NewHTTPClient(c.AllowPrivate)
	}
	if c.Secret == nil {
		c.Secret = SecretSource("", "")
	}
	if c.Owner == "" {
		c.Owner, _ = os.Hostname()
		if c.Owner == "" {
			c.Owner = "relay"
		}
	}
	defaults.Positive(&c.Lease, DefaultLease)
	defaults.Positive(&c.MaxAttempts, 8)
	defaults.Positive(&c.Backoff, DefaultBackoff)
	defaults.Positive(&c.MaxBackoff, 10*time.Minute)
	defaults.Positive(&c.TranscriptionWait, DefaultTranscriptionWait)
	defaults.Positive(&c.Poll, 200*time.Millisecond)
	defaults.Positive(&c.Concurrency, 4)
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	defaults.Positive(&c.SweepWindow, 24*time.Hour)
	defaults.Zero(&c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
}

// The Config defaults: together they bound how long an answer waits for
// its agent notification (see MaxDelay).
const (
	// DefaultLease is Config.Lease's default.
	DefaultLease = 30 * time.Second
	// DefaultBackoff is Config.Backoff's default.
	DefaultBackoff = 5 * time.Second
	// DefaultTranscriptionWait is Config.TranscriptionWait's default.
	DefaultTranscriptionWait = 2 * time.Minute
	// DefaultSweepInterval is Config.SweepInterval's default.
	DefaultSweepInterval = 5 * time.Minute
	// DefaultTimeLimit is the call time limit of a script that sets none,
	// which recorded instructions wait for beside TranscriptionWait.
	DefaultTimeLimit = campaignfile.DefaultTimeLimit
)

// MaxDelay is how long, with the default Config and a first send that
// succeeds, an answer recorded at time t may wait for its notification:
// recorded instructions wait for their transcription up to the call's time
// limit (timeLimit; 0 means DefaultTimeLimit) plus DefaultTranscriptionWait;
// a sender that took the entry and stopped holds it for its queue lease
// (2 x DefaultLease) and a channel for DefaultLease; an entry lost from the
// queue is found again by the next sweep (DefaultSweepInterval).
func MaxDelay(timeLimit time.Duration) time.Duration {
	if timeLimit <= 0 {
		timeLimit = DefaultTimeLimit
	}
	return timeLimit + DefaultTranscriptionWait + 3*DefaultLease + DefaultSweepInterval
}

// Sender sends the relay notifications.
type Sender struct {
	cfg Config
	log *slog.Logger

	sent    *prometheus.CounterVec
	retried *prometheus.CounterVec
	gaveUp  *prometheus.CounterVec
	queued  prometheus.GaugeFunc
}

// NewSender checks cfg and returns a Sender.
func NewSender(cfg Config) (*Sender, error) {
	if cfg.Store == nil || cfg.Queue == nil || cfg.Campaign == nil {
		return nil, errors.New("relay: Store, Queue and Campaign are required")
	}
	cfg.defaults()
	s := &Sender{
		cfg: cfg,
		log: cfg.Logger.With("component", "relay"),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_relay_sent_total", Help: "Agent notifications sent, by channel.",
		}, []string{"channel"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_relay_failures_total", Help: "Failed agent notification sends (each is retried until the attempt limit), by channel.",
		}, []string{"channel"}),
		gaveUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delauto_relay_given_up_total", Help: "Agent notifications given up after the attempt limit, by channel.",
		}, []string{"channel"}),
	}
	s.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "delauto_relay_queue_length", Help: "Attempts in the relay queue (due or waiting).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := cfg.Queue.Len(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	return s, nil
}

// RegisterMetrics registers the sender's metrics on reg.
func (s *Sender) RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{s.sent, s.retried, s.gaveUp, s.queued} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Run takes due work from the queue until ctx ends, and sweeps the call log
// for lost work every SweepInterval (unless it is negative). Redis and MongoDB
// errors are logged and retried; Run returns only when ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if s.cfg.SweepInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.sweepLoop(ctx)
		}()
	}
	sem := make(chan struct{}, s.cfg.Concurrency)
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		free := s.cfg.Concurrency - len(sem)
		if free > 0 {
			l, err := s.cfg.Queue.take(ctx, s.cfg.Now(), s.cfg.Lease*2, free)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("relay queue unavailable", "error", err)
			}
			for _, id := range l.ids {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					s.handle(ctx, l, id)
				}()
			}
			if len(l.ids) == free {
				continue // more may be due
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// handle processes one leased attempt and settles its queue entry.
func (s *Sender) handle(ctx context.Context, l lease, id string) {
	next, err := s.Process(ctx, id)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("relay: processing failed; retrying", "attempt", id, "error", err)
	}
	if ctx.Err() != nil {
		return // the lease runs out and another sender takes it
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.cfg.Queue.settle(sctx, l, id, next); err != nil {
		s.log.Warn("relay: could not settle queue entry; it is retried after its lease", "attempt", id, "error", err)
	}
}

// Process sends what attempt id's answer still needs sent and returns when
// to look at it again (zero: never, everything is sent or given up). An
// error means a store or campaign problem; the returned time says when to
// retry.
func (s *Sender) Process(ctx context.Context, id string) (time.Time, error) {
	now := s.cfg.Now()
	a, err := s.cfg.Store.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return now.Add(s.cfg.Backoff), err
	}
	if a.Response == nil || !Needed(a.Response.Choice) {
		return time.Time{}, nil
	}
	camp := s.cfg.Campaign.Current()
	if camp == nil {
		return now.Add(s.cfg.Backoff), errors.New("no campaign loaded")
	}
	if wait := s.waitForTranscription(a, camp, now); !wait.IsZero() {
		return wait, nil
	}
	var retryAt time.Time
	later := func(t time.Time) {
		if retryAt.IsZero() || t.Before(retryAt) {
			retryAt = t
		}
	}
	for _, ch := range channels(a, camp) {
		n := notification(a, ch)
		if n.State == store.NotifySent || n.State == store.NotifyFailed && n.Attempts >= s.cfg.MaxAttempts {
			continue
		}
		b, err := s.cfg.Store.BeginNotification(ctx, id, ch, s.cfg.Owner, s.cfg.Lease)
		if errors.Is(err, store.ErrNotClaimable) {
			later(now.Add(s.cfg.Lease)) // another sender holds it, or it was just sent: look again
			continue
		}
		if err != nil {
			later(now.Add(s.cfg.Backoff))
			s.log.Warn("relay: could not begin notification", "attempt", id, "channel", ch, "error", err)
			continue
		}
		sendErr := s.send(ctx, b, camp, ch)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, ferr := s.cfg.Store.FinishNotification(fctx, id, ch, s.cfg.Owner, sendErr)
		cancel()
		if ferr != nil {
			s.log.Warn("relay: could not record the notification; its lease runs out and it is tried again", "attempt", id, "channel", ch, "sent", sendErr == nil, "error", ferr)
			later(now.Add(s.cfg.Lease))
			continue
		}
		if sendErr == nil {
			s.sent.WithLabelValues(string(ch)).Inc()
			s.log.Info("agent notified", "attempt", id, "channel", ch, "choice", a.Response.Choice)
			// The Delivery is finished already; only this event makes the
			// operator read the attempt again and show agentNotifiedTime.
			outcome.PublishOrLog(s.cfg.Queue.rdb, s.log, outcome.Event{AttemptID: a.ID, Namespace: a.Delivery.Namespace, Name: a.Delivery.Name, State: "agent-notified"})
			continue
		}
		tries := notification(b, ch).Attempts
		s.retried.WithLabelValues(string(ch)).Inc()
		if tries >= s.cfg.MaxAttempts {
			s.gaveUp.WithLabelValues(string(ch)).Inc()
			s.log.Error("relay: giving up on notification", "attempt", id, "channel", ch, "tries", tries, "error", sendErr)
			continue
		}
		d := s.backoff(tries)
		s.log.Warn("relay: send failed; retrying", "attempt", id, "channel", ch, "tries", tries, "retryIn", d, "error", sendErr)
		later(now.Add(d))
	}
	return retryAt, nil
}

// backoff is the delay after the n-th failed try, with ±20% jitter.
func (s *Sender) backoff(n int32) time.Duration {
	d := s.cfg.Backoff
	for i := int32(1); i < n && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	return d - d/5 + rand.N(d/5*2+1)
}

// waitForTranscription returns when to look again if recorded instructions
// should still wait for their transcription, or zero.
func (s *Sender) waitForTranscription(a *store.Attempt, camp *campaignfile.Config, now time.Time) time.Time {
	r := a.Response
	if r.Choice != v1alpha1.ChoiceInstructions || r.TranscriptionStatus != "" || r.At == nil {
		return time.Time{}
	}
	deadline := r.At.Add(campaignfile.Settings(&camp.Spec).TimeLimit + s.cfg.TranscriptionWait)
	if now.Before(deadline) {
		return deadline
	}
	return time.Time{}
}

// campaignChannels lists the channels the campaign relays answers through.
func campaignChannels(camp *campaignfile.Config) []store.Channel {
	var out []store.Channel
	relay := camp.Spec.Relay
	if relay.SMS == nil || *relay.SMS {
		out = append(out, store.ChannelSMS)
	}
	if relay.Webhook != nil && relay.Webhook.URL != "" {
		out = append(out, store.ChannelWebhook)
	}
	return out
}

// channels lists the channels the campaign relays a's answer through: an
// SMS needs the agent's phone.
func channels(a *store.Attempt, camp *campaignfile.Config) []store.Channel {
	out := campaignChannels(camp)
	if a.Context == nil || a.Context.AgentPhone == "" {
		out = slices.DeleteFunc(out, func(ch store.Channel) bool { return ch == store.ChannelSMS })
	}
	return out
}

func notification(a *store.Attempt, ch store.Channel) store.Notification {
	if ch == store.ChannelSMS {
		return a.Notify.SMS
	}
	return a.Notify.Webhook
}

func (s *Sender) send(ctx context.Context, a *store.Attempt, camp *campaignfile.Config, ch store.Channel) error {
	var err error
	if ch == store.ChannelSMS {
		err = s.sendSMS(a, camp)
	} else {
		err = s.sendWebhook(ctx, a, camp)
	}
	if err != nil {
		// The error is logged and kept in the call log: no phone numbers.
		return errors.New(phone.Scrub(err.Error()))
	}
	return nil
}

func (s *Sender) sendSMS(a *store.Attempt, camp *campaignfile.Config) error {
	if s.cfg.Twilio == nil {
		return errors.New("no Twilio client to send the relay SMS")
	}
	from := a.From
	if from == "" && len(camp.Spec.Twilio.FromNumbers) > 0 {
		from = string(camp.Spec.Twilio.FromNumbers[0])
	}
	if from == "" {
		return errors.New("no campaign number to send the relay SMS from")
	}
	body := SMSText(a, camp.Spec.Script.CompanyName, string(camp.Spec.Schedule.DefaultTimeZone), language.ForCampaign(&camp.Spec.Script))
	p := &openapi.CreateMessageParams{}
	p.SetTo(a.Context.AgentPhone).SetFrom(from).SetBody(body)
	if _, err := s.cfg.Twilio.Api.CreateMessage(p); err != nil {
		return fmt.Errorf("send SMS to %s: %w", phone.Mask(a.Context.AgentPhone), err)
	}
	return nil
}

func (s *Sender) sendWebhook(ctx context.Context, a *store.Attempt, camp *campaignfile.Config) error {
	secret, err := s.cfg.Secret()
	if err != nil {
		return err
	}
	if len(secret) == 0 {
		return ErrNoSecret
	}
	if err := checkWebhookURL(camp.Spec.Relay.Webhook.URL, s.cfg.AllowPrivate); err != nil {
		return err
	}
	now := s.cfg.Now()
	body, err := marshalPayload(NewPayload(a, now))
	if err != nil {
		return fmt.Errorf("encode relay webhook: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HTTPClient.Timeout+time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, camp.Spec.Relay.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("relay webhook request: %w", err)
	}
	ts := now.Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "delauto-relay/1")
	req.Header.Set(HeaderIdempotencyKey, IdempotencyKey(a.ID))
	req.Header.Set(HeaderTimestamp, fmt.Sprint(ts))
	req.Header.Set(HeaderSignature, Sign(secret, ts, body))
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("relay webhook: %w", err)
	}
	defer resp.Body.Close()
	// The body is drained for the connection's reuse, never quoted: the
	// dispatch system may echo the payload (phone numbers, transcripts).
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode <= 399:
		return fmt.Errorf("relay webhook answered %d (redirects are not followed)", resp.StatusCode)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return fmt.Errorf("relay webhook answered %d", resp.StatusCode)
	}
	return nil
}

// sweepLoop re-enqueues answers whose notifications are not sent.
func (s *Sender) sweepLoop(ctx context.Context) {
	periodic.Every(ctx, s.cfg.SweepInterval, func(ctx context.Context) {
		if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("relay sweep failed", "error", err)
		} else if n > 0 {
			s.log.Info("relay sweep re-enqueued unsent notifications", "attempts", n)
		}
	})
}

// Sweep finds the campaign's recent answers with a notification still to
// send (pending, failed below the attempt limit, or stuck sending) in the
// call log and enqueues them.
func (s *Sender) Sweep(ctx context.Context) (int, error) {
	camp := s.cfg.Campaign.Current()
	if camp == nil {
		return 0, errors.New("no campaign loaded")
	}
	now := s.cfg.Now()
	ids, err := s.cfg.Store.PendingNotifications(ctx, store.PendingNotificationQuery{
		Campaign: camp.Namespace + "/" + camp.Name, Choices: relayedChoices, Channels: campaignChannels(camp),
		MaxAttempts: s.cfg.MaxAttempts, Since: now.Add(-s.cfg.SweepWindow), Limit: 10000,
	})
	if err != nil {
		return 0, fmt.Errorf("relay sweep: %w", err)
	}
	for _, id := range ids {
		if err := s.cfg.Queue.Enqueue(ctx, id, now); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}
