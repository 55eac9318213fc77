package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Index names.
const (
	idxDeliveryAttempt = "delivery_uid_number_unique"
	idxCallSIDPartial  = "callSid_unique_partial"
	idxCallSIDSparse   = "callSid_unique_sparse"
	idxLinePartial     = "lineHold_unique_partial"
	idxLineSparse      = "lineHold_unique_sparse"
	idxDue             = "campaign_shard_state_due_id"
	// idxDueOld is idxDue before it ended with _id (the sweeper's sort and
	// cursor); EnsureIndexes drops it.
	idxDueOld          = "campaign_shard_state_due"
	idxDeliveryCreated = "delivery_uid_created"
	idxStateLease      = "state_lease"
	idxStateUpdated    = "state_updated"
	idxExpireTTL       = "expireAt_ttl"
	idxExpire          = "expireAt"
	idxLockTTL         = "at_ttl"
	idxLock            = "at"
)

// indexSet is the names of the indexes a collection has.
type indexSet map[string]bool

// listIndexes returns the names of c's indexes (none when c does not exist
// yet).
func listIndexes(ctx context.Context, c *mongo.Collection) (indexSet, error) {
	specs, err := c.Indexes().ListSpecifications(ctx)
	if err != nil && !isNamespaceNotFound(err) {
		return nil, fmt.Errorf("store: list the indexes of %s: %w", c.Name(), err)
	}
	have := indexSet{}
	for _, sp := range specs {
		have[sp.Name] = true
	}
	return have, nil
}

// createIndex creates the index named name on c unless have lists it, and
// adds it to have. Every process runs EnsureIndexes at start; on a call log
// that has its indexes it issues no createIndexes command (FerretDB 1.24 has
// stopped answering altogether shortly after one, under load).
func (s *Store) createIndex(ctx context.Context, c *mongo.Collection, have indexSet, name string, keys bson.D, opts *options.IndexOptionsBuilder) error {
	if have[name] {
		return nil
	}
	s.indexCommands.Add(1)
	if _, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: keys, Options: opts.SetName(name)}); err != nil {
		return err
	}
	have[name] = true
	return nil
}

