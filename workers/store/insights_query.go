package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// The store answers the read API's queries: analytics from the rollups
// (a query reads the buckets of its range, never the attempts), the
// delivery list from the delivery summaries.
var _ insights.Source = (*Store)(nil)

// Delivery list page sizes.
const (
	// DefaultListLimit is the page size when the query sets none.
	DefaultListLimit = 50
	// MaxListLimit is the largest page.
	MaxListLimit = 1000
	// MaxPoints is the most steps a time series may have.
	MaxPoints = 10000
)

// rangeRollups reads the rollups of namespace in r.
func (s *Store) rangeRollups(ctx context.Context, namespace string, r insights.Range) ([]Rollup, error) {
	if namespace == "" {
		return nil, invalid("namespace is required")
	}
	if r.From.IsZero() || r.To.IsZero() || !r.From.Before(r.To) {
		return nil, invalid("from and to are required, from before to")
	}
	filter := bson.D{{Key: "ns", Value: namespace}}
	if r.Campaign != "" {
		filter = append(filter, bson.E{Key: "campaign", Value: r.Campaign})
	}
	filter = append(filter, bson.E{Key: "hour", Value: bson.D{{Key: "$gte", Value: r.From.UTC()}, {Key: "$lt", Value: r.To.UTC()}}})
	return s.findRollups(ctx, filter)
}

// Overview sums the namespace's outcomes whose hour is in r.
func (s *Store) Overview(ctx context.Context, namespace string, r insights.Range) (insights.Overview, error) {
	rs, err := s.rangeRollups(ctx, namespace, r)
	if err != nil {
		return insights.Overview{}, err
	}
	var c insights.Counts
	for _, ru := range rs {
		c.Add(ru.Counts)
	}
	return c.Overview(), nil
}

// Breakdown groups the namespace's outcomes in r by dim, the group with
// the most Deliveries (then calls) first.
func (s *Store) Breakdown(ctx context.Context, namespace string, dim insights.Dimension, r insights.Range) ([]insights.Group, error) {
	var keyOf func(*Rollup) string
	switch dim {
	case insights.ByRegion:
		keyOf = func(ru *Rollup) string { return ru.Region }
	case insights.ByAgent:
		keyOf = func(ru *Rollup) string { return ru.Agent }
	case insights.ByCampaign:
		keyOf = func(ru *Rollup) string { return ru.Campaign }
	case insights.ByHour:
		keyOf = func(ru *Rollup) string { return ru.Hour.UTC().Format(time.RFC3339) }
	default:
		return nil, invalid("by must be region, agent, campaign or hour (got %q)", dim)
	}
	rs, err := s.rangeRollups(ctx, namespace, r)
	if err != nil {
		return nil, err
	}
	groups := map[string]*insights.Counts{}
	for i := range rs {
		k := keyOf(&rs[i])
		if groups[k] == nil {
			groups[k] = &insights.Counts{}
		}
		groups[k].Add(rs[i].Counts)
	}
	out := make([]insights.Group, 0, len(groups))
	for k, c := range groups {
		out = append(out, insights.Group{Key: k, Overview: c.Overview()})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Deliveries != b.Deliveries {
			return a.Deliveries > b.Deliveries
		}
		if a.Calls != b.Calls {
			return a.Calls > b.Calls
		}
		return a.Key < b.Key
	})
	return out, nil
}

// Timeseries cuts r into steps of step (a whole number of hours) from
// r.From's hour; every step is returned, empty ones with zero figures.
func (s *Store) Timeseries(ctx context.Context, namespace string, step time.Duration, r insights.Range) ([]insights.Point, error) {
	if step <= 0 || step%time.Hour != 0 {
		return nil, invalid("step must be a whole number of hours (got %s)", step)
	}
	start := r.From.UTC().Truncate(time.Hour)
	if !r.From.IsZero() && !r.To.IsZero() && int64(r.To.Sub(start)/step) >= MaxPoints {
		return nil, invalid("step %s cuts the range into more than %d points", step, MaxPoints)
	}
	rs, err := s.rangeRollups(ctx, namespace, r)
	if err != nil {
		return nil, err
	}
	n := int((r.To.Sub(start) + step - 1) / step)
	sums := make([]insights.Counts, n)
	for _, ru := range rs {
		if i := int(ru.Hour.Sub(start) / step); i >= 0 && i < n {
			sums[i].Add(ru.Counts)
		}
	}
	out := make([]insights.Point, n)
	for i := range sums {
		out[i] = insights.Point{Start: start.Add(time.Duration(i) * step), Overview: sums[i].Overview()}
	}
	return out, nil
}

