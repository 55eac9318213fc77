package callbacks

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/callurls"
)

func TestContextCache(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	ctx := context.Background()
	a := h.createAttempt(newTo())
	a, _ = h.st.Claim(ctx, a.ID, "w", time.Minute)
	if err := h.srv.Prime(ctx, a); err != nil {
		t.Fatal(err)
	}
	ttl, err := h.rdb.TTL(ctx, ContextKey(a.ID)).Result()
	if err != nil || ttl <= time.Hour || ttl > 2*time.Hour {
		t.Errorf("cached context TTL %v (err %v), want the 2 h default", ttl, err)
	}
	q := refQuery(a.ID, a.Fence)
	sid := callSIDFor(11)
	voice := func() string { return h.postTwiML(callurls.VoicePath, q, twimlForm(sid, nil)) }
	if x := voice(); !strings.Contains(x, "Hello Anna Schmidt") {
		t.Fatalf("voice: %s", x)
	}
	if st := h.srv.Stats(); st.CacheHits != 1 || st.CacheMisses != 0 {
		t.Errorf("after priming: %+v, want a hit", st)
	}

	// A changed campaign script re-renders the greeting from the cached
	// context (no MongoDB read) and stores it.
	c2 := *h.camp
	c2.Spec.Script.Greeting = "Hi {{.Name}}! {{.Company}} here, delivering {{.Date}}."
	h.src.p.Store(&c2)
	if x := voice(); !strings.Contains(x, "Hi Anna Schmidt! Example Logistics here, delivering Wednesday, December 2.") {
		t.Errorf("voice after the script changed: %s", x)
	}
	if st := h.srv.Stats(); st.CacheMisses != 0 {
		t.Errorf("a script change read MongoDB: %+v", st)
	}
	raw, _ := h.rdb.Get(ctx, ContextKey(a.ID)).Result()
	if !strings.Contains(raw, "Hi Anna Schmidt!") {
		t.Errorf("cache not updated with the new greeting: %s", raw)
	}

	// A callback of a newer claim (higher fence) reads MongoDB again.
	h.postTwiML(callurls.VoicePath, refQuery(a.ID, a.Fence+1), twimlForm(sid, nil))
	if st := h.srv.Stats(); st.CacheMisses != 1 {
		t.Errorf("newer fence: %+v, want a miss", st)
	}
	// Invalidate drops the entry.
	if err := h.srv.Invalidate(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	voice()
	voice()
	if st := h.srv.Stats(); st.CacheMisses != 2 || st.CacheHits != 3 {
		t.Errorf("after Invalidate: %+v, want one more miss then hits", st)
	}
	if got := testCounter(t, h, "delauto_callbacks_context_cache_total", "result", "hit"); got != 3 {
		t.Errorf("hit counter %v, want 3", got)
	}
}

// Concurrent lookups of one uncached attempt read MongoDB once. A read
// waits until every lookup has missed the cache, so lookups that did not
// share one would each read.
func TestConcurrentMissesReadOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	ctx := context.Background()
	a := h.createAttempt(newTo())
	a, _ = h.st.Claim(ctx, a.ID, "w", time.Minute)
	ref := callurls.Ref{AttemptID: a.ID, Fence: a.Fence}
	const n = 8
	var missed, reads atomic.Int32
	allMissed := make(chan struct{})
	h.srv.hooks.missed = func(callurls.Ref) {
		if missed.Add(1) == n {
			close(allMissed)
		}
	}
	h.srv.hooks.read = func(callurls.Ref) {
		reads.Add(1)
		select {
		case <-allMissed:
		case <-time.After(10 * time.Second):
			t.Errorf("only %d of %d lookups missed the cache", missed.Load(), n)
		}
	}
	infos := make([]*CallInfo, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { infos[i], errs[i] = h.srv.lookup(ctx, ref, h.camp) })
	}
	wg.Wait()
	if r := reads.Load(); r != 1 {
		t.Errorf("%d MongoDB reads for %d concurrent misses of one attempt, want 1", r, n)
	}
	for i, info := range infos {
		if errs[i] != nil || info == nil || info.AttemptID != a.ID || info.Fence != a.Fence || !strings.Contains(info.Greeting, "Hello Anna Schmidt") {
			t.Errorf("lookup %d: %+v, %v", i, info, errs[i])
		}
	}
	if st := h.srv.Stats(); st != (Stats{CacheMisses: 1, CacheShared: n - 1}) {
		t.Errorf("cache %+v, want one miss shared by the other %d lookups", st, n-1)
	}
	if got := testCounter(t, h, "delauto_callbacks_context_cache_total", "result", "shared"); got != n-1 {
		t.Errorf("shared counter %v, want %d", got, n-1)
	}
	// The fill cached it: the next lookup hits.
	if _, err := h.srv.lookup(ctx, ref, h.camp); err != nil || reads.Load() != 1 || h.srv.Stats().CacheHits != 1 {
		t.Errorf("lookup after the fill: err %v, %d reads, %+v", err, reads.Load(), h.srv.Stats())
	}
}
