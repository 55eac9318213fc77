package insights

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// Position is where a page of the delivery list ended: the list is
// ordered by when each Delivery was first recorded, newest first, then by
// its UID; both never change, so a page boundary stays put while
// Deliveries are added and change phase.
type Position struct {
	// At is the last item's creation time (millisecond precision).
	At time.Time
	// ID is the last item's UID; empty for a page that ended short of its
	// limit with no item to go on from: the list goes on with the
	// Deliveries created before At.
	ID string
}

type token struct {
	A int64  `json:"a"`
	I string `json:"i"`
	F string `json:"f"`
}

// filterHash names a query's namespace and filters (not its limit).
func filterHash(namespace string, q DeliveryQuery) string {
	h := sha256.New()
	for _, s := range []string{namespace, q.Campaign, q.Phase, q.Region, q.Agent, q.WindowDay} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:9])
}

// EncodeContinue makes the continue token of a page of q in namespace that
// ended at p.
func EncodeContinue(namespace string, q DeliveryQuery, p Position) string {
	b, _ := json.Marshal(token{A: p.At.UnixMilli(), I: p.ID, F: filterHash(namespace, q)})
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeContinue reads q.Continue: the position to go on after, or nil
// for the first page. A token that is malformed or was issued for other
// filters (or another namespace) gives an error wrapping ErrBadContinue.
func DecodeContinue(namespace string, q DeliveryQuery) (*Position, error) {
	if q.Continue == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(q.Continue)
	if err != nil {
		return nil, fmt.Errorf("%w: not a token", ErrBadContinue)
	}
	var t token
	if err := json.Unmarshal(raw, &t); err != nil || t.A == 0 || t.F == "" {
		return nil, fmt.Errorf("%w: not a token", ErrBadContinue)
	}
	if t.F != filterHash(namespace, q) {
		return nil, fmt.Errorf("%w: it was issued for other filters", ErrBadContinue)
	}
	return &Position{At: time.UnixMilli(t.A).UTC(), ID: t.I}, nil
}
