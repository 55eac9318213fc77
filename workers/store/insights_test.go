package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// insightsDelivery is one Delivery of the outcome scenario.
type insightsDelivery struct {
	uid, campaign, region, agent string
}

func (d insightsDelivery) attempt(n int32, due time.Time) NewAttempt {
	na := newAttempt(d.uid, n, due)
	na.Campaign = "shop/" + d.campaign
	na.Context = &CallContext{RecipientName: "R", TimeZone: "UTC", Region: d.region, AgentName: d.agent, AgentPhone: "+14155550199"}
	return na
}

func (d insightsDelivery) record(phase v1alpha1.DeliveryPhase, attempts int32) DeliveryRecord {
	start := time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC)
	return DeliveryRecord{UID: d.uid, Namespace: "shop", Name: "parcel-" + d.uid, Campaign: d.campaign, Phase: phase,
		Region: d.region, Agent: d.agent, WindowStart: start, WindowEnd: start.Add(2 * time.Hour), Attempts: attempts}
}

// callThrough claims attempt id lateBy after its due time, marks it dialed
// with call SID sid and applies the callbacks us in the order given.
func callThrough(t *testing.T, s *Store, clk *clock, id, sid string, us ...StatusUpdate) {
	t.Helper()
	ctx := context.Background()
	c := mustClaim(t, s, id)
	if _, err := s.MarkDialed(ctx, c.ID, c.Fence, sid, ""); err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		u.CallSID = sid
		if _, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: id}, u); err != nil {
			t.Fatalf("%s %s: %v", id, u.Status, err)
		}
	}
}

