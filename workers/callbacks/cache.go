package callbacks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/internal/callurls"
	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/internal/language"
	"github.com/delauto/delauto/internal/schedule"
	"github.com/delauto/delauto/internal/script"
	"github.com/delauto/delauto/workers/store"
)

// CallInfo is what the webhooks of one call need about it: the attempt's
// delivery context (from MongoDB) and the campaign's script rendered for it.
// It is cached in Redis under ContextKey for every webhook of the call.
type CallInfo struct {
	// AttemptID is the attempt.
	AttemptID string `json:"id"`
	// Fence is the attempt's fence when it was read.
	Fence int64 `json:"fence"`
	// Namespace, Name and UID are the Delivery's.
	Namespace string `json:"ns"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	// Campaign is the CallCampaign as namespace/name.
	Campaign string `json:"campaign"`
	// To is the recipient's number. Never log it unmasked.
	To string `json:"to"`
	// Context is the delivery as the call needs it.
	Context *store.CallContext `json:"ctx,omitempty"`
	// ScriptVersion identifies the campaign script Greeting was rendered
	// with; a changed script re-renders it.
	ScriptVersion string `json:"sv"`
	// Greeting is the campaign's greeting rendered for this recipient.
	Greeting string `json:"greeting"`
}

// ContextKey is the Redis key of an attempt's cached CallInfo. The attempt
// id is its hash tag, so the keys spread over a Redis Cluster.
func ContextKey(attemptID string) string { return "delauto:callctx:{" + attemptID + "}" }

// errUnknownAttempt: the attempt id is well formed but not in the call log.
var errUnknownAttempt = errors.New("unknown attempt")

// scriptVersion identifies what of the campaign a rendered greeting
// depends on.
func scriptVersion(c *campaignfile.Config) string {
	h := sha256.New()
	sc, _ := json.Marshal(c.Spec.Script)
	fmt.Fprintf(h, "%s\x00%s", sc, c.Spec.Schedule.DefaultTimeZone)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// render fills info's greeting for campaign c, in the recipient's language.
func (s *Server) render(info *CallInfo, c *campaignfile.Config) {
	info.ScriptVersion = s.scriptVersionOf(c)
	company := c.Spec.Script.CompanyName
	w := s.wording(info, c)
	cc := info.Context
	if cc == nil || cc.WindowStart.IsZero() {
		g, err := script.Render(w.GreetingNoWindow, script.Data{Company: company})
		if err != nil {
			g = company
		}
		info.Greeting = g
		return
	}
	loc := schedule.FirstLocation(cc.TimeZone, string(c.Spec.Schedule.DefaultTimeZone))
	d := dataFor(w, cc.RecipientName, company, cc.WindowStart, cc.WindowEnd, loc)
	g, err := script.Render(w.Greeting, d)
	if err != nil {
		s.log.Error("campaign greeting does not render; using the built-in one", "campaign", c.Namespace+"/"+c.Name, "language", w.Code, "error", err)
		builtin := language.Builtin(language.Base(w.Code))
		if builtin == nil {
			builtin = language.Builtin(language.DefaultCode)
		}
		g, _ = script.Render(builtin.Greeting, d)
	}
	info.Greeting = g
}

// infoFor builds the CallInfo of attempt a for campaign c.
func (s *Server) infoFor(a *store.Attempt, c *campaignfile.Config) *CallInfo {
	info := &CallInfo{
		AttemptID: a.ID, Fence: a.Fence, Namespace: a.Delivery.Namespace, Name: a.Delivery.Name,
		UID: a.Delivery.UID, Campaign: a.Campaign, To: a.To, Context: a.Context,
	}
	s.render(info, c)
	return info
}

// Prime caches the call context of attempt a, so the call's first webhook
// finds it (benchmarks and tests warm the cache with it; in the worker the
// first webhook of each call reads MongoDB and fills the cache).
func (s *Server) Prime(ctx context.Context, a *store.Attempt) error {
	c := s.cfg.Campaign.Current()
	if c == nil {
		return errors.New("no campaign loaded")
	}
	return s.put(ctx, s.infoFor(a, c))
}

// Invalidate drops attempt id's cached call context; the next webhook reads
// MongoDB again.
func (s *Server) Invalidate(ctx context.Context, attemptID string) error {
	return s.rdb.Del(ctx, ContextKey(attemptID)).Err()
}

func (s *Server) put(ctx context.Context, info *CallInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	return s.rdb.Set(ctx, ContextKey(info.AttemptID), b, s.cfg.ContextTTL).Err()
}

// lookup returns the call context of the attempt a callback names: from the
// Redis cache when it is there, current (its fence not older than the URL's)
// and rendered with the campaign's current script; otherwise from MongoDB,
// then cached. Concurrent misses of one attempt and fence share one fill
// (fill), so a call's webhooks read MongoDB once. An attempt MongoDB does
// not have is errUnknownAttempt.
func (s *Server) lookup(ctx context.Context, ref callurls.Ref, c *campaignfile.Config) (*CallInfo, error) {
	info, err := s.cached(ctx, ref)
	if info != nil {
		s.count("hit")
		return s.rendered(ctx, info, c), nil
	}
	if s.hooks.missed != nil {
		s.hooks.missed(ref)
	}
	redisDown := err != nil
	var read bool // set by this lookup's own fill if it read MongoDB
	// The fill outlives a caller that gives up: the others may wait for it.
	fctx := context.WithoutCancel(ctx)
	ch := s.fills.DoChan(ref.AttemptID+"@"+strconv.FormatInt(ref.Fence, 10), func() (any, error) {
		return s.fill(fctx, ref, c, redisDown, &read)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if !read {
			s.count("shared")
		}
		if r.Err != nil {
			return nil, r.Err
		}
		cp := *r.Val.(*CallInfo) // every caller gets its own copy to render
		return s.rendered(ctx, &cp, c), nil
	}
}

// cached returns attempt ref's call context from Redis, or nil when it is not
// there or older than ref's fence; err is a Redis failure other than a
// missing key (logged).
func (s *Server) cached(ctx context.Context, ref callurls.Ref) (*CallInfo, error) {
	get := redis.NewStringCmd(ctx, "get", ContextKey(ref.AttemptID))
	err := s.batch.do(ctx, get)
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		s.log.Warn("call context cache unavailable; reading MongoDB", "attempt", ref.AttemptID, "error", err)
		return nil, err
	}
	raw, _ := get.Bytes()
	var info CallInfo
	if json.Unmarshal(raw, &info) != nil || info.AttemptID != ref.AttemptID || info.Fence < ref.Fence {
		return nil, nil
	}
	return &info, nil
}

// rendered returns info with its greeting rendered for campaign c, storing
// it again when the script changed since it was cached.
func (s *Server) rendered(ctx context.Context, info *CallInfo, c *campaignfile.Config) *CallInfo {
	if info.ScriptVersion != s.scriptVersionOf(c) {
		s.render(info, c)
		if err := s.put(ctx, info); err != nil {
			s.log.Warn("call context cache: could not update", "attempt", info.AttemptID, "error", err)
		}
	}
	return info
}

// fill reads attempt ref from MongoDB and caches it: the one store read of
// concurrent misses. It first looks in Redis again (unless Redis failed the
// caller's look), as a fill that finished just after the caller missed has
// stored the context there. read is set when it reads MongoDB.
func (s *Server) fill(ctx context.Context, ref callurls.Ref, c *campaignfile.Config, redisDown bool, read *bool) (*CallInfo, error) {
	if !redisDown {
		if info, _ := s.cached(ctx, ref); info != nil {
			return info, nil
		}
	}
	*read = true
	s.count("miss")
	if s.hooks.read != nil {
		s.hooks.read(ref)
	}
	a, err := s.cfg.Store.Get(ctx, ref.AttemptID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errUnknownAttempt
	}
	if err != nil {
		return nil, err
	}
	info := s.infoFor(a, c)
	if err := s.put(ctx, info); err != nil {
		s.log.Warn("call context cache: could not store", "attempt", ref.AttemptID, "error", err)
	}
	return info, nil
}
