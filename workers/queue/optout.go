package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// OptOutPendingKeep is how long a pending opt-out is remembered
// (MarkOptOutPending): far longer than any call log outage, so the journal
// has written the opt-out to MongoDB long before the mark goes.
const OptOutPendingKeep = 30 * 24 * time.Hour

// optOutPendingKey is the key that marks number opted out in namespace; it
// holds a hash of the two, not the number.
func optOutPendingKey(namespace, number string) string {
	h := sha256.Sum256([]byte(namespace + "\x00" + number))
	return "optout-pending:" + hex.EncodeToString(h[:16])
}

// MarkOptOutPending records in Redis that number opted out in namespace,
// for the time the opt-out waits in a worker's journal for MongoDB, where
// a claim looks for it: a worker asks it before it dials (DialBlocks). The
// worker that takes the opt-out marks it before writing it; the write that
// reaches MongoDB clears it (ClearOptOutPending).
func MarkOptOutPending(ctx context.Context, rdb redis.UniversalClient, namespace, number string) error {
	if err := rdb.Set(ctx, optOutPendingKey(namespace, number), 1, OptOutPendingKeep).Err(); err != nil {
		return fmt.Errorf("queue: mark an opt-out pending: %w", err)
	}
	return nil
}

// ClearOptOutPending removes the mark of MarkOptOutPending once MongoDB has
// the opt-out (and is the one place it can be lifted, RemoveOptOut).
func ClearOptOutPending(ctx context.Context, rdb redis.UniversalClient, namespace, number string) error {
	if err := rdb.Del(ctx, optOutPendingKey(namespace, number)).Err(); err != nil {
		return fmt.Errorf("queue: clear a pending opt-out: %w", err)
	}
	return nil
}

// IsOptOutPending says whether number opted out in namespace in an opt-out
// MongoDB may not have yet (MarkOptOutPending). Workers ask it with the
// call-off in one round trip (DialBlocks).
func IsOptOutPending(ctx context.Context, rdb redis.UniversalClient, namespace, number string) (bool, error) {
	return optOutPending(isOptOutPendingCmd(ctx, rdb, namespace, number))
}

// isOptOutPendingCmd asks whether the mark of MarkOptOutPending exists.
func isOptOutPendingCmd(ctx context.Context, c redis.Cmdable, namespace, number string) *redis.IntCmd {
	return c.Exists(ctx, optOutPendingKey(namespace, number))
}

// optOutPending reads the answer of isOptOutPendingCmd.
func optOutPending(cmd *redis.IntCmd) (bool, error) {
	n, err := cmd.Result()
	if err != nil {
		return false, fmt.Errorf("queue: is an opt-out pending: %w", err)
	}
	return n > 0, nil
}
