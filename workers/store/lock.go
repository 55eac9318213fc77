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

// lockDoc is a per-attempt write lock (serialized mode). Inserting it is
// atomic (unique _id); it is deleted by its holder, or broken by a waiter
// once Until has passed (its holder died).
type lockDoc struct {
	ID    string    `bson:"_id"`
	Token string    `bson:"token"`
	Until time.Time `bson:"until"`
}

func newToken() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lock takes attempt id's write lock when the server needs it and returns
// its release; on servers with atomic updates it does nothing.
func (s *Store) lock(ctx context.Context, id string) (func(), error) {
	if s.Features().AtomicUpdates {
		return func() {}, nil
	}
	token := newToken()
	deadline := time.Now().Add(s.cfg.LockWait)
	backoff := 200 * time.Microsecond
	lastCheck := time.Now()
	for {
		_, err := s.locks.InsertOne(ctx, lockDoc{ID: id, Token: token, Until: s.now().Add(s.cfg.LockTTL)})
		if err == nil {
			return func() { s.unlock(id, token) }, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return nil, fmt.Errorf("store: lock attempt %s: %w", id, err)
		}
		// Held. Every 100ms look whether its holder died (lock expired).
		if time.Since(lastCheck) > 100*time.Millisecond {
			lastCheck = time.Now()
			var held lockDoc
			err := s.locks.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&held)
			if err == nil && held.Until.Before(s.now()) {
				s.log.Warn("breaking expired attempt lock", "attempt", id, "until", held.Until)
				_, _ = s.locks.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "token", Value: held.Token}})
				continue
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: attempt %s locked by another writer for more than %s", ErrBusy, id, s.cfg.LockWait)
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
