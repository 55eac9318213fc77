package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// expectedGroups answers a breakdown the slow way: from every rollup
// bucket of the namespace.
func expectedGroups(rs []Rollup, dim insights.Dimension, r insights.Range) map[string]insights.Overview {
	sums := map[string]*insights.Counts{}
	for _, ru := range rs {
		if ru.Hour.Before(r.From) || !ru.Hour.Before(r.To) || (r.Campaign != "" && ru.Campaign != r.Campaign) {
			continue
		}
		var k string
		switch dim {
		case insights.ByRegion:
			k = ru.Region
		case insights.ByAgent:
			k = ru.Agent
		case insights.ByCampaign:
			k = ru.Campaign
		case insights.ByHour:
			k = ru.Hour.Format(time.RFC3339)
		default:
			k = "all"
		}
		if sums[k] == nil {
			sums[k] = &insights.Counts{}
		}
		sums[k].Add(ru.Counts)
	}
	out := map[string]insights.Overview{}
	for k, c := range sums {
		out[k] = c.Overview()
	}
	return out
}

// checkQueriesMatchRollups compares the series queries with sums of the
// rollup buckets over random ranges.
func checkQueriesMatchRollups(t *testing.T, s *Store, what string, from, to time.Time) {
	t.Helper()
	ctx := context.Background()
	rs, err := s.Rollups(ctx, "bench", time.Time{}, time.Time{})
	if err != nil || len(rs) == 0 {
		t.Fatalf("%s: rollups: %d, %v", what, len(rs), err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	hours := int(to.Sub(from) / time.Hour)
	for i := range 25 {
		a, b := rng.IntN(hours), rng.IntN(hours)
		if a > b {
			a, b = b, a
		}
		r := insights.Range{From: from.Add(time.Duration(a) * time.Hour), To: from.Add(time.Duration(b+1) * time.Hour)}
		if i%3 == 0 {
			r.Campaign = []string{"evening", "morning"}[i%2]
		}
		o, err := s.Overview(ctx, "bench", r)
		if err != nil {
			t.Fatal(err)
		}
		if want := expectedGroups(rs, "", r)["all"]; o != want {
			t.Fatalf("%s: overview of %v..%v %q = %+v, want %+v", what, r.From, r.To, r.Campaign, o, want)
		}
		for _, dim := range []insights.Dimension{insights.ByRegion, insights.ByAgent, insights.ByCampaign, insights.ByHour} {
			groups, err := s.Breakdown(ctx, "bench", dim, r)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]insights.Overview{}
			for _, g := range groups {
				got[g.Key] = g.Overview
			}
			if want := expectedGroups(rs, dim, r); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: breakdown by %s of %v..%v %q: %d groups, want %d\n got %+v\nwant %+v", what, dim, r.From, r.To, r.Campaign, len(got), len(want), got, want)
			}
		}
		step := time.Duration(1+rng.IntN(30)) * time.Hour
		points, err := s.Timeseries(ctx, "bench", step, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range points {
			end := p.Start.Add(step)
			if end.After(r.To) {
				end = r.To
			}
			want := expectedGroups(rs, "", insights.Range{From: p.Start, To: end, Campaign: r.Campaign})["all"]
			if p.Overview != want {
				t.Fatalf("%s: timeseries step %s point %v = %+v, want %+v", what, step, p.Start, p.Overview, want)
			}
		}
	}
}

// TestSeriesAnswerAsTheRollups: the analytics queries read series
// documents, a dozen for a week; whatever the range, campaign, dimension
// or step, they answer what the rollup buckets add up to, after counting
// (the seed's $inc path) and after a rebuild.
func TestSeriesAnswerAsTheRollups(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, func(c *Config) { c.InsightsFlush = -1 })
	to := time.Date(2026, 3, 9, 13, 0, 0, 0, time.UTC)
	from := to.Add(-4 * 24 * time.Hour)
	if err := s.SeedInsights(ctx, Seed{Namespace: "bench", Attempts: 600, From: from, To: to, RandSeed: 3, Agents: []string{"Ann", "Bob", "C.D. $x"}}); err != nil {
		t.Fatal(err)
	}
	// The outcomes end up to an hour and a half after the last Delivery.
	checkQueriesMatchRollups(t, s, "seeded", from.Add(-time.Hour), to.Add(3*time.Hour))

	if err := s.DropRollups(ctx, "bench"); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.Overview(ctx, "bench", insights.Range{From: from, To: to}); o != (insights.Overview{}) {
		t.Fatalf("overview after dropping the rollups = %+v", o)
	}
	rep, err := s.Rebuild(ctx, "bench", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Series == 0 {
		t.Fatalf("rebuild wrote no series: %+v", rep)
	}
	checkQueriesMatchRollups(t, s, "rebuilt", from.Add(-time.Hour), to.Add(3*time.Hour))
}

// TestSeriesPlanCoversTheRangeWithTheFewestStretches: a range is cut into
// whole days, four-hour stretches and hours, each on its own boundary.
func TestSeriesPlanCoversTheRangeWithTheFewestStretches(t *testing.T) {
	from := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	to := from.Add(7 * 24 * time.Hour)
	plan := seriesPlan(from, to, seriesGrains)
	var names []string
	at := from
	for _, st := range plan {
		if !st.at.Equal(at) || !startOf(st.at, st.grain.span).Equal(st.at) {
			t.Fatalf("stretch %s at %v: want it at %v, on its boundary", st.grain.name, st.at, at)
		}
		at = at.Add(st.grain.span)
		names = append(names, st.grain.name)
	}
	if !at.Equal(to) {
		t.Fatalf("plan ends at %v, want %v", at, to)
	}
	// 09-12 by hours, 12-24 by fours, six days, 00-08 by fours, 08-09.
	want := []string{"h", "h", "h", "q", "q", "q", "d", "d", "d", "d", "d", "d", "q", "q", "h"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("plan = %v, want %v", names, want)
	}
	if hours := seriesPlan(from, to, []seriesGrain{hourGrain}); len(hours) != 7*24 {
		t.Fatalf("hour plan has %d stretches", len(hours))
	}
	keys := map[string]bool{}
	for _, st := range plan {
		keys[seriesKey{Namespace: "ns", Grain: st.grain.name, At: st.at}.lk()] = true
	}
	lks := make([]string, 0, len(keys))
	for k := range keys {
		lks = append(lks, k)
	}
	sort.Strings(lks)
	if len(lks) != 5 {
		t.Fatalf("a week is found by %d lookups, want 5 (a month of days, two days of hours and of fours): %v", len(lks), lks)
	}
}

// listAll pages through q's delivery list with pages of limit and returns
// the names in order and the number of pages.
func listAll(t *testing.T, s *Store, q insights.DeliveryQuery) ([]string, int) {
	t.Helper()
	var names []string
	for page := 1; ; page++ {
		p, err := s.Deliveries(context.Background(), "shop", q)
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		for _, it := range p.Items {
			names = append(names, it.Name)
		}
		if p.Continue == "" {
			return names, page
		}
		if page > 1000 {
			t.Fatal("the list does not end")
		}
		q.Continue = p.Continue
	}
}

// TestDeliveryListWalksItsHours: the list reads one hour of summaries at a
// time, walking only the hours and days that have some, across gaps of
// days; a filter matching few Deliveries far apart gets short pages with
// a continue token rather than a page that reads everything, and still
// lists every match once, newest first.
func TestDeliveryListWalksItsHours(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) { c.InsightsFlush = -1 })
	var want []string // newest first
	record := func(i int, region string) {
		d := insightsDelivery{uid: fmt.Sprintf("w%03d", i), campaign: "evening", region: region, agent: "Ann"}
		if err := s.RecordDelivery(ctx, d.record(v1alpha1.DeliveryScheduled, 0)); err != nil {
			t.Fatal(err)
		}
		want = append([]string{"parcel-" + d.uid}, want...)
	}
	// The oldest in a rare region, then MaxListHours+10 hours with one
	// Delivery each, a gap of five days, and three in one hour.
	record(0, "rare")
	for i := 1; i <= MaxListHours+10; i++ {
		clk.Add(time.Hour)
		record(i, "north")
	}
	clk.Add(5 * 24 * time.Hour)
	for i := MaxListHours + 11; i < MaxListHours+14; i++ {
		clk.Add(time.Second)
		record(i, "north")
	}
	record(MaxListHours+14, "rare")

	got, _ := listAll(t, s, insights.DeliveryQuery{Limit: 7})
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("listed %d Deliveries, want %d in order:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	rare, pages := listAll(t, s, insights.DeliveryQuery{Region: "rare", Limit: 5})
	if !reflect.DeepEqual(rare, []string{want[0], want[len(want)-1]}) {
		t.Fatalf("rare region = %v", rare)
	}
	if pages < 2 {
		t.Fatalf("the rare region took %d page; a page must stop after %d hours", pages, MaxListHours)
	}
	if none, _ := listAll(t, s, insights.DeliveryQuery{Agent: "Nobody"}); len(none) != 0 {
		t.Fatalf("agent Nobody = %v", none)
	}
}

