package store

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// The store answers the read API's queries: analytics from the series
// (a query reads the stretches of its range, never the attempts; see
// insights_series.go), the delivery list from the delivery summaries.
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

// seriesRange checks r and returns its hours: those starting in
// [r.From, r.To).
func seriesRange(namespace string, r insights.Range) (from, to time.Time, err error) {
	if namespace == "" {
		return from, to, invalid("namespace is required")
	}
	if r.From.IsZero() || r.To.IsZero() || !r.From.Before(r.To) {
		return from, to, invalid("from and to are required, from before to")
	}
	return ceilHour(r.From), ceilHour(r.To), nil
}

// ceilHour rounds t up to a whole hour, in UTC.
func ceilHour(t time.Time) time.Time {
	h := t.UTC().Truncate(time.Hour)
	if h.Before(t) {
		h = h.Add(time.Hour)
	}
	return h
}

// sumGroups adds up groups.
func sumGroups(groups map[time.Time][]seriesGroup) insights.Counts {
	var c insights.Counts
	for _, gs := range groups {
		for _, g := range gs {
			c.Add(g.Counts)
		}
	}
	return c
}

// Overview sums the namespace's outcomes whose hour is in r.
func (s *Store) Overview(ctx context.Context, namespace string, r insights.Range) (insights.Overview, error) {
	from, to, err := seriesRange(namespace, r)
	if err != nil {
		return insights.Overview{}, err
	}
	groups, err := s.readSeries(ctx, namespace, r.Campaign, "", seriesPlan(from, to, seriesGrains))
	if err != nil {
		return insights.Overview{}, err
	}
	c := sumGroups(groups)
	return c.Overview(), nil
}

// Breakdown groups the namespace's outcomes in r by dim, the group with
// the most Deliveries (then calls) first.
func (s *Store) Breakdown(ctx context.Context, namespace string, dim insights.Dimension, r insights.Range) ([]insights.Group, error) {
	switch dim {
	case insights.ByRegion, insights.ByAgent, insights.ByCampaign, insights.ByHour:
	default:
		return nil, invalid("by must be region, agent, campaign or hour (got %q)", dim)
	}
	from, to, err := seriesRange(namespace, r)
	if err != nil {
		return nil, err
	}
	sums := map[string]*insights.Counts{}
	add := func(key string, c insights.Counts) {
		if sums[key] == nil {
			sums[key] = &insights.Counts{}
		}
		sums[key].Add(c)
	}
	switch {
	case dim == insights.ByHour:
		groups, err := s.readSeries(ctx, namespace, r.Campaign, "", seriesPlan(from, to, []seriesGrain{hourGrain}))
		if err != nil {
			return nil, err
		}
		for at, gs := range groups {
			for _, g := range gs {
				add(at.Format(time.RFC3339), g.Counts)
			}
		}
	case dim == insights.ByCampaign && r.Campaign != "":
		// One campaign's series is its only group.
		groups, err := s.readSeries(ctx, namespace, r.Campaign, "", seriesPlan(from, to, seriesGrains))
		if err != nil {
			return nil, err
		}
		if len(groups) > 0 {
			add(r.Campaign, sumGroups(groups))
		}
	default:
		groups, err := s.readSeries(ctx, namespace, r.Campaign, dim, seriesPlan(from, to, seriesGrains))
		if err != nil {
			return nil, err
		}
		for _, gs := range groups {
			for _, g := range gs {
				add(g.key, g.Counts)
			}
		}
	}
	out := make([]insights.Group, 0, len(sums))
	for k, c := range sums {
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
	from, to, err := seriesRange(namespace, r)
	if err != nil {
		return nil, err
	}
	n := int((r.To.Sub(start) + step - 1) / step)
	// Each step is cut into stretches on its own, so none crosses a step.
	var plan []stretch
	for i := range n {
		lo, hi := start.Add(time.Duration(i)*step), start.Add(time.Duration(i+1)*step)
		plan = append(plan, seriesPlan(maxTime(lo, from), minTime(hi, to), seriesGrains)...)
	}
	groups, err := s.readSeries(ctx, namespace, r.Campaign, "", plan)
	if err != nil {
		return nil, err
	}
	sums := make([]insights.Counts, n)
	for at, gs := range groups {
		if i := int(at.Sub(start) / step); i >= 0 && i < n {
			for _, g := range gs {
				sums[i].Add(g.Counts)
			}
		}
	}
	out := make([]insights.Point, n)
	for i := range sums {
		out[i] = insights.Point{Start: start.Add(time.Duration(i) * step), Overview: sums[i].Overview()}
	}
	return out, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
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
