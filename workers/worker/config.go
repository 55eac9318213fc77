package worker

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/stores"
	"github.com/delauto/delauto/internal/twilioclient"
	"github.com/delauto/delauto/internal/workerpod"
	"github.com/delauto/delauto/workers/dialer"
	"github.com/delauto/delauto/workers/queue"
)

// Config is the worker process's configuration (`delauto worker`): its
// flags, whose defaults come from the operator's worker contract
// (workerpod), and what Validate loads from the files they name.
type Config struct {
	// Name is the worker's name in the queue and in claims (the pod name).
	Name string
	// Namespace and Campaign name the CallCampaign; empty: the campaign
	// file's.
	Namespace, Campaign string
	// Shards are the comma-separated shards served.
	Shards string
	// Concurrency is how many attempts are handled at once (1-1000).
	Concurrency int
	// CallbackURL overrides the campaign's public callback base URL.
	CallbackURL string
	// CampaignFile is the campaign's JSON, re-read every CampaignPoll.
	CampaignFile string
	CampaignPoll time.Duration
	// TwilioDir is the folder of the Twilio credentials' files, re-read
	// every CredentialsPoll; without it TwilioAccountSID and
	// TwilioAuthToken (from the environment) are the credentials.
	TwilioDir                         string
	TwilioAccountSID, TwilioAuthToken string
	CredentialsPoll                   time.Duration
	// TokenOverlap is how long signatures of a replaced auth token are
	// still accepted.
	TokenOverlap time.Duration
	// TwilioBaseURL sends Twilio API requests elsewhere (the simulator).
	TwilioBaseURL string
	// TwilioTimeout bounds one Twilio API request.
	TwilioTimeout time.Duration
	// RelayAllowPrivate lets the relay webhook use http and private
	// addresses; RelaySecretFile (else RelaySecret) is its signing key.
	RelayAllowPrivate bool
	RelaySecretFile   string
	RelaySecret       string
	// HTTPAddr serves Twilio's callbacks, OpsAddr the ops endpoints.
	HTTPAddr, OpsAddr string
	// The timing of claims and recovery: see Options.
	Lease, QueueLease, ClockSkew, UnknownGrace, FinalStatusMargin, StaleAfter time.Duration
	ReconcileInterval, SweepInterval, SweepWatchInterval, SweepOverdue        time.Duration
	// DrainTimeout: see Options. DrainTokenFile holds the operator's drain
	// token.
	DrainTimeout   time.Duration
	DrainTokenFile string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// Stores are the Redis and MongoDB settings.
	Stores stores.Settings

	// Filled in by Validate.
	envErr     error
	level      slog.Level
	shards     []queue.Shard
	watcher    *campaignfile.Watcher
	creds      *twilioclient.Credentials
	drainToken string
}

