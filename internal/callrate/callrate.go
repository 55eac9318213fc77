// Package callrate counts a campaign's placed calls per second in Redis,
// flags when its dials wait on the account's rate limit, keeps the last
// configuration error Twilio gave its dials, remembers when it last placed
// a call, and sums the durations of its recent calls, so the operator can report calls per second, the
// RateLimited condition and a Degraded condition with Twilio's error code,
// and size the worker fleet by the measured call length, without asking
// every worker. Counters are per second (call durations per minute) with a
// short TTL; all keys share one hash tag per campaign (one Redis Cluster
// slot).
package callrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Window is how many past whole seconds Read averages over.
const Window = 10

const ttl = 2 * Window * time.Second

func tag(namespace, campaign string) string { return "{rate:" + namespace + "/" + campaign + "}" }

func secondKey(namespace, campaign string, sec int64) string {
	return tag(namespace, campaign) + ":" + strconv.FormatInt(sec, 10)
}

func limitedKey(namespace, campaign string) string { return tag(namespace, campaign) + ":limited" }

func dialErrorKey(namespace, campaign string) string { return tag(namespace, campaign) + ":dialerror" }

func lastCallKey(namespace, campaign string) string { return tag(namespace, campaign) + ":lastcall" }

// LastCallTTL is how long the time of a campaign's last placed call is
// kept: longer than any call lasts (ring timeout plus time limit) plus the
// time a worker waits for a lost final status.
const LastCallTTL = 30 * time.Minute

// DialErrorTTL is how long a dial error flag lasts after the last dial that
// hit the error: attempts put back for it are tried again every minute, so
// the flag stays while the error lasts and goes a few minutes after it was
// fixed.
const DialErrorTTL = 5 * time.Minute

// DialError is a configuration error Twilio answered a dial of the campaign
// with (caller ID not verified or invalid, no geographic permission,
// credentials): the campaign's fault, not the recipient's.
type DialError struct {
	// Code is Twilio's error code (0 when it gave none).
	Code int `json:"code"`
	// Message is Twilio's message, phone numbers masked.
	Message string `json:"message"`
	// At is when a dial last hit it.
	At time.Time `json:"at"`
}

// MarkDialError records e as the campaign's latest dial configuration
// error, for DialErrorTTL.
func MarkDialError(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string, e DialError) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return rdb.Set(ctx, dialErrorKey(namespace, campaign), b, DialErrorTTL).Err()
}

// ReadDialError returns the campaign's latest dial configuration error
// within DialErrorTTL, or nil.
func ReadDialError(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string) (*DialError, error) {
	b, err := rdb.Get(ctx, dialErrorKey(namespace, campaign)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read dial error: %w", err)
	}
	var e DialError
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("read dial error: %w", err)
	}
	return &e, nil
}

// Record counts one placed call at time t.
func Record(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string, t time.Time) error {
	return RecordN(ctx, rdb, namespace, campaign, t, 1)
}

// RecordN counts n calls placed in the second of t, for callers that add up
// their calls locally and write once a second.
func RecordN(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string, t time.Time, n int64) error {
	if n <= 0 {
		return nil
	}
	k := secondKey(namespace, campaign, t.Unix())
	pipe := rdb.Pipeline()
	pipe.IncrBy(ctx, k, n)
	pipe.Expire(ctx, k, ttl)
	// The latest second wins, whatever order the workers' writes arrive in.
	last := lastCallKey(namespace, campaign)
	pipe.ZAddGT(ctx, last, redis.Z{Score: float64(t.Unix()), Member: "last"})
	pipe.Expire(ctx, last, LastCallTTL)
	_, err := pipe.Exec(ctx)
	return err
}

// LastCall is the second in which the campaign last placed a call (as
// counted by RecordN), or the zero time when it placed none within
// LastCallTTL.
func LastCall(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string) (time.Time, error) {
	sec, err := rdb.ZScore(ctx, lastCallKey(namespace, campaign), "last").Result()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("read last call: %w", err)
	}
	return time.Unix(int64(sec), 0), nil
}

