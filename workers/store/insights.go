package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// The insights collections (see docs/api.md, "Where the answers come from").
const (
	// RollupsCollection holds one document per namespace, campaign,
	// region, agent and hour: the counters of the outcomes of that hour.
	RollupsCollection = "insights_rollups"
	// DeliveriesCollection holds one summary per Delivery: what the
	// delivery list shows, and whether its end was counted.
	DeliveriesCollection = "insights_deliveries"
)

// DefaultInsightsFlush is how often counted outcomes are written to the
// rollups and series (Config.InsightsFlush) on a server with atomic
// updates (MongoDB).
const DefaultInsightsFlush = time.Second

// DefaultInsightsFlushLocked is the flush interval on a server whose
// updates are not atomic (FerretDB 1.x). There each document a flush adds
// to is written under its lock, and every writer of a namespace adds to
// the same series documents: flushed every second by a fleet, the writers
// queue for those locks, flushes run out of time, and the load slows
// every other read and write of the call log.
const DefaultInsightsFlushLocked = 10 * time.Second

// defaultInsightsFlush is the flush interval for a server.
func defaultInsightsFlush(atomicUpdates bool) time.Duration {
	if atomicUpdates {
		return DefaultInsightsFlush
	}
	return DefaultInsightsFlushLocked
}

// RollupKey names one rollup bucket.
type RollupKey struct {
	// Namespace, Campaign (its name), Region and Agent (the agent's name)
	// of the outcomes counted; Region and Agent may be empty.
	Namespace, Campaign, Region, Agent string
	// Hour is the hour (UTC) the outcomes ended in.
	Hour time.Time
}

// id is the bucket's document _id: its hour, then a hash of the rest
// (agent names are free text of up to 200 characters).
func (k RollupKey) id() string {
	h := sha256.New()
	for _, s := range []string{k.Namespace, k.Campaign, k.Region, k.Agent} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return k.Hour.UTC().Format("2006010215") + "-" + hex.EncodeToString(h.Sum(nil)[:12])
}

// counterFields are the rollup document's counters, in Counts order.
var counterFields = []string{"deliveries", "confirmed", "reschedule", "instructions", "optOut", "failed",
	"unreachable", "cancelled", "calls", "answered", "retries", "rejected", "durSum", "durCount"}

func counterPtrs(c *insights.Counts) []*int64 {
	return []*int64{&c.Deliveries, &c.Confirmed, &c.Reschedule, &c.Instructions, &c.OptOut, &c.Failed,
		&c.Unreachable, &c.Cancelled, &c.Calls, &c.Answered, &c.Retries, &c.Rejected, &c.DurSum, &c.DurCount}
}

// Histogram bucket i is the field durHistPrefix+i (pickupHistPrefix+i):
// top-level fields, which every server increments alike.
const (
	durHistPrefix    = "dh"
	pickupHistPrefix = "ph"
)

// incOf is the $inc of c: its non-zero counters.
func incOf(c insights.Counts) bson.D {
	var inc bson.D
	for i, p := range counterPtrs(&c) {
		if *p != 0 {
			inc = append(inc, bson.E{Key: counterFields[i], Value: *p})
		}
	}
	for i, v := range c.DurHist {
		if v != 0 {
			inc = append(inc, bson.E{Key: durHistPrefix + strconv.Itoa(i), Value: v})
		}
	}
	for i, v := range c.PickupHist {
		if v != 0 {
			inc = append(inc, bson.E{Key: pickupHistPrefix + strconv.Itoa(i), Value: v})
		}
	}
	return inc
}

// Rollup is one rollup document.
type Rollup struct {
	RollupKey
	insights.Counts
}

