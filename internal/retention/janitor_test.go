package retention_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/delauto/delauto/internal/retention"
	"github.com/delauto/delauto/internal/twiliosim"
	"github.com/delauto/delauto/workers/store"
)

var _ manager.LeaderElectionRunnable = &retention.Janitor{}

func newJanitor(s *store.Store, clk *clock, rc oneAccount) *retention.Janitor {
	return &retention.Janitor{
		Store: s, Accounts: rc, Metrics: retention.NewMetrics(prometheus.NewRegistry()),
		Batch: 2, Interval: time.Minute, RecordingLead: time.Minute, Pause: time.Millisecond,
		Log: logr.Discard(), Now: clk.Now,
	}
}

func TestShortRetentionIsPurgedOnFerretDB(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, clk)
	if s.Features().TTLIndexes {
		t.Fatal("the test server has TTL indexes: this test is about the purge that replaces them")
	}
	sim, rc := startSim(t)
	var short []*store.Attempt
	for _, uid := range []string{"a", "b", "c", "d", "e"} {
		short = append(short, finished(t, s, uid, "+4915112345678", 10*time.Second))
	}
	withRec := short[0]
	rec := recorded(t, s, sim, withRec.ID)
	long := finished(t, s, "long", "+4915112345678", time.Hour)
	open := planned(t, s, "open", "+4915112345678", 10*time.Second)
	j := newJanitor(s, clk, oneAccount{rc})

	// Before the retention ends nothing goes, but a recording due within the
	// lead time is deleted at Twilio ahead of its attempt.
	clk.Add(5 * time.Second)
	res, err := j.Pass(ctx)
	if err != nil || res != (retention.PassResult{Recordings: 1}) {
		t.Fatalf("pass before expiry = %+v, %v; want the one recording deleted", res, err)
	}
	if r := simRecording(t, sim, rec.Sid); !r.Deleted || !r.TranscriptionDeleted {
		t.Fatalf("recording at Twilio: %+v, want it and its transcription deleted", r)
	}
	if a, err := s.Get(ctx, withRec.ID); err != nil || a.Recordings != store.RecordingsDeleted || a.Response.RecordingURL != "" {
		t.Fatalf("attempt after its recording was deleted: %+v, %v", a, err)
	}

	// After it, every attempt finished with the short retention is gone, in
	// batches of 2; the longer-kept and the unfinished ones stay.
	clk.Add(6 * time.Second)
	res, err = j.Pass(ctx)
	if err != nil || res.Purged != 5 {
		t.Fatalf("pass after expiry = %+v, %v; want 5 purged", res, err)
	}
	for _, a := range short {
		if _, err := s.Get(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("attempt %s still there after its retention: %v", a.ID, err)
		}
	}
	for _, a := range []*store.Attempt{long, open} {
		if _, err := s.Get(ctx, a.ID); err != nil {
			t.Errorf("attempt %s gone before its time: %v", a.ID, err)
		}
	}
	if got := testutil.ToFloat64(j.Metrics.Purged); got != 5 {
		t.Errorf("purged metric = %v, want 5", got)
	}
	if got := testutil.ToFloat64(j.Metrics.Recordings.WithLabelValues("deleted")); got != 1 {
		t.Errorf("recordings deleted metric = %v, want 1", got)
	}
	clk.Add(time.Hour)
	if res, err := j.Pass(ctx); err != nil || res.Purged != 1 {
		t.Fatalf("pass an hour later = %+v, %v; want the 1h attempt purged", res, err)
	}
}

