package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/delauto/delauto/internal/insights"
)

// The analytics queries read series, not rollups. A rollup bucket counts
// one namespace, campaign, region, agent and hour; a week of a busy
// namespace is tens of thousands of them, and FerretDB 1.x decodes every
// document it returns (it cannot push a range down to PostgreSQL). A
// series document holds what one query needs of one stretch of time: the
// figures of one namespace (of all campaigns or of one), grouped by one
// dimension (or not at all), over an hour, four hours or a day. A range is
// cut into the largest whole stretches, so a week is about a dozen
// documents, whatever the number of attempts; each is found by an equality
// FerretDB pushes down and an index serves: on its lookup key (lk), shared
// by a month of days or a day of shorter stretches, or on its _id.
//
// Series are derived from the rollup buckets (seriesSums.addBucket): counted with
// them as outcomes arrive, and rewritten from them by Rebuild.

// SeriesCollection holds the series documents (see above).
const SeriesCollection = "insights_series"

// seriesGrain is the stretch of time one series document covers.
type seriesGrain struct {
	name string
	span time.Duration
	// lkFormat names the stretch that the grain's lookup key covers: the
	// documents of one lookup are at most a month of days, or one day of
	// hours or four-hour stretches.
	lkFormat string
}

// seriesGrains are the grains, largest first.
var seriesGrains = []seriesGrain{
	{name: "d", span: 24 * time.Hour, lkFormat: "200601"},
	{name: "q", span: 4 * time.Hour, lkFormat: "20060102"},
	{name: "h", span: time.Hour, lkFormat: "20060102"},
}

// hourGrain is the finest grain, the one hour breakdowns read.
var hourGrain = seriesGrains[len(seriesGrains)-1]

// seriesKey names one series document.
type seriesKey struct {
	// Namespace; Campaign is the campaign the series counts ("" for all);
	// Dim is what its groups are (a Dimension other than hour, or "" for
	// one group of everything).
	Namespace, Campaign string
	Dim                 insights.Dimension
	Grain               string
	// At is the start of the stretch (UTC).
	At time.Time
}

