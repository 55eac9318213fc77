package sharding

import (
	"fmt"
	"reflect"
	"testing"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

func TestNames(t *testing.T) {
	if got := Names(v1.ShardingSpec{By: v1.ShardByHash, Count: 3}); !reflect.DeepEqual(got, []string{"shard-0", "shard-1", "shard-2"}) {
		t.Errorf("hash names = %v", got)
	}
	if got := Names(v1.ShardingSpec{By: v1.ShardByRegion, Regions: []string{"north", "south"}}); !reflect.DeepEqual(got, []string{"north", "south"}) {
		t.Errorf("region names = %v", got)
	}
	if got := Names(v1.ShardingSpec{}); !reflect.DeepEqual(got, []string{"shard-0"}) {
		t.Errorf("unset sharding names = %v, want one shard", got)
	}
}

func TestForRegion(t *testing.T) {
	s := v1.ShardingSpec{By: v1.ShardByRegion, Regions: []string{"north", "south"}}
	if got := For(s, "u", "south"); got != "south" {
		t.Errorf("For(south) = %s", got)
	}
	if got := For(s, "u", "east"); got != "north" {
		t.Errorf("an unknown region goes to the first shard, got %s", got)
	}
}

func TestForHashIsStableAndSpreads(t *testing.T) {
	s := v1.ShardingSpec{By: v1.ShardByHash, Count: 4}
	counts := map[string]int{}
	for i := 0; i < 4000; i++ {
		uid := fmt.Sprintf("uid-%d", i)
		a, b := For(s, uid, ""), For(s, uid, "")
		if a != b {
			t.Fatalf("For is not stable for %s: %s then %s", uid, a, b)
		}
		counts[a]++
	}
	if len(counts) != 4 {
		t.Fatalf("4000 deliveries used %d of 4 shards: %v", len(counts), counts)
	}
	for shard, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("shard %s got %d of 4000 deliveries; the hash does not spread", shard, n)
		}
	}
}

func TestHas(t *testing.T) {
	hash := v1.ShardingSpec{By: v1.ShardByHash, Count: 2}
	regions := v1.ShardingSpec{By: v1.ShardByRegion, Regions: []string{"north", "south"}}
	for _, tc := range []struct {
		spec v1.ShardingSpec
		name string
		want bool
	}{
		{hash, "shard-1", true},
		{hash, "shard-2", false}, // the count went down from 3
		{hash, "north", false},
		{regions, "south", true},
		{regions, "east", false}, // a region removed
		{regions, "shard-0", false},
	} {
		if got := Has(tc.spec, tc.name); got != tc.want {
			t.Errorf("Has(%v, %s) = %v, want %v", tc.spec, tc.name, got, tc.want)
		}
	}
}
