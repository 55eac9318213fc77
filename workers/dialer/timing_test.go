package dialer

import (
	"strings"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/campaignfile"
)

// Each rule of Timing.Derive refuses the combinations that allow a second
// call, and the defaults keep to all of them.
func TestTimingRules(t *testing.T) {
	s := time.Second
	def, err := Timing{}.Derive()
	if err != nil {
		t.Fatalf("the defaults break a rule: %v", err)
	}
	if def.Lease != 30*s || def.TwilioTimeout != 10*s || def.MaxWait != 17*s || def.QueueLease != 15*s ||
		def.StaleAfter != 5*s || def.UnknownGrace != 2*time.Minute || def.ClockSkew != s {
		t.Errorf("defaults %+v", def)
	}
	cases := []struct {
		name string
		in   Timing
		rule string // "" accepted
	}{
		// RuleLeaseCoversRequest: renewed every 10 s, a 30 s lease always
		// has 20 s left; a 10 s request and 3 s of margin fit, 18 s do not.
		{"lease covers a request", Timing{Lease: 30 * s, TwilioTimeout: 10 * s}, ""},
		{"lease too short for a request after a renewal", Timing{Lease: 30 * s, TwilioTimeout: 18 * s, UnknownGrace: time.Hour}, RuleLeaseCoversRequest},
		{"lease shorter than a request", Timing{Lease: 5 * s, TwilioTimeout: 10 * s}, RuleLeaseCoversRequest},
		{"the shortest lease for a 10 s request", Timing{Lease: minLease(10 * s), TwilioTimeout: 10 * s}, ""},
		// RuleMaxWait: a slot at most 30-10-3 = 17 s away is dialed within
		// the claim's first lease.
		{"max wait inside the first lease", Timing{Lease: 30 * s, TwilioTimeout: 10 * s, MaxWait: 17 * s}, ""},
		{"max wait beyond the first lease", Timing{Lease: 30 * s, TwilioTimeout: 10 * s, MaxWait: 18 * s}, RuleMaxWait},
		{"max wait as long as the lease", Timing{Lease: 30 * s, TwilioTimeout: 10 * s, MaxWait: 30 * s}, RuleMaxWait},
		// RuleGrace: a call created late for a request that timed out is
		// listed before the reconciler can release the attempt.
		{"grace covers a late call", Timing{Lease: 30 * s, TwilioTimeout: 10 * s, StaleAfter: 5 * s, UnknownGrace: 6 * s}, ""},
		{"grace shorter than a late call", Timing{Lease: 30 * s, TwilioTimeout: 10 * s, StaleAfter: 5 * s, UnknownGrace: 5 * s}, RuleGrace},
		{"grace shorter than the clock skew", Timing{Lease: 30 * s, TwilioTimeout: 10 * s, StaleAfter: 5 * s, UnknownGrace: 10 * s, ClockSkew: 11 * s}, RuleGrace},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.in.Derive()
			switch {
			case c.rule == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.rule != "" && err == nil:
				t.Fatalf("accepted %+v, want rule %s to refuse it", got, c.rule)
			case c.rule != "" && !strings.HasPrefix(err.Error(), c.rule+": "):
				t.Fatalf("refused with %v, want rule %s", err, c.rule)
			}
			if err == nil && got.MaxWait+got.TwilioTimeout+got.Margin() > got.Lease {
				t.Errorf("derived max wait %s leaves a slot outside the first lease", got.MaxWait)
			}
		})
	}
}

// The dialer applies the rules and the derived wait.
func TestDialerRefusesATimingThatAllowsASecondCall(t *testing.T) {
	h := newHarness(t)
	o := Options{Store: h.St, Redis: h.Rdb, Twilio: h.twilio, AccountSID: h.Sim.AccountSID(), Campaign: campaignfile.Static{Config: h.Campaign}, Owner: "w1",
		Lease: 10 * time.Second, TwilioTimeout: 10 * time.Second}
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), RuleLeaseCoversRequest) {
		t.Errorf("New with a lease no longer than the Twilio timeout: %v", err)
	}
	o.TwilioTimeout, o.MaxWait = 5*time.Second, 6*time.Second
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), RuleMaxWait) {
		t.Errorf("New with a wait beyond the first lease: %v", err)
	}
	o.MaxWait = 0
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if d.opts.MaxWait != 4*time.Second {
		t.Errorf("derived max wait %s, want 10s - 5s - 1s", d.opts.MaxWait)
	}
}
