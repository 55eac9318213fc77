package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestRetentionPerAttempt(t *testing.T) { inBothModes(t, testRetentionPerAttempt) }

func testRetentionPerAttempt(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) { c.Retention = 24 * time.Hour })
	hour, zero := time.Hour, time.Duration(0)
	create := func(uid string, r *time.Duration) *Attempt {
		n := newAttempt(uid, 1, clk.Now())
		n.Retention = r
		return mustCreate(t, s, n)
	}
	// Each way an attempt ends stamps its expiry from its own retention.
	cancelled := create("cancelled", &hour)
	if a, err := s.MarkCancelled(ctx, cancelled.ID, AnyFence, "window passed"); err != nil || a.ExpireAt == nil || !a.ExpireAt.Equal(clk.Now().Add(time.Hour)) {
		t.Fatalf("cancelled with 1h retention: expireAt %v, %v", a.ExpireAt, err)
	}
	failed := mustClaim(t, s, create("failed", &zero).ID)
	if a, err := s.MarkFailed(ctx, failed.ID, failed.Fence, 21211, "invalid number"); err != nil || a.ExpireAt == nil || !a.ExpireAt.Equal(clk.Now()) {
		t.Fatalf("failed with 0 retention: expireAt %v, %v; want at once", a.ExpireAt, err)
	}
	create("called", nil)
	c := mustClaim(t, s, AttemptID("called", 1))
	if _, err := s.MarkDialed(ctx, c.ID, c.Fence, "CA1", ""); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	a, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: c.ID}, StatusUpdate{Status: "completed", Seq: 3})
	if err != nil || a.ExpireAt == nil || !a.ExpireAt.Equal(clk.Now().Add(24*time.Hour)) || *a.EndedAt != clk.Now() {
		t.Fatalf("completed without its own retention: expireAt %v, %v; want the store's 24h", a.ExpireAt, err)
	}
	// Not finished: no expiry.
	if a := create("open", &hour); a.ExpireAt != nil {
		t.Fatalf("a queued attempt expires at %v", a.ExpireAt)
	}
	bad := newAttempt("bad", 1, clk.Now())
	neg := -time.Second
	bad.Retention = &neg
	if _, _, err := s.CreateAttempt(ctx, bad); !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), "retention -1s must not be negative") {
		t.Fatalf("negative retention: %v", err)
	}

	// A store without a default keeps attempts without their own retention.
	forever := openStore(t, withClock(clk))
	mustCreate(t, forever, newAttempt("kept", 1, clk.Now()))
	if a, err := forever.MarkCancelled(ctx, AttemptID("kept", 1), AnyFence, "x"); err != nil || a.ExpireAt != nil {
		t.Fatalf("no retention anywhere: expireAt %v, %v; want none", a.ExpireAt, err)
	}
}

