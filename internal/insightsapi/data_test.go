package insightsapi

import (
	"context"
	"encoding/json"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/workers/store"
)

// seededAttempts is how many ended attempts callLog seeds into teamA.
const seededAttempts = 600

var (
	callLogOnce sync.Once
	callLogSrc  insights.Source
	seedTo      time.Time
)

// callLog is the real Source: the call log on FerretDB, seeded once per
// package with seededAttempts ended attempts of teamA over the two days
// before the test started, with their delivery summaries and rollups.
func callLog(t *testing.T) insights.Source {
	t.Helper()
	callLogOnce.Do(func() {
		ctx := context.Background()
		st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: "insightsapi"})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.EnsureIndexes(ctx); err != nil {
			t.Fatal(err)
		}
		var src insights.Source = st
		// The seed ends a second before the hour, so its last outcomes
		// end in the next hour, the case a range must still cover.
		seedTo = time.Now().UTC().Truncate(time.Hour).Add(-time.Second)
		if err := st.SeedInsights(ctx, store.Seed{Namespace: teamA, Attempts: seededAttempts,
			From: seedTo.Add(-48 * time.Hour), To: seedTo, RandSeed: 7}); err != nil {
			t.Fatal(err)
		}
		callLogSrc = src
	})
	if callLogSrc == nil {
		t.Fatal("seeding the call log failed in an earlier test")
	}
	return callLogSrc
}

// TestAnswersComeFromTheCallLog checks the API against the call log's own
// answers: the overview is the store's, a breakdown and a time series add
// up to it, and paging the delivery list with its continue tokens visits
// every Delivery once.
func TestAnswersComeFromTheCallLog(t *testing.T) {
	src := callLog(t)
	h := newHarness(t, src)
	ctx := context.Background()
	from := seedTo.Add(-72 * time.Hour).Truncate(time.Hour)
	// A seeded Delivery's outcome ends up to 37 minutes after it was
	// created: the range runs to the end of the hour after that.
	to := seedTo.Add(37 * time.Minute).Truncate(time.Hour).Add(time.Hour)
	rng := "from=" + url.QueryEscape(from.Format(time.RFC3339)) + "&to=" + url.QueryEscape(to.Format(time.RFC3339))

	var ov OverviewAnswer
	decode(t, h.get(base+"/analytics/overview?"+rng), &ov)
	want, err := src.Overview(ctx, teamA, insights.Range{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if ov.Overview != want || ov.Overview.Deliveries == 0 || ov.Overview.Calls == 0 {
		t.Fatalf("overview %+v, the call log says %+v", ov.Overview, want)
	}

	for _, by := range []string{"region", "agent", "campaign", "hour"} {
		var bd BreakdownAnswer
		decode(t, h.get(base+"/analytics/breakdown?by="+by+"&"+rng), &bd)
		var deliveries, calls int64
		for i, g := range bd.Groups {
			deliveries += g.Deliveries
			calls += g.Calls
			if by != "hour" && i > 0 && g.Deliveries > bd.Groups[i-1].Deliveries {
				t.Errorf("by %s: group %s (%d) after %s (%d): not largest first", by, g.Key, g.Deliveries, bd.Groups[i-1].Key, bd.Groups[i-1].Deliveries)
			}
		}
		if len(bd.Groups) == 0 || deliveries != want.Deliveries || calls != want.Calls {
			t.Errorf("by %s: %d groups, %d deliveries and %d calls; the overview has %d and %d", by, len(bd.Groups), deliveries, calls, want.Deliveries, want.Calls)
		}
	}

	var ts TimeseriesAnswer
	decode(t, h.get(base+"/analytics/timeseries?step=6h&"+rng), &ts)
	var deliveries int64
	for _, p := range ts.Points {
		deliveries += p.Deliveries
	}
	if deliveries != want.Deliveries {
		t.Errorf("time series: %d points, %d deliveries; the overview has %d", len(ts.Points), deliveries, want.Deliveries)
	}

	// The delivery list, page by page.
	seen := map[string]bool{}
	next := ""
	pages := 0
	var firstContinue string
	for {
		path := base + "/deliveries?limit=97"
		if next != "" {
			path += "&continue=" + url.QueryEscape(next)
		}
		var page insights.DeliveryPage
		decode(t, h.get(path), &page)
		pages++
		for _, d := range page.Items {
			if seen[d.Name] {
				t.Fatalf("page %d: %s listed twice", pages, d.Name)
			}
			seen[d.Name] = true
			if d.Namespace != teamA || d.Phase == "" || d.Campaign == "" {
				t.Errorf("summary %+v", d)
			}
		}
		if page.Continue == "" {
			break
		}
		if firstContinue == "" {
			firstContinue = page.Continue
		}
		next = page.Continue
		if pages > seededAttempts {
			t.Fatal("the list does not end")
		}
	}
	if pages < 2 || int64(len(seen)) != want.Deliveries {
		t.Errorf("%d pages, %d Deliveries listed; the overview counts %d", pages, len(seen), want.Deliveries)
	}
	// A continue token is the query's: with other filters it is refused.
	r := h.get(base + "/deliveries?limit=97&region=north&continue=" + url.QueryEscape(firstContinue))
	if r.code != 400 || r.errorOf(t).Parameter != "continue" {
		t.Errorf("a continue token with other filters: %d %s", r.code, r.body)
	}

	// Filters hold on every item.
	var page insights.DeliveryPage
	decode(t, h.get(base+"/deliveries?limit=500&region=north&phase=Confirmed"), &page)
	if len(page.Items) == 0 {
		t.Fatal("no Confirmed Delivery in region north")
	}
	for _, d := range page.Items {
		if d.Region != "north" || d.Phase != "Confirmed" {
			t.Errorf("filtered by region north and phase Confirmed, got %+v", d)
		}
	}
	// The list never holds a phone number.
	raw := h.get(base + "/deliveries?limit=5")
	var items struct{ Items []map[string]any }
	_ = json.Unmarshal(raw.body, &items)
	for _, it := range items.Items {
		for _, k := range []string{"phone", "to", "recipient"} {
			if _, ok := it[k]; ok {
				t.Errorf("a list item has %q: %v", k, it)
			}
		}
	}
}
