package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/delauto/delauto/internal/defaults"
	"github.com/delauto/delauto/workers/store"
)

// Janitor keeps the call log within its retention, on the operator's
// leader: each pass it deletes at Twilio the recordings of attempts that
// expire within RecordingLead (and, for campaigns that ask, of attempts
// whose agent was told), then, where the server has no TTL index, deletes
// the expired attempts in bounded batches. It is a controller-runtime
// Runnable that needs leader election.
type Janitor struct {
	// Store is the call log.
	Store *store.Store
	// Accounts finds each campaign's Twilio account.
	Accounts Accounts
	// AfterRelay lists the campaigns (namespace/name) that delete recordings
	// as soon as the agent was told; nil: none.
	AfterRelay func(ctx context.Context) ([]string, error)
	// Interval between passes; default 1m.
	Interval time.Duration
	// Batch is the most attempts read or deleted at once; default 500.
	Batch int
	// MaxBatches bounds the batches of each kind in one pass; default 20.
	MaxBatches int
	// RecordingLead is how long before its attempt expires a recording is
	// deleted, so a TTL index never removes an attempt whose recordings are
	// still at Twilio while the janitor runs; default 1h. After a failed
	// deletion the attempt is kept until half of it past the retry time.
	RecordingLead time.Duration
	// Tries is how often one recording is tried within a pass; default 3.
	Tries int
	// Pause is the first pause between those tries (doubling); default 500ms.
	Pause time.Duration
	// MaxBackoff caps the wait before a failed deletion is tried in a later
	// pass (it doubles from Interval); default 6h.
	MaxBackoff time.Duration
	// Metrics counts what was removed; nil counts nothing.
	Metrics *Metrics
	// Log receives one line per pass that did something, and failures.
	Log logr.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Metrics are the janitor's Prometheus metrics.
type Metrics struct {
	// Purged counts attempts deleted by the purge.
	Purged prometheus.Counter
	// Recordings counts recordings by result: deleted or failed.
	Recordings *prometheus.CounterVec
	// Passes counts passes by result: ok or error.
	Passes *prometheus.CounterVec
}

// NewMetrics registers the janitor's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Purged: prometheus.NewCounter(prometheus.CounterOpts{Name: "delauto_call_log_purged_total",
			Help: "Expired attempts deleted from the call log by the periodic purge (servers without TTL indexes)."}),
		Recordings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "delauto_recordings_deleted_total",
			Help: "Recordings (with their transcriptions) deleted at Twilio, by result: deleted, or failed (tried again later)."}, []string{"result"}),
		Passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "delauto_call_log_janitor_passes_total",
			Help: "Retention passes of the call log janitor, by result."}, []string{"result"}),
	}
	reg.MustRegister(m.Purged, m.Recordings, m.Passes)
	return m
}

func (j *Janitor) defaults() {
	defaults.Positive(&j.Interval, time.Minute)
	defaults.Positive(&j.Batch, 500)
	defaults.Positive(&j.MaxBatches, 20)
	defaults.Positive(&j.RecordingLead, time.Hour)
	defaults.Positive(&j.Tries, 3)
	defaults.Positive(&j.Pause, 500*time.Millisecond)
	defaults.Positive(&j.MaxBackoff, 6*time.Hour)
	if j.Now == nil {
		j.Now = time.Now
	}
}

// NeedLeaderElection is true: one janitor runs, on the leader.
func (j *Janitor) NeedLeaderElection() bool { return true }

