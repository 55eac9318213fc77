// Package campaignfile is how a worker knows its campaign: the operator
// writes the campaign as JSON into a ConfigMap mounted in every worker pod,
// and the worker loads it and follows its changes (Watcher, a Source). Its
// call settings in force, defaults included, are worked out by Settings.
package campaignfile

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/periodic"
	"github.com/delauto/delauto/internal/phone"
)

// Config is the file's content.
type Config struct {
	// Namespace and Name are the CallCampaign's.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Spec is the campaign's spec, defaults applied.
	Spec v1.CallCampaignSpec `json:"spec"`
}

// Marshal encodes c as the file's content.
func Marshal(c Config) ([]byte, error) { return json.MarshalIndent(c, "", "  ") }

// Load reads and checks the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the campaign file: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and checks a campaign file's content; path names it in errors.
func Parse(data []byte, path string) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		// The decoder quotes what it refuses (an unknown field's name),
		// which could be a number; the error is logged.
		return nil, fmt.Errorf("campaign file %s: %s", path, phone.Scrub(err.Error()))
	}
	if c.Namespace == "" || c.Name == "" {
		return nil, fmt.Errorf("campaign file %s names no campaign (namespace and name are required)", path)
	}
	if len(c.Spec.Twilio.FromNumbers) == 0 {
		return nil, fmt.Errorf("campaign file %s: the campaign has no from numbers", path)
	}
	return &c, nil
}

// Source gives the campaign in force; a Watcher is one. A new pointer means
// the campaign changed.
type Source interface {
	Current() *Config
}

// Static is a Source that never changes.
type Static struct{ Config *Config }

// Current returns the campaign.
func (s Static) Current() *Config { return s.Config }

// The defaults the CRD gives a campaign's call settings; a campaign that
// lacks one (a file written by hand or before the field had a default) is
// called with them too.
const (
	DefaultRingTimeout           = 30 * time.Second
	DefaultTimeLimit             = 60 * time.Second
	DefaultInstructionsMaxLength = 30 * time.Second
	DefaultCallsPerSecond        = 1
)

// CallSettings are the call settings in force of a campaign.
type CallSettings struct {
	// RingTimeout is how long a call rings before it counts as no-answer.
	RingTimeout time.Duration
	// TimeLimit is the longest a call lasts.
	TimeLimit time.Duration
	// InstructionsMaxLength bounds recorded instructions (before the time
	// limit cuts them further).
	InstructionsMaxLength time.Duration
	// CallsPerSecond is the Twilio account's call-creation rate.
	CallsPerSecond int32
}

// Settings returns spec's call settings, with the defaults where spec has
// none: the one place they are worked out, for the operator and the workers.
func Settings(spec *v1.CallCampaignSpec) CallSettings {
	or := func(d *metav1.Duration, def time.Duration) time.Duration {
		if d != nil && d.Duration > 0 {
			return d.Duration
		}
		return def
	}
	s := CallSettings{
		RingTimeout:           or(spec.Script.RingTimeout, DefaultRingTimeout),
		TimeLimit:             or(spec.Script.TimeLimit, DefaultTimeLimit),
		InstructionsMaxLength: or(spec.Script.InstructionsMaxLength, DefaultInstructionsMaxLength),
		CallsPerSecond:        spec.Twilio.CallsPerSecond,
	}
	if s.CallsPerSecond <= 0 {
		s.CallsPerSecond = DefaultCallsPerSecond
	}
	return s
}

// Watcher holds the current campaign and reloads it when the file changes.
type Watcher struct {
	path    string
	current atomic.Pointer[Config]
	raw     []byte
	// OnError is told about a changed file that does not load; the last good
	// campaign stays current.
	OnError func(error)
	// OnChange is told about each new campaign.
	OnChange func(*Config)
}

// NewWatcher loads the file once; it fails when the file does not load.
func NewWatcher(path string) (*Watcher, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the campaign file: %w", err)
	}
	c, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	w := &Watcher{path: path, raw: data}
	w.current.Store(c)
	return w, nil
}

// Current is the campaign now in force.
func (w *Watcher) Current() *Config { return w.current.Load() }

// Run re-reads the file every interval until ctx ends. (Kubernetes updates
// a mounted ConfigMap by swapping a symlink, which inotify follows poorly;
// a cheap poll is dependable.)
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	periodic.Every(ctx, interval, func(context.Context) { w.reload() })
}

func (w *Watcher) reload() {
	data, err := os.ReadFile(w.path)
	if err == nil && bytes.Equal(data, w.raw) {
		return
	}
	var c *Config
	if err == nil {
		c, err = Parse(data, w.path)
	}
	if err != nil {
		if w.OnError != nil {
			w.OnError(err)
		}
		return
	}
	w.raw = data
	w.current.Store(c)
	if w.OnChange != nil {
		w.OnChange(c)
	}
}
