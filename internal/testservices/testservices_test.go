package testservices

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
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

func TestMongoRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := env.Mongo.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	coll := c.Database("selftest").Collection("things")
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
