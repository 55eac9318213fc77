package queue

import (
	"fmt"
	"strings"
)

// Shard names one campaign shard's queue. Every Redis key of a shard shares
// the hash tag {<namespace>/<campaign>/<name>}, so in Redis Cluster a shard
// lives in one slot and its scripts never cross slots.
type Shard struct {
	// Namespace of the CallCampaign.
	Namespace string
	// Campaign is the CallCampaign's name.
	Campaign string
	// Name is the shard's name within the campaign (a region or a number).
	Name string
}

// maxShardPart bounds each part of a shard's name (Kubernetes names are at
// most 253 characters).
const maxShardPart = 253

// Validate reports a shard whose keys would be ambiguous or cross slots:
// empty parts, '/', '{', '}' or whitespace in a part, or an over-long part.
func (s Shard) Validate() error {
	for _, p := range [...]struct{ what, v string }{
		{"namespace", s.Namespace}, {"campaign", s.Campaign}, {"shard name", s.Name},
	} {
		switch {
		case p.v == "":
			return fmt.Errorf("queue shard %q: %s is empty", s.String(), p.what)
		case len(p.v) > maxShardPart:
			return fmt.Errorf("queue shard %q: %s is longer than %d characters", s.String(), p.what, maxShardPart)
		case strings.ContainsAny(p.v, "/{} \t\r\n"):
			return fmt.Errorf("queue shard %q: %s %q must not contain '/', '{', '}' or whitespace", s.String(), p.what, p.v)
		}
	}
	return nil
}

// String is namespace/campaign/name, the form used in logs and metric labels.
func (s Shard) String() string { return s.Namespace + "/" + s.Campaign + "/" + s.Name }

// tag is the shard's Redis Cluster hash tag.
func (s Shard) tag() string { return "{" + s.String() + "}" }

// DueKey is the sorted set of attempt ids scored by due time (Unix ms).
func (s Shard) DueKey() string { return s.tag() + ":due" }

// ReadyKey is the stream of attempts that are due, read by the shard's
// consumer group.
func (s Shard) ReadyKey() string { return s.tag() + ":ready" }

// IndexKey is the hash attempt id -> stream entry id of attempts in the ready
// stream; it makes Schedule idempotent across promotion and lets Cancel find
// an entry that is already in the stream.
func (s Shard) IndexKey() string { return s.tag() + ":index" }

// DeadKey is the dead-letter stream of attempts given up on, with the reason.
func (s Shard) DeadKey() string { return s.tag() + ":dead" }

// WakeChannel is the pub/sub channel on which a scheduler tells promoters in
// other processes that an attempt is due earlier than any before it.
func (s Shard) WakeChannel() string { return s.tag() + ":wake" }

// CalledOffKey is the sorted set of attempt groups called off (CallOff),
// scored by when (Unix ms): Schedule refuses their attempts and a worker
// checks it (DialBlocks) before it dials. Held groups (Hold) are members
// "hold:<group>".
func (s Shard) CalledOffKey() string { return s.tag() + ":calledoff" }

// holdKey holds the latest generation of group's Hold, which only an
// Unhold at that generation or later lifts.
func (s Shard) holdKey(group string) string { return s.tag() + ":hold:" + group }

// keys are the KEYS of every per-shard script, in this order.
func (s Shard) keys() []string {
	return []string{s.DueKey(), s.ReadyKey(), s.IndexKey(), s.DeadKey(), s.CalledOffKey()}
}
