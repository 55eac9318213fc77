package insightsapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/insights"
)

// GzipMin is the smallest body sent gzip-compressed to a client that
// accepts it: smaller ones are sent as they are.
const GzipMin = 1024

// cachePrefix starts every cached answer's key.
const cachePrefix = "delauto:insights:api:"

// The X-Cache header and cache metric values.
const (
	cacheHit  = "hit"
	cacheMiss = "miss"
)

// answer is an encoded answer: the JSON body, its gzip form when the body
// is over GzipMin, its ETag, and when it was made.
type answer struct {
	body, gz []byte
	etag     string
	made     time.Time
}

func newAnswer(body []byte) *answer {
	sum := sha256.Sum256(body)
	a := &answer{body: body, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`, made: time.Now()}
	if len(body) > GzipMin {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
		_, _ = zw.Write(body)
		_ = zw.Close()
		a.gz = b.Bytes()
	}
	return a
}

// answerFormat is the first byte of an encoded answer: an entry of
// another layout is a miss, overwritten by the fresh answer.
const answerFormat = 2

// encode packs a for Redis: the format byte, when it was made (Unix
// milliseconds), the ETag's length and the ETag, the body's length and the
// body, then the gzip form.
func (a *answer) encode() []byte {
	out := make([]byte, 0, 17+len(a.etag)+len(a.body)+len(a.gz))
	out = append(out, answerFormat)
	out = binary.BigEndian.AppendUint64(out, uint64(a.made.UnixMilli()))
	out = binary.BigEndian.AppendUint32(out, uint32(len(a.etag)))
	out = append(out, a.etag...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(a.body)))
	out = append(out, a.body...)
	return append(out, a.gz...)
}

var errCorrupt = errors.New("a cached answer is corrupt")

func decodeAnswer(b []byte) (*answer, error) {
	if len(b) < 9 || b[0] != answerFormat {
		return nil, errCorrupt
	}
	made := time.UnixMilli(int64(binary.BigEndian.Uint64(b[1:9])))
	b = b[9:]
	take := func() ([]byte, error) {
		if len(b) < 4 {
			return nil, errCorrupt
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(len(b)-4) < uint64(n) {
			return nil, errCorrupt
		}
		v := b[4 : 4+n]
		b = b[4+n:]
		return v, nil
	}
	etag, err := take()
	if err != nil {
		return nil, err
	}
	body, err := take()
	if err != nil {
		return nil, err
	}
	a := &answer{etag: string(etag), body: body, made: made}
	if len(b) > 0 {
		a.gz = b
	}
	return a, nil
}

// write sends a: 304 when the client holds it (If-None-Match), gzip when
// the client accepts it and there is a gzip form.
func (a *answer) write(w http.ResponseWriter, r *http.Request, cacheStatus string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "private, no-cache")
	h.Set("Vary", "Accept-Encoding, Authorization")
	if cacheStatus != "" {
		h.Set("X-Cache", cacheStatus)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	if etagMatch(r.Header.Get("If-None-Match"), a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// etagMatch reports whether an If-None-Match header names etag (weakly:
// W/"x" matches "x") or is *.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding header takes gzip (or *)
// with a quality above 0.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "*" {
			continue
		}
		if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
				continue
			}
		}
		return true
	}
	return false
}

// GenerationReuse is how long a namespace's generation read from Redis is
// reused: a new outcome reaches the API's answers at most this long after
// the worker's flush (every second), and a busy API reads each
// namespace's generation four times a second instead of once per request.
const GenerationReuse = 250 * time.Millisecond

// answerCache keeps encoded answers in Redis.
type answerCache struct {
	rdb redis.UniversalClient
	ttl time.Duration

	mu   sync.Mutex
	gens map[string]generation
}

// generation is a namespace's generation as read at a time.
type generation struct {
	value string
	read  time.Time
}

// generation returns the namespace's generation, read from Redis at most
// GenerationReuse ago.
func (c *answerCache) generation(ctx context.Context, namespace string, now time.Time) (string, error) {
	c.mu.Lock()
	g, ok := c.gens[namespace]
	c.mu.Unlock()
	if ok && now.Sub(g.read) < GenerationReuse {
		return g.value, nil
	}
	v, err := c.rdb.Get(ctx, insights.GenerationKey(namespace)).Result()
	if errors.Is(err, redis.Nil) {
		v, err = "0", nil
	}
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if c.gens == nil || len(c.gens) > 10000 {
		c.gens = map[string]generation{}
	}
	c.gens[namespace] = generation{value: v, read: now}
	c.mu.Unlock()
	return v, nil
}

// stale reports whether a cached answer is old enough to be made again in
// the background while it is served: past half its TTL, plus up to a
// quarter TTL that differs from answer to answer (so answers cached
// together are not all made again at once). An answer asked for is thus
// renewed before it expires, and its askers never wait for the store; one
// nobody asks for expires. (Its generation is current, so it is not out of
// date; the renewal bounds how long a change that no outcome announced,
// such as a rebuild, takes to show.)
func (c *answerCache) stale(a *answer, now time.Time) bool {
	h := fnv.New32a()
	h.Write([]byte(a.etag))
	spread := time.Duration(h.Sum32()) % (c.ttl/4 + 1)
	return now.Sub(a.made) > c.ttl/2+spread
}

// cacheKey is the key of a namespace's answer to a normalized query at a
// generation of the namespace's outcomes. The query is hashed so a key
// stays short whatever the filters; the namespace leads so an operator can
// find a namespace's answers.
func cacheKey(namespace, query, generation string) string {
	sum := sha256.Sum256([]byte(query))
	return cachePrefix + namespace + ":" + generation + ":" + base64.RawURLEncoding.EncodeToString(sum[:18])
}

// get reads the namespace's generation (reused for GenerationReuse), then
// the answer of query at it.
// It returns the key the answer has (or will have) at this generation, and
// a nil answer on a miss.
func (c *answerCache) get(ctx context.Context, namespace, query string) (*answer, string, error) {
	gen, err := c.generation(ctx, namespace, time.Now())
	if err != nil {
		return nil, "", err
	}
	key := cacheKey(namespace, query, gen)
	b, err := c.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, key, nil
	}
	if err != nil {
		return nil, "", err
	}
	a, err := decodeAnswer(b)
	if err != nil {
		return nil, key, nil // overwritten by the fresh answer
	}
	return a, key, nil
}

func (c *answerCache) put(ctx context.Context, key string, a *answer) error {
	return c.rdb.Set(ctx, key, a.encode(), c.ttl).Err()
}
