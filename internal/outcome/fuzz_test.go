package outcome

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The fuzz targets' seed corpora run in every `go test`; `make fuzz`
// fuzzes them for longer.

const seedAttempt = "0fd165f5-7d9b-40fb-a16d-5c7d76d5e74d-2"

// FuzzConsume writes any stream entry to the outcome stream of a real
// Redis, as a worker (or anything else with access to Redis) could, and
// reads it as the operator does. The entry is handed on only when it names
// an attempt and a Delivery the apiserver could hold, exactly as it was
// written, and it is acknowledged either way: nothing stays pending, and
// nothing the operator could never reconcile reaches it.
func FuzzConsume(f *testing.F) {
	f.Add(seedAttempt, "ns", "d7", "completed", uint8(0))
	f.Add(seedAttempt, "shop", "parcel-0042.berlin", "agent-notified", uint8(0))
	f.Add("uid-3-1", "default", "d", "", uint8(0))
	f.Add(seedAttempt, "ns", "", "completed", uint8(0))
	f.Add(seedAttempt, "ns", "d", "completed", uint8(1))
	f.Add(seedAttempt, "ns", "d", "completed", uint8(2))
	f.Add(seedAttempt, "ns", "d", "completed", uint8(4))
	f.Add(seedAttempt, "../kube-system", "d", "completed", uint8(0))
	f.Add(seedAttempt, "ns", "a/b", "completed", uint8(0))
	f.Add(seedAttempt, "NS", "D", "completed", uint8(0))
	f.Add(seedAttempt+seedAttempt, "ns", "d", "x", uint8(0))
	rdb := env.Redis.Client()
	f.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	keys := []string{"attempt", "ns", "name", "state"}
	f.Fuzz(func(t *testing.T, attempt, ns, name, state string, drop uint8) {
		if err := rdb.Del(ctx, StreamKey).Err(); err != nil {
			t.Fatal(err)
		}
		c := NewConsumer(rdb, "fuzz")
		if err := c.ensureGroup(ctx); err != nil {
			t.Fatal(err)
		}
		// The entry as written, with the fields drop names left out (a
		// stream entry needs one field at least).
		want := Event{AttemptID: attempt, Namespace: ns, Name: name, State: state}
		var values []string
		for i, v := range want.values() {
			if i%2 == 1 && drop&(1<<(i/2)) == 0 {
				values = append(values, want.values()[i-1], v)
			}
		}
		if len(values) == 0 {
			values = []string{"other", "x"}
		}
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: StreamKey, Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range keys {
			if drop&(1<<i) != 0 {
				switch k {
				case "attempt":
					want.AttemptID = ""
				case "ns":
					want.Namespace = ""
				case "name":
					want.Name = ""
				case "state":
					want.State = ""
				}
			}
		}
		want.StreamID = id
		valid := want.AttemptID != "" && len(want.AttemptID) <= maxAttemptID &&
			len(validation.IsDNS1123Label(want.Namespace)) == 0 && len(validation.IsDNS1123Subdomain(want.Name)) == 0

		var got []Event
		n, err := c.readOnce(ctx, ">", func(e Event) error { got = append(got, e); return nil })
		if err != nil || n != 1 {
			t.Fatalf("read %d entries, %v", n, err)
		}
		switch {
		case valid && (len(got) != 1 || got[0] != want):
			t.Fatalf("entry %q: handed on %+v, want %+v", values, got, want)
		case !valid && len(got) != 0:
			t.Fatalf("entry %q names no valid Delivery but was handed on: %+v", values, got)
		}
		pending, err := rdb.XPending(ctx, StreamKey, Group).Result()
		if err != nil || pending.Count != 0 {
			t.Fatalf("entry %q: %v pending after the read (%v)", values, pending, err)
		}
	})
}
