package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/delauto/delauto/workers/store"
)

func TestInsightsRebuildRefusesBadArguments(t *testing.T) {
	t.Setenv("MONGO_URI", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage: delauto insights rebuild"},
		{[]string{"recount"}, "usage: delauto insights rebuild"},
		{[]string{"rebuild"}, "set --mongo-uri"},
		{[]string{"rebuild", "--mongo-uri", "mongodb://m", "--namespace", "Not_A_Namespace"}, "--namespace:"},
		{[]string{"rebuild", "--mongo-uri", "mongodb://m", "extra"}, "unexpected arguments: extra"},
	} {
		err := insightsCmd(context.Background(), tc.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("insights %v = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestInsightsRebuildCommand wipes a namespace's rollups and rebuilds
// them with `delauto insights rebuild` against FerretDB.
func TestInsightsRebuildCommand(t *testing.T) {
	ctx := context.Background()
	db := "insights_cmd"
	st, err := store.Open(ctx, store.Config{URI: env.Mongo.URI, Database: db, InsightsFlush: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Mongo.DropDatabase(db); _ = st.Close(ctx) })
	now := time.Now()
	if err := st.SeedInsights(ctx, store.Seed{Namespace: "shop", Attempts: 40, From: now.Add(-3 * time.Hour), To: now}); err != nil {
		t.Fatal(err)
	}
	before, err := st.Rollups(ctx, "shop", time.Time{}, time.Time{})
	if err != nil || len(before) == 0 {
		t.Fatalf("seeded rollups: %d, %v", len(before), err)
	}
	if err := st.DropRollups(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := insightsCmd(ctx, []string{"rebuild", "--namespace", "shop", "--mongo-uri", env.Mongo.URI, "--mongo-database", db}, &out); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "counting the ended attempts of namespace shop") || !strings.Contains(out.String(), "rebuilt: 40 calls") {
		t.Fatalf("output:\n%s", out.String())
	}
	after, err := st.Rollups(ctx, "shop", time.Time{}, time.Time{})
	if err != nil || len(after) != len(before) {
		t.Fatalf("rebuilt rollups: %d (before %d), %v", len(after), len(before), err)
	}
}