// playOutcomes records a day's outcomes in namespace shop, with callbacks
// duplicated, reordered and raced, a late answering-machine verdict, a
// refused dial and Delivery ends recorded more than once. It returns the
// totals they must add up to.
func playOutcomes(t *testing.T, s *Store, clk *clock) insights.Counts {
	t.Helper()
	ctx := context.Background()
	d1 := insightsDelivery{"d1", "evening", "north", "Ann"}
	d2 := insightsDelivery{"d2", "evening", "south", "Bob"}
	d3 := insightsDelivery{"d3", "morning", "north", "Bob"}
	d4 := insightsDelivery{"d4", "evening", "south", "Ann"}
	d5 := insightsDelivery{"d5", "morning", "", "Ann"}
	record := func(d insightsDelivery, p v1alpha1.DeliveryPhase, n int32) {
		t.Helper()
		if err := s.RecordDelivery(ctx, d.record(p, n)); err != nil {
			t.Fatalf("RecordDelivery %s %s: %v", d.uid, p, err)
		}
	}
	for _, d := range []insightsDelivery{d1, d2, d3, d4, d5} {
		record(d, v1alpha1.DeliveryScheduled, 0)
	}

	// d1: no answer, then a retry answered (final status before
	// in-progress, then replayed), confirmed.
	a := mustCreate(t, s, d1.attempt(1, clk.Now().Add(-2*time.Second)))
	callThrough(t, s, clk, a.ID, "CA1a", StatusUpdate{Status: "ringing", Seq: 1}, StatusUpdate{Status: "no-answer", Seq: 2})
	clk.Add(10 * time.Minute)
	a = mustCreate(t, s, d1.attempt(2, clk.Now().Add(-40*time.Millisecond)))
	callThrough(t, s, clk, a.ID, "CA1b",
		StatusUpdate{Status: "ringing", Seq: 1}, StatusUpdate{Status: "completed", Seq: 3, DurationSec: 42},
		StatusUpdate{Status: "in-progress", Seq: 2}, StatusUpdate{Status: "completed", Seq: 3, DurationSec: 42})
	if _, _, err := s.RecordResponse(ctx, a.ID, Answer{Choice: v1alpha1.ChoiceConfirm, Digits: "1"}); err != nil {
		t.Fatal(err)
	}
	record(d1, v1alpha1.DeliveryConfirmed, 2)
	record(d1, v1alpha1.DeliveryConfirmed, 2)

	// d2: completed, the machine verdict arrives after the final status
	// (twice): not answered in the end.
	a = mustCreate(t, s, d2.attempt(1, clk.Now()))
	callThrough(t, s, clk, a.ID, "CA2", StatusUpdate{Status: "in-progress", Seq: 1}, StatusUpdate{Status: "completed", Seq: 2, DurationSec: 15})
	for range 2 {
		if _, _, err := s.RecordAnsweredBy(ctx, a.ID, "machine_end_beep"); err != nil {
			t.Fatal(err)
		}
	}
	record(d2, v1alpha1.DeliveryUnreachable, 1)

	// d3: Twilio refuses the number; the failure is reported twice.
	a = mustCreate(t, s, d3.attempt(1, clk.Now()))
	c := mustClaim(t, s, a.ID)
	if _, err := s.MarkFailed(ctx, a.ID, c.Fence, 21211, "invalid number"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkFailed(ctx, a.ID, c.Fence, 21211, "invalid number"); err == nil {
		t.Fatal("a second MarkFailed applied")
	}
	record(d3, v1alpha1.DeliveryFailed, 1)

	// d4, an hour later: answered, reschedule; then cancelled by its
	// dispatcher: the list shows Cancelled, the figures keep the reschedule.
	clk.Add(time.Hour)
	a = mustCreate(t, s, d4.attempt(1, clk.Now().Add(-3*time.Minute)))
	callThrough(t, s, clk, a.ID, "CA4", StatusUpdate{Status: "completed", Seq: 4, DurationSec: 130},
		StatusUpdate{Status: "ringing", Seq: 1}, StatusUpdate{Status: "in-progress", Seq: 2})
	record(d4, v1alpha1.DeliveryRescheduleRequested, 1)
	record(d4, v1alpha1.DeliveryCancelled, 1)

	// d5: eight copies of the final status arrive at once.
	a = mustCreate(t, s, d5.attempt(1, clk.Now()))
	callThrough(t, s, clk, a.ID, "CA5", StatusUpdate{Status: "in-progress", Seq: 1})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := s.ApplyCallStatus(ctx, CallRef{AttemptID: a.ID}, StatusUpdate{Status: "completed", Seq: 2, DurationSec: 20, CallSID: "CA5"}); err != nil {
				t.Errorf("racing final status: %v", err)
			}
		}()
	}
	wg.Wait()
	var ends sync.WaitGroup
	for range 4 {
		ends.Add(1)
		go func() {
			defer ends.Done()
			if err := s.RecordDelivery(ctx, d5.record(v1alpha1.DeliveryConfirmed, 1)); err != nil {
				t.Errorf("racing delivery end: %v", err)
			}
		}()
	}
	ends.Wait()

	return insights.Counts{
		Deliveries: 5, Confirmed: 2, Reschedule: 1, Failed: 1, Unreachable: 1,
		Calls: 5, Answered: 3, Retries: 1, Rejected: 1,
		DurSum: 42 + 15 + 130 + 20, DurCount: 4,
	}
}

// normal gives c full-length histograms, so equal figures compare equal.
func normal(c insights.Counts) insights.Counts {
	var n insights.Counts
	n.Add(c)
	n.DurHist = append(n.DurHist, make([]int64, insights.DurationBuckets-len(n.DurHist))...)
	n.PickupHist = append(n.PickupHist, make([]int64, insights.PickupBuckets-len(n.PickupHist))...)
	return n
}

// byKey sums rollups by bucket.
func byKey(rs []Rollup) map[RollupKey]insights.Counts {
	out := map[RollupKey]insights.Counts{}
	for _, r := range rs {
		c := out[r.RollupKey]
		c.Add(r.Counts)
		out[r.RollupKey] = normal(c)
	}
	for k, c := range out {
		if c.IsZero() {
			delete(out, k)
		}
	}
	return out
}

