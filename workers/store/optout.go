package store

import (
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// OptOut is a number that asked not to be called again, per namespace. The
// number itself is not kept: its _id is namespace/NumberHash, a salted hash
// that still answers IsOptedOut after the person's data was erased.
type OptOut struct {
	// ID is OptOutID(Namespace, NumberHash).
	ID string `bson:"_id"`
	// Namespace the opt-out applies to.
	Namespace string `bson:"namespace"`
	// NumberHash is the salted hash of the E.164 number (see Store.numberHash).
	NumberHash string `bson:"numberHash,omitempty"`
	// Number is the E.164 number of opt-outs recorded before numbers were
	// hashed; EraseOptOuts (or RemoveOptOut) replaces them.
	Number string `bson:"number,omitempty"`
	// At is when it was recorded.
	At time.Time `bson:"at"`
	// AttemptID is the call in which the recipient opted out, if any.
	AttemptID string `bson:"attemptId,omitempty"`
	// Reason says how (menu choice, agent request, ...).
	Reason string `bson:"reason,omitempty"`
}

// OptOutID is the _id of a namespace's opt-out of a number, by its hash
// (or, for opt-outs recorded before hashing, by the number).
func OptOutID(namespace, key string) string { return namespace + "/" + key }

// saltID is the _id of the opt-out salt in the meta collection.
const saltID = "optout-salt"

// loadSalt reads the database's opt-out salt, creating a random one on the
// first start; every replica then reads the same.
func (s *Store) loadSalt(ctx context.Context) error {
	var doc struct {
		Salt string `bson:"salt"`
	}
	for range 2 {
		err := s.meta.FindOne(ctx, bson.D{{Key: "_id", Value: saltID}}).Decode(&doc)
		if err == nil {
			salt, err := hex.DecodeString(doc.Salt)
			if err != nil || len(salt) < 16 {
				return fmt.Errorf("store: the opt-out salt in %s is damaged", MetaCollection)
			}
			s.salt = salt
			return nil
		}
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return fmt.Errorf("store: read the opt-out salt: %w", err)
		}
		var b [32]byte
		_, _ = crand.Read(b[:])
		_, err = s.meta.InsertOne(ctx, bson.D{{Key: "_id", Value: saltID}, {Key: "salt", Value: hex.EncodeToString(b[:])}})
		if err != nil && !mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("store: create the opt-out salt: %w", err)
		}
	}
	return fmt.Errorf("store: the opt-out salt could not be read back")
}

// numberHash is the salted hash an opt-out keeps instead of the number.
func (s *Store) numberHash(number string) string {
	m := hmac.New(sha256.New, s.salt)
	m.Write([]byte(number))
	return hex.EncodeToString(m.Sum(nil))
}

func checkOptOut(namespace, number string) error {
	if namespace == "" || strings.Contains(namespace, "/") {
		return invalid("opt-out namespace %q must be a Kubernetes namespace", namespace)
	}
	return checkNumber("opt-out number", number)
}

// optOutIDs are the ids an opt-out of number in namespace may have: hashed,
// and as recorded before hashing.
func (s *Store) optOutIDs(namespace, number string) bson.D {
	return bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: bson.A{
		OptOutID(namespace, s.numberHash(number)), OptOutID(namespace, number)}}}}}
}

// AddOptOut records that number must not be called in namespace again. It is
// idempotent: created is false when the number had already opted out.
func (s *Store) AddOptOut(ctx context.Context, namespace, number, attemptID, reason string) (created bool, err error) {
	if err := checkOptOut(namespace, number); err != nil {
		return false, err
	}
	if found, err := s.IsOptedOut(ctx, namespace, number); err != nil || found {
		return false, err
	}
	h := s.numberHash(number)
	_, err = s.optouts.InsertOne(ctx, OptOut{
		ID: OptOutID(namespace, h), Namespace: namespace, NumberHash: h,
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
	err := s.optouts.FindOne(ctx, s.optOutIDs(namespace, number)).Err()
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
	res, err := s.optouts.DeleteMany(ctx, s.optOutIDs(namespace, number))
	if err != nil {
		return false, fmt.Errorf("store: remove opt-out: %w", err)
	}
	return res.DeletedCount > 0, nil
}

// EraseOptOuts replaces every opt-out of number that still holds the number
// itself (recorded before numbers were hashed), in any namespace, by its
// hashed form, so the opt-out keeps working without the number. It returns
// how many it replaced.
func (s *Store) EraseOptOuts(ctx context.Context, number string) (int, error) {
	if err := checkNumber("number", number); err != nil {
		return 0, err
	}
	cur, err := s.optouts.Find(ctx, bson.D{{Key: "number", Value: number}})
	if err != nil {
		return 0, fmt.Errorf("store: find opt-outs: %w", err)
	}
	var plain []OptOut
	if err := cur.All(ctx, &plain); err != nil {
		return 0, fmt.Errorf("store: read opt-outs: %w", err)
	}
	h := s.numberHash(number)
	for i, o := range plain {
		hashed := o
		hashed.ID, hashed.NumberHash, hashed.Number = OptOutID(o.Namespace, h), h, ""
		if _, err := s.optouts.InsertOne(ctx, hashed); err != nil && !mongo.IsDuplicateKeyError(err) {
			return i, fmt.Errorf("store: hash an opt-out: %w", err)
		}
		if _, err := s.optouts.DeleteOne(ctx, bson.D{{Key: "_id", Value: o.ID}}); err != nil {
			return i, fmt.Errorf("store: delete a plain opt-out: %w", err)
		}
	}
	return len(plain), nil
}
