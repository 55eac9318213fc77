package dialer

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/phone"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/internal/script"
	"github.com/delauto/delauto/workers/store"
)

// Campaign is a campaign compiled for dialing.
type Campaign struct {
	// Key is namespace/name, as attempts name their campaign.
	Key string
	// Namespace and Name are the CallCampaign's.
	Namespace, Name string
	// Policy is the compiled schedule (calling hours).
	Policy *schedule.Policy
	// From are the caller IDs.
	From []string
	// CallsPerSecond is the account's call-creation rate.
	CallsPerSecond float64
	// CallbackURL is the public base URL of the callbacks.
	CallbackURL string
	// RingTimeout and TimeLimit are the call's, in whole seconds.
	RingTimeout, TimeLimit int
	// MachineDetection asks Twilio for asynchronous answering-machine
	// detection (the campaign hangs up on or leaves a voicemail for machines).
	MachineDetection bool
	// Suspended stops dialing.
	Suspended bool
}

// Compile checks a campaign and compiles what dialing needs. callbackURL,
// when set, overrides the campaign's.
func Compile(c *campaignfile.Config, callbackURL string) (*Campaign, error) {
	if c == nil {
		return nil, fmt.Errorf("no campaign")
	}
	var probs []string
	p, err := schedule.Compile(&c.Spec)
	if err != nil {
		probs = append(probs, err.Error())
	}
	set := campaignfile.Settings(&c.Spec)
	out := &Campaign{
		Key: c.Namespace + "/" + c.Name, Namespace: c.Namespace, Name: c.Name, Policy: p,
		CallsPerSecond: float64(set.CallsPerSecond), Suspended: c.Spec.Suspend,
		RingTimeout: seconds(set.RingTimeout), TimeLimit: seconds(set.TimeLimit),
	}
	switch c.Spec.Script.AnsweringMachine {
	case v1.MachineHangUp, v1.MachineVoicemail:
		out.MachineDetection = true
	case "":
	default:
		probs = append(probs, fmt.Sprintf("script.answeringMachine %q is neither HangUp nor Voicemail", c.Spec.Script.AnsweringMachine))
	}
	if g := c.Spec.Script.Greeting; g != "" {
		if err := script.Validate(g); err != nil {
			probs = append(probs, "script.greeting: "+err.Error())
		}
	}
	if len(c.Spec.Twilio.FromNumbers) == 0 {
		probs = append(probs, "twilio.fromNumbers is empty")
	}
	for _, n := range c.Spec.Twilio.FromNumbers {
		if err := phone.Validate(string(n)); err != nil {
			probs = append(probs, "twilio.fromNumbers: "+err.Error())
			continue
		}
		out.From = append(out.From, string(n))
	}
	out.CallbackURL = callbackURL
	if out.CallbackURL == "" {
		out.CallbackURL = c.Spec.Twilio.CallbackURL
	}
	if err := CheckCallbackURL(out.CallbackURL); err != nil {
		probs = append(probs, err.Error())
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("campaign %s cannot be dialed: %s", out.Key, strings.Join(probs, "; "))
	}
	return out, nil
}

// CheckCallbackURL reports a callback base URL Twilio could not call.
func CheckCallbackURL(s string) error {
	if s == "" {
		return fmt.Errorf("no callback URL (the campaign's twilio.callbackURL, or the worker's --callback-url)")
	}
	_, err := callurls.CheckBase(s)
	return err
}

// seconds is d in whole seconds, at least one.
func seconds(d time.Duration) int { return max(1, int(d.Round(time.Second)/time.Second)) }

// CallerID is the caller ID of an attempt: the one it already has, if it is
// still one of the campaign's, else the one a hash of the recipient's number
// picks, so every attempt to a number uses the same caller ID.
func (c *Campaign) CallerID(a *store.Attempt) string {
	if a.From != "" {
		for _, f := range c.From {
			if f == a.From {
				return f
			}
		}
	}
	h := fnv.New32a()
	h.Write([]byte(a.To))
	return c.From[h.Sum32()%uint32(len(c.From))]
}

// input is the planner's view of an attempt's delivery: the recipient's time
// zone (the campaign's default when the attempt has none or names one this
// build does not know) and the delivery window.
func (c *Campaign) input(a *store.Attempt) (schedule.Input, error) {
	in := schedule.Input{WindowEnd: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}
	if a.Context == nil {
		return in, nil
	}
	var err error
	if in.Location, err = c.Policy.Location(v1.TimeZone(a.Context.TimeZone)); err != nil {
		in.Location = nil
	}
	if !a.Context.WindowEnd.IsZero() {
		in.WindowStart, in.WindowEnd = a.Context.WindowStart, a.Context.WindowEnd
	}
	return in, err
}