// rollupTotals reads namespace ns's rollups and adds them up, without the
// histograms (playOutcomes' want has none).
func rollupTotals(t *testing.T, s *Store, ns string) ([]Rollup, insights.Counts) {
	t.Helper()
	rs, err := s.Rollups(context.Background(), ns, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	got := total(rs)
	got.DurHist, got.PickupHist = nil, nil
	return rs, got
}

func total(rs []Rollup) insights.Counts {
	var c insights.Counts
	for _, r := range rs {
		c.Add(r.Counts)
	}
	return c
}

// recount counts every bucket from the call log itself, one attempt and
// one delivery summary at a time, the way the figures are defined.
func recount(t *testing.T, s *Store) map[RollupKey]insights.Counts {
	t.Helper()
	ctx := context.Background()
	out := map[RollupKey]insights.Counts{}
	add := func(k RollupKey, c insights.Counts) {
		sum := out[k]
		sum.Add(c)
		out[k] = normal(sum)
	}
	all, err := s.findMany(ctx, bson.D{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		if a.EndedAt == nil {
			continue
		}
		k := RollupKey{Namespace: a.Delivery.Namespace, Campaign: a.Campaign[len(a.Delivery.Namespace)+1:], Region: a.Region,
			Agent: a.Agent, Hour: a.EndedAt.UTC().Truncate(time.Hour)}
		c := insights.Counts{DurHist: make([]int64, insights.DurationBuckets), PickupHist: make([]int64, insights.PickupBuckets)}
		switch a.State {
		case StateFailed:
			c.Rejected = 1
		case StateCompleted:
			c.Calls = 1
			if a.Result == v1alpha1.CallCompleted {
				c.Answered = 1
			}
			if a.Number > 1 {
				c.Retries = 1
			}
			if a.DurationSec > 0 {
				c.DurSum, c.DurCount = int64(a.DurationSec), 1
				c.DurHist[insights.DurationBucket(a.DurationSec)] = 1
			}
			if a.ClaimedAt != nil {
				c.PickupHist[insights.PickupBucket(a.ClaimedAt.Sub(a.Due))] = 1
			}
		default:
			continue
		}
		add(k, c)
	}
	cur, err := s.deliveries.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []deliveryDoc
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if d.EndKind == "" {
			continue
		}
		add(RollupKey{Namespace: d.Namespace, Campaign: d.Campaign, Region: d.Region, Agent: d.Agent, Hour: d.EndHour.UTC()}, endCounts(d.EndKind, 1))
	}
	return out
}

func sameBuckets(t *testing.T, what string, got, want map[RollupKey]insights.Counts) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	keys := map[RollupKey]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	var lines []string
	for k := range keys {
		if !reflect.DeepEqual(got[k], want[k]) {
			lines = append(lines, fmt.Sprintf("%s/%s/%s/%s %s:\n  got  %+v\n  want %+v", k.Namespace, k.Campaign, k.Region, k.Agent, k.Hour.Format(time.RFC3339), got[k], want[k]))
		}
	}
	sort.Strings(lines)
	t.Fatalf("%s: rollups differ from a full recount in %d buckets:\n%v", what, len(lines), lines)
}

func TestRollupsCountEachOutcomeOnce(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	var notified []string
	var mu sync.Mutex
	s := openStore(t, withClock(clk), func(c *Config) { c.InsightsFlush = -1 })
	s.SetInsightsNotify(func(ns []string) { mu.Lock(); notified = append(notified, ns...); mu.Unlock() })
	want := playOutcomes(t, s, clk)
	if err := s.FlushInsights(ctx); err != nil {
		t.Fatal(err)
	}
	rs, got := rollupTotals(t, s, "shop")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("totals:\n got  %+v\n want %+v", got, want)
	}
	sameBuckets(t, "incremental", byKey(rs), recount(t, s))
	if o := total(rs).Overview(); o.ConfirmationRate != 0.4 || o.AvgCallDurationSec != 207.0/4 || o.RetriesPerDelivery != 0.2 {
		t.Fatalf("overview = %+v", o)
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(notified, []string{"shop"}) {
		t.Fatalf("namespaces notified = %v, want [shop]", notified)
	}
	// A flush with nothing counted notifies nobody.
	if err := s.FlushInsights(ctx); err != nil || len(notified) != 1 {
		t.Fatalf("empty flush: err=%v notified=%v", err, notified)
	}
}