// RegisterFlags adds the worker's flags to fs, with defaults from the
// environment as getenv returns it.
func (c *Config) RegisterFlags(fs *flag.FlagSet, getenv func(string) string) {
	env, envErr := workerpod.Read(getenv)
	c.envErr = envErr
	if env.PodName == "" {
		env.PodName, _ = os.Hostname()
	}
	if env.Concurrency == 0 {
		env.Concurrency = workerpod.DefaultConcurrency
	}
	c.RelaySecretFile, c.RelaySecret = env.RelaySecretFile, getenv(workerpod.EnvRelaySecret)
	c.TwilioAccountSID, c.TwilioAuthToken = strings.TrimSpace(getenv(twilioclient.EnvAccountSID)), strings.TrimSpace(getenv(twilioclient.EnvAuthToken))
	fs.StringVar(&c.Name, "name", env.PodName, "this worker's name in the queue and in claims, unique among live workers (env "+workerpod.EnvPodName+", default the host name)")
	fs.StringVar(&c.Namespace, "campaign-namespace", env.Namespace, "namespace of the CallCampaign (env "+workerpod.EnvCampaignNamespace+"; default: the campaign file's)")
	fs.StringVar(&c.Campaign, "campaign", env.Campaign, "name of the CallCampaign (env "+workerpod.EnvCampaign+"; default: the campaign file's)")
	fs.StringVar(&c.Shards, "shards", strings.Join(env.Shards, ","), "comma-separated shards of the campaign this worker serves, e.g. shard-0 (env "+workerpod.EnvShards+")")
	fs.IntVar(&c.Concurrency, "concurrency", env.Concurrency, "attempts handled at once, 1-1000 (env "+workerpod.EnvConcurrency+")")
	fs.StringVar(&c.CallbackURL, "callback-url", env.CallbackURL, "public base URL of the Twilio callbacks (env "+workerpod.EnvCallbackURL+"; default: the campaign's twilio.callbackURL)")
	fs.StringVar(&c.CampaignFile, "campaign-file", env.CampaignFile, "the campaign as JSON, from its ConfigMap; re-read when it changes (env "+workerpod.EnvCampaignFile+")")
	fs.DurationVar(&c.CampaignPoll, "campaign-poll", 5*time.Second, "how often the campaign file is checked for changes")
	fs.StringVar(&c.TwilioDir, "twilio-dir", env.TwilioDir, "folder with the files "+workerpod.TwilioAccountFile+" and "+workerpod.TwilioTokenFile+" from the campaign's Twilio Secret (env "+workerpod.EnvTwilioDir+"); without it, env "+twilioclient.EnvAccountSID+" and "+twilioclient.EnvAuthToken)
	fs.StringVar(&c.TwilioBaseURL, "twilio-base-url", env.TwilioBaseURL, "send Twilio API requests to this server instead of Twilio, e.g. the simulator http://127.0.0.1:8089 (env "+workerpod.EnvTwilioBaseURL+")")
	fs.DurationVar(&c.CredentialsPoll, "credentials-poll", 10*time.Second, "how often the files of --twilio-dir are re-read, so a rotated auth token takes effect without a restart")
	fs.DurationVar(&c.TokenOverlap, "token-overlap", twilioclient.DefaultOverlap, "how long webhook signatures made with a replaced auth token are still accepted")
	fs.BoolVar(&c.RelayAllowPrivate, "relay-allow-private", env.RelayAllowPrivate, "let the relay webhook use plain http and reach private, loopback and link-local addresses (tests, a dispatch system inside the cluster; env "+workerpod.EnvRelayAllowPrivate+"=true)")
	fs.DurationVar(&c.TwilioTimeout, "twilio-timeout", 10*time.Second, "timeout of one Twilio API request; a create-call request that times out is ambiguous and reconciled")
	fs.StringVar(&c.HTTPAddr, "http-addr", ":"+strconv.Itoa(workerpod.CallbackPort), "address of the Twilio callbacks server")
	fs.StringVar(&c.OpsAddr, "ops-addr", ":"+strconv.Itoa(workerpod.OpsPort), "address of /healthz, /readyz, /metrics and /drain")
	fs.DurationVar(&c.Lease, "lease", 30*time.Second, "claim lease in MongoDB, renewed every third of it while an attempt is held")
	fs.DurationVar(&c.QueueLease, "queue-lease", 15*time.Second, "how long a queue entry may go unextended before another worker takes it over")
	fs.DurationVar(&c.ClockSkew, "max-clock-skew", time.Second, "the most the clocks of the campaign's workers may differ (leases are written on one pod's clock and judged on another's)")
	fs.DurationVar(&c.UnknownGrace, "unknown-grace", 2*time.Minute, "how long an ambiguous dial's call must stay absent from Twilio's call list before a new dial is allowed")
	fs.DurationVar(&c.FinalStatusMargin, "final-status-margin", workerpod.DefaultFinalStatusMargin, "how long past a call's ring timeout and time limit a call without a final status callback waits before its status is fetched from Twilio")
	fs.DurationVar(&c.StaleAfter, "stale-after", 5*time.Second, "how long past its lease a dialing claim is taken as abandoned by its worker and reconciled")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", 5*time.Second, "period of the ambiguity reconciler")
	fs.DurationVar(&c.SweepInterval, "sweep-interval", 5*time.Minute, "period of the sweeper's safety-net pass that requeues overdue attempts Redis lost")
	fs.DurationVar(&c.SweepWatchInterval, "sweep-watch-interval", 5*time.Second, "how often the sweeper checks whether Redis restarted or failed over (then it requeues the shards' whole queues at once)")
	fs.DurationVar(&c.SweepOverdue, "sweep-overdue", 30*time.Second, "how late an attempt must be before the sweeper requeues it")
	fs.StringVar(&c.DrainTokenFile, "drain-token-file", env.DrainTokenFile, "file with the operator's drain token that /drain requests must carry as a Bearer token (env "+workerpod.EnvDrainTokenFile+"); without it /drain refuses every request")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 0, "on SIGTERM or a drain, cancel attempts still in flight after this long (0: wait for them)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	c.Stores.RegisterEnv(fs, getenv)
}

