package insightsapi

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/delauto/delauto/internal/insights"
)

// TestIdenticalRequestIsACacheHit checks that the second identical request
// (parameters in another order, spelled otherwise) is answered from Redis,
// that an outcome of the namespace (its generation key incremented) makes
// the next one a miss, and that the metrics count both.
func TestIdenticalRequestIsACacheHit(t *testing.T) {
	src := &countingSource{Source: listSource{n: 5}}
	h := newHarness(t, src)
	rdb := env.Redis.Client()
	defer rdb.Close()
	ctx := context.Background()
	// A generation of its own (a number: outcomes INCR it), so answers cached by an earlier run of the
	// test (-count) are not found.
	if err := rdb.Set(ctx, insights.GenerationKey(teamA), rand.Int64N(1<<50), 0).Err(); err != nil {
		t.Fatal(err)
	}

	first := h.get(base + "/analytics/breakdown?by=region&from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z")
	second := h.get(base + "/analytics/breakdown?to=2026-11-02T00:00:00Z&from=2026-11-01T01:00:00%2B01:00&by=region")
	if first.code != 200 || second.code != 200 {
		t.Fatalf("%d %s / %d %s", first.code, first.body, second.code, second.body)
	}
	if first.header.Get("X-Cache") != cacheMiss || second.header.Get("X-Cache") != cacheHit || src.n.Load() != 1 {
		t.Fatalf("X-Cache %s then %s, %d queries; want miss, hit, 1", first.header.Get("X-Cache"), second.header.Get("X-Cache"), src.n.Load())
	}
	if !bytes.Equal(first.body, second.body) || first.header.Get("ETag") != second.header.Get("ETag") {
		t.Error("the cached answer differs from the fresh one")
	}
	if err := rdb.Incr(ctx, insights.GenerationKey(teamA)).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(GenerationReuse + 50*time.Millisecond)
	third := h.get(base + "/analytics/breakdown?by=region&from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z")
	if third.header.Get("X-Cache") != cacheMiss || src.n.Load() != 2 {
		t.Errorf("after an outcome: X-Cache %s, %d queries; want miss, 2", third.header.Get("X-Cache"), src.n.Load())
	}
	if hits, misses := testutil.ToFloat64(h.srv.metrics.cache.WithLabelValues("breakdown", cacheHit)),
		testutil.ToFloat64(h.srv.metrics.cache.WithLabelValues("breakdown", cacheMiss)); hits != 1 || misses != 2 {
		t.Errorf("metrics: %v hits, %v misses; want 1 and 2", hits, misses)
	}
	// Another namespace's outcome leaves teamA's answers cached.
	rdb.Incr(ctx, insights.GenerationKey(teamB))
	if r := h.get(base + "/analytics/breakdown?by=region&from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z"); r.header.Get("X-Cache") != cacheHit {
		t.Errorf("teamB's outcome invalidated teamA: X-Cache %s", r.header.Get("X-Cache"))
	}
}

// TestCachedAnswersExpire checks the TTL on the key in Redis.
func TestCachedAnswersExpire(t *testing.T) {
	h := newHarness(t, listSource{n: 1}, func(c *Config) { c.CacheTTL = 7 * time.Second })
	h.get(base + "/deliveries?region=ttl-check")
	rdb := env.Redis.Client()
	defer rdb.Close()
	ctx := context.Background()
	gen, _ := rdb.Get(ctx, insights.GenerationKey(teamA)).Result()
	if gen == "" {
		gen = "0"
	}
	q := &query{namespace: teamA, deliveries: insights.DeliveryQuery{Region: "ttl-check", Limit: DefaultLimit}}
	ttl, err := rdb.TTL(ctx, cacheKey(teamA, q.key("deliveries"), gen)).Result()
	if err != nil || ttl <= 0 || ttl > 7*time.Second {
		t.Errorf("TTL of the cached answer %v (%v), want (0, 7s]", ttl, err)
	}
}

// TestAskedForAnswersAreRenewedBeforeTheyExpire: an answer asked for past
// half its TTL (and its own spread, under a quarter TTL) is served from
// the cache and made again in the background, so the next askers still
// hit; one nobody asks for expires.
func TestAskedForAnswersAreRenewedBeforeTheyExpire(t *testing.T) {
	const ttl = 8 * time.Second
	src := &countingSource{Source: listSource{n: 1}}
	h := newHarness(t, src, func(c *Config) { c.CacheTTL = ttl })
	path := base + "/deliveries?region=renew-" + strconv.FormatInt(rand.Int64(), 36)
	if r := h.get(path); r.header.Get("X-Cache") != cacheMiss || src.n.Load() != 1 {
		t.Fatalf("first: X-Cache %s, %d queries", r.header.Get("X-Cache"), src.n.Load())
	}
	time.Sleep(ttl*3/4 + 300*time.Millisecond)
	if r := h.get(path); r.code != 200 || r.header.Get("X-Cache") != cacheHit {
		t.Fatalf("past three quarters of the TTL: %d, X-Cache %s; want a hit", r.code, r.header.Get("X-Cache"))
	}
	for deadline := time.Now().Add(10 * time.Second); src.n.Load() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the answer was not made again in the background")
		}
	}
	// Past the first answer's expiry, the renewed one (not yet half its
	// TTL old, so not renewed again) is what the cache holds.
	time.Sleep(ttl/4 + 500*time.Millisecond)
	if r := h.get(path); r.header.Get("X-Cache") != cacheHit || src.n.Load() != 2 {
		t.Fatalf("past the first answer's TTL: X-Cache %s, %d queries; want a hit on the renewed one, 2", r.header.Get("X-Cache"), src.n.Load())
	}
	time.Sleep(ttl + 500*time.Millisecond)
	if r := h.get(path); r.header.Get("X-Cache") != cacheMiss || src.n.Load() != 3 {
		t.Fatalf("after a TTL nobody asked: X-Cache %s, %d queries; want a miss, 3", r.header.Get("X-Cache"), src.n.Load())
	}
}