func TestRecordingDeletionRetriesAndKeepsTheAttempt(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, clk)
	sim, rc := startSim(t)
	a := finished(t, s, "a", "+4915112345678", 10*time.Second)
	rec := recorded(t, s, sim, a.ID)
	j := newJanitor(s, clk, oneAccount{rc})

	// Twilio fails every try of this pass (the listing of transcriptions comes first).
	sim.QueueFaults(twiliosim.EndpointDeleteRecording, twiliosim.FaultServerError, twiliosim.FaultUnavailable, twiliosim.FaultServerError)
	clk.Add(11 * time.Second)
	res, err := j.Pass(ctx)
	if err != nil || res != (retention.PassResult{RecordingsFailed: 1}) {
		t.Fatalf("pass while Twilio fails = %+v, %v; want one failed recording and nothing purged", res, err)
	}
	got, err := s.Get(ctx, a.ID)
	if err != nil || got.RecordingsTries != 1 || got.RecordingsError == "" || got.Recordings != store.RecordingsPending ||
		!got.RecordingsRetryAt.Equal(clk.Now().Add(time.Minute)) || !got.ExpireAt.After(*got.RecordingsRetryAt) {
		t.Fatalf("attempt after a failed deletion: %+v, %v; want a retry in 1m and expiry after it", got, err)
	}
	if r := simRecording(t, sim, rec.Sid); r.Deleted {
		t.Fatal("recording deleted although every request failed")
	}
	if got := testutil.ToFloat64(j.Metrics.Recordings.WithLabelValues("failed")); got != 1 {
		t.Errorf("failed metric = %v, want 1", got)
	}
	// Not before its retry time, then deleted and the attempt purged.
	if res, err := j.Pass(ctx); err != nil || res != (retention.PassResult{}) {
		t.Fatalf("pass before the retry time = %+v, %v; want nothing", res, err)
	}
	clk.Add(time.Minute)
	if res, err := j.Pass(ctx); err != nil || res.Recordings != 1 {
		t.Fatalf("pass at the retry time = %+v, %v", res, err)
	}
	clk.Add(2 * time.Minute)
	if res, err := j.Pass(ctx); err != nil || res.Purged != 1 {
		t.Fatalf("pass once the postponed expiry passed = %+v, %v", res, err)
	}
	if r := simRecording(t, sim, rec.Sid); !r.Deleted {
		t.Fatal("recording not deleted at Twilio")
	}
	// A second failure waits twice as long.
	b := finished(t, s, "b", "+4915112345678", 0)
	recorded(t, s, sim, b.ID)
	sim.QueueFaults(twiliosim.EndpointDeleteRecording, twiliosim.FaultServerError, twiliosim.FaultServerError, twiliosim.FaultServerError,
		twiliosim.FaultServerError, twiliosim.FaultServerError, twiliosim.FaultServerError)
	j.Pass(ctx)
	clk.Add(time.Minute)
	j.Pass(ctx)
	if got, _ := s.Get(ctx, b.ID); got.RecordingsTries != 2 || !got.RecordingsRetryAt.Equal(clk.Now().Add(2*time.Minute)) {
		t.Fatalf("after two failures: tries %d, retry at %v; want 2 and in 2m", got.RecordingsTries, got.RecordingsRetryAt)
	}
}

func TestRecordingsDeletedOnceTheAgentWasTold(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, clk)
	sim, rc := startSim(t)
	told := planned(t, s, "told", "+4915112345678", time.Hour)
	notTold := planned(t, s, "quiet", "+4915112345678", time.Hour)
	r1, r2 := recorded(t, s, sim, told.ID), recorded(t, s, sim, notTold.ID)
	if _, err := s.BeginNotification(ctx, told.ID, store.ChannelSMS, "relay", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishNotification(ctx, told.ID, store.ChannelSMS, "relay", nil); err != nil {
		t.Fatal(err)
	}
	j := newJanitor(s, clk, oneAccount{rc})
	if res, err := j.Pass(ctx); err != nil || res.Recordings != 0 {
		t.Fatalf("pass without after-relay campaigns = %+v, %v; want nothing deleted", res, err)
	}
	j.AfterRelay = func(context.Context) ([]string, error) { return []string{"shop/evening"}, nil }
	if res, err := j.Pass(ctx); err != nil || res.Recordings != 1 {
		t.Fatalf("pass with the campaign deleting after the relay = %+v, %v", res, err)
	}
	if !simRecording(t, sim, r1.Sid).Deleted || simRecording(t, sim, r2.Sid).Deleted {
		t.Fatal("want exactly the told attempt's recording deleted")
	}
	if a, _ := s.Get(ctx, told.ID); a.Recordings != store.RecordingsDeleted || a.State != store.StateQueued {
		t.Fatalf("told attempt: recordings %s, state %s; want deleted recordings and the attempt untouched", a.Recordings, a.State)
	}
	j.AfterRelay = func(context.Context) ([]string, error) { return nil, errors.New("apiserver down") }
	if _, err := j.Pass(ctx); err == nil {
		t.Fatal("pass with an unreadable campaign list succeeded")
	}
}

func TestJanitorRunsUntilStopped(t *testing.T) {
	clk := newClock()
	s := openStore(t, clk)
	_, rc := startSim(t)
	a := finished(t, s, "a", "+4915112345678", time.Second)
	clk.Add(2 * time.Second)
	j := newJanitor(s, clk, oneAccount{rc})
	if !j.NeedLeaderElection() {
		t.Fatal("the janitor must run on the leader only")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Start(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := s.Get(context.Background(), a.ID); errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the running janitor did not purge the expired attempt")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start returned %v on stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after its context ended")
	}
}
