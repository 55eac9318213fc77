package dialer

import (
	"testing"
	"time"

	"github.com/delauto/delauto/internal/calltest"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/testservices"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Redis: true, Mongo: true}, &env)
}

// harness is one test's world (calltest.World) with the dialer's metrics.
type harness struct {
	*calltest.World
	t       *testing.T
	twilio  TwilioCalls
	metrics *Metrics
}

func newHarness(t *testing.T, opts ...calltest.Opt) *harness {
	t.Helper()
	w := calltest.New(t, env, opts...)
	m, err := NewMetrics(w.Reg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{World: w, t: t, twilio: w.Twilio, metrics: m}
}

// dialer returns a Dialer of the harness; edit adjusts its options.
func (h *harness) dialer(owner string, edit ...func(*Options)) *Dialer {
	h.t.Helper()
	o := Options{
		Store: h.St, Redis: h.Rdb, Twilio: h.twilio, AccountSID: h.Sim.AccountSID(),
		Campaign: campaignfile.Static{Config: h.Campaign}, Owner: owner, Lease: 10 * time.Second, TwilioTimeout: h.Timeout,
		RateLimitBackoff: 20 * time.Millisecond, RecordTimeout: 5 * time.Second,
		Metrics: h.metrics, Logger: h.Log,
	}
	for _, e := range edit {
		e(&o)
	}
	d, err := New(o)
	if err != nil {
		h.t.Fatalf("dialer: %v", err)
	}
	return d
}