// TestRebuildGivesOldSummariesTheirListHour: summaries written before the
// list was read by hours have no lookup key and are not listed; a rebuild
// gives them theirs.
func TestRebuildGivesOldSummariesTheirListHour(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) { c.InsightsFlush = -1 })
	d := insightsDelivery{uid: "new", campaign: "evening", region: "north", agent: "Ann"}
	if err := s.RecordDelivery(ctx, d.record(v1alpha1.DeliveryScheduled, 0)); err != nil {
		t.Fatal(err)
	}
	old := clk.Now().Add(-50 * time.Hour)
	if _, err := s.deliveries.InsertOne(ctx, deliveryDoc{UID: "old", Namespace: "shop", Name: "parcel-old", Campaign: "evening",
		Phase: "Confirmed", WindowStart: old, WindowEnd: old, WindowDay: windowDay(old), CreatedAt: old, UpdatedAt: old}); err != nil {
		t.Fatal(err)
	}
	if got, _ := listAll(t, s, insights.DeliveryQuery{}); !reflect.DeepEqual(got, []string{"parcel-new"}) {
		t.Fatalf("before the rebuild: %v", got)
	}
	rep, err := s.Rebuild(ctx, "shop", nil)
	if err != nil || rep.ListKeys != 1 {
		t.Fatalf("rebuild: %+v, %v", rep, err)
	}
	if got, _ := listAll(t, s, insights.DeliveryQuery{}); !reflect.DeepEqual(got, []string{"parcel-new", "parcel-old"}) {
		t.Fatalf("after the rebuild: %v", got)
	}
}
