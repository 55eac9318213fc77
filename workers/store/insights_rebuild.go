package store

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// RebuildReport is what Rebuild did.
type RebuildReport struct {
	// Calls and Deliveries are the ended attempts and Delivery ends counted.
	Calls, Deliveries int64
	// Unbucketed are ended attempts with no end hour (ended before the
	// rollups existed): not counted.
	Unbucketed int64
	// Buckets is how many rollup documents were written; Removed how many
	// old ones held nothing the call log still shows.
	Buckets, Removed int64
	// Series is how many series documents were written (old ones the call
	// log no longer shows are removed too).
	Series int64
	// ListKeys is how many delivery summaries were given their list hour
	// (summaries written before the list was read by hours).
	ListKeys int64
}

// rebuildGroup is the part of a rebuild's group key that names its rollup
// bucket: namespace, campaign, region, agent and the hour the calls or
// Deliveries ended in (nil: no end hour recorded).
type rebuildGroup struct {
	NS       string     `bson:"ns"`
	Campaign string     `bson:"c"`
	Region   string     `bson:"r"`
	Agent    string     `bson:"a"`
	Hour     *time.Time `bson:"h"`
}

// key is the group's rollup bucket, under the campaign name given.
func (g rebuildGroup) key(campaign string) RollupKey {
	return RollupKey{Namespace: g.NS, Campaign: campaign, Region: g.Region, Agent: g.Agent, Hour: g.Hour.UTC()}
}

// rebuildBatch is how many rollup documents one bulk write replaces.
const rebuildBatch = 500

