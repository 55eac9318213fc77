// Package workerpod is the worker contract: what the operator gives each
// worker pod and the worker reads. The environment variables (Env, written
// by the operator's Deployment and read back by Read), the folders Secrets
// and ConfigMaps are mounted at and the names of their files, and the
// ports. The operator builds worker pods from it (controllers), the worker
// takes its flags' defaults from it (workers/worker); the campaign file's
// format is internal/campaignfile's.
package workerpod

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/delauto/delauto/internal/twilioclient"
)

// The environment variables of the contract.
const (
	// EnvCampaignNamespace and EnvPodName are filled in by the downward API
	// (FieldRefs).
	EnvCampaignNamespace = "DELAUTO_CAMPAIGN_NAMESPACE"
	EnvPodName           = "POD_NAME"
	EnvCampaign          = "DELAUTO_CAMPAIGN"
	EnvShards            = "DELAUTO_SHARDS"
	EnvConcurrency       = "DELAUTO_CONCURRENCY"
	EnvCallbackURL       = "DELAUTO_CALLBACK_URL"
	EnvTwilioDir         = "DELAUTO_TWILIO_DIR"
	EnvCampaignFile      = "DELAUTO_CAMPAIGN_FILE"
	EnvDrainTokenFile    = "DELAUTO_DRAIN_TOKEN_FILE"
	EnvTwilioBaseURL     = "DELAUTO_TWILIO_BASE_URL"
	EnvRelayAllowPrivate = "DELAUTO_RELAY_ALLOW_PRIVATE"
	// EnvRelaySecretFile names a file holding the relay webhook's signing
	// key (a Secret key mounted into the pod), re-read on every send.
	EnvRelaySecretFile = "DELAUTO_RELAY_SECRET_FILE"
)

// EnvRelaySecret is read by a worker but never written by the operator: a
// worker run by hand may have the relay signing key itself in it (and its
// Twilio credentials in twilioclient.EnvAccountSID and EnvAuthToken)
// instead of in mounted files. EnvRelaySecretFile wins.
const EnvRelaySecret = "DELAUTO_RELAY_SECRET"

// The mounted folders and their files, and the ports.
const (
	// TwilioDir holds TwilioAccountFile and TwilioTokenFile from the
	// campaign's Twilio Secret.
	TwilioDir         = "/var/run/secrets/delauto/twilio"
	TwilioAccountFile = twilioclient.AccountSIDFile
	TwilioTokenFile   = twilioclient.AuthTokenFile
	// CampaignDir holds CampaignFile, the campaign as JSON (campaignfile),
	// from the campaign's ConfigMap; it is updated in place when the
	// campaign changes.
	CampaignDir  = "/etc/delauto/campaign"
	CampaignFile = "campaign.json"
	// RelayDir holds RelaySecretFile, the relay webhook's signing key, when
	// the campaign has a relay webhook.
	RelayDir        = "/var/run/secrets/delauto/relay"
	RelaySecretFile = "secret"
	// DrainDir holds DrainTokenFile, the token the worker's /drain requires,
	// from the campaign's drain Secret the operator owns.
	DrainDir       = "/var/run/secrets/delauto/drain"
	DrainTokenFile = "token"
	// CallbackPort serves Twilio's webhooks; OpsPort /healthz, /readyz,
	// /metrics and /drain.
	CallbackPort = 8080
	OpsPort      = 8082
	// DefaultConcurrency is how many attempts a worker handles at once when
	// neither the campaign nor the environment says.
	DefaultConcurrency = 50
)

// DefaultFinalStatusMargin is how long past a call's ring timeout and time
// limit a worker waits for the call's final status callback before it asks
// Twilio (the worker's --final-status-margin default); the operator keeps
// a worker that long for calls that may still be going on.
const DefaultFinalStatusMargin = 2 * time.Minute