// MarkLimited records that a dial of the campaign waited on the account's
// limiter; the flag lasts for the window.
func MarkLimited(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string) error {
	return rdb.Set(ctx, limitedKey(namespace, campaign), "1", Window*time.Second).Err()
}

// Read returns the campaign's average calls per second over the last Window
// whole seconds before now, and whether dials waited on the limiter within
// the window.
func Read(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string, now time.Time) (float64, bool, error) {
	keys := make([]string, Window)
	for i := range keys {
		keys[i] = secondKey(namespace, campaign, now.Unix()-1-int64(i))
	}
	pipe := rdb.Pipeline()
	counts := pipe.MGet(ctx, keys...)
	limited := pipe.Exists(ctx, limitedKey(namespace, campaign))
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, false, fmt.Errorf("read call rate: %w", err)
	}
	var total int64
	for _, v := range counts.Val() {
		if s, ok := v.(string); ok {
			n, _ := strconv.ParseInt(s, 10, 64)
			total += n
		}
	}
	return float64(total) / Window, limited.Val() > 0, nil
}

// DurationWindow is how far back AverageDuration looks: the current minute
// and the minutes before it, DurationWindow in all.
const DurationWindow = 10 * time.Minute

// MinDurationCalls is the fewest ended calls AverageDuration averages; with
// fewer it reports no average and the campaign's setting holds.
const MinDurationCalls = 5

const durationBuckets = int64(DurationWindow / time.Minute)

// durationTTL keeps a minute's bucket until it left the window.
const durationTTL = DurationWindow + 2*time.Minute

func durationKey(namespace, campaign string, minute int64) string {
	return tag(namespace, campaign) + ":dur:" + strconv.FormatInt(minute, 10)
}

// RecordDuration adds one ended call of length d at t to its minute's
// bucket (a hash of the milliseconds summed and the calls counted): one
// pipelined write. A call of no length is not counted.
func RecordDuration(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string, t time.Time, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	k := durationKey(namespace, campaign, t.Unix()/60)
	pipe := rdb.Pipeline()
	pipe.HIncrBy(ctx, k, "ms", d.Milliseconds())
	pipe.HIncrBy(ctx, k, "n", 1)
	pipe.Expire(ctx, k, durationTTL)
	_, err := pipe.Exec(ctx)
	return err
}

// Durations returns the summed length and the number of the campaign's
// calls that ended within DurationWindow before now (now's minute and the
// ones before it): one pipelined read of one hash per minute.
func Durations(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string, now time.Time) (time.Duration, int64, error) {
	minute := now.Unix() / 60
	pipe := rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, durationBuckets)
	for i := range cmds {
		cmds[i] = pipe.HMGet(ctx, durationKey(namespace, campaign, minute-int64(i)), "ms", "n")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, fmt.Errorf("read call durations: %w", err)
	}
	var ms, n int64
	for _, c := range cmds {
		v := c.Val()
		if len(v) != 2 {
			continue
		}
		if s, ok := v[0].(string); ok {
			x, _ := strconv.ParseInt(s, 10, 64)
			ms += x
		}
		if s, ok := v[1].(string); ok {
			x, _ := strconv.ParseInt(s, 10, 64)
			n += x
		}
	}
	return time.Duration(ms) * time.Millisecond, n, nil
}

// AverageDuration returns the average length of the campaign's calls that
// ended within DurationWindow before now and how many ended; the average
// is zero when fewer than MinDurationCalls did.
func AverageDuration(ctx context.Context, rdb redis.UniversalClient, namespace, campaign string, now time.Time) (time.Duration, int64, error) {
	sum, n, err := Durations(ctx, rdb, namespace, campaign, now)
	if err != nil || n < MinDurationCalls {
		return 0, n, err
	}
	return (sum / time.Duration(n)).Round(time.Millisecond), n, nil
}
