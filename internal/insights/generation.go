package insights

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// BumpTimeout bounds one Bump.
const BumpTimeout = 2 * time.Second

// Bump increments the generation of each namespace (GenerationKey), so the
// read API's cached answers of those namespaces are no longer used. It is
// best effort: a failure is logged, never returned (the cache entries then
// expire by their TTL).
func Bump(rdb redis.UniversalClient, log *slog.Logger, namespaces ...string) {
	if rdb == nil || len(namespaces) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), BumpTimeout)
	defer cancel()
	for _, ns := range namespaces {
		// One key per namespace: each may sit in another Redis Cluster
		// slot, so no pipeline across them.
		if err := rdb.Incr(ctx, GenerationKey(ns)).Err(); err != nil {
			log.Warn("cannot bump the insights generation; cached answers of the namespace expire by their TTL",
				"namespace", ns, "key", GenerationKey(ns), "error", err)
		}
	}
}
