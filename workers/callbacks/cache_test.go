package callbacks

import (
	"context"
	"strings"
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