// Start runs a pass every Interval until ctx ends.
func (j *Janitor) Start(ctx context.Context) error {
	j.defaults()
	t := time.NewTicker(j.Interval)
	defer t.Stop()
	for {
		if _, err := j.Pass(ctx); err != nil && ctx.Err() == nil {
			j.Log.Error(err, "call log retention pass failed; trying again next pass", "in", j.Interval.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PassResult is what one pass did.
type PassResult struct {
	// Recordings deleted at Twilio, and RecordingsFailed left for a later pass.
	Recordings, RecordingsFailed int
	// Purged is the expired attempts deleted.
	Purged int64
}

// Pass deletes the recordings that are due and, without TTL indexes, the
// expired attempts. A recording that cannot be deleted does not stop the
// pass: its attempt is tried again after a backoff and kept meanwhile.
func (j *Janitor) Pass(ctx context.Context) (PassResult, error) {
	j.defaults()
	var res PassResult
	err := j.pass(ctx, &res)
	if j.Metrics != nil {
		result := "ok"
		if err != nil {
			result = "error"
		}
		j.Metrics.Passes.WithLabelValues(result).Inc()
	}
	if res != (PassResult{}) {
		j.Log.Info("call log retention pass", "recordingsDeleted", res.Recordings, "recordingsFailed", res.RecordingsFailed, "attemptsPurged", res.Purged)
	}
	return res, err
}

func (j *Janitor) pass(ctx context.Context, res *PassResult) error {
	if j.AfterRelay != nil {
		campaigns, err := j.AfterRelay(ctx)
		if err != nil {
			return fmt.Errorf("list the campaigns that delete recordings after the relay: %w", err)
		}
		for _, c := range campaigns {
			if err := j.recordings(ctx, res, func(limit int) ([]store.Attempt, error) {
				return j.Store.ToldRecordings(ctx, c, limit)
			}); err != nil {
				return err
			}
		}
	}
	if err := j.recordings(ctx, res, func(limit int) ([]store.Attempt, error) {
		return j.Store.ExpiringRecordings(ctx, j.Now().Add(j.RecordingLead), limit)
	}); err != nil {
		return err
	}
	if j.Store.Features().TTLIndexes {
		return nil // the server deletes expired attempts
	}
	for range j.MaxBatches {
		n, err := j.Store.PurgeExpired(ctx, j.Now(), j.Batch)
		res.Purged += n
		if j.Metrics != nil {
			j.Metrics.Purged.Add(float64(n))
		}
		if err != nil {
			return err
		}
		if n < int64(j.Batch) {
			break
		}
	}
	return nil
}

// recordings deletes the recordings of the attempts list returns, batch by
// batch; an attempt whose deletion failed waits for its retry time, so a
// later batch does not list it again.
func (j *Janitor) recordings(ctx context.Context, res *PassResult, list func(limit int) ([]store.Attempt, error)) error {
	for range j.MaxBatches {
		batch, err := list(j.Batch)
		if err != nil {
			return err
		}
		for i := range batch {
			if err := j.deleteRecordings(ctx, res, &batch[i]); err != nil {
				return err
			}
		}
		if len(batch) < j.Batch {
			return nil
		}
	}
	return nil
}

// deleteRecordings deletes one attempt's recordings at Twilio and records
// the outcome; it returns only store errors (a Twilio failure is recorded
// on the attempt for a later try).
func (j *Janitor) deleteRecordings(ctx context.Context, res *PassResult, a *store.Attempt) error {
	sids := a.PendingRecordingSIDs()
	if len(sids) == 0 {
		return nil
	}
	deleted, err := 0, error(nil)
	r, err := j.Accounts.Recordings(ctx, a.Campaign)
	if err == nil {
		deleted, err = deleteAll(ctx, r, sids, j.Tries, j.Pause)
	}
	res.Recordings += deleted
	j.count("deleted", deleted)
	if deleted > 0 {
		if _, derr := j.Store.DeleteRecordingsDone(ctx, a.ID, sids[:deleted]); derr != nil && !errors.Is(derr, store.ErrNotFound) {
			return derr
		}
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	failed := len(sids) - deleted
	res.RecordingsFailed += failed
	j.count("failed", failed)
	backoff := min(j.Interval<<min(a.RecordingsTries, 20), j.MaxBackoff)
	retry := j.Now().Add(backoff)
	j.Log.Error(err, "could not delete recordings at Twilio; trying again later", "attempt", a.ID, "campaign", a.Campaign,
		"recordings", failed, "tries", a.RecordingsTries+1, "retryIn", backoff.String())
	if _, serr := j.Store.DeleteRecordingsFailed(ctx, a.ID, err, retry, retry.Add(j.RecordingLead/2)); serr != nil && !errors.Is(serr, store.ErrNotFound) {
		return serr
	}
	return nil
}

func (j *Janitor) count(result string, n int) {
	if j.Metrics != nil && n > 0 {
		j.Metrics.Recordings.WithLabelValues(result).Add(float64(n))
	}
}
