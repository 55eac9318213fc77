package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// notPending selects attempts with no recordings left to delete at Twilio.
var notPending = bson.E{Key: "recordings", Value: bson.D{{Key: "$ne", Value: RecordingsPending}}}

// PurgeExpired deletes up to limit attempts whose ExpireAt is before t,
// earliest first, and the attempt locks that expired (on the server's clock): the periodic
// cleanup where the server has no TTL indexes (harmless where it has). An
// attempt whose recordings are still held at Twilio is kept until they are
// deleted (DeleteRecordingsDone). It returns how many attempts it deleted;
// fewer than limit means nothing more is due.
func (s *Store) PurgeExpired(ctx context.Context, before time.Time, limit int) (int64, error) {
	if limit <= 0 {
		return 0, invalid("limit must be positive (got %d)", limit)
	}
	due := bson.D{{Key: "expireAt", Value: bson.D{{Key: "$lt", Value: before}}}, notPending}
	cur, err := s.attempts.Find(ctx, due, options.Find().SetSort(bson.D{{Key: "expireAt", Value: 1}}).
		SetLimit(int64(limit)).SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return 0, fmt.Errorf("store: find expired attempts: %w", err)
	}
	var ids []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &ids); err != nil {
		return 0, fmt.Errorf("store: read expired attempts: %w", err)
	}
	var deleted int64
	if len(ids) > 0 {
		in := make(bson.A, len(ids))
		for i, d := range ids {
			in[i] = d.ID
		}
		// The filter is checked again: a recording may have come meanwhile.
		res, err := s.attempts.DeleteMany(ctx, append(bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: in}}}}, due...))
		if err != nil {
			return 0, fmt.Errorf("store: purge expired attempts: %w", err)
		}
		deleted = res.DeletedCount
	}
	if s.Features().AtomicUpdates {
		return deleted, nil // no locks
	}
	// Locks expire on the server's clock, like breakExpiredLock judges them.
	now, err := s.serverNow(ctx)
	if err != nil {
		return deleted, err
	}
	if _, err := s.locks.DeleteMany(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: now.Add(-s.cfg.LockTTL)}}}}); err != nil {
		return deleted, fmt.Errorf("store: purge expired locks: %w", err)
	}
	return deleted, nil
}

// retryDue selects attempts whose recordings are not waiting out a backoff.
func retryDue(now time.Time) bson.E {
	return bson.E{Key: "$or", Value: bson.A{
		bson.D{{Key: "recordingsRetryAt", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "recordingsRetryAt", Value: bson.D{{Key: "$lte", Value: now}}}},
	}}
}

// ExpiringRecordings returns up to limit attempts that expire before t and
// still hold recordings at Twilio (not waiting out a failed deletion's
// backoff), earliest expiry first: the recordings to delete before the
// attempt goes.
func (s *Store) ExpiringRecordings(ctx context.Context, before time.Time, limit int) ([]Attempt, error) {
	if limit <= 0 {
		return nil, invalid("limit must be positive (got %d)", limit)
	}
	return s.findMany(ctx, bson.D{
		{Key: "recordings", Value: RecordingsPending},
		{Key: "expireAt", Value: bson.D{{Key: "$lt", Value: before}}},
		retryDue(s.now()),
	}, options.Find().SetSort(bson.D{{Key: "expireAt", Value: 1}}).SetLimit(int64(limit)))
}

// ToldRecordings returns up to limit attempts of campaign (namespace/name)
// that still hold recordings at Twilio although the agent was told (a
// notification was sent): for campaigns that delete recordings right after.
func (s *Store) ToldRecordings(ctx context.Context, campaign string, limit int) ([]Attempt, error) {
	if err := checkQuery(campaign, limit); err != nil {
		return nil, err
	}
	return s.findMany(ctx, bson.D{
		{Key: "recordings", Value: RecordingsPending},
		{Key: "campaign", Value: campaign},
		retryDue(s.now()),
		{Key: "$and", Value: bson.A{bson.D{{Key: "$or", Value: bson.A{
			bson.D{{Key: "notify.sms.state", Value: NotifySent}},
			bson.D{{Key: "notify.webhook.state", Value: NotifySent}},
		}}}}},
	}, options.Find().SetLimit(int64(limit)))
}

// DeleteRecordingsDone records that the recordings sids of attempt id were
// deleted at Twilio. When no other recording came meanwhile the attempt's
// recordings become RecordingsDeleted (and its recording URL, now dead, is
// dropped); otherwise only these are taken off the list.
func (s *Store) DeleteRecordingsDone(ctx context.Context, id string, sids []string) (*Attempt, error) {
	if len(sids) == 0 {
		return nil, invalid("recording SIDs are required")
	}
	now := s.now()
	a, err := s.modify(ctx, id,
		bson.D{{Key: "_id", Value: id}, {Key: "recordingSids", Value: sids}},
		bson.D{
			{Key: "$set", Value: bson.D{{Key: "recordings", Value: RecordingsDeleted}, {Key: "recordingsDeletedAt", Value: now}, {Key: "updatedAt", Value: now}}},
			{Key: "$unset", Value: bson.D{{Key: "recordingSids", Value: ""}, {Key: "recordingsTries", Value: ""},
				{Key: "recordingsRetryAt", Value: ""}, {Key: "recordingsError", Value: ""}, {Key: "response.recordingUrl", Value: ""}}},
		})
	if err != nil || a != nil {
		return a, err
	}
	a, err = s.modify(ctx, id, bson.D{{Key: "_id", Value: id}},
		bson.D{
			{Key: "$set", Value: bson.D{{Key: "recordingsDeletedAt", Value: now}, {Key: "updatedAt", Value: now}}},
			{Key: "$pullAll", Value: bson.D{{Key: "recordingSids", Value: sids}}},
		})
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return a, nil
}