// Validate checks everything that can be checked without a network, and
// loads the campaign file, the Twilio credentials and the drain token:
// every problem is reported, one per line.
func (c *Config) Validate() error {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if c.Name == "" {
		bad("--name is empty (env %s): every worker needs a unique name", workerpod.EnvPodName)
	}
	if err := c.level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("--log-level %q: use debug, info, warn or error", c.LogLevel)
	}
	if c.envErr != nil {
		bad("--concurrency: %v", c.envErr)
	} else if c.Concurrency < 1 || c.Concurrency > 1000 {
		bad("--concurrency (env %s) %d must be between 1 and 1000", workerpod.EnvConcurrency, c.Concurrency)
	}

	// The campaign.
	var err error
	if c.CampaignFile == "" {
		bad("--campaign-file (env %s) is required: the campaign's JSON from its ConfigMap", workerpod.EnvCampaignFile)
	} else if c.watcher, err = campaignfile.NewWatcher(c.CampaignFile); err != nil {
		bad("%v", err)
	} else {
		cur := c.watcher.Current()
		if c.Namespace == "" {
			c.Namespace = cur.Namespace
		} else if c.Namespace != cur.Namespace {
			bad("--campaign-namespace (env %s) is %q but the campaign file is of namespace %q", workerpod.EnvCampaignNamespace, c.Namespace, cur.Namespace)
		}
		if c.Campaign == "" {
			c.Campaign = cur.Name
		} else if c.Campaign != cur.Name {
			bad("--campaign (env %s) is %q but the campaign file is of campaign %q", workerpod.EnvCampaign, c.Campaign, cur.Name)
		}
		if c.CallbackURL != "" {
			if err := dialer.CheckCallbackURL(c.CallbackURL); err != nil {
				bad("--callback-url (env %s): %v", workerpod.EnvCallbackURL, err)
			}
		}
		if _, err := dialer.Compile(cur, c.CallbackURL); err != nil {
			bad("%v", err)
		}
	}
	if c.CampaignPoll <= 0 {
		bad("--campaign-poll must be positive")
	}
	c.shards = nil
	if strings.TrimSpace(c.Shards) == "" {
		bad("--shards (env %s) is required: the comma-separated shards this worker serves, e.g. shard-0", workerpod.EnvShards)
	} else {
		seen := map[string]bool{}
		for _, name := range strings.Split(c.Shards, ",") {
			name = strings.TrimSpace(name)
			if seen[name] {
				bad("--shards lists %q twice", name)
				continue
			}
			seen[name] = true
			s := queue.Shard{Namespace: c.Namespace, Campaign: c.Campaign, Name: name}
			if c.Namespace == "" || c.Campaign == "" {
				continue // reported above
			}
			if err := s.Validate(); err != nil {
				bad("--shards: %v", err)
				continue
			}
			c.shards = append(c.shards, s)
		}
	}

	if c.DrainTokenFile != "" {
		tok, err := twilioclient.ReadSecretFile(c.DrainTokenFile)
		if err != nil {
			bad("drain token from --drain-token-file (env %s): %v", workerpod.EnvDrainTokenFile, err)
		}
		c.drainToken = tok
	}

	// Twilio.
	switch {
	case c.TwilioDir != "":
		creds, err := twilioclient.LoadCredentials(c.TwilioDir, c.TokenOverlap)
		if err != nil {
			bad("Twilio credentials from --twilio-dir (env %s): %v", workerpod.EnvTwilioDir, err)
		}
		c.creds = creds
	case c.TwilioAccountSID != "" || c.TwilioAuthToken != "":
		creds, err := twilioclient.StaticCredentials(c.TwilioAccountSID, c.TwilioAuthToken)
		if err != nil {
			bad("%v", err)
		}
		c.creds = creds
	default:
		bad("no Twilio credentials: mount the campaign's Secret and set --twilio-dir (env %s) to the folder with %s and %s, or set %s and %s",
			workerpod.EnvTwilioDir, workerpod.TwilioAccountFile, workerpod.TwilioTokenFile, twilioclient.EnvAccountSID, twilioclient.EnvAuthToken)
	}
	if c.CredentialsPoll <= 0 || c.TokenOverlap <= 0 {
		bad("--credentials-poll and --token-overlap must be positive")
	}
	if c.TwilioBaseURL != "" {
		if _, err := twilioclient.RedirectTransport(c.TwilioBaseURL, nil); err != nil {
			bad("--twilio-base-url (env %s): %v", workerpod.EnvTwilioBaseURL, err)
		}
	}
	if c.TwilioTimeout <= 0 {
		bad("--twilio-timeout must be positive")
	}

	// Timing.
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--queue-lease", c.QueueLease}, {"--unknown-grace", c.UnknownGrace}, {"--final-status-margin", c.FinalStatusMargin}, {"--stale-after", c.StaleAfter}, {"--reconcile-interval", c.ReconcileInterval},
		{"--sweep-interval", c.SweepInterval}, {"--sweep-watch-interval", c.SweepWatchInterval}, {"--sweep-overdue", c.SweepOverdue}, {"--max-clock-skew", c.ClockSkew}} {
		if d.v <= 0 {
			bad("%s must be positive, got %s", d.name, d.v)
		}
	}
	if c.Lease < 3*time.Second {
		bad("--lease %s is too short: use 3s or more", c.Lease)
	} else if c.TwilioTimeout > 0 && c.StaleAfter > 0 && c.UnknownGrace > 0 && c.QueueLease > 0 && c.ClockSkew > 0 {
		// The relations that keep an attempt to one call (dialer.Timing).
		_, err := dialer.Timing{Lease: c.Lease, QueueLease: c.QueueLease, TwilioTimeout: c.TwilioTimeout,
			StaleAfter: c.StaleAfter, UnknownGrace: c.UnknownGrace, ClockSkew: c.ClockSkew}.Derive()
		for _, e := range unjoin(err) {
			bad("--lease, --twilio-timeout, --stale-after, --unknown-grace, --max-clock-skew: %v", e)
		}
	}
	if c.DrainTimeout < 0 {
		bad("--drain-timeout must not be negative")
	}
	for _, a := range []struct{ name, v string }{{"--http-addr", c.HTTPAddr}, {"--ops-addr", c.OpsAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			bad("%s %q is not host:port (or :port)", a.name, a.v)
		}
	}
	if c.HTTPAddr == c.OpsAddr {
		bad("--http-addr and --ops-addr are both %s", c.HTTPAddr)
	}
	if err := c.Stores.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			bad("%s", line)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// Level is the log level, once Validate has passed.
func (c *Config) Level() slog.Level { return c.level }

// ServedShards are the shards served, once Validate has passed.
func (c *Config) ServedShards() []queue.Shard { return c.shards }

// unjoin splits an errors.Join error into its errors.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		return j.Unwrap()
	}
	return []error{err}
}