// rollupOf decodes a rollup document.
func rollupOf(raw bson.Raw) (Rollup, error) {
	var r Rollup
	var key struct {
		NS       string    `bson:"ns"`
		Campaign string    `bson:"campaign"`
		Region   string    `bson:"region"`
		Agent    string    `bson:"agent"`
		Hour     time.Time `bson:"hour"`
	}
	if err := bson.Unmarshal(raw, &key); err != nil {
		return r, fmt.Errorf("store: decode rollup: %w", err)
	}
	r.RollupKey = RollupKey{Namespace: key.NS, Campaign: key.Campaign, Region: key.Region, Agent: key.Agent, Hour: key.Hour.UTC()}
	var err error
	r.Counts, err = countsOf(raw)
	return r, err
}

// countsOf reads the counters and histogram fields of a rollup document or
// of a series group.
func countsOf(raw bson.Raw) (insights.Counts, error) {
	var c insights.Counts
	elems, err := raw.Elements()
	if err != nil {
		return c, fmt.Errorf("store: decode counters: %w", err)
	}
	fields := map[string]*int64{}
	for i, p := range counterPtrs(&c) {
		fields[counterFields[i]] = p
	}
	for _, e := range elems {
		v, ok := asInt64(e.Value())
		if !ok {
			continue
		}
		k := e.Key()
		if p := fields[k]; p != nil {
			*p = v
			continue
		}
		if i, ok := histIndex(k, durHistPrefix, insights.DurationBuckets); ok {
			c.DurHist = setHist(c.DurHist, insights.DurationBuckets, i, v)
		} else if i, ok := histIndex(k, pickupHistPrefix, insights.PickupBuckets); ok {
			c.PickupHist = setHist(c.PickupHist, insights.PickupBuckets, i, v)
		}
	}
	return c, nil
}

func asInt64(v bson.RawValue) (int64, bool) {
	switch v.Type {
	case bson.TypeInt32:
		return int64(v.Int32()), true
	case bson.TypeInt64:
		return v.Int64(), true
	case bson.TypeDouble:
		return int64(v.Double()), true
	}
	return 0, false
}

func histIndex(key, prefix string, n int) (int, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= n {
		return 0, false
	}
	return i, true
}

func setHist(h []int64, n, i int, v int64) []int64 {
	if len(h) < n {
		h = append(h, make([]int64, n-len(h))...)
	}
	h[i] = v
	return h
}

// tally is the outcomes counted since the last flush.
type tally struct {
	mu      sync.Mutex
	pending sums
	// series are the series documents' share of pending (seriesSums.addBucket),
	// written and kept for retry on their own.
	series seriesSums
	// changed are the namespaces whose insights changed (rollups or
	// delivery summaries) since the last flush.
	changed map[string]bool
	notify  func(namespaces []string)
}

// sums are counts by rollup bucket.
type sums map[RollupKey]*insights.Counts

// add adds c to bucket k.
func (m sums) add(k RollupKey, c insights.Counts) {
	p := m[k]
	if p == nil {
		p = &insights.Counts{}
		m[k] = p
	}
	p.Add(c)
}

func (t *tally) add(k RollupKey, c insights.Counts) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = sums{}
	}
	t.pending.add(k, c)
	if t.series == nil {
		t.series = seriesSums{}
	}
	t.series.addBucket(k, c)
	t.touch(k.Namespace)
}

// addSeries puts back a series addition that could not be written; the
// flush that writes it tells the notify function again.
func (t *tally) addSeries(k seriesKey, sum seriesSum) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.series == nil {
		t.series = seriesSums{}
	}
	for _, g := range sum {
		t.series.add(k, g.key, g.Counts)
	}
	t.touch(k.Namespace)
}

// touch marks a namespace changed; t.mu is held.
func (t *tally) touch(ns string) {
	if t.changed == nil {
		t.changed = map[string]bool{}
	}
	t.changed[ns] = true
}

// SetInsightsNotify sets what is called, after each flush, with the
// namespaces whose insights changed (the read API's cache generation is
// bumped there: insights.Bump). It must not block for long.
func (s *Store) SetInsightsNotify(fn func(namespaces []string)) {
	s.tally.mu.Lock()
	s.tally.notify = fn
	s.tally.mu.Unlock()
}

