package store

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// insightsIndex is one index of the insights collections; partial names a
// field the index covers only where it is set (on servers with partial
// indexes; a plain index elsewhere).
type insightsIndex struct {
	coll    func(*Store) *mongo.Collection
	name    string
	keys    bson.D
	partial string
}

func rollupsColl(s *Store) *mongo.Collection    { return s.rollups }
func deliveriesColl(s *Store) *mongo.Collection { return s.deliveries }

// listOrder is the delivery list's order, newest first.
var listOrder = bson.D{{Key: "createdAt", Value: -1}, {Key: "_id", Value: -1}}

func seriesColl(s *Store) *mongo.Collection { return s.series }

// insightsIndexes are the indexes of the insights collections (listed in
// docs/api.md, "Where the answers come from"). The queries find series and summaries by lookup key
// (lk); on FerretDB 1.x an index PostgreSQL builds serves those (see
// docs/operations.md), not these.
var insightsIndexes = []insightsIndex{
	{coll: rollupsColl, name: "ns_hour", keys: bson.D{{Key: "ns", Value: 1}, {Key: "hour", Value: 1}}},
	{coll: rollupsColl, name: "ns_campaign_hour", keys: bson.D{{Key: "ns", Value: 1}, {Key: "campaign", Value: 1}, {Key: "hour", Value: 1}}},
	{coll: seriesColl, name: "lk", keys: bson.D{{Key: "lk", Value: 1}}},
	{coll: seriesColl, name: "ns", keys: bson.D{{Key: "ns", Value: 1}}},
	{coll: deliveriesColl, name: "lk_list", keys: append(bson.D{{Key: "lk", Value: 1}}, listOrder...)},
	{coll: deliveriesColl, name: "ns_endKind", keys: bson.D{{Key: "ns", Value: 1}, {Key: "endKind", Value: 1}}, partial: "endKind"},
}

// ensureInsightsIndexes creates the insights collections' indexes that do
// not exist yet, one per command (see EnsureIndexes); partial ones only
// where the server has them.
func (s *Store) ensureInsightsIndexes(ctx context.Context, partial bool) error {
	have := map[string]indexSet{}
	for _, ix := range insightsIndexes {
		c := ix.coll(s)
		if have[c.Name()] == nil {
			names, err := listIndexes(ctx, c)
			if err != nil {
				return err
			}
			have[c.Name()] = names
		}
		opts, name := options.Index(), ix.name
		if ix.partial != "" && partial {
			opts.SetPartialFilterExpression(bson.D{{Key: ix.partial, Value: bson.D{{Key: "$exists", Value: true}}}})
			name += "_partial"
		}
		if err := s.createIndex(ctx, c, have[c.Name()], name, ix.keys, opts); err != nil {
			return fmt.Errorf("store: create index %s on %s: %w", name, c.Name(), err)
		}
	}
	return nil
}