func TestRebuildEqualsAFullRecount(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) { c.InsightsFlush = -1 })
	playOutcomes(t, s, clk)
	// Another namespace, which a rebuild of shop leaves alone.
	other := insightsDelivery{"o1", "evening", "west", "Cy"}
	na := other.attempt(1, clk.Now())
	na.Delivery.Namespace, na.Campaign = "depot", "depot/evening"
	a := mustCreate(t, s, na)
	callThrough(t, s, clk, a.ID, "CAo1", StatusUpdate{Status: "completed", Seq: 1, DurationSec: 7})
	if err := s.FlushInsights(ctx); err != nil {
		t.Fatal(err)
	}
	want := recount(t, s)
	all, err := s.Rollups(ctx, "", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	sameBuckets(t, "incremental", byKey(all), want)

	var steps []string
	rep, err := s.Rebuild(ctx, "shop", func(f string, args ...any) { steps = append(steps, fmt.Sprintf(f, args...)) })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls != 6 || rep.Deliveries != 5 || rep.Removed != 0 || len(steps) == 0 {
		t.Fatalf("rebuild over intact rollups: %+v, steps %q", rep, steps)
	}
	all, _ = s.Rollups(ctx, "", time.Time{}, time.Time{})
	sameBuckets(t, "rebuilt over intact rollups", byKey(all), want)

	// Lost and damaged: rebuilt from the call log.
	if _, err := s.rollups.DeleteMany(ctx, bson.D{{Key: "ns", Value: "shop"}, {Key: "campaign", Value: "evening"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.rollups.UpdateMany(ctx, bson.D{{Key: "ns", Value: "shop"}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "calls", Value: 5}}}}); err != nil {
		t.Fatal(err)
	}
	stray := RollupKey{Namespace: "shop", Campaign: "gone", Hour: clk.Now().Truncate(time.Hour)}
	if err := s.incRollup(ctx, stray, insights.Counts{Calls: 3}, true); err != nil {
		t.Fatal(err)
	}
	if rep, err = s.Rebuild(ctx, "shop", nil); err != nil || rep.Removed != 1 {
		t.Fatalf("rebuild: %+v, %v", rep, err)
	}
	all, _ = s.Rollups(ctx, "", time.Time{}, time.Time{})
	sameBuckets(t, "rebuilt after loss", byKey(all), want)

	// Everything wiped: a rebuild of every namespace.
	if _, err := s.rollups.DeleteMany(ctx, bson.D{}); err != nil {
		t.Fatal(err)
	}
	if rep, err = s.Rebuild(ctx, "", nil); err != nil || rep.Calls != 7 {
		t.Fatalf("rebuild of every namespace: %+v, %v", rep, err)
	}
	all, _ = s.Rollups(ctx, "", time.Time{}, time.Time{})
	sameBuckets(t, "rebuilt after a wipe", byKey(all), want)
}

func TestSeedWritesAttemptsAndTheirRollups(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, func(c *Config) { c.InsightsFlush = -1 })
	now := time.Now()
	if err := s.SeedInsights(ctx, Seed{Namespace: "bench", Attempts: 250, From: now.Add(-48 * time.Hour), To: now, Batch: 100}); err != nil {
		t.Fatal(err)
	}
	n, err := s.attempts.CountDocuments(ctx, bson.D{{Key: "deliveryNamespace", Value: "bench"}})
	if err != nil || n != 250 {
		t.Fatalf("seeded attempts: %d, %v", n, err)
	}
	seeded, _ := s.Rollups(ctx, "bench", time.Time{}, time.Time{})
	want := recount(t, s)
	sameBuckets(t, "seeded", byKey(seeded), want)
	if err := s.DropRollups(ctx, "bench"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rebuild(ctx, "bench", nil); err != nil {
		t.Fatal(err)
	}
	rebuilt, _ := s.Rollups(ctx, "bench", time.Time{}, time.Time{})
	sameBuckets(t, "rebuilt from the seed", byKey(rebuilt), want)
	if o := total(rebuilt).Overview(); o.Deliveries == 0 || o.ConfirmationRate == 0 || o.AvgCallDurationSec == 0 || o.P95CallDurationSec == 0 {
		t.Fatalf("overview of the seed = %+v", o)
	}
}

