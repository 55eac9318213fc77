package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// OptOut is a number that asked not to be called again, per namespace. Its
// _id is namespace/number.
type OptOut struct {
	// ID is OptOutID(Namespace, Number).
	ID string `bson:"_id"`
	// Namespace the opt-out applies to.
	Namespace string `bson:"namespace"`
	// Number is the E.164 number. Never log it unmasked.
	Number string `bson:"number"`
	// At is when it was recorded.
	At time.Time `bson:"at"`
	// AttemptID is the call in which the recipient opted out, if any.
	AttemptID string `bson:"attemptId,omitempty"`
	// Reason says how (menu choice, agent request, ...).
	Reason string `bson:"reason,omitempty"`
}

// OptOutID is the _id of a namespace's opt-out of number.
func OptOutID(namespace, number string) string { return namespace + "/" + number }

func checkOptOut(namespace, number string) error {
	if namespace == "" || strings.Contains(namespace, "/") {
		return invalid("opt-out namespace %q must be a Kubernetes namespace", namespace)
	}
	return checkNumber("opt-out number", number)
}

// AddOptOut records that number must not be called in namespace again. It is
// idempotent: created is false when the number had already opted out.
func (s *Store) AddOptOut(ctx context.Context, namespace, number, attemptID, reason string) (created bool, err error) {
	if err := checkOptOut(namespace, number); err != nil {
		return false, err
	}
	_, err = s.optouts.InsertOne(ctx, OptOut{
		ID: OptOutID(namespace, number), Namespace: namespace, Number: number,
		At: s.now(), AttemptID: attemptID, Reason: reason,
	})
	if mongo.IsDuplicateKeyError(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: add opt-out: %w", err)
	}
	return true, nil
}

// IsOptedOut reports whether number opted out in namespace.
func (s *Store) IsOptedOut(ctx context.Context, namespace, number string) (bool, error) {
	if err := checkOptOut(namespace, number); err != nil {
		return false, err
	}
	err := s.optouts.FindOne(ctx, bson.D{{Key: "_id", Value: OptOutID(namespace, number)}}).Err()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: check opt-out: %w", err)
	}
	return true, nil
}

// RemoveOptOut lets number be called in namespace again; it reports whether
// an opt-out was removed.
func (s *Store) RemoveOptOut(ctx context.Context, namespace, number string) (bool, error) {
	if err := checkOptOut(namespace, number); err != nil {
		return false, err
	}
	res, err := s.optouts.DeleteOne(ctx, bson.D{{Key: "_id", Value: OptOutID(namespace, number)}})
	if err != nil {
		return false, fmt.Errorf("store: remove opt-out: %w", err)
	}
	return res.DeletedCount > 0, nil
}