// DeleteRecordingsFailed records a failed deletion of attempt id's
// recordings: it is tried again at retryAt, and the attempt, if it expires
// before keepUntil, is kept until then so a TTL index cannot delete it while
// its recordings are still at Twilio.
func (s *Store) DeleteRecordingsFailed(ctx context.Context, id string, cause error, retryAt, keepUntil time.Time) (*Attempt, error) {
	if cause == nil || retryAt.IsZero() {
		return nil, invalid("a cause and a retry time are required")
	}
	now := s.now()
	a, err := s.modify(ctx, id, bson.D{{Key: "_id", Value: id}, {Key: "recordings", Value: RecordingsPending}},
		bson.D{
			{Key: "$set", Value: bson.D{{Key: "recordingsRetryAt", Value: retryAt.UTC().Truncate(time.Millisecond)},
				{Key: "recordingsError", Value: cause.Error()}, {Key: "updatedAt", Value: now}}},
			{Key: "$inc", Value: bson.D{{Key: "recordingsTries", Value: int32(1)}}},
		})
	if err != nil || a == nil {
		return a, err
	}
	if a.ExpireAt != nil && a.ExpireAt.Before(keepUntil) {
		keep := keepUntil.UTC().Truncate(time.Millisecond)
		b, err := s.modify(ctx, id, bson.D{{Key: "_id", Value: id}, {Key: "expireAt", Value: bson.D{{Key: "$lt", Value: keep}}}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "expireAt", Value: keep}}}})
		if err != nil || b != nil {
			return b, err
		}
	}
	return a, nil
}

// AttemptsTo returns every attempt that calls number, in any namespace: what
// an erasure request covers. (The call log has no index on the number: it
// reads the whole collection, which is fine for an occasional request.)
func (s *Store) AttemptsTo(ctx context.Context, number string) ([]Attempt, error) {
	if err := checkNumber("number", number); err != nil {
		return nil, err
	}
	return s.findMany(ctx, bson.D{{Key: "to", Value: number}}, options.Find().SetSort(bson.D{{Key: "createdAt", Value: 1}, {Key: "_id", Value: 1}}))
}

// Anonymize erases the recipient's personal data from attempt id: the
// number, the call context (name, address, agent), what they said or
// recorded, and error messages (Twilio's may quote the number). What is left
// (state, result, times, shard) keeps the statistics and the uniqueness of
// the attempt, so it is never planned again. Recording SIDs still to delete
// at Twilio are kept unless recordingsDeleted. An attempt not yet finished
// should be cancelled first (MarkCancelled); one being dialed finishes its
// call, its callbacks find no personal data to update.
func (s *Store) Anonymize(ctx context.Context, id string, recordingsDeleted bool) (*Attempt, error) {
	now := s.now()
	set := bson.D{{Key: "to", Value: ""}, {Key: "erasedAt", Value: now}, {Key: "updatedAt", Value: now}}
	unset := bson.D{{Key: "context", Value: ""}, {Key: "errorMessage", Value: ""}, {Key: "reason", Value: ""},
		{Key: "response.digits", Value: ""}, {Key: "response.speech", Value: ""}, {Key: "response.recordingUrl", Value: ""},
		{Key: "response.transcription", Value: ""}, {Key: "notify.sms.lastError", Value: ""}, {Key: "notify.webhook.lastError", Value: ""}}
	if recordingsDeleted {
		set = append(set, bson.E{Key: "recordings", Value: RecordingsDeleted}, bson.E{Key: "recordingsDeletedAt", Value: now})
		unset = append(unset, bson.E{Key: "recordingSids", Value: ""}, bson.E{Key: "recordingsRetryAt", Value: ""},
			bson.E{Key: "recordingsError", Value: ""}, bson.E{Key: "recordingsTries", Value: ""})
	}
	a, err := s.modify(ctx, id, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: set}, {Key: "$unset", Value: unset}})
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return a, nil
}

// PendingRecordingSIDs lists the recordings of a that are still to be
// deleted at Twilio, including the answer's recording of attempts recorded
// before RecordingSIDs existed.
func (a *Attempt) PendingRecordingSIDs() []string {
	if a.Recordings == RecordingsDeleted {
		return nil
	}
	sids := append([]string(nil), a.RecordingSIDs...)
	if a.Response != nil && a.Response.RecordingSID != "" && !slices.Contains(sids, a.Response.RecordingSID) {
		sids = append(sids, a.Response.RecordingSID)
	}
	return sids
}
