package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/singleflight"

	"github.com/delauto/delauto/internal/insights"
)

// The delivery list is read one hour of summaries at a time. Each summary
// carries the lookup key (lk) of the namespace and the hour it was first
// recorded in, an equality FerretDB 1.x pushes down to PostgreSQL (and an
// index serves); FerretDB filters and sorts only in its own memory, so a
// query of the whole namespace would read every summary it has. Which hours
// hold summaries is kept in ListDaysCollection: one document per namespace
// and day listing its hours, and one per namespace naming its first day, so
// a page walks only the hours that have Deliveries.

// ListDaysCollection holds the delivery list's hours (see above).
const ListDaysCollection = "insights_list_days"

// MaxListHours is the most hours of summaries one page reads. A page of a
// filter that matches few Deliveries may end short, with a continue token
// to go on from; the list ends only where the token is empty.
const MaxListHours = 96

// maxListDays is the most days without summaries a page walks past.
const maxListDays = 92

// listProjection is what a delivery list reads of a summary.
var listProjection = bson.D{{Key: "endKind", Value: 0}, {Key: "endHour", Value: 0}, {Key: "lk", Value: 0}}

// listLK is the lookup key of the summaries of namespace first recorded in
// the hour starting at hour.
func listLK(namespace string, hour time.Time) string {
	return namespace + "|" + hour.UTC().Format("2006-01-02T15")
}

// listDayID is the _id of the list-days document of namespace and day
// (midnight UTC); listFirstID that of the one naming its first day.
func listDayID(namespace string, day time.Time) string {
	return namespace + "|" + day.UTC().Format(time.DateOnly)
}

func listFirstID(namespace string) string { return namespace + "|first" }

// listHours remembers the hours this store has already noted in
// ListDaysCollection, so noting costs a write once per namespace and hour;
// and, for listMemoTTL, what it read there of days that ended over an hour
// ago and of first days, which change only by a rebuild's backfill.
type listHours struct {
	mu    sync.Mutex
	noted map[string]bool
	read  map[string]listMemo
	// noting has one write in flight per hour: the operator's concurrent
	// reconciles of a new hour's Deliveries wait for it rather than queue
	// for the same lock.
	noting singleflight.Group
}

// listMemoTTL is how long a read of a past day's hours or of a first day
// is reused.
const listMemoTTL = time.Minute

type listMemo struct {
	hours []int
	first time.Time
	at    time.Time
}

// memo returns what was read of id within listMemoTTL.
func (l *listHours) memo(id string, now time.Time) (listMemo, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.read[id]
	return m, ok && now.Sub(m.at) < listMemoTTL
}

func (l *listHours) remember(id string, m listMemo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.read == nil || len(l.read) > 4096 {
		l.read = map[string]listMemo{}
	}
	l.read[id] = m
}

// noteListHour records that namespace has summaries first recorded in the
// hour of t: before such a summary is written, so a summary is never in an
// hour the list does not walk.
func (s *Store) noteListHour(ctx context.Context, namespace string, t time.Time) error {
	hour := t.UTC().Truncate(time.Hour)
	key := listLK(namespace, hour)
	s.listHours.mu.Lock()
	done := s.listHours.noted[key]
	s.listHours.mu.Unlock()
	if done {
		return nil
	}
	_, err, _ := s.listHours.noting.Do(key, func() (any, error) { return nil, s.writeListHour(ctx, namespace, hour, key) })
	return err
}

// writeListHour writes what noteListHour notes, and remembers it.
func (s *Store) writeListHour(ctx context.Context, namespace string, hour time.Time, key string) error {
	day := startOf(hour, 24*time.Hour)
	if err := s.lockedUpsert(ctx, s.listDays, "listday:"+listDayID(namespace, day), listDayID(namespace, day), bson.D{
		{Key: "$addToSet", Value: bson.D{{Key: "hours", Value: int32(hour.Hour())}}},
		{Key: "$setOnInsert", Value: bson.D{{Key: "ns", Value: namespace}, {Key: "day", Value: day}}},
	}, true); err != nil {
		return fmt.Errorf("store: note the delivery list's hour: %w", err)
	}
	if err := s.lockedUpsert(ctx, s.listDays, "listday:"+listFirstID(namespace), listFirstID(namespace), bson.D{
		{Key: "$min", Value: bson.D{{Key: "day", Value: day}}},
		{Key: "$setOnInsert", Value: bson.D{{Key: "ns", Value: namespace}}},
	}, true); err != nil {
		return fmt.Errorf("store: note the delivery list's first day: %w", err)
	}
	s.listHours.mu.Lock()
	if s.listHours.noted == nil || len(s.listHours.noted) > 4096 {
		s.listHours.noted = map[string]bool{}
	}
	s.listHours.noted[key] = true
	delete(s.listHours.read, listDayID(namespace, day))
	delete(s.listHours.read, listFirstID(namespace))
	s.listHours.mu.Unlock()
	return nil
}

