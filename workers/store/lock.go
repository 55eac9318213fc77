package store

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// lockDoc is a per-attempt write lock (serialized mode). Taking it is an
// atomic insert (unique _id) that stamps At with the server's clock; it is
// deleted by its holder, or broken by a waiter once the server's clock is
// LockTTL past At (its holder died). No process's own clock is ever
// compared with another's: a pod whose clock is off cannot break a live lock.
type lockDoc struct {
	ID    string    `bson:"_id"`
	Token string    `bson:"token"`
	At    time.Time `bson:"at"`
}

func newToken() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lockTakeOpts inserts the lock when no lock of that attempt exists.
var lockTakeOpts = options.UpdateOne().SetUpsert(true)

// lock takes attempt id's write lock when the server needs it and returns
// its release; on servers with atomic updates it does nothing. A held lock
// is waited for up to LockWait.
func (s *Store) lock(ctx context.Context, id string) (func(), error) {
	return s.takeLock(ctx, id, s.cfg.LockWait)
}

// tryLock is lock without waiting: a lock held by a live writer is ErrBusy
// at once (one held past LockTTL is broken first). For the insights flush,
// whose additions wait for the next flush: a fleet of writers that polled
// for the locks of the same documents kept FerretDB busy answering polls.
func (s *Store) tryLock(ctx context.Context, id string) (func(), error) {
	return s.takeLock(ctx, id, 0)
}

func (s *Store) takeLock(ctx context.Context, id string, wait time.Duration) (func(), error) {
	if s.Features().AtomicUpdates {
		return func() {}, nil
	}
	token := newToken()
	deadline := time.Now().Add(wait)
	backoff := 200 * time.Microsecond
	lastCheck := time.Now()
	if wait == 0 {
		lastCheck = time.Time{} // look whether the holder died at once
	}
	for {
		// An upsert on (_id, our fresh token) never matches a lock held by
		// another writer: it inserts, which the unique _id refuses while
		// one exists. $currentDate stamps the server's time.
		_, err := s.locks.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "token", Value: token}},
			bson.D{{Key: "$currentDate", Value: bson.D{{Key: "at", Value: true}}}}, lockTakeOpts)
		if err == nil {
			return func() { s.unlock(id, token) }, nil
		}
		if !isDuplicate(err) {
			return nil, fmt.Errorf("store: lock attempt %s: %w", id, err)
		}
		// Held. Every 100ms look whether its holder died (lock expired).
		if time.Since(lastCheck) > 100*time.Millisecond {
			lastCheck = time.Now()
			if err := s.breakExpiredLock(ctx, id); err != nil {
				return nil, err
			}
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: attempt %s locked by another writer for more than %s", ErrBusy, id, wait)
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("store: lock attempt %s: %w", id, ctx.Err())
		case <-t.C:
		}
		backoff = min(backoff*2, 20*time.Millisecond)
	}
}

// breakExpiredLock deletes attempt id's lock if the server's clock is
// LockTTL past the time the server stamped when it was taken.
func (s *Store) breakExpiredLock(ctx context.Context, id string) error {
	var held lockDoc
	err := s.locks.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&held)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: read the lock of attempt %s: %w", id, err)
	}
	now, err := s.serverNow(ctx)
	if err != nil {
		return err
	}
	if !held.At.Add(s.cfg.LockTTL).Before(now) {
		return nil
	}
	s.log.Warn("breaking expired attempt lock", "attempt", id, "takenAt", held.At, "serverTime", now, "lockTTL", s.cfg.LockTTL)
	if _, err := s.locks.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "token", Value: held.Token}}); err != nil {
		return fmt.Errorf("store: break the expired lock of attempt %s: %w", id, err)
	}
	return nil
}

// serverNow is the database server's clock (hello's localTime).
func (s *Store) serverNow(ctx context.Context) (time.Time, error) {
	var hello struct {
		LocalTime time.Time `bson:"localTime"`
	}
	if err := s.db.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		return time.Time{}, fmt.Errorf("store: read the server's clock: %w", err)
	}
	if hello.LocalTime.IsZero() {
		return time.Time{}, errors.New("store: the server's hello reply has no localTime")
	}
	return hello.LocalTime, nil
}

// unlock deletes the lock if it is still ours, even when the caller's
// context is done; a lock that cannot be deleted expires after LockTTL.
func (s *Store) unlock(id, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.OperationTimeout)
	defer cancel()
	if _, err := s.locks.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "token", Value: token}}); err != nil {
		s.log.Warn("could not release attempt lock; it expires by itself", "attempt", id, "error", err)
	}
}

var returnAfter = options.FindOneAndUpdate().SetReturnDocument(options.After)

// modify applies one conditional update to attempt id (filter must select
// it by _id) and returns the document after it, or nil when the filter
// matched nothing. In serialized mode it holds the attempt's lock for it.
func (s *Store) modify(ctx context.Context, id string, filter, update bson.D) (*Attempt, error) {
	unlock, err := s.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var a Attempt
	err = s.attempts.FindOneAndUpdate(ctx, filter, update, returnAfter).Decode(&a)
	switch {
	case err == nil:
		return &a, nil
	case errors.Is(err, mongo.ErrNoDocuments):
		return nil, nil
	case isDuplicate(err):
		return nil, fmt.Errorf("%w: attempt %s: %v", ErrDuplicate, id, err)
	default:
		return nil, fmt.Errorf("store: update attempt %s: %w", id, err)
	}
}

// isDuplicate reports a unique index violation. FerretDB 1.24 reports one
// raised by an update as an InternalError carrying PostgreSQL's message,
// not as E11000.
func isDuplicate(err error) bool {
	if mongo.IsDuplicateKeyError(err) {
		return true
	}
	var ce mongo.CommandError
	return errors.As(err, &ce) && strings.Contains(ce.Message, "duplicate key value violates unique constraint")
}

// lockedUpsert applies update to document id of coll, inserting it if
// missing, under lock lockID where updates are not atomic. With wait false
// a held lock is ErrBusy at once (tryLock).
func (s *Store) lockedUpsert(ctx context.Context, coll *mongo.Collection, lockID, id string, update bson.D, wait bool) error {
	take := s.tryLock
	if wait {
		take = s.lock
	}
	unlock, err := take(ctx, lockID)
	if err != nil {
		return err
	}
	defer unlock()
	for try := 0; ; try++ {
		_, err = coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, update, options.UpdateOne().SetUpsert(true))
		if err == nil || !isDuplicate(err) || try > 0 {
			return err
		}
		// Two upserts raced to insert it: the other won, this one updates.
	}
}