// campaignName is the name part of a campaign's namespace/name.
func campaignName(c string) string {
	_, name, ok := strings.Cut(c, "/")
	if !ok {
		return c
	}
	return name
}

func (a *Attempt) rollupKey() RollupKey {
	k := RollupKey{Namespace: a.Delivery.Namespace, Campaign: campaignName(a.Campaign), Region: a.Region, Agent: a.Agent}
	switch {
	case a.EndHour != nil:
		k.Hour = a.EndHour.UTC()
	case a.EndedAt != nil:
		k.Hour = a.EndedAt.UTC().Truncate(time.Hour)
	}
	return k
}

// attemptCounts is what an ended attempt adds to its rollup.
func attemptCounts(a *Attempt, n int64) insights.Counts {
	var c insights.Counts
	if a.State == StateFailed {
		c.Rejected = n
		return c
	}
	c.Calls = n
	if a.Result == v1alpha1.CallCompleted {
		c.Answered = n
	}
	if a.Number > 1 {
		c.Retries = n
	}
	if a.DurB != nil {
		c.DurSum = int64(a.DurationSec) * n
		c.DurCount = n
		c.DurHist = make([]int64, insights.DurationBuckets)
		c.DurHist[min(int(*a.DurB), insights.DurationBuckets-1)] = n
	}
	if a.PickupB != nil {
		c.PickupHist = make([]int64, insights.PickupBuckets)
		c.PickupHist[min(int(*a.PickupB), insights.PickupBuckets-1)] = n
	}
	return c
}

// countAttemptEnd counts attempt a, which the caller's conditional update
// just moved into a terminal state (so exactly once): a call that ended
// (completed) or a dial Twilio refused (failed). Cancelled attempts placed
// no call and count nothing.
func (s *Store) countAttemptEnd(a *Attempt) {
	if a.State != StateCompleted && a.State != StateFailed {
		return
	}
	s.tally.add(a.rollupKey(), attemptCounts(a, 1))
}

// countMachine takes back the answer counted for an ended call whose
// result the conditional update just turned from completed into machine.
func (s *Store) countMachine(a *Attempt) {
	s.tally.add(a.rollupKey(), insights.Counts{Answered: -1})
}

// FlushInsights writes the outcomes counted since the last flush to the
// rollups and the series ($inc, upserting each document), then tells the notify function
// (SetInsightsNotify) which namespaces changed. A document whose write
// failed keeps its addition for the next flush. The store flushes every
// Config.InsightsFlush and on Close; tests call it directly. It waits for
// a document another writer holds (LockWait); the periodic flush does not.
func (s *Store) FlushInsights(ctx context.Context) error {
	return s.flushInsights(ctx, true)
}

// flushInsights is FlushInsights; with wait false a document another
// writer holds keeps its addition for the next flush, quietly.
func (s *Store) flushInsights(ctx context.Context, wait bool) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	t := &s.tally
	t.mu.Lock()
	pending, series, changed, notify := t.pending, t.series, t.changed, t.notify
	t.pending, t.series, t.changed = nil, nil, nil
	t.mu.Unlock()

	var firstErr error
	failed := func(err error, what string, args ...any) {
		if !wait && errors.Is(err, ErrBusy) {
			return
		}
		s.log.Warn(what, append(args, "error", err)...)
		if firstErr == nil {
			firstErr = err
		}
	}
	for k, c := range pending {
		if err := s.incRollup(ctx, k, *c, wait); err != nil {
			failed(err, "cannot write an insights rollup; kept for the next flush",
				"namespace", k.Namespace, "campaign", k.Campaign, "hour", k.Hour)
			t.mu.Lock()
			if t.pending == nil {
				t.pending = sums{}
			}
			t.pending.add(k, *c)
			t.touch(k.Namespace)
			t.mu.Unlock()
		}
	}
	for k, sum := range series {
		if err := s.incSeries(ctx, k, sum, wait); err != nil {
			failed(err, "cannot write an insights series; kept for the next flush",
				"namespace", k.Namespace, "campaign", k.Campaign, "at", k.At)
			t.addSeries(k, sum)
		}
	}
	if notify != nil && len(changed) > 0 {
		names := make([]string, 0, len(changed))
		for ns := range changed {
			names = append(names, ns)
		}
		notify(names)
	}
	return firstErr
}

