package callbacks

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/testservices"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

// TestOtherCampaignsAttemptIsRefused checks that a callback server serves
// only its own campaign: a correctly signed callback naming an attempt of
// another campaign (one that shares the call log) is refused with 403 and a
// reason, and changes nothing, whether the call context is cached or not.
func TestOtherCampaignsAttemptIsRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	ctx := context.Background()
	uid := testservices.UUID()
	start := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	a, _, err := h.st.CreateAttempt(ctx, store.NewAttempt{
		Delivery: store.DeliveryRef{UID: uid, Namespace: "rival", Name: "parcel-" + uid[:8]},
		Campaign: "rival/morning", Shard: "s0", Number: 1, Due: time.Now(), To: newTo(),
		Context: &store.CallContext{RecipientName: "Ben", TimeZone: "UTC", WindowStart: start, WindowEnd: start.Add(time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if a, err = h.st.Claim(ctx, a.ID, "w", time.Minute); err != nil {
		t.Fatal(err)
	}
	q := refQuery(a.ID, a.Fence)
	sid := callSIDFor(7)
	rec := "RE" + strings.Repeat("b", 32)
	requests := map[string]url.Values{
		callurls.VoicePath:         twimlForm(sid, nil),
		callurls.GatherPath:        twimlForm(sid, map[string]string{"Digits": "9"}),
		callurls.RecordPath:        twimlForm(sid, map[string]string{"RecordingSid": rec, "RecordingUrl": "https://api.twilio.com/r/" + rec, "RecordingDuration": "5"}),
		callurls.RecordingPath:     twimlForm(sid, map[string]string{"RecordingSid": rec, "RecordingUrl": "https://api.twilio.com/r/" + rec, "RecordingStatus": "completed", "RecordingDuration": "5"}),
		callurls.TranscriptionPath: twimlForm(sid, map[string]string{"RecordingSid": rec, "TranscriptionStatus": "completed", "TranscriptionText": "leave it with the neighbour"}),
		callurls.AMDPath:           twimlForm(sid, map[string]string{"AnsweredBy": "human"}),
		callurls.StatusPath:        statusForm(sid, "completed", 3),
	}
	mc, err := env.Mongo.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Disconnect(ctx)
	for _, cached := range []bool{false, true} {
		if cached {
			// As if this worker had primed it (a shared Redis).
			info := h.srv.infoFor(a, h.camp)
			if err := h.srv.put(ctx, info); err != nil {
				t.Fatal(err)
			}
		}
		for path, form := range requests {
			req := h.request(path, q, form)
			req.Header.Set("X-Twilio-Signature", twiliosim.Sign(h.sim.AuthToken(), publicBase+path+"?"+q, form))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "another campaign") {
				t.Errorf("%s (cached %v): %d %q, want 403 naming another campaign", path, cached, resp.StatusCode, body)
			}
		}
		h.untouched(a)
		if n, _ := mc.Database(h.db).Collection(store.OptOutsCollection).CountDocuments(ctx, map[string]any{}); n != 0 {
			t.Errorf("%d opt-outs written", n)
		}
	}
	if got := testCounter(t, h, "delauto_callbacks_rejected_total", "reason", "other_campaign"); got != 14 {
		t.Errorf("rejected{other_campaign} = %v, want 14", got)
	}
}