// listProjection is what a delivery list reads of a summary.
var listProjection = bson.D{{Key: "endKind", Value: 0}, {Key: "endHour", Value: 0}}

// Deliveries returns one page of the namespace's delivery list, newest
// first (by when each Delivery was first recorded, then UID: both never
// change, so pages neither repeat nor skip a Delivery while others are
// added or change). Each filter is an equality an index serves.
func (s *Store) Deliveries(ctx context.Context, namespace string, q insights.DeliveryQuery) (insights.DeliveryPage, error) {
	var page insights.DeliveryPage
	if namespace == "" {
		return page, invalid("namespace is required")
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultListLimit
	case limit < 0 || limit > MaxListLimit:
		return page, invalid("limit must be 1 to %d (got %d)", MaxListLimit, q.Limit)
	}
	filter := bson.D{{Key: "ns", Value: namespace}}
	for _, f := range []struct{ k, v string }{{"campaign", q.Campaign}, {"phase", q.Phase}, {"region", q.Region}, {"agent", q.Agent}, {"windowDay", q.WindowDay}} {
		if f.v != "" {
			filter = append(filter, bson.E{Key: f.k, Value: f.v})
		}
	}
	if q.Phase != "" && !knownPhase(q.Phase) {
		return page, invalid("phase %q is not a Delivery phase", q.Phase)
	}
	if q.WindowDay != "" {
		if _, err := time.Parse(time.DateOnly, q.WindowDay); err != nil {
			return page, invalid("windowDay must be a date such as 2026-03-02 (got %q)", q.WindowDay)
		}
	}
	pos, err := insights.DecodeContinue(namespace, q)
	if err != nil {
		return page, err
	}
	if pos != nil {
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "createdAt", Value: bson.D{{Key: "$lt", Value: pos.At}}}},
			bson.D{{Key: "createdAt", Value: pos.At}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: pos.ID}}}},
		}})
	}
	cur, err := s.deliveries.Find(ctx, filter, options.Find().SetSort(listOrder).SetLimit(int64(limit)+1).SetProjection(listProjection))
	if err != nil {
		return page, fmt.Errorf("store: list deliveries: %w", err)
	}
	var docs []deliveryDoc
	if err := cur.All(ctx, &docs); err != nil {
		return page, fmt.Errorf("store: read the delivery list: %w", err)
	}
	more := len(docs) > limit
	docs = docs[:min(len(docs), limit)]
	page.Items = make([]insights.DeliverySummary, len(docs))
	for i := range docs {
		page.Items[i] = docs[i].summary()
	}
	if more {
		last := docs[len(docs)-1]
		page.Continue = insights.EncodeContinue(namespace, q, insights.Position{At: last.CreatedAt, ID: last.UID})
	}
	return page, nil
}

func knownPhase(p string) bool {
	switch v1alpha1.DeliveryPhase(p) {
	case v1alpha1.DeliveryPending, v1alpha1.DeliveryScheduled, v1alpha1.DeliveryCalling:
		return true
	}
	return EndKind(v1alpha1.DeliveryPhase(p)) != ""
}

// IsInvalid reports whether err is a refused argument (ErrInvalidInput or
// insights.ErrBadContinue): the caller's mistake, not the store's.
func IsInvalid(err error) bool {
	return errors.Is(err, ErrInvalidInput) || errors.Is(err, insights.ErrBadContinue)
}
