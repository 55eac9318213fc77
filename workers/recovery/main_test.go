package recovery

import (
	"context"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/calltest"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/workers/dialer"
	"github.com/delauto/delauto/workers/store"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Redis: true, Mongo: true}, &env)
}

// harness is one test's world (calltest.World) with the dialer's metrics,
// which the recovery loops share.
type harness struct {
	*calltest.World
	t       *testing.T
	twilio  dialer.TwilioCalls
	metrics *dialer.Metrics
}

func newHarness(t *testing.T, opts ...calltest.Opt) *harness {
	t.Helper()
	w := calltest.New(t, env, opts...)
	m, err := dialer.NewMetrics(w.Reg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{World: w, t: t, twilio: w.Twilio, metrics: m}
}

// dialer returns a Dialer of the harness; edit adjusts its options.
func (h *harness) dialer(owner string, edit ...func(*dialer.Options)) *dialer.Dialer {
	h.t.Helper()
	o := dialer.Options{
		Store: h.St, Redis: h.Rdb, Twilio: h.twilio, AccountSID: h.Sim.AccountSID(),
		Campaign: campaignfile.Static{Config: h.Campaign}, Owner: owner, Lease: 10 * time.Second, TwilioTimeout: h.Timeout,
		RateLimitBackoff: 20 * time.Millisecond, RecordTimeout: 5 * time.Second,
		Metrics: h.metrics, Logger: h.Log,
	}
	for _, e := range edit {
		e(&o)
	}
	d, err := dialer.New(o)
	if err != nil {
		h.t.Fatalf("dialer: %v", err)
	}
	return d
}

// handleUntilDialed runs d's handler on the attempt, as the queue would
// deliver it again after each put-back, until it is dialed or the deadline.
func (h *harness) handleUntilDialed(d *dialer.Dialer, a *store.Attempt, deadline time.Time) {
	h.t.Helper()
	for time.Now().Before(deadline) {
		_ = d.Handle(context.Background(), h.Message(a))
		if got := h.Get(a.ID); got.State == store.StateDialed {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := h.Get(a.ID)
	h.t.Fatalf("attempt not dialed by %s: %s (%q)", deadline.Format(time.TimeOnly), got.State, got.Reason)
}