func TestAnalyticsQueriesReadTheRollups(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) { c.InsightsFlush = -1 })
	want := playOutcomes(t, s, clk)
	if err := s.FlushInsights(ctx); err != nil {
		t.Fatal(err)
	}
	day := insights.Range{From: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)}
	o, err := s.Overview(ctx, "shop", day)
	if err != nil {
		t.Fatal(err)
	}
	if w := want.Overview(); o.Deliveries != w.Deliveries || o.Calls != w.Calls || o.ConfirmationRate != w.ConfirmationRate || o.AvgCallDurationSec != w.AvgCallDurationSec {
		t.Fatalf("overview = %+v, want %+v", o, w)
	}
	nine := insights.Range{From: day.From.Add(9 * time.Hour), To: day.From.Add(10 * time.Hour)}
	if o, _ := s.Overview(ctx, "shop", nine); o.Deliveries != 3 || o.Calls != 3 {
		t.Fatalf("overview of 09:00-10:00 = %+v", o)
	}
	if o, _ := s.Overview(ctx, "shop", insights.Range{From: day.From, To: day.To, Campaign: "morning"}); o.Deliveries != 2 || o.Calls != 1 || o.FailureRate != 0.5 {
		t.Fatalf("overview of campaign morning = %+v", o)
	}
	if o, _ := s.Overview(ctx, "depot", day); o != (insights.Overview{}) {
		t.Fatalf("overview of another namespace = %+v", o)
	}

	groups, err := s.Breakdown(ctx, "shop", insights.ByAgent, day)
	if err != nil || len(groups) != 2 || groups[0].Key != "Ann" || groups[0].Deliveries != 3 || groups[1].Key != "Bob" || groups[1].Deliveries != 2 {
		t.Fatalf("by agent = %+v, %v", groups, err)
	}
	if groups, _ := s.Breakdown(ctx, "shop", insights.ByRegion, day); len(groups) != 3 {
		t.Fatalf("by region = %+v", groups)
	}
	hours, err := s.Breakdown(ctx, "shop", insights.ByHour, day)
	if err != nil || len(hours) != 2 || hours[0].Key != "2026-03-02T09:00:00Z" {
		t.Fatalf("by hour = %+v, %v", hours, err)
	}
	if _, err := s.Breakdown(ctx, "shop", "phone", day); !IsInvalid(err) {
		t.Fatalf("by phone: %v", err)
	}

	points, err := s.Timeseries(ctx, "shop", 2*time.Hour, insights.Range{From: day.From.Add(8 * time.Hour), To: day.From.Add(12 * time.Hour)})
	if err != nil || len(points) != 2 || !points[0].Start.Equal(day.From.Add(8*time.Hour)) || points[0].Deliveries != 3 || points[1].Deliveries != 2 {
		t.Fatalf("timeseries = %+v, %v", points, err)
	}
	for _, step := range []time.Duration{0, 90 * time.Minute} {
		if _, err := s.Timeseries(ctx, "shop", step, day); !IsInvalid(err) {
			t.Fatalf("step %s: %v", step, err)
		}
	}
	if _, err := s.Overview(ctx, "shop", insights.Range{From: day.To, To: day.From}); !IsInvalid(err) {
		t.Fatalf("a range ending before it starts: %v", err)
	}
}

