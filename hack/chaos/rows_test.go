package main

import (
	"context"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/delauto/delauto/internal/testservices"
)

var env *testservices.Env

func TestMain(m *testing.M) {
	testservices.Main(m, testservices.Want{Mongo: true}, &env)
}

// The load report's call-log cost comes from PostgreSQL's row counters
// under FerretDB: a collection's inserts, updates and deletes show under
// its own name, per Delivery.
func TestCallLogRowsCountWritesByCollection(t *testing.T) {
	before, err := callLogRows(env.Mongo)
	if err != nil {
		t.Fatal(err)
	}
	c, err := env.Mongo.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer c.Disconnect(ctx)
	coll := c.Database("rowstest").Collection("locks")
	for i := range 10 {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := coll.DeleteMany(ctx, bson.D{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 150 { // PostgreSQL publishes its counters up to 10 s late
		after, err := callLogRows(env.Mongo)
		if err != nil {
			t.Fatal(err)
		}
		got = rowsPerDelivery(before, after, 5)
		for _, g := range got {
			if strings.HasPrefix(g, "locks ins 2.0 upd 0.0 del 2.0") {
				return
			}
		}
		env.Mongo.SQL("SELECT pg_sleep(0.1)") //nolint:errcheck
	}
	t.Fatalf("rows per Delivery %v, want locks with 2 inserts and 2 deletes each (10 of each for 5)", got)
}