// incRollup adds c to bucket k in one upsert, under the bucket's lock on
// servers whose updates are not atomic (FerretDB 1.x loses concurrent $inc).
func (s *Store) incRollup(ctx context.Context, k RollupKey, c insights.Counts, wait bool) error {
	inc := incOf(c)
	if len(inc) == 0 {
		return nil
	}
	update := bson.D{
		{Key: "$inc", Value: inc},
		{Key: "$setOnInsert", Value: bson.D{{Key: "ns", Value: k.Namespace}, {Key: "campaign", Value: k.Campaign},
			{Key: "region", Value: k.Region}, {Key: "agent", Value: k.Agent}, {Key: "hour", Value: k.Hour.UTC()}}},
	}
	if err := s.lockedUpsert(ctx, s.rollups, "rollup:"+k.id(), k.id(), update, wait); err != nil {
		return fmt.Errorf("store: update rollup %s: %w", k.id(), err)
	}
	return nil
}

// flushLoop flushes the tally every Config.InsightsFlush until stop
// closes. The first flush comes after a random part of the interval, so a
// fleet started together does not flush in step; a flush may take the
// whole interval (at least OperationTimeout).
func (s *Store) flushLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	every := s.cfg.InsightsFlush
	first := time.NewTimer(flushPhase(every, rand.Uint64()))
	defer first.Stop()
	select {
	case <-stop:
		return
	case <-first.C:
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), max(every, s.cfg.OperationTimeout))
		_ = s.flushInsights(ctx, false)
		cancel()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// flushPhase is when a flush loop's first flush comes: r's share of the
// interval every.
func flushPhase(every time.Duration, r uint64) time.Duration {
	return time.Duration(r % uint64(every))
}

// DeliveryRecord is what the delivery list and the delivery rollups know
// of a Delivery: written by the operator when they change.
type DeliveryRecord struct {
	// UID, Namespace and Name of the Delivery (required).
	UID, Namespace, Name string
	// Campaign is the name of the CallCampaign calling it, if any yet.
	Campaign string
	// Phase is its phase.
	Phase v1alpha1.DeliveryPhase
	// Region and Agent (the agent's name, never a phone number).
	Region, Agent string
	// WindowStart and WindowEnd are the promised delivery window.
	WindowStart, WindowEnd time.Time
	// Attempts is how many calls were made.
	Attempts int32
	// LastResult is the last call's result, if any.
	LastResult string
}

// endKinds are the ways a Delivery ends, as the rollups count them: the
// phase, its name in a delivery summary (endKind), and its counter.
// Every kind but cancelled is also one of Counts.Deliveries.
var endKinds = []struct {
	phase   v1alpha1.DeliveryPhase
	kind    string
	counter func(*insights.Counts) *int64
}{
	{v1alpha1.DeliveryConfirmed, "confirmed", func(c *insights.Counts) *int64 { return &c.Confirmed }},
	{v1alpha1.DeliveryRescheduleRequested, "reschedule", func(c *insights.Counts) *int64 { return &c.Reschedule }},
	{v1alpha1.DeliveryInstructionsRecorded, "instructions", func(c *insights.Counts) *int64 { return &c.Instructions }},
	{v1alpha1.DeliveryOptedOut, "optOut", func(c *insights.Counts) *int64 { return &c.OptOut }},
	{v1alpha1.DeliveryFailed, "failed", func(c *insights.Counts) *int64 { return &c.Failed }},
	{v1alpha1.DeliveryUnreachable, "unreachable", func(c *insights.Counts) *int64 { return &c.Unreachable }},
	{v1alpha1.DeliveryCancelled, "cancelled", func(c *insights.Counts) *int64 { return &c.Cancelled }},
}