func TestDeliveryListPagesStayStableUnderWrites(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) { c.InsightsFlush = -1 })
	regions := []string{"north", "south"}
	var uids []string
	add := func(i int) insightsDelivery {
		d := insightsDelivery{fmt.Sprintf("u%03d", i), "evening", regions[i%2], "Ann"}
		if err := s.RecordDelivery(ctx, d.record(v1alpha1.DeliveryScheduled, 0)); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Millisecond)
		return d
	}
	for i := range 23 {
		add(i)
		uids = append(uids, fmt.Sprintf("u%03d", i))
	}
	// Newest first.
	slices := func(q insights.DeliveryQuery, between func(page int)) []insights.DeliverySummary {
		var all []insights.DeliverySummary
		for page := 0; ; page++ {
			p, err := s.Deliveries(ctx, "shop", q)
			if err != nil {
				t.Fatalf("page %d: %v", page, err)
			}
			all = append(all, p.Items...)
			if p.Continue == "" {
				return all
			}
			if between != nil {
				between(page)
			}
			q.Continue = p.Continue
		}
	}
	next := 23
	got := slices(insights.DeliveryQuery{Limit: 5}, func(page int) {
		// Between pages: new Deliveries arrive, listed ones change phase.
		add(next)
		next++
		d := insightsDelivery{uids[page], "evening", regions[page%2], "Ann"}
		if err := s.RecordDelivery(ctx, d.record(v1alpha1.DeliveryConfirmed, 1)); err != nil {
			t.Fatal(err)
		}
	})
	if len(got) != 23 {
		t.Fatalf("listed %d Deliveries across pages, want the 23 there were at the first page", len(got))
	}
	for i, it := range got {
		if want := "parcel-" + uids[22-i]; it.Name != want || it.Namespace != "shop" || it.Campaign != "evening" {
			t.Fatalf("item %d = %+v, want %s", i, it, want)
		}
	}

	north := slices(insights.DeliveryQuery{Region: "north", Limit: 4}, nil)
	for _, it := range north {
		if it.Region != "north" {
			t.Fatalf("region filter returned %+v", it)
		}
	}
	if len(north) != (next+1)/2 {
		t.Fatalf("north: %d items, want %d", len(north), (next+1)/2)
	}
	confirmed := slices(insights.DeliveryQuery{Phase: "Confirmed"}, nil)
	if len(confirmed) == 0 || confirmed[0].Phase != "Confirmed" || confirmed[0].Attempts != 1 {
		t.Fatalf("confirmed = %+v", confirmed)
	}
	if day := slices(insights.DeliveryQuery{WindowDay: "2026-03-02"}, nil); len(day) != next {
		t.Fatalf("window day: %d items, want %d", len(day), next)
	}

	p, err := s.Deliveries(ctx, "shop", insights.DeliveryQuery{Limit: 2, Region: "north"})
	if err != nil || p.Continue == "" {
		t.Fatalf("first page: %v", err)
	}
	for _, q := range []insights.DeliveryQuery{
		{Limit: 2, Region: "south", Continue: p.Continue},
		{Limit: 2, Continue: p.Continue},
		{Limit: 2, Region: "north", Continue: "not-a-token"},
	} {
		if _, err := s.Deliveries(ctx, "shop", q); !errors.Is(err, insights.ErrBadContinue) {
			t.Fatalf("%+v: %v, want ErrBadContinue", q, err)
		}
	}
	if _, err := s.Deliveries(ctx, "depot", insights.DeliveryQuery{Limit: 2, Region: "north", Continue: p.Continue}); !errors.Is(err, insights.ErrBadContinue) {
		t.Fatalf("token of another namespace: %v", err)
	}
	for _, q := range []insights.DeliveryQuery{{Limit: MaxListLimit + 1}, {Phase: "Happy"}, {WindowDay: "2026-3-2"}} {
		if _, err := s.Deliveries(ctx, "shop", q); !IsInvalid(err) {
			t.Fatalf("%+v: %v, want invalid", q, err)
		}
	}
}