// finished creates attempt uid with retention r and cancels it.
func finished(t *testing.T, s *Store, uid string, r time.Duration) *Attempt {
	t.Helper()
	n := newAttempt(uid, 1, s.now())
	n.Retention = &r
	a, err := s.MarkCancelled(context.Background(), mustCreate(t, s, n).ID, AnyFence, "done")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestPurgeInBatchesKeepsPendingRecordings(t *testing.T) {
	inBothModes(t, testPurgeInBatchesKeepsPendingRecordings)
}

func testPurgeInBatchesKeepsPendingRecordings(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	for i := range 5 {
		finished(t, s, fmt.Sprintf("u%d", i), time.Hour)
	}
	rec := finished(t, s, "rec", time.Hour)
	if _, _, err := s.RecordRecording(ctx, rec.ID, Recording{SID: "RE1", URL: "https://api.twilio.com/RE1"}); err != nil {
		t.Fatal(err)
	}
	later := finished(t, s, "later", 3*time.Hour)
	after := clk.Now().Add(2 * time.Hour)
	for _, want := range []int64{2, 2, 1, 0} {
		if n, err := s.PurgeExpired(ctx, after, 2); err != nil || n != want {
			t.Fatalf("purge batch: %d, %v; want %d", n, err, want)
		}
	}
	if _, err := s.Get(ctx, rec.ID); err != nil {
		t.Fatalf("expired attempt with a recording still at Twilio was purged: %v", err)
	}
	if _, err := s.Get(ctx, later.ID); err != nil {
		t.Fatalf("attempt not yet expired was purged: %v", err)
	}
	if _, err := s.DeleteRecordingsDone(ctx, rec.ID, []string{"RE1"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PurgeExpired(ctx, after, 2); err != nil || n != 1 {
		t.Fatalf("purge once its recording was deleted: %d, %v", n, err)
	}
	if _, err := s.PurgeExpired(ctx, after, 0); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("limit 0: %v", err)
	}
}

func TestRecordingsLifecycle(t *testing.T) { inBothModes(t, testRecordingsLifecycle) }

func testRecordingsLifecycle(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	a := finished(t, s, "u1", time.Hour)
	for _, sid := range []string{"RE1", "RE2", "RE2"} {
		if _, _, err := s.RecordRecording(ctx, a.ID, Recording{SID: sid, URL: "https://api.twilio.com/" + sid}); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := s.Get(ctx, a.ID)
	if got.Recordings != RecordingsPending || strings.Join(got.PendingRecordingSIDs(), ",") != "RE1,RE2" {
		t.Fatalf("after two recordings: %s %v", got.Recordings, got.PendingRecordingSIDs())
	}
	ids := func(as []Attempt, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range as {
			out = append(out, a.ID)
		}
		return strings.Join(out, ",")
	}
	if got := ids(s.ExpiringRecordings(ctx, clk.Now().Add(30*time.Minute), 10)); got != "" {
		t.Fatalf("recordings expiring in 30m: %s, want none (it expires in 1h)", got)
	}
	if got := ids(s.ExpiringRecordings(ctx, clk.Now().Add(2*time.Hour), 10)); got != a.ID {
		t.Fatalf("recordings expiring in 2h: %q", got)
	}
	// Told: only once a notification was sent, only for its campaign.
	if got := ids(s.ToldRecordings(ctx, "shop/evening", 10)); got != "" {
		t.Fatalf("told recordings before any notification: %s", got)
	}
	if _, err := s.BeginNotification(ctx, a.ID, ChannelWebhook, "relay", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishNotification(ctx, a.ID, ChannelWebhook, "relay", nil); err != nil {
		t.Fatal(err)
	}
	if got := ids(s.ToldRecordings(ctx, "shop/evening", 10)); got != a.ID {
		t.Fatalf("told recordings after the webhook was sent: %q", got)
	}
	if got := ids(s.ToldRecordings(ctx, "shop/other", 10)); got != "" {
		t.Fatalf("told recordings of another campaign: %s", got)
	}

	// A failed deletion waits for its retry and keeps the attempt meanwhile.
	retry, keep := clk.Now().Add(10*time.Minute), clk.Now().Add(3*time.Hour)
	f, err := s.DeleteRecordingsFailed(ctx, a.ID, errors.New("twilio: 503"), retry, keep)
	if err != nil || f.RecordingsTries != 1 || f.RecordingsError != "twilio: 503" || !f.ExpireAt.Equal(keep) {
		t.Fatalf("failed deletion: %+v, %v", f, err)
	}
	if got := ids(s.ExpiringRecordings(ctx, clk.Now().Add(4*time.Hour), 10)); got != "" {
		t.Fatalf("recordings waiting for their retry listed: %s", got)
	}
	clk.Add(11 * time.Minute)
	if got := ids(s.ExpiringRecordings(ctx, clk.Now().Add(4*time.Hour), 10)); got != a.ID {
		t.Fatalf("recordings due for their retry: %q", got)
	}

	// A recording arriving while the others were deleted stays pending.
	if _, _, err := s.RecordRecording(ctx, a.ID, Recording{SID: "RE3", URL: "https://api.twilio.com/RE3"}); err != nil {
		t.Fatal(err)
	}
	d, err := s.DeleteRecordingsDone(ctx, a.ID, []string{"RE1", "RE2"})
	if err != nil || d.Recordings != RecordingsPending || strings.Join(d.PendingRecordingSIDs(), ",") != "RE3" {
		t.Fatalf("done with two of three: %s %v %v", d.Recordings, d.PendingRecordingSIDs(), err)
	}
	d, err = s.DeleteRecordingsDone(ctx, a.ID, []string{"RE3"})
	if err != nil || d.Recordings != RecordingsDeleted || len(d.PendingRecordingSIDs()) != 0 || d.Response.RecordingURL != "" ||
		d.RecordingsTries != 0 || d.RecordingsRetryAt != nil || d.RecordingsDeletedAt == nil || d.Response.RecordingSID != "RE3" {
		t.Fatalf("done with all: %+v %+v, %v", d, d.Response, err)
	}
	if _, err := s.DeleteRecordingsDone(ctx, "nope", []string{"RE1"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("done on a missing attempt: %v", err)
	}
}

func TestEraseANumber(t *testing.T) { inBothModes(t, testEraseANumber) }

func testEraseANumber(t *testing.T, openStore opener) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk))
	const num, other = "+4915112345678", "+4915187654321"
	mk := func(uid, to string) *Attempt {
		n := newAttempt(uid, 1, clk.Now())
		n.To = to
		n.Context = &CallContext{RecipientName: "Erika Mustermann", Address: "Hauptstr. 1", TimeZone: "Europe/Berlin", AgentName: "Ali"}
		return mustCreate(t, s, n)
	}
	a, b := mk("a", num), mk("b", num)
	keep := mk("c", other)
	c := mustClaim(t, s, a.ID)
	if _, err := s.MarkDialed(ctx, a.ID, c.Fence, "CA1", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RecordResponse(ctx, a.ID, Answer{Choice: "Instructions", Speech: "leave it at the back door"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RecordRecording(ctx, a.ID, Recording{SID: "RE1", URL: "https://api.twilio.com/RE1"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.AttemptsTo(ctx, num)
	if err != nil || len(got) != 2 || got[0].ID != a.ID || got[1].ID != b.ID {
		t.Fatalf("AttemptsTo = %v, %v", got, err)
	}
	if _, err := s.AttemptsTo(ctx, "0151"); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("AttemptsTo a malformed number: %v", err)
	}
	// Recordings not deleted yet stay listed for a later try.
	x, err := s.Anonymize(ctx, a.ID, false)
	if err != nil || x.To != "" || x.Context != nil || x.Response.Speech != "" || x.Response.RecordingURL != "" ||
		x.Response.Choice != "Instructions" || x.ErasedAt == nil || x.CallSID != "CA1" || strings.Join(x.PendingRecordingSIDs(), ",") != "RE1" {
		t.Fatalf("anonymized (recordings kept): %+v, %v", x, err)
	}
	if x, err = s.Anonymize(ctx, a.ID, true); err != nil || x.Recordings != RecordingsDeleted || len(x.PendingRecordingSIDs()) != 0 {
		t.Fatalf("anonymized (recordings deleted): %+v, %v", x, err)
	}
	if _, err := s.Anonymize(ctx, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("anonymize a missing attempt: %v", err)
	}
	if got, _ := s.AttemptsTo(ctx, num); len(got) != 1 || got[0].ID != b.ID {
		t.Fatalf("after anonymizing one, AttemptsTo = %v", got)
	}
	if k, _ := s.Get(ctx, keep.ID); k.To != other || k.Context == nil {
		t.Fatalf("another number's attempt changed: %+v", k)
	}
	// No trace of the number in the anonymized document.
	raw, err := s.attempts.FindOne(ctx, bson.D{{Key: "_id", Value: a.ID}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	for _, pii := range []string{num, "Erika", "Hauptstr", "back door"} {
		if strings.Contains(raw.String(), pii) {
			t.Errorf("anonymized attempt still holds %q: %s", pii, raw)
		}
	}
}

func TestOptOutsKeepOnlyAHash(t *testing.T) { inBothModes(t, testOptOutsKeepOnlyAHash) }

func testOptOutsKeepOnlyAHash(t *testing.T, openStore opener) {
	ctx := context.Background()
	s := openStore(t)
	const num = "+4915112345678"
	if _, err := s.AddOptOut(ctx, "shop", num, "a-1", "menu"); err != nil {
		t.Fatal(err)
	}
	// An opt-out recorded before numbers were hashed.
	if _, err := s.optouts.InsertOne(ctx, OptOut{ID: OptOutID("depot", num), Namespace: "depot", Number: num, At: s.now(), Reason: "agent"}); err != nil {
		t.Fatal(err)
	}
	if created, err := s.AddOptOut(ctx, "depot", num, "", "again"); err != nil || created {
		t.Fatalf("adding an opt-out recorded in plain: created=%v %v, want the existing one", created, err)
	}
	if n, err := s.EraseOptOuts(ctx, num); err != nil || n != 1 {
		t.Fatalf("EraseOptOuts = %d, %v; want the plain one replaced", n, err)
	}
	if n, err := s.EraseOptOuts(ctx, num); err != nil || n != 0 {
		t.Fatalf("EraseOptOuts again = %d, %v", n, err)
	}
	cur, err := s.optouts.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var all []bson.Raw
	if err := cur.All(ctx, &all); err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("%d opt-outs, want 2", len(all))
	}
	for _, o := range all {
		if strings.Contains(o.String(), "4915112345678") {
			t.Errorf("opt-out holds the number: %s", o)
		}
	}
	// They keep working, also for another replica of the same database.
	cfg := s.cfg
	cfg.Serialize = SerializeAuto
	twin, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer twin.Close(ctx)
	for _, st := range []*Store{s, twin} {
		for _, ns := range []string{"shop", "depot"} {
			if out, err := st.IsOptedOut(ctx, ns, num); err != nil || !out {
				t.Errorf("IsOptedOut(%s) after erasure = %v, %v", ns, out, err)
			}
		}
	}
	if removed, err := twin.RemoveOptOut(ctx, "depot", num); err != nil || !removed {
		t.Fatalf("RemoveOptOut of a hashed opt-out: %v, %v", removed, err)
	}
	if out, _ := s.IsOptedOut(ctx, "depot", num); out {
		t.Fatal("still opted out after removal")
	}
}