// EnsureIndexes creates the collections' indexes that do not exist yet;
// running it again changes nothing and, once they all exist, only lists
// them. It tries a TTL index and a partial index and, where the server
// refuses them (FerretDB 1.24), falls back to a plain index (cleaned by
// PurgeExpired) and a sparse unique index, logging each fallback once. An
// index that exists in either form is kept, and the features follow it.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	have, err := listIndexes(ctx, s.attempts)
	if err != nil {
		return err
	}
	plain := []struct {
		name string
		keys bson.D
		opts *options.IndexOptionsBuilder
	}{
		{idxDeliveryAttempt, bson.D{{Key: "deliveryUID", Value: 1}, {Key: "number", Value: 1}}, options.Index().SetUnique(true)},
		{idxDue, bson.D{{Key: "campaign", Value: 1}, {Key: "shard", Value: 1}, {Key: "state", Value: 1}, {Key: "due", Value: 1}, {Key: "_id", Value: 1}}, options.Index()},
		{idxDeliveryCreated, bson.D{{Key: "deliveryUID", Value: 1}, {Key: "createdAt", Value: 1}}, options.Index()},
		{idxStateLease, bson.D{{Key: "state", Value: 1}, {Key: "leaseUntil", Value: 1}}, options.Index()},
		{idxStateUpdated, bson.D{{Key: "state", Value: 1}, {Key: "updatedAt", Value: 1}}, options.Index()},
	}
	// One index per command: FerretDB 1.24 drops the connection when a
	// createIndexes of several indexes finds them all existing.
	for _, ix := range plain {
		if err := s.createIndex(ctx, s.attempts, have, ix.name, ix.keys, ix.opts); err != nil {
			return fmt.Errorf("store: create attempts index on %v: %w", ix.keys, err)
		}
	}
	if have[idxDueOld] {
		if err := s.attempts.Indexes().DropOne(ctx, idxDueOld); err != nil && !isIndexNotFound(err) {
			return fmt.Errorf("store: drop the replaced index %s: %w", idxDueOld, err)
		}
	}

	f := s.Features()
	// Partial unique index on the call SID: only documents that have one.
	callSID := bson.D{{Key: "callSid", Value: 1}}
	switch {
	case have[idxCallSIDPartial]:
		f.PartialIndexes = true
	case have[idxCallSIDSparse]:
		f.PartialIndexes = false
	default:
		err := s.createIndex(ctx, s.attempts, have, idxCallSIDPartial, callSID, options.Index().SetUnique(true).
			SetPartialFilterExpression(bson.D{{Key: "callSid", Value: bson.D{{Key: "$type", Value: "string"}}}}))
		switch {
		case err == nil:
			f.PartialIndexes = true
		case unsupportedIndexOption(err):
			f.PartialIndexes = false
			s.logOnce("partial", slog.LevelWarn, "server refuses partial indexes: using a sparse unique index on callSid", "error", err)
			if err := s.createIndex(ctx, s.attempts, have, idxCallSIDSparse, callSID, options.Index().SetUnique(true).SetSparse(true)); err != nil {
				return fmt.Errorf("store: create callSid index: %w", err)
			}
		default:
			return fmt.Errorf("store: create callSid index: %w", err)
		}
	}

	// One attempt per number holds it (Claim): unique on lineHold, among
	// the attempts that have one.
	line, lineName := options.Index().SetUnique(true), idxLineSparse
	if f.PartialIndexes {
		line, lineName = line.SetPartialFilterExpression(bson.D{{Key: "lineHold", Value: bson.D{{Key: "$type", Value: "string"}}}}), idxLinePartial
	} else {
		line.SetSparse(true)
	}
	if err := s.createIndex(ctx, s.attempts, have, lineName, bson.D{{Key: "lineHold", Value: 1}}, line); err != nil {
		return fmt.Errorf("store: create lineHold index: %w", err)
	}

	// TTL on the call log's expiry time.
	ttl, err := s.ensureTTL(ctx, s.attempts, have, "expireAt", 0, idxExpireTTL, idxExpire)
	if err != nil {
		return err
	}
	f.TTLIndexes = ttl
	if !ttl {
		s.logOnce("ttl", slog.LevelWarn, "server refuses TTL indexes: expired attempts and locks are removed by PurgeExpired instead")
	}
	if !f.AtomicUpdates {
		locks, err := listIndexes(ctx, s.locks)
		if err != nil {
			return err
		}
		if _, err := s.ensureTTL(ctx, s.locks, locks, "at", s.cfg.LockTTL, idxLockTTL, idxLock); err != nil {
			return err
		}
	}
	if err := s.ensureInsightsIndexes(ctx, f.PartialIndexes); err != nil {
		return err
	}
	s.mu.Lock()
	s.features = f
	s.mu.Unlock()
	return nil
}

// ensureTTL makes sure c has a TTL index on field (documents go after
// after), or a plain one where TTL indexes are refused; it reports whether
// the TTL index exists.
func (s *Store) ensureTTL(ctx context.Context, c *mongo.Collection, have indexSet, field string, after time.Duration, ttlName, plainName string) (bool, error) {
	switch {
	case have[ttlName]:
		return true, nil
	case have[plainName]:
		return false, nil
	}
	keys := bson.D{{Key: field, Value: 1}}
	err := s.createIndex(ctx, c, have, ttlName, keys, options.Index().SetExpireAfterSeconds(int32(after/time.Second)))
	if err == nil {
		return true, nil
	}
	if !unsupportedIndexOption(err) {
		return false, fmt.Errorf("store: create TTL index on %s.%s: %w", c.Name(), field, err)
	}
	if err := s.createIndex(ctx, c, have, plainName, keys, options.Index()); err != nil {
		return false, fmt.Errorf("store: create index on %s.%s: %w", c.Name(), field, err)
	}
	return false, nil
}

// unsupportedIndexOption reports a server refusing an index option:
// NotImplemented (238, FerretDB), CannotCreateIndex (67), InvalidIndexSpecificationOption (197).
func unsupportedIndexOption(err error) bool {
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		switch ce.Code {
		case 238, 67, 197:
			return true
		}
	}
	return false
}