// TestETagAnd304 checks that an answer's ETag sent back in If-None-Match
// gets a 304 without a body, from the cache and fresh alike, and that a
// stale ETag gets the answer.
func TestETagAnd304(t *testing.T) {
	src := &countingSource{Source: listSource{n: 2}}
	h := newHarness(t, src)
	r := h.get(base + "/deliveries?agent=etag-check")
	etag := r.header.Get("ETag")
	if r.code != 200 || len(etag) < 10 || etag[0] != '"' {
		t.Fatalf("%d, ETag %q", r.code, etag)
	}
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		nm := h.get(base+"/deliveries?agent=etag-check", "If-None-Match", inm)
		if nm.code != http.StatusNotModified || len(nm.body) != 0 || nm.header.Get("ETag") != etag {
			t.Errorf("If-None-Match %s: %d, %d bytes, ETag %q", inm, nm.code, len(nm.body), nm.header.Get("ETag"))
		}
	}
	if again := h.get(base+"/deliveries?agent=etag-check", "If-None-Match", `"stale"`); again.code != 200 || !bytes.Equal(again.body, r.body) {
		t.Errorf("stale ETag: %d", again.code)
	}
}

// TestGzipAboveOneKiB checks that a body over 1 KiB goes gzip-compressed
// to a client that accepts gzip, as it is to one that does not, and that a
// small body is never compressed.
func TestGzipAboveOneKiB(t *testing.T) {
	h := newHarness(t, listSource{n: 50})
	plain := h.get(base+"/deliveries?limit=50", "Accept-Encoding", "identity")
	if plain.code != 200 || len(plain.body) <= GzipMin || plain.header.Get("Content-Encoding") != "" {
		t.Fatalf("%d, %d bytes, encoding %q", plain.code, len(plain.body), plain.header.Get("Content-Encoding"))
	}
	gz := h.get(base+"/deliveries?limit=50", "Accept-Encoding", "br;q=1.0, gzip;q=0.8")
	if gz.header.Get("Content-Encoding") != "gzip" || !bytes.Equal(gz.body, plain.body) || gz.wire >= len(plain.body)/3 {
		t.Errorf("gzip: encoding %q, %d bytes on the wire for %d, same body %v",
			gz.header.Get("Content-Encoding"), gz.wire, len(plain.body), bytes.Equal(gz.body, plain.body))
	}
	if gz.header.Get("ETag") != plain.header.Get("ETag") || gz.header.Get("Vary") == "" {
		t.Errorf("ETag %q vs %q, Vary %q", gz.header.Get("ETag"), plain.header.Get("ETag"), gz.header.Get("Vary"))
	}
	if no := h.get(base+"/deliveries?limit=50", "Accept-Encoding", "gzip;q=0"); no.header.Get("Content-Encoding") != "" {
		t.Error("gzip sent to a client that refused it (q=0)")
	}
	small := h.get(base+"/deliveries?limit=1", "Accept-Encoding", "gzip")
	if small.code != 200 || len(small.body) > GzipMin || small.header.Get("Content-Encoding") != "" {
		t.Errorf("small body: %d bytes, encoding %q", len(small.body), small.header.Get("Content-Encoding"))
	}
}

// TestWithoutRedisAnswersFromTheStore checks that the API serves when its
// cache is unreachable, and counts the failures.
func TestWithoutRedisAnswersFromTheStore(t *testing.T) {
	src := &countingSource{Source: listSource{n: 1}}
	h := newHarness(t, src, func(c *Config) {
		c.Redis = redisAt("127.0.0.1:1")
	})
	for range 2 {
		if r := h.get(base + "/analytics/overview"); r.code != 200 || r.header.Get("X-Cache") != cacheMiss {
			t.Fatalf("%d %s", r.code, r.body)
		}
	}
	if src.n.Load() != 2 || testutil.ToFloat64(h.srv.metrics.cacheErrors) < 2 {
		t.Errorf("%d queries, %v cache errors", src.n.Load(), testutil.ToFloat64(h.srv.metrics.cacheErrors))
	}
}