// Rebuild recomputes every rollup of namespace ("" for all) from the call
// log: the ended attempts (calls, answers, retries, refused dials,
// durations, pickup latencies) and the Delivery summaries (ends). It runs
// two aggregations FerretDB 1.24 can run ($match, then $group with one
// $sum: 1; the bucket of every figure is a field stored when the outcome
// was recorded, and durations are grouped by, not summed, because FerretDB
// 1.24 answers 0 for a $sum of a field beside a $sum of a constant),
// replaces each bucket's counters and deletes the buckets the call log no
// longer shows, then does the same for the series the queries read (made
// from the buckets). It also gives delivery summaries written before the
// list was read by hours their list hour. progress, if set, hears each
// step.
//
// Outcomes recorded while it runs may be counted twice or not at all in
// their bucket; run it when outcomes are quiet, or again after.
func (s *Store) Rebuild(ctx context.Context, namespace string, progress func(format string, args ...any)) (RebuildReport, error) {
	say := func(format string, args ...any) {
		if progress != nil {
			progress(format, args...)
		}
	}
	var rep RebuildReport
	if err := s.FlushInsights(ctx); err != nil {
		return rep, err
	}
	buckets := sums{}
	add := buckets.add

	say("counting the ended attempts of %s", nsLabel(namespace))
	match := bson.D{{Key: "state", Value: bson.D{{Key: "$in", Value: []State{StateCompleted, StateFailed}}}}}
	if namespace != "" {
		match = append(bson.D{{Key: "deliveryNamespace", Value: namespace}}, match...)
	}
	var calls []struct {
		ID struct {
			Group   rebuildGroup        `bson:",inline"`
			State   State               `bson:"s"`
			Result  v1alpha1.CallResult `bson:"res"`
			Number  int32               `bson:"n"`
			DurB    *int32              `bson:"db"`
			PickupB *int32              `bson:"pb"`
			Dur     int32               `bson:"d"`
		} `bson:"_id"`
		N int64 `bson:"n"`
	}
	if err := s.aggregate(ctx, s.attempts, match, bson.D{
		{Key: "ns", Value: "$deliveryNamespace"}, {Key: "c", Value: "$campaign"}, {Key: "r", Value: "$region"},
		{Key: "a", Value: "$agent"}, {Key: "h", Value: "$endHour"}, {Key: "s", Value: "$state"}, {Key: "res", Value: "$result"},
		{Key: "n", Value: "$number"}, {Key: "db", Value: "$durB"}, {Key: "pb", Value: "$pickupB"}, {Key: "d", Value: "$durationSec"},
	}, bson.D{{Key: "n", Value: bson.D{{Key: "$sum", Value: 1}}}}, &calls); err != nil {
		return rep, err
	}
	for _, g := range calls {
		if g.ID.Group.Hour == nil {
			rep.Unbucketed += g.N
			continue
		}
		a := &Attempt{State: g.ID.State, Result: g.ID.Result, Number: g.ID.Number, DurB: g.ID.DurB, PickupB: g.ID.PickupB, DurationSec: g.ID.Dur}
		c := attemptCounts(a, g.N)
		add(g.ID.Group.key(campaignName(g.ID.Group.Campaign)), c)
		rep.Calls += g.N
	}
	say("%d ended attempts in %d groups (%d without an end hour, not counted)", rep.Calls, len(calls), rep.Unbucketed)

	say("counting the Delivery ends of %s", nsLabel(namespace))
	match = bson.D{{Key: "endKind", Value: bson.D{{Key: "$exists", Value: true}}}}
	if namespace != "" {
		match = append(bson.D{{Key: "ns", Value: namespace}}, match...)
	}
	var ends []struct {
		ID struct {
			Group rebuildGroup `bson:",inline"`
			Kind  string       `bson:"k"`
		} `bson:"_id"`
		N int64 `bson:"n"`
	}
	if err := s.aggregate(ctx, s.deliveries, match, bson.D{
		{Key: "ns", Value: "$ns"}, {Key: "c", Value: "$campaign"}, {Key: "r", Value: "$region"},
		{Key: "a", Value: "$agent"}, {Key: "h", Value: "$endHour"}, {Key: "k", Value: "$endKind"},
	}, bson.D{{Key: "n", Value: bson.D{{Key: "$sum", Value: 1}}}}, &ends); err != nil {
		return rep, err
	}
	for _, g := range ends {
		if g.ID.Group.Hour == nil {
			continue
		}
		add(g.ID.Group.key(g.ID.Group.Campaign), endCounts(g.ID.Kind, g.N))
		rep.Deliveries += g.N
	}
	say("%d Delivery ends in %d groups", rep.Deliveries, len(ends))

	say("writing %d rollup buckets", len(buckets))
	ids := make([]string, 0, len(buckets))
	var models []mongo.WriteModel
	flush := func() error {
		if len(models) == 0 {
			return nil
		}
		if _, err := s.rollups.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
			return fmt.Errorf("store: write rebuilt rollups: %w", err)
		}
		rep.Buckets += int64(len(models))
		models = models[:0]
		say("%d of %d buckets written", rep.Buckets, len(buckets))
		return nil
	}
	for k, c := range buckets {
		ids = append(ids, k.id())
		models = append(models, mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: k.id()}}).
			SetReplacement(rollupDoc(k, *c)).SetUpsert(true))
		if len(models) == rebuildBatch {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	if err := flush(); err != nil {
		return rep, err
	}
	stale := bson.D{{Key: "_id", Value: bson.D{{Key: "$nin", Value: ids}}}}
	if namespace != "" {
		stale = append(bson.D{{Key: "ns", Value: namespace}}, stale...)
	}
	res, err := s.rollups.DeleteMany(ctx, stale)
	if err != nil {
		return rep, fmt.Errorf("store: delete stale rollups: %w", err)
	}
	rep.Removed = res.DeletedCount
	say("%d stale buckets removed", rep.Removed)

	series := seriesSums{}
	for k, c := range buckets {
		series.addBucket(k, *c)
	}
	say("writing %d series documents", len(series))
	seriesIDs, err := s.writeSeries(ctx, series, say)
	if err != nil {
		return rep, err
	}
	rep.Series = int64(len(seriesIDs))
	stale = bson.D{{Key: "_id", Value: bson.D{{Key: "$nin", Value: seriesIDs}}}}
	if namespace != "" {
		stale = append(bson.D{{Key: "ns", Value: namespace}}, stale...)
	}
	if _, err := s.series.DeleteMany(ctx, stale); err != nil {
		return rep, fmt.Errorf("store: delete stale series: %w", err)
	}
	if rep.ListKeys, err = s.backfillListKeys(ctx, namespace); err != nil {
		return rep, err
	}
	say("%d delivery summaries given their list hour", rep.ListKeys)
	s.tally.mu.Lock()
	if namespace != "" {
		s.tally.touch(namespace)
	}
	for k := range buckets {
		s.tally.touch(k.Namespace)
	}
	s.tally.mu.Unlock()
	return rep, s.FlushInsights(ctx)
}

