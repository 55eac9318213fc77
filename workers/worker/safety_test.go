package worker

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/delauto/delauto/workers/ratelimit"
	"github.com/delauto/delauto/workers/store"
)

// Scenario 1 of issue 13, the worker's part: when MongoDB becomes
// unreachable the worker drains. An attempt it claimed and that waits for
// its rate-limit slot is put back, not dialed when the slot comes (its
// lease cannot be renewed, and another worker may take it over). Once
// MongoDB is back the attempt is dialed, once.
//
// Before the fix (the store-unreachable path stopped reading but did not
// drain):
//
//	the attempt waiting for its slot was dialed 2s after MongoDB became unreachable
func TestMongoOutageDrainsAttemptsWaitingForASlot(t *testing.T) {
	w := newWorld(t)
	w.campaign.Spec.Twilio.CallsPerSecond = 1
	p, st := w.storeBehindProxy(t)
	r := w.start(w.workerOpts("w1", st))
	r.waitReady(t, http.StatusOK, 5*time.Second)
	// Two claims of other workers ahead on the account: the slot is about
	// 2 s away, well inside the lease.
	lim, err := ratelimit.New(w.rdb, w.sim.AccountSID(), 0.95, ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := lim.Reserve(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	booked, err := w.rdb.Get(context.Background(), ratelimit.Key(w.sim.AccountSID())).Result()
	if err != nil {
		t.Fatal(err)
	}
	a := w.create("+14155550170", true)
	w.waitState(a.ID, 10*time.Second, store.StateDialing)
	// The worker booked its slot: it holds the claim and waits.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if v, _ := w.rdb.Get(context.Background(), ratelimit.Key(w.sim.AccountSID())).Result(); v != booked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not book a slot")
		}
	}
	p.Down()
	lost := time.Now()
	time.Sleep(4 * time.Second) // past the slot
	for _, c := range w.sim.Creates() {
		if c.AttemptID == a.ID {
			t.Fatalf("the attempt waiting for its slot was dialed %s after MongoDB became unreachable", c.Time.Sub(lost).Round(100*time.Millisecond))
		}
	}
	p.Up(t)
	r.waitReady(t, http.StatusOK, 10*time.Second)
	w.dialedOnce(t, []string{a.ID})
}