// listDayHours reads the list-days document of namespace and day: its hours,
// newest first (none if it has no summaries).
func (s *Store) listDayHours(ctx context.Context, namespace string, day time.Time) ([]int, error) {
	id := listDayID(namespace, day)
	now := s.now()
	past := now.Sub(day) > 25*time.Hour
	if m, ok := s.listHours.memo(id, now); ok && past {
		return m.hours, nil
	}
	var doc struct {
		Hours []int `bson:"hours"`
	}
	err := s.listDays.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if err != nil && err != mongo.ErrNoDocuments {
		return nil, fmt.Errorf("store: read the delivery list's hours: %w", err)
	}
	slices.Sort(doc.Hours)
	slices.Reverse(doc.Hours)
	hours := slices.Compact(doc.Hours)
	if past {
		s.listHours.remember(id, listMemo{hours: hours, at: now})
	}
	return hours, nil
}

// listFirstDay is the first day namespace had summaries, or zero.
func (s *Store) listFirstDay(ctx context.Context, namespace string) (time.Time, error) {
	id := listFirstID(namespace)
	now := s.now()
	if m, ok := s.listHours.memo(id, now); ok && !m.first.IsZero() {
		return m.first, nil
	}
	var doc struct {
		Day time.Time `bson:"day"`
	}
	err := s.listDays.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if err == mongo.ErrNoDocuments {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("store: read the delivery list's first day: %w", err)
	}
	s.listHours.remember(id, listMemo{first: doc.Day.UTC(), at: now})
	return doc.Day.UTC(), nil
}

// Deliveries returns one page of the namespace's delivery list, newest
// first (by when each Delivery was first recorded, then UID: both never
// change, so pages neither repeat nor skip a Delivery while others are
// added or change). Each filter is an equality. A page reads at most
// MaxListHours hours of summaries and walks at most 92 days without any:
// where a filter matches few Deliveries it may hold fewer than the limit
// (even none) with a continue token.
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
	first, err := s.listFirstDay(ctx, namespace)
	if err != nil || first.IsZero() {
		return page, err
	}
	// The hour to start in: the position's, or the newest there may be.
	start := s.now().Add(time.Hour)
	if pos != nil {
		start = pos.At
		if pos.ID == "" {
			// Everything before At: At is an hour's start.
			start = pos.At.Add(-time.Millisecond)
		}
	}
	startHour := start.UTC().Truncate(time.Hour)
	var docs []deliveryDoc
	hoursRead, daysEmpty := 0, 0
	var resume time.Time // where a short page goes on from
	for day := startOf(startHour, 24*time.Hour); !day.Before(first) && len(docs) <= limit; day = day.Add(-24 * time.Hour) {
		if daysEmpty >= maxListDays || hoursRead >= MaxListHours {
			resume = day.Add(24 * time.Hour)
			break
		}
		hours, err := s.listDayHours(ctx, namespace, day)
		if err != nil {
			return page, err
		}
		if len(hours) == 0 {
			daysEmpty++
		}
		for _, h := range hours {
			hour := day.Add(time.Duration(h) * time.Hour)
			if hour.After(startHour) {
				continue
			}
			if hoursRead >= MaxListHours {
				resume = hour.Add(time.Hour)
				break
			}
			hoursRead++
			f := append(bson.D{{Key: "lk", Value: listLK(namespace, hour)}}, filter...)
			if pos != nil && hour.Equal(startHour) {
				if pos.ID == "" {
					f = append(f, bson.E{Key: "createdAt", Value: bson.D{{Key: "$lt", Value: pos.At}}})
				} else {
					f = append(f, bson.E{Key: "$or", Value: bson.A{
						bson.D{{Key: "createdAt", Value: bson.D{{Key: "$lt", Value: pos.At}}}},
						bson.D{{Key: "createdAt", Value: pos.At}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: pos.ID}}}},
					}})
				}
			}
			cur, err := s.deliveries.Find(ctx, f, options.Find().SetSort(listOrder).SetLimit(int64(limit+1-len(docs))).SetProjection(listProjection))
			if err != nil {
				return page, fmt.Errorf("store: list deliveries: %w", err)
			}
			var got []deliveryDoc
			if err := cur.All(ctx, &got); err != nil {
				return page, fmt.Errorf("store: read the delivery list: %w", err)
			}
			docs = append(docs, got...)
			if len(docs) > limit {
				break
			}
		}
		if !resume.IsZero() {
			break
		}
	}
	more := len(docs) > limit
	docs = docs[:min(len(docs), limit)]
	page.Items = make([]insights.DeliverySummary, len(docs))
	for i := range docs {
		page.Items[i] = docs[i].summary()
	}
	switch {
	case more || (!resume.IsZero() && len(docs) > 0):
		// Go on after the last item (a short page re-reads its hour).
		last := docs[len(docs)-1]
		page.Continue = insights.EncodeContinue(namespace, q, insights.Position{At: last.CreatedAt, ID: last.UID})
	case !resume.IsZero():
		page.Continue = insights.EncodeContinue(namespace, q, insights.Position{At: resume})
	}
	return page, nil
}