func nsLabel(ns string) string {
	if ns == "" {
		return "every namespace"
	}
	return "namespace " + ns
}

// aggregate runs $match then $group (by the fields of key, summing sums)
// on coll, decoding the groups into out.
func (s *Store) aggregate(ctx context.Context, coll *mongo.Collection, match, key, sums bson.D, out any) error {
	group := append(bson.D{{Key: "_id", Value: key}}, sums...)
	cur, err := coll.Aggregate(ctx, mongo.Pipeline{{{Key: "$match", Value: match}}, {{Key: "$group", Value: group}}})
	if err != nil {
		return fmt.Errorf("store: aggregate %s: %w", coll.Name(), err)
	}
	if err := cur.All(ctx, out); err != nil {
		return fmt.Errorf("store: read the %s aggregation: %w", coll.Name(), err)
	}
	return nil
}

// backfillListKeys gives the delivery summaries of namespace ("" for all)
// that have no lookup key (listLK) theirs, and notes their hours.
func (s *Store) backfillListKeys(ctx context.Context, namespace string) (int64, error) {
	filter := bson.D{{Key: "lk", Value: bson.D{{Key: "$exists", Value: false}}}}
	if namespace != "" {
		filter = append(bson.D{{Key: "ns", Value: namespace}}, filter...)
	}
	cur, err := s.deliveries.Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: "ns", Value: 1}, {Key: "createdAt", Value: 1}}))
	if err != nil {
		return 0, fmt.Errorf("store: find summaries without a list hour: %w", err)
	}
	var docs []deliveryDoc
	if err := cur.All(ctx, &docs); err != nil {
		return 0, fmt.Errorf("store: read summaries without a list hour: %w", err)
	}
	var n int64
	for _, d := range docs {
		if err := s.noteListHour(ctx, d.Namespace, d.CreatedAt); err != nil {
			return n, err
		}
		if err := s.setListKey(ctx, d); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// setListKey sets d's lookup key where it has none, under the summary's
// lock (see RecordDelivery).
func (s *Store) setListKey(ctx context.Context, d deliveryDoc) error {
	unlock, err := s.lock(ctx, "delivery:"+d.UID)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.deliveries.UpdateOne(ctx, bson.D{{Key: "_id", Value: d.UID}, {Key: "lk", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "lk", Value: listLK(d.Namespace, d.CreatedAt)}}}}); err != nil {
		return fmt.Errorf("store: set the list hour of summary %s: %w", d.UID, err)
	}
	return nil
}

// rollupDoc is the whole document of bucket k holding c.
func rollupDoc(k RollupKey, c insights.Counts) bson.D {
	doc := bson.D{{Key: "_id", Value: k.id()}, {Key: "ns", Value: k.Namespace}, {Key: "campaign", Value: k.Campaign},
		{Key: "region", Value: k.Region}, {Key: "agent", Value: k.Agent}, {Key: "hour", Value: k.Hour.UTC()}}
	return append(doc, incOf(c)...)
}