// EndKind is how a Delivery in phase p ended, as the rollups count it:
// confirmed, reschedule, instructions, optOut, failed, unreachable or
// cancelled; "" while it has not ended.
func EndKind(p v1alpha1.DeliveryPhase) string {
	for _, e := range endKinds {
		if e.phase == p {
			return e.kind
		}
	}
	return ""
}

// endCounts is what n Deliveries ending as kind add to their rollup.
func endCounts(kind string, n int64) insights.Counts {
	var c insights.Counts
	for _, e := range endKinds {
		if e.kind == kind {
			*e.counter(&c) = n
			if e.phase != v1alpha1.DeliveryCancelled {
				c.Deliveries = n
			}
		}
	}
	return c
}

// deliveryDoc is a document of DeliveriesCollection.
type deliveryDoc struct {
	UID         string    `bson:"_id"`
	Namespace   string    `bson:"ns"`
	Name        string    `bson:"name"`
	Campaign    string    `bson:"campaign"`
	Phase       string    `bson:"phase"`
	Region      string    `bson:"region,omitempty"`
	Agent       string    `bson:"agent,omitempty"`
	WindowStart time.Time `bson:"windowStart"`
	WindowEnd   time.Time `bson:"windowEnd"`
	WindowDay   string    `bson:"windowDay"`
	Attempts    int32     `bson:"attempts"`
	LastResult  string    `bson:"lastResult,omitempty"`
	// CreatedAt is when the summary was first written: with the _id, the
	// list's immutable order. LK is the lookup key of its hour (listLK).
	CreatedAt time.Time `bson:"createdAt"`
	LK        string    `bson:"lk,omitempty"`
	UpdatedAt time.Time `bson:"updatedAt"`
	// EndKind and EndHour are set once, when the end is counted.
	EndKind string     `bson:"endKind,omitempty"`
	EndHour *time.Time `bson:"endHour,omitempty"`
}

func (d *deliveryDoc) summary() insights.DeliverySummary {
	return insights.DeliverySummary{Namespace: d.Namespace, Name: d.Name, Campaign: d.Campaign, Phase: d.Phase,
		Region: d.Region, Agent: d.Agent, WindowStart: d.WindowStart.UTC(), WindowEnd: d.WindowEnd.UTC(),
		Attempts: d.Attempts, LastResult: d.LastResult, UpdatedAt: d.UpdatedAt.UTC()}
}