// Env is what the environment tells one worker.
type Env struct {
	// Namespace is the campaign's (the pod's namespace); PodName the
	// worker's name. Both come from the downward API.
	Namespace string
	PodName   string
	// Campaign is the CallCampaign's name; Shards the shards the worker
	// serves.
	Campaign string
	Shards   []string
	// Concurrency is how many attempts the worker handles at once; 0 is
	// unset.
	Concurrency int
	// CallbackURL is the public base URL of the callbacks (empty: the
	// campaign's).
	CallbackURL string
	// TwilioDir is the folder of the Twilio credentials' files.
	TwilioDir string
	// CampaignFile is the campaign's JSON file.
	CampaignFile string
	// DrainTokenFile is the file with the token /drain requires.
	DrainTokenFile string
	// RelaySecretFile is the file with the relay webhook's signing key.
	RelaySecretFile string
	// TwilioBaseURL sends Twilio API requests elsewhere (the simulator).
	TwilioBaseURL string
	// RelayAllowPrivate lets the relay webhook reach private addresses.
	RelayAllowPrivate bool
}

// Pod is the Env of a pod the operator writes: the mount paths of this
// package, and the campaign's name, shard, concurrency and callback URL.
// The rest (TwilioBaseURL, RelayAllowPrivate, RelaySecretFile) the caller
// sets.
func Pod(campaign, shard string, concurrency int, callbackURL string) Env {
	return Env{
		Campaign: campaign, Shards: []string{shard}, Concurrency: concurrency, CallbackURL: callbackURL,
		TwilioDir: TwilioDir, CampaignFile: path.Join(CampaignDir, CampaignFile), DrainTokenFile: path.Join(DrainDir, DrainTokenFile),
	}
}

// Var is one environment variable with a value.
type Var struct{ Name, Value string }

// FieldRef is an environment variable the downward API fills in from a
// field of the pod.
type FieldRef struct{ Name, FieldPath string }

// FieldRefs are the variables of Env that come from the pod's own fields
// (Namespace and PodName), which Vars leaves out.
var FieldRefs = []FieldRef{
	{Name: EnvCampaignNamespace, FieldPath: "metadata.namespace"},
	{Name: EnvPodName, FieldPath: "metadata.name"},
}

// Vars are e's variables with a value: the campaign, shards, concurrency,
// callback URL and files always, the rest when set.
func (e Env) Vars() []Var {
	out := []Var{
		{EnvCampaign, e.Campaign},
		{EnvShards, strings.Join(e.Shards, ",")},
		{EnvConcurrency, strconv.Itoa(e.Concurrency)},
		{EnvCallbackURL, e.CallbackURL},
		{EnvTwilioDir, e.TwilioDir},
		{EnvCampaignFile, e.CampaignFile},
		{EnvDrainTokenFile, e.DrainTokenFile},
	}
	if e.TwilioBaseURL != "" {
		out = append(out, Var{EnvTwilioBaseURL, e.TwilioBaseURL})
	}
	if e.RelayAllowPrivate {
		out = append(out, Var{EnvRelayAllowPrivate, "true"})
	}
	if e.RelaySecretFile != "" {
		out = append(out, Var{EnvRelaySecretFile, e.RelaySecretFile})
	}
	return out
}

// Read reads the Env from getenv. An unset concurrency is 0; one that is no
// number is an error (the rest of the Env is still read).
func Read(getenv func(string) string) (Env, error) {
	e := Env{
		Namespace: getenv(EnvCampaignNamespace), PodName: getenv(EnvPodName),
		Campaign: getenv(EnvCampaign), CallbackURL: getenv(EnvCallbackURL),
		TwilioDir: getenv(EnvTwilioDir), CampaignFile: getenv(EnvCampaignFile),
		DrainTokenFile: getenv(EnvDrainTokenFile), RelaySecretFile: getenv(EnvRelaySecretFile),
		TwilioBaseURL: getenv(EnvTwilioBaseURL), RelayAllowPrivate: getenv(EnvRelayAllowPrivate) == "true",
	}
	if s := getenv(EnvShards); s != "" {
		e.Shards = strings.Split(s, ",")
	}
	var err error
	if s := strings.TrimSpace(getenv(EnvConcurrency)); s != "" {
		if e.Concurrency, err = strconv.Atoi(s); err != nil {
			err = fmt.Errorf("env %s %q is not a number", EnvConcurrency, getenv(EnvConcurrency))
		}
	}
	return e, err
}
