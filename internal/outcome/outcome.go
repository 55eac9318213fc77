// Package outcome carries call outcomes from the workers to the operator
// through one Redis stream. Delivery is at least once: the operator treats an
// event only as a hint to re-read the attempt from MongoDB (the source of
// truth), so duplicates and losses after a restart are harmless.
package outcome

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/util/validation"
)

// StreamKey is the outcome stream. Its hash tag keeps it in one Redis
// Cluster slot.
const StreamKey = "{delauto:outcomes}:stream"

// Group is the operator's consumer group.
const Group = "operator"

// maxLen caps the stream (approximately): old events are trimmed, never
// needed, because the operator re-reads MongoDB.
const maxLen = 100000

// Event says an attempt changed in a way the operator must see.
type Event struct {
	// AttemptID is the attempt's id in MongoDB.
	AttemptID string
	// Namespace and Name are the Delivery's.
	Namespace, Name string
	// State is the attempt's state when the event was sent, for logs.
	State string
	// StreamID is the event's stream entry id (set when read).
	StreamID string
}

// maxAttemptID bounds an attempt id (store.AttemptID: a UID, a dash and
// the attempt number).
const maxAttemptID = 64

// validate checks that e names an attempt and a Delivery the apiserver
// could hold: an event is read by the operator, which asks for that
// Delivery, and a name no object can have would fail that request for ever.
func (e Event) validate() error {
	switch {
	case e.AttemptID == "" || len(e.AttemptID) > maxAttemptID:
		return fmt.Errorf("outcome event needs an attempt id of 1 to %d bytes, got %d", maxAttemptID, len(e.AttemptID))
	case len(validation.IsDNS1123Label(e.Namespace)) > 0:
		return fmt.Errorf("outcome event of attempt %.64q: the delivery's namespace %.64q is not a namespace name", e.AttemptID, e.Namespace)
	case len(validation.IsDNS1123Subdomain(e.Name)) > 0:
		return fmt.Errorf("outcome event of attempt %.64q: the delivery's name %.64q is not an object name", e.AttemptID, e.Name)
	}
	return nil
}

// values is e's stream entry.
func (e Event) values() []string {
	return []string{"attempt", e.AttemptID, "ns", e.Namespace, "name", e.Name, "state", e.State}
}

// decode reads an event from its stream entry; it fails for an entry that
// does not name a valid attempt and Delivery (see validate).
func decode(m redis.XMessage) (Event, error) {
	e := Event{StreamID: m.ID}
	e.AttemptID, _ = m.Values["attempt"].(string)
	e.Namespace, _ = m.Values["ns"].(string)
	e.Name, _ = m.Values["name"].(string)
	e.State, _ = m.Values["state"].(string)
	return e, e.validate()
}

// Publish appends an event to the outcome stream.
func Publish(ctx context.Context, rdb redis.UniversalClient, e Event) error {
	if err := e.validate(); err != nil {
		return err
	}
	return rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: StreamKey,
		MaxLen: maxLen,
		Approx: true,
		Values: e.values(),
	}).Err()
}

// PublishOrLog publishes e within a short timeout and logs a failure
// instead of returning it: an event is only a hint, and the operator sees
// the attempt at its next periodic check when one is lost.
func PublishOrLog(rdb redis.UniversalClient, log *slog.Logger, e Event) {
	if rdb == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := Publish(ctx, rdb, e); err != nil {
		log.Warn("cannot publish the outcome event; the operator sees the attempt at its next check", "attempt", e.AttemptID, "error", err)
	}
}

// Consumer reads the outcome stream as one member of the operator's group.
type Consumer struct {
	rdb  redis.UniversalClient
	name string
	// Block is how long one read waits for new events.
	Block time.Duration
	// Count is the most events one read returns.
	Count int64
	// RetryInterval is how often events whose handling failed are read again.
	RetryInterval time.Duration
}

// NewConsumer makes a consumer named name (unique per operator process).
func NewConsumer(rdb redis.UniversalClient, name string) *Consumer {
	return &Consumer{rdb: rdb, name: name, Block: 2 * time.Second, Count: 256, RetryInterval: 5 * time.Second}
}

// ensureGroup creates the stream and the group when missing.
func (c *Consumer) ensureGroup(ctx context.Context) error {
	err := c.rdb.XGroupCreateMkStream(ctx, StreamKey, Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create outcome consumer group: %w", err)
	}
	return nil
}

// Run reads events until ctx ends and hands each to handle; an event is
// acknowledged once handle returned nil. Events left pending (by a failed
// handle, or by a previous run of this consumer) are read again every
// RetryInterval. Redis errors are retried with backoff; Run returns only when
// ctx ends.
func (c *Consumer) Run(ctx context.Context, handle func(Event) error, onError func(error)) error {
	backoff := 100 * time.Millisecond
	var lastRetry time.Time // zero: read pending events first
	for ctx.Err() == nil {
		err := c.ensureGroup(ctx)
		if err == nil {
			if time.Since(lastRetry) >= c.RetryInterval {
				lastRetry = time.Now()
				_, err = c.readOnce(ctx, "0", handle)
			} else {
				_, err = c.readOnce(ctx, ">", handle)
			}
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return ctx.Err()
}

func (c *Consumer) readOnce(ctx context.Context, start string, handle func(Event) error) (int, error) {
	block := c.Block
	if start != ">" {
		block = -1 // pending history: no blocking
	} else if c.RetryInterval > 0 && block > c.RetryInterval {
		block = c.RetryInterval
	}
	res, err := c.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: Group, Consumer: c.name, Streams: []string{StreamKey, start}, Count: c.Count, Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var acks []string
	n := 0
	for _, s := range res {
		for _, m := range s.Messages {
			n++
			e, err := decode(m)
			if err != nil {
				acks = append(acks, m.ID) // malformed: nothing to do, drop it
				continue
			}
			if err := handle(e); err != nil {
				continue // left pending; read again on the next start
			}
			acks = append(acks, m.ID)
		}
	}
	if len(acks) > 0 {
		if err := c.rdb.XAck(ctx, StreamKey, Group, acks...).Err(); err != nil {
			return n, fmt.Errorf("acknowledge outcome events: %w", err)
		}
	}
	return n, nil
}
