package testservices

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	delautov1alpha1 "github.com/delauto/delauto/api/v1alpha1"
)

var env *Env

func TestMain(m *testing.M) {
	Main(m, Want{Kube: true, Redis: true, RedisCluster: true, Mongo: true}, &env)
}

func TestRedisRoundTrip(t *testing.T) {
	ctx := context.Background()
	c := env.Redis.Client()
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("GET k = %q, want v", got)
	}
}

func TestRedisClusterCoversAllSlots(t *testing.T) {
	ctx := context.Background()
	c := env.RedisCluster.Client()
	defer c.Close()
	shards, err := c.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(shards) != 3 {
		t.Fatalf("cluster has %d shards, want 3", len(shards))
	}
	// Keys in different slots land on different masters and all work.
	for _, k := range []string{"a", "b", "c", "{x}:1", "{y}:2"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
}

// selftestCollection is a collection of the selftest database on a client
// disconnected when the test ends.
func selftestCollection(t *testing.T, name string) *mongo.Collection {
	t.Helper()
	c, err := env.Mongo.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c.Database("selftest").Collection(name)
}

func TestMongoRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	coll := selftestCollection(t, "things")
	if _, err := coll.InsertOne(ctx, bson.M{"_id": "a", "n": 1}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		N int `bson:"n"`
	}
	if err := coll.FindOne(ctx, bson.M{"_id": "a"}).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.N != 1 {
		t.Fatalf("n = %d, want 1", got.N)
	}
}

// TestOperationsDocGivesTheIndexSQL: the SQL that docs/operations.md tells
// FerretDB users to run is the SQL the tests run.
func TestOperationsDocGivesTheIndexSQL(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```sql\n"+strings.TrimLeft(idLookupIndexSQL, "\n")+"```") {
		t.Error("docs/operations.md does not give idLookupIndexSQL verbatim in its FerretDB section")
	}
}

// TestMongoFindsByIDThroughAnIndex checks that FerretDB's _id filters are
// answered by an index, as MongoDB's are, rather than by a table scan: the
// call log's speed must not fall with its size.
func TestMongoFindsByIDThroughAnIndex(t *testing.T) {
	checkLookupsUseAnIndex(t, "byid", "_id")
}

// TestMongoFindsInsightsByLookupKeyThroughAnIndex: the insights
// collections' lookup key (lk), by which the read API finds series and the
// delivery list's hours, is indexed too.
func TestMongoFindsInsightsByLookupKeyThroughAnIndex(t *testing.T) {
	checkLookupsUseAnIndex(t, "insights_bylk", "lk")
}

// checkLookupsUseAnIndex finds and updates documents of a new collection
// by field, and checks with PostgreSQL's scan counters that an index, not
// a table scan, answered each.
func checkLookupsUseAnIndex(t *testing.T, collection, field string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	coll := selftestCollection(t, collection)
	key := func(i int) string { return fmt.Sprintf("doc-%04d", i) }
	docs := make([]any, 2000)
	for i := range docs {
		docs[i] = bson.M{"_id": fmt.Sprintf("id-%04d", i), field: key(i), "n": i}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Mongo.SQL("ANALYZE"); err != nil {
		t.Fatal(err, out)
	}
	scans := func() (seq, idx int) {
		t.Helper()
		// The statistics collector reports a transaction's counts at its end;
		// ask for a fresh snapshot.
		out, err := env.Mongo.SQL(`SELECT pg_stat_clear_snapshot();
			SELECT coalesce(sum(seq_scan), 0) || ' ' || coalesce(sum(idx_scan), 0) FROM pg_stat_user_tables WHERE schemaname = 'selftest'`)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Sscan(strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]), &seq, &idx); err != nil {
			t.Fatalf("reading scan counts from %q: %v", out, err)
		}
		return seq, idx
	}
	seq0, idx0 := scans()
	const lookups = 50
	for i := range lookups {
		k := key(i * 37)
		var got struct {
			N int `bson:"n"`
		}
		if err := coll.FindOne(ctx, bson.M{field: k}).Decode(&got); err != nil {
			t.Fatalf("find %s: %v", k, err)
		}
		if got.N != i*37 {
			t.Fatalf("find %s: n = %d, want %d", k, got.N, i*37)
		}
		if _, err := coll.UpdateOne(ctx, bson.M{field: k}, bson.M{"$inc": bson.M{"n": 1}}); err != nil {
			t.Fatalf("update %s: %v", k, err)
		}
	}
	var seq, idx int
	// An idle backend reports its counts within PostgreSQL's idle stats
	// interval (10 s).
	for range 200 {
		if seq, idx = scans(); idx-idx0 >= 2*lookups {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if seq-seq0 >= lookups || idx-idx0 < 2*lookups {
		t.Fatalf("%d finds and %d updates by %s made %d table scans and %d index scans; want index scans only", lookups, lookups, field, seq-seq0, idx-idx0)
	}
}

func TestKubeServesCRDs(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "selftest"}}
	if err := env.Kube.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	var list delautov1alpha1.DeliveryList
	if err := env.Kube.Client.List(ctx, &list, client.InNamespace("selftest")); err != nil {
		t.Fatalf("list Deliveries (CRD installed?): %v", err)
	}
	var cc delautov1alpha1.CallCampaignList
	if err := env.Kube.Client.List(ctx, &cc, client.InNamespace("selftest")); err != nil {
		t.Fatalf("list CallCampaigns (CRD installed?): %v", err)
	}
}

// TestPostgresOutage: with PostgreSQL stopped under FerretDB, reads fail;
// once it is started again, the same FerretDB serves the data written
// before the outage.
func TestPostgresOutage(t *testing.T) {
	m, err := StartMongo()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	c, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	coll := c.Database("selftest").Collection("outage")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := coll.InsertOne(ctx, bson.M{"_id": "kept", "n": 1}); err != nil {
		t.Fatal(err)
	}
	m.StopPostgres()
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	err = coll.FindOne(short, bson.M{"_id": "kept"}).Err()
	cancelShort()
	if err == nil {
		t.Fatal("a read succeeded with PostgreSQL stopped")
	}
	if err := m.StartPostgres(); err != nil {
		t.Fatal(err)
	}
	// FerretDB's pool holds connections the stop cut: the first reads may
	// still fail on them.
	for {
		err := coll.FindOne(ctx, bson.M{"_id": "kept"}).Err()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no read succeeded within a minute of PostgreSQL's restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
