package callbacks

import (
	"context"
	"net/http"
	"testing"
	"time"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/callrate"
	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/twiliosim"
)

// The autoscaler sizes the fleet by the length of the campaign's recent
// calls: each answered call's final status callback adds its length once.
func TestCompletedCallRecordsItsDuration(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	a, _ := h.call(twiliosim.MustNamed("press1"), dialOpts{prime: true})
	if a.Result != v1.CallCompleted || a.DurationSec < 1 {
		t.Fatalf("attempt %s result %s duration %d, want a completed call", a.ID, a.Result, a.DurationSec)
	}
	busy, _ := h.call(twiliosim.MustNamed("busy"), dialOpts{})
	if busy.Result != v1.CallBusy {
		t.Fatalf("attempt %s result %s, want busy", busy.ID, busy.Result)
	}
	h.settle()
	want := time.Duration(a.DurationSec) * time.Second
	sum, n, err := callrate.Durations(ctx, h.rdb, h.camp.Namespace, h.camp.Name, time.Now())
	if err != nil || n != 1 || sum != want {
		t.Fatalf("recorded %s over %d calls (%v), want the answered call's %s once", sum, n, err, want)
	}

	// Twilio sends the final callback again: the call still counts once.
	form := statusForm(a.CallSID, "completed", int(a.LastSeq)+1)
	if resp := h.post(callurls.StatusPath, refQuery(a.ID, a.Fence), form, h.sim.AuthToken()); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("repeated final callback: %d", resp.StatusCode)
	}
	h.settle()
	if sum, n, err := callrate.Durations(ctx, h.rdb, h.camp.Namespace, h.camp.Name, time.Now()); err != nil || n != 1 || sum != want {
		t.Fatalf("after a repeated callback: %s over %d calls (%v), want %s once", sum, n, err, want)
	}
}