// windowDay is the calendar day (UTC) a window starting at t starts on.
func windowDay(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// RecordDelivery writes r to the Delivery's summary (the delivery list),
// and, the first time its phase is an end, counts the end in the rollups
// of the hour it is recorded in: one conditional update marks the summary
// counted, so a Delivery ends once in the figures however often this is
// called (a later phase, such as a cancellation after a confirmation, changes
// the list, not the count).
func (s *Store) RecordDelivery(ctx context.Context, r DeliveryRecord) error {
	if r.UID == "" || r.Namespace == "" || r.Name == "" {
		return invalid("delivery record: UID, namespace and name are required")
	}
	now := s.now()
	set := bson.D{
		{Key: "ns", Value: r.Namespace}, {Key: "name", Value: r.Name}, {Key: "campaign", Value: r.Campaign},
		{Key: "phase", Value: string(r.Phase)},
		{Key: "windowStart", Value: r.WindowStart.UTC().Truncate(time.Millisecond)},
		{Key: "windowEnd", Value: r.WindowEnd.UTC().Truncate(time.Millisecond)},
		{Key: "windowDay", Value: windowDay(r.WindowStart)},
		{Key: "attempts", Value: r.Attempts}, {Key: "updatedAt", Value: now},
	}
	var unset bson.D
	for _, f := range []struct{ k, v string }{{"region", r.Region}, {"agent", r.Agent}, {"lastResult", r.LastResult}} {
		if f.v != "" {
			set = append(set, bson.E{Key: f.k, Value: f.v})
		} else {
			unset = append(unset, bson.E{Key: f.k, Value: ""})
		}
	}
	update := bson.D{{Key: "$set", Value: set}, {Key: "$setOnInsert", Value: bson.D{{Key: "createdAt", Value: now}, {Key: "lk", Value: listLK(r.Namespace, now)}}}}
	if len(unset) > 0 {
		update = append(update, bson.E{Key: "$unset", Value: unset})
	}
	// The hour goes into the list's hours before a summary can be in it.
	if err := s.noteListHour(ctx, r.Namespace, now); err != nil {
		return err
	}
	// Both writes hold the summary's lock where updates are not atomic:
	// FerretDB 1.x writes a whole document back, so an unlocked $set could
	// undo the end mark another writer just set, and the end count twice.
	unlock, err := s.lock(ctx, "delivery:"+r.UID)
	if err != nil {
		return err
	}
	defer unlock()
	for try := 0; ; try++ {
		_, err := s.deliveries.UpdateOne(ctx, bson.D{{Key: "_id", Value: r.UID}}, update, options.UpdateOne().SetUpsert(true))
		if err == nil {
			break
		}
		if !isDuplicate(err) || try > 0 {
			return fmt.Errorf("store: record delivery %s/%s: %w", r.Namespace, r.Name, err)
		}
	}
	s.tally.mu.Lock()
	s.tally.touch(r.Namespace)
	s.tally.mu.Unlock()

	kind := EndKind(r.Phase)
	if kind == "" {
		return nil
	}
	hour := now.Truncate(time.Hour)
	res, err := s.deliveries.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: r.UID}, {Key: "endKind", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "endKind", Value: kind}, {Key: "endHour", Value: hour}}}})
	if err != nil {
		return fmt.Errorf("store: record the end of delivery %s/%s: %w", r.Namespace, r.Name, err)
	}
	if res.ModifiedCount == 1 {
		s.tally.add(RollupKey{Namespace: r.Namespace, Campaign: r.Campaign, Region: r.Region, Agent: r.Agent, Hour: hour}, endCounts(kind, 1))
	}
	return nil
}

// ForgetDelivery removes a deleted Delivery from the delivery list. Its
// outcomes stay counted in the rollups (a rebuild no longer counts its end).
func (s *Store) ForgetDelivery(ctx context.Context, namespace, uid string) error {
	if _, err := s.deliveries.DeleteOne(ctx, bson.D{{Key: "_id", Value: uid}}); err != nil {
		return fmt.Errorf("store: forget delivery %s: %w", uid, err)
	}
	s.tally.mu.Lock()
	s.tally.touch(namespace)
	s.tally.mu.Unlock()
	return nil
}

// Rollups returns the rollup documents of a namespace whose hour is in
// [from, to) (zero times leave that side open), for tests and tools.
func (s *Store) Rollups(ctx context.Context, namespace string, from, to time.Time) ([]Rollup, error) {
	filter := bson.D{}
	if namespace != "" {
		filter = append(filter, bson.E{Key: "ns", Value: namespace})
	}
	hour := bson.D{}
	if !from.IsZero() {
		hour = append(hour, bson.E{Key: "$gte", Value: from.UTC()})
	}
	if !to.IsZero() {
		hour = append(hour, bson.E{Key: "$lt", Value: to.UTC()})
	}
	if len(hour) > 0 {
		filter = append(filter, bson.E{Key: "hour", Value: hour})
	}
	return s.findRollups(ctx, filter)
}

// findRollups reads the rollup documents that match filter.
func (s *Store) findRollups(ctx context.Context, filter bson.D) ([]Rollup, error) {
	cur, err := s.rollups.Find(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("store: find rollups: %w", err)
	}
	defer cur.Close(ctx)
	var out []Rollup
	for cur.Next(ctx) {
		r, err := rollupOf(cur.Current)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("store: read rollups: %w", err)
	}
	return out, nil
}