// TestInsightsFlushFollowsTheServer: where every document a flush adds to
// is written under its lock (FerretDB), the store flushes every 10 s by
// default, not every second; a set interval is kept, and the flush loop
// writes what was counted without being asked, its first flush at a
// random part of the interval.
func TestInsightsFlushFollowsTheServer(t *testing.T) {
	s := openStore(t)
	if s.Features().AtomicUpdates {
		t.Fatal("the test server applies updates atomically; this test wants FerretDB")
	}
	if s.cfg.InsightsFlush != DefaultInsightsFlushLocked {
		t.Fatalf("flush interval on FerretDB = %s, want %s", s.cfg.InsightsFlush, DefaultInsightsFlushLocked)
	}
	if got := defaultInsightsFlush(true); got != DefaultInsightsFlush {
		t.Fatalf("flush interval with atomic updates = %s, want %s", got, DefaultInsightsFlush)
	}
	phases := map[time.Duration]bool{}
	for r := range uint64(50) {
		p := flushPhase(10*time.Second, r*7919*1_000_003)
		if p < 0 || p >= 10*time.Second {
			t.Fatalf("first flush after %s, outside the 10 s interval", p)
		}
		phases[p] = true
	}
	if len(phases) < 40 {
		t.Fatalf("first flushes of 50 stores at %d distinct phases", len(phases))
	}

	clk := newClock()
	loop := openStore(t, withClock(clk), func(c *Config) { c.InsightsFlush = 300 * time.Millisecond })
	if loop.cfg.InsightsFlush != 300*time.Millisecond {
		t.Fatalf("a set flush interval became %s", loop.cfg.InsightsFlush)
	}
	want := playOutcomes(t, loop, clk)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, got := rollupTotals(t, loop, "shop")
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the outcomes, the flush loop wrote\n %+v\nwant\n %+v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPeriodicFlushSkipsDocumentsAnotherWriterHolds: the periodic flush
// does not wait for a rollup or series document whose lock another writer
// holds (a fleet polling for the same locks kept FerretDB busy); it writes
// the rest, keeps that addition, and writes it in a later flush.
func TestPeriodicFlushSkipsDocumentsAnotherWriterHolds(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, withClock(clk), func(c *Config) { c.InsightsFlush, c.LockWait = -1, time.Minute })
	var notified []string
	var mu sync.Mutex
	s.SetInsightsNotify(func(ns []string) { mu.Lock(); notified = append(notified, ns...); mu.Unlock() })
	want := playOutcomes(t, s, clk)
	s.tally.mu.Lock()
	var held RollupKey
	for k := range s.tally.pending {
		held = k
		break
	}
	var heldSeries seriesKey
	for k := range s.tally.series {
		heldSeries = k
		break
	}
	s.tally.mu.Unlock()
	unlock, err := s.lock(ctx, "rollup:"+held.id())
	if err != nil {
		t.Fatal(err)
	}
	unlockSeries, err := s.lock(ctx, "series:"+heldSeries.id())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.flushInsights(ctx, false); err != nil {
		t.Fatalf("a periodic flush with two documents held: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the periodic flush waited %s for the held locks", d)
	}
	s.tally.mu.Lock()
	_, keptRollup := s.tally.pending[held]
	_, keptSeries := s.tally.series[heldSeries]
	rest := len(s.tally.pending)
	s.tally.mu.Unlock()
	if !keptRollup || !keptSeries || rest != 1 {
		t.Fatalf("after the flush: held rollup kept %v, held series kept %v, %d rollups pending (want only the held one)", keptRollup, keptSeries, rest)
	}
	unlock()
	unlockSeries()
	if err := s.flushInsights(ctx, false); err != nil {
		t.Fatal(err)
	}
	// Each flush told the read API's cache: the second wrote what the
	// answers read, so it tells it again.
	mu.Lock()
	if !reflect.DeepEqual(notified, []string{"shop", "shop"}) {
		t.Errorf("namespaces notified = %v, want [shop shop]", notified)
	}
	mu.Unlock()
	rs, got := rollupTotals(t, s, "shop")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("totals after the locks were free:\n got  %+v\n want %+v", got, want)
	}
	sameBuckets(t, "after a skipped document", byKey(rs), recount(t, s))
	// The series (what the queries read) caught up too.
	day := insights.Range{From: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)}
	for _, campaign := range []string{"", "evening", "morning"} {
		day.Campaign = campaign
		o, err := s.Overview(ctx, "shop", day)
		if err != nil {
			t.Fatal(err)
		}
		var w insights.Counts
		for _, b := range rs {
			if campaign == "" || b.Campaign == campaign {
				w.Add(b.Counts)
			}
		}
		if o != w.Overview() {
			t.Fatalf("overview of campaign %q = %+v, the rollups say %+v", campaign, o, w.Overview())
		}
	}
}
