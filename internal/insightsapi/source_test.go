package insightsapi

import (
	"context"
	"encoding/base64"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/delauto/delauto/internal/insights"
)

// countingSource counts the queries that reach a Source, so a test can
// tell a cached answer from a fresh one.
type countingSource struct {
	insights.Source
	n atomic.Int64
}

func (c *countingSource) Deliveries(ctx context.Context, ns string, q insights.DeliveryQuery) (insights.DeliveryPage, error) {
	c.n.Add(1)
	return c.Source.Deliveries(ctx, ns, q)
}

func (c *countingSource) Overview(ctx context.Context, ns string, r insights.Range) (insights.Overview, error) {
	c.n.Add(1)
	return c.Source.Overview(ctx, ns, r)
}

func (c *countingSource) Breakdown(ctx context.Context, ns string, d insights.Dimension, r insights.Range) ([]insights.Group, error) {
	c.n.Add(1)
	return c.Source.Breakdown(ctx, ns, d, r)
}

func (c *countingSource) Timeseries(ctx context.Context, ns string, step time.Duration, r insights.Range) ([]insights.Point, error) {
	c.n.Add(1)
	return c.Source.Timeseries(ctx, ns, step, r)
}

// listSource is a small in-memory Source: n Deliveries of one campaign,
// paged by name, and fixed figures.
type listSource struct{ n int }

func (l listSource) Deliveries(_ context.Context, ns string, q insights.DeliveryQuery) (insights.DeliveryPage, error) {
	start := 0
	if q.Continue != "" {
		b, err := base64.RawURLEncoding.DecodeString(q.Continue)
		if err != nil {
			return insights.DeliveryPage{}, insights.ErrBadContinue
		}
		if _, err := fmt.Sscanf(string(b), "after:%d", &start); err != nil {
			return insights.DeliveryPage{}, insights.ErrBadContinue
		}
	}
	var p insights.DeliveryPage
	t := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	for i := start; i < l.n && len(p.Items) < q.Limit; i++ {
		p.Items = append(p.Items, insights.DeliverySummary{Namespace: ns, Name: fmt.Sprintf("parcel-%05d", i), Campaign: "berlin",
			Phase: "Confirmed", Region: "berlin-mitte", Agent: "agent-7", WindowStart: t, WindowEnd: t.Add(2 * time.Hour),
			Attempts: 1, LastResult: "answered", UpdatedAt: t})
		if len(p.Items) == q.Limit && i+1 < l.n {
			p.Continue = base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "after:%d", i+1))
		}
	}
	return p, nil
}

func (listSource) Overview(context.Context, string, insights.Range) (insights.Overview, error) {
	return insights.Overview{Deliveries: 10, Calls: 12, Answered: 9, ConfirmationRate: 0.7}, nil
}

func (listSource) Breakdown(_ context.Context, _ string, d insights.Dimension, _ insights.Range) ([]insights.Group, error) {
	return []insights.Group{{Key: "berlin-" + string(d), Overview: insights.Overview{Deliveries: 10}}}, nil
}

func (listSource) Timeseries(_ context.Context, _ string, step time.Duration, r insights.Range) ([]insights.Point, error) {
	var out []insights.Point
	for t := r.From; t.Before(r.To); t = t.Add(step) {
		out = append(out, insights.Point{Start: t})
	}
	return out, nil
}
