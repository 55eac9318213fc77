// Package sharding names a campaign's shards and picks the shard of a
// delivery. Each shard has its own Redis queue and worker Deployment.
package sharding

import (
	"hash/fnv"
	"slices"
	"strconv"

	v1 "github.com/delauto/delauto/api/v1alpha1"
)

// Names lists the campaign's shards in a stable order: shard-0 ... shard-N-1
// when sharding by hash, the regions when sharding by region.
func Names(s v1.ShardingSpec) []string {
	if s.By == v1.ShardByRegion {
		return append([]string(nil), s.Regions...)
	}
	n := int(s.Count)
	if n < 1 {
		n = 1
	}
	names := make([]string, n)
	for i := range names {
		names[i] = "shard-" + strconv.Itoa(i)
	}
	return names
}

// For picks the shard of a delivery: its region's shard (the first region
// when the delivery's region has none), or a stable hash of its UID.
func For(s v1.ShardingSpec, uid, region string) string {
	if s.By == v1.ShardByRegion {
		for _, r := range s.Regions {
			if r == region {
				return r
			}
		}
		if len(s.Regions) > 0 {
			return s.Regions[0]
		}
		return "shard-0"
	}
	n := uint32(s.Count)
	if n < 1 {
		n = 1
	}
	h := fnv.New32a()
	h.Write([]byte(uid))
	return "shard-" + strconv.Itoa(int(h.Sum32()%n))
}

// Has reports whether name is one of the campaign's shards (Names): a
// delivery or attempt recorded on another shard was placed before the
// shard count or the regions changed, and no worker reads that shard.
func Has(s v1.ShardingSpec, name string) bool {
	return slices.Contains(Names(s), name)
}