// name is the hash of the series a key belongs to: namespace, campaign
// and dimension (free text of up to 253 characters each).
func (k seriesKey) name() string {
	h := sha256.New()
	for _, s := range []string{k.Namespace, k.Campaign, string(k.Dim)} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func (k seriesKey) grain() seriesGrain {
	for _, g := range seriesGrains {
		if g.name == k.Grain {
			return g
		}
	}
	panic("store: unknown series grain " + k.Grain)
}

// id is the document's _id.
func (k seriesKey) id() string {
	return k.Grain + k.At.UTC().Format("2006010215") + "-" + k.name()
}

// lk is the document's lookup key, shared by the documents of its series
// and grain in one month (days) or one day (hours, four-hour stretches).
func (k seriesKey) lk() string {
	return k.name() + "|" + k.Grain + "|" + k.At.UTC().Format(k.grain().lkFormat)
}

// groupID is the field a group is kept under in a series document.
func groupID(key string) string {
	h := sha256.Sum256([]byte(key))
	return "g" + hex.EncodeToString(h[:8])
}

// seriesSum is what is added to one series document: counts by group.
type seriesSum map[string]*seriesGroup

type seriesGroup struct {
	key string
	insights.Counts
}

// seriesSums are series documents' additions.
type seriesSums map[seriesKey]seriesSum

func (m seriesSums) add(k seriesKey, group string, c insights.Counts) {
	s := m[k]
	if s == nil {
		s = seriesSum{}
		m[k] = s
	}
	id := groupID(group)
	g := s[id]
	if g == nil {
		g = &seriesGroup{key: group}
		s[id] = g
	}
	g.Add(c)
}

// addBucket adds what rollup bucket k holding c contributes to every
// series: for all campaigns and for k's campaign, ungrouped and by region
// and agent, and by campaign for all; in each grain.
func (m seriesSums) addBucket(k RollupKey, c insights.Counts) {
	cells := []struct {
		campaign string
		dim      insights.Dimension
		group    string
	}{
		{"", "", ""},
		{"", insights.ByCampaign, k.Campaign},
		{"", insights.ByRegion, k.Region},
		{"", insights.ByAgent, k.Agent},
		{k.Campaign, "", ""},
		{k.Campaign, insights.ByRegion, k.Region},
		{k.Campaign, insights.ByAgent, k.Agent},
	}
	for _, g := range seriesGrains {
		at := startOf(k.Hour, g.span)
		for _, cell := range cells {
			m.add(seriesKey{Namespace: k.Namespace, Campaign: cell.campaign, Dim: cell.dim, Grain: g.name, At: at}, cell.group, c)
		}
	}
}

// startOf is the start of the stretch of span (a whole number of hours
// dividing a day) that t is in, in UTC.
func startOf(t time.Time, span time.Duration) time.Time {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return day.Add(t.Sub(day) / span * span)
}

// seriesFields are a series document's own fields (beside its groups).
func seriesFields(k seriesKey) bson.D {
	return bson.D{{Key: "ns", Value: k.Namespace}, {Key: "campaign", Value: k.Campaign}, {Key: "dim", Value: string(k.Dim)},
		{Key: "grain", Value: k.Grain}, {Key: "at", Value: k.At.UTC()}, {Key: "lk", Value: k.lk()}}
}

// incSeries adds s to series document k in one upsert, under the
// document's lock where updates are not atomic.
func (s *Store) incSeries(ctx context.Context, k seriesKey, sum seriesSum, wait bool) error {
	var inc, set bson.D
	for id, g := range sum {
		for _, e := range incOf(g.Counts) {
			inc = append(inc, bson.E{Key: id + "." + e.Key, Value: e.Value})
		}
		set = append(set, bson.E{Key: id + ".key", Value: g.key})
	}
	if len(inc) == 0 {
		return nil
	}
	update := bson.D{{Key: "$inc", Value: inc}, {Key: "$set", Value: set}, {Key: "$setOnInsert", Value: seriesFields(k)}}
	if err := s.lockedUpsert(ctx, s.series, "series:"+k.id(), k.id(), update, wait); err != nil {
		return fmt.Errorf("store: update series %s: %w", k.id(), err)
	}
	return nil
}

// seriesDoc is the whole document of series k holding sum.
func seriesDoc(k seriesKey, sum seriesSum) bson.D {
	doc := append(bson.D{{Key: "_id", Value: k.id()}}, seriesFields(k)...)
	for id, g := range sum {
		doc = append(doc, bson.E{Key: id, Value: append(bson.D{{Key: "key", Value: g.key}}, incOf(g.Counts)...)})
	}
	return doc
}

// writeSeries replaces the series documents of sums (Rebuild), one at a
// time (FerretDB 1.24 stalls on some bulk writes of these documents), and
// returns their ids.
func (s *Store) writeSeries(ctx context.Context, sums seriesSums, say func(format string, args ...any)) ([]string, error) {
	ids := make([]string, 0, len(sums))
	for k, sum := range sums {
		if _, err := s.series.ReplaceOne(ctx, bson.D{{Key: "_id", Value: k.id()}}, seriesDoc(k, sum), options.Replace().SetUpsert(true)); err != nil {
			return nil, fmt.Errorf("store: write rebuilt series %s: %w", k.id(), err)
		}
		ids = append(ids, k.id())
		if len(ids)%rebuildBatch == 0 || len(ids) == len(sums) {
			say("%d of %d series documents written", len(ids), len(sums))
		}
	}
	return ids, nil
}

// stretch is one series document's stretch of time: a grain and a start.
type stretch struct {
	grain seriesGrain
	at    time.Time
}

// seriesPlan cuts [from, to) (whole hours) into the fewest stretches of
// grains (largest first, the last an hour), each starting on a multiple of
// its span.
func seriesPlan(from, to time.Time, grains []seriesGrain) []stretch {
	var plan []stretch
	for t := from.UTC(); t.Before(to); {
		for _, g := range grains {
			if g.span == hourGrain.span || (startOf(t, g.span).Equal(t) && !t.Add(g.span).After(to)) {
				plan = append(plan, stretch{g, t})
				t = t.Add(g.span)
				break
			}
		}
	}
	return plan
}

// byLookupKey is how many documents of one lookup key a query must want
// for readSeries to find them all by the key rather than one by one by
// _id: a lookup key returns every document of its month or day, and
// FerretDB decodes each document it returns.
const byLookupKey = 4

// seriesReaders is how many finds readSeries runs at once.
const seriesReaders = 4

// readSeries returns the groups of the series of namespace, campaign and
// dim over the stretches of plan, keyed by each stretch's start. The
// documents are found by lookup key where a query wants at least
// byLookupKey of its documents, otherwise by _id.
func (s *Store) readSeries(ctx context.Context, namespace, campaign string, dim insights.Dimension, plan []stretch) (map[time.Time][]seriesGroup, error) {
	want := map[string]time.Time{}
	byLK := map[string][]string{}
	var lks []string
	for _, st := range plan {
		k := seriesKey{Namespace: namespace, Campaign: campaign, Dim: dim, Grain: st.grain.name, At: st.at}
		want[k.id()] = st.at
		lk := k.lk()
		if byLK[lk] == nil {
			lks = append(lks, lk)
		}
		byLK[lk] = append(byLK[lk], k.id())
	}
	var filters []bson.D
	for _, lk := range lks {
		if ids := byLK[lk]; len(ids) >= byLookupKey {
			filters = append(filters, bson.D{{Key: "lk", Value: lk}})
		} else {
			for _, id := range ids {
				filters = append(filters, bson.D{{Key: "_id", Value: id}})
			}
		}
	}
	var mu sync.Mutex
	out := map[time.Time][]seriesGroup{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(seriesReaders)
	for _, f := range filters {
		g.Go(func() error {
			cur, err := s.series.Find(gctx, f)
			if err != nil {
				return fmt.Errorf("store: find series: %w", err)
			}
			defer cur.Close(gctx)
			for cur.Next(gctx) {
				id, _ := cur.Current.Lookup("_id").StringValueOK()
				at, ok := want[id]
				if !ok {
					continue
				}
				groups, err := seriesGroupsOf(cur.Current)
				if err != nil {
					return err
				}
				mu.Lock()
				out[at] = append(out[at], groups...)
				mu.Unlock()
			}
			if err := cur.Err(); err != nil {
				return fmt.Errorf("store: read series: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// seriesGroupsOf decodes the groups of a series document.
func seriesGroupsOf(raw bson.Raw) ([]seriesGroup, error) {
	elems, err := raw.Elements()
	if err != nil {
		return nil, fmt.Errorf("store: decode series: %w", err)
	}
	var out []seriesGroup
	for _, e := range elems {
		doc, ok := e.Value().DocumentOK()
		if !ok || len(e.Key()) == 0 || e.Key()[0] != 'g' {
			continue
		}
		g := seriesGroup{}
		g.key, _ = doc.Lookup("key").StringValueOK()
		if g.Counts, err = countsOf(doc); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}
