package callbacks

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

// TestLogsHoldNoPhoneNumbersOrTranscripts runs realistic calls (recorded
// and transcribed instructions relayed by SMS and a webhook that fails
// twice and echoes the payload, an opt-out) with debug logging captured,
// and fails if any phone number or transcript text appears in the logs.
func TestLogsHoldNoPhoneNumbersOrTranscripts(t *testing.T) {
	var logs testservices.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHarness(t, harnessOpts{hookFail: 2, edit: func(c *Config) { c.Logger = logger }})
	a, _ := h.call(twiliosim.MustNamed("press3"), dialOpts{prime: true})
	h.waitAttempt(a.ID, "webhook sent after the transcription", func(a *store.Attempt) bool {
		return a.Notify.Webhook.State == store.NotifySent && a.Response != nil && a.Response.TranscriptionStatus != ""
	})
	b, _ := h.call(twiliosim.MustNamed("press9"), dialOpts{prime: true})
	out := logs.String()
	if !strings.Contains(out, "relay") {
		t.Fatalf("the run logged nothing of the relay; the test would prove nothing:\n%s", out)
	}
	for _, secret := range []string{a.To, b.To, agentPhone, fromNumber, "+14155550111", "neighbour"} {
		if strings.Contains(out, secret) || strings.Contains(out, strings.TrimPrefix(secret, "+")) {
			t.Errorf("the logs hold %q:\n%s", secret, out)
		}
	}
}
