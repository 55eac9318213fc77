package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// Seed describes synthetic call log data for benchmarks (SeedInsights).
type Seed struct {
	// Namespace receives the data (required).
	Namespace string
	// Attempts is how many ended attempts to write (required); their
	// Deliveries (one to three attempts each) get summaries and ends.
	Attempts int
	// Campaigns, Regions and Agents are drawn from; defaults: two
	// campaigns, four regions, twenty agents.
	Campaigns, Regions, Agents []string
	// From and To bound the outcomes' times (required, From before To).
	From, To time.Time
	// RandSeed makes the data reproducible.
	RandSeed uint64
	// Batch is how many documents one insert writes; default 1000.
	Batch int
}

func (s *Seed) defaults() {
	if len(s.Campaigns) == 0 {
		s.Campaigns = []string{"evening", "morning"}
	}
	if len(s.Regions) == 0 {
		s.Regions = []string{"north", "south", "east", "west"}
	}
	if len(s.Agents) == 0 {
		for i := range 20 {
			s.Agents = append(s.Agents, fmt.Sprintf("agent-%02d", i))
		}
	}
	if s.Batch <= 0 {
		s.Batch = 1000
	}
}

// SeedInsights writes sd.Attempts ended attempts of synthetic Deliveries
// (with their delivery summaries) and adds them to the rollups, with bulk
// inserts: the call log a read API benchmark runs against. Each call
// writes new Deliveries (ids from the seed and a random suffix).
func (s *Store) SeedInsights(ctx context.Context, sd Seed) error {
	sd.defaults()
	if sd.Namespace == "" || sd.Attempts <= 0 || !sd.From.Before(sd.To) {
		return invalid("seed: a namespace, a positive number of attempts and From before To are required")
	}
	rng := rand.New(rand.NewPCG(sd.RandSeed, uint64(time.Now().UnixNano())))
	run := fmt.Sprintf("seed%08x", rng.Uint32())
	span := sd.To.Sub(sd.From)
	buckets := sums{}
	add := buckets.add
	hours := map[time.Time]bool{}
	var attempts, deliveries []any
	write := func(force bool) error {
		if len(attempts) >= sd.Batch || (force && len(attempts) > 0) {
			if _, err := s.attempts.InsertMany(ctx, attempts, options.InsertMany().SetOrdered(false)); err != nil {
				return fmt.Errorf("store: seed attempts: %w", err)
			}
			attempts = attempts[:0]
		}
		if len(deliveries) >= sd.Batch || (force && len(deliveries) > 0) {
			if _, err := s.deliveries.InsertMany(ctx, deliveries, options.InsertMany().SetOrdered(false)); err != nil {
				return fmt.Errorf("store: seed delivery summaries: %w", err)
			}
			deliveries = deliveries[:0]
		}
		return nil
	}
	for n, d := 0, 0; n < sd.Attempts; d++ {
		uid := fmt.Sprintf("%s-%07d", run, d)
		campaign := sd.Campaigns[rng.IntN(len(sd.Campaigns))]
		region := sd.Regions[rng.IntN(len(sd.Regions))]
		agent := sd.Agents[rng.IntN(len(sd.Agents))]
		calls := min(1+rng.IntN(3), sd.Attempts-n)
		created := sd.From.Add(time.Duration(rng.Int64N(int64(span)))).UTC().Truncate(time.Millisecond)
		end := created
		var last *Attempt
		for i := 1; i <= calls; i++ {
			due := end.Add(time.Duration(rng.IntN(600)) * time.Second)
			claimed := due.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			ended := claimed.Add(time.Duration(5+rng.IntN(120)) * time.Second)
			hour := ended.Truncate(time.Hour)
			pickup := int32(insights.PickupBucket(claimed.Sub(due)))
			a := &Attempt{ID: AttemptID(uid, int32(i)), Delivery: DeliveryRef{UID: uid, Namespace: sd.Namespace, Name: "parcel-" + uid},
				Campaign: sd.Namespace + "/" + campaign, Shard: "s0", Number: int32(i), Region: region, Agent: agent,
				State: StateCompleted, Rank: StateCompleted.rank(), Fence: 1, Due: due, LastSeq: 3,
				To: fmt.Sprintf("+1555%07d", rng.IntN(10000000)), ClaimedAt: &claimed, EndedAt: &ended, EndHour: &hour,
				PickupB: &pickup, CreatedAt: created, UpdatedAt: ended}
			switch r := rng.IntN(10); {
			case r == 0:
				a.State, a.Rank, a.Result = StateFailed, StateFailed.rank(), v1alpha1.CallRejected
			case r < 3:
				a.Result = v1alpha1.CallNoAnswer
			case r < 4:
				a.Result = v1alpha1.CallBusy
			default:
				a.Result = v1alpha1.CallCompleted
				a.DurationSec = int32(10 + rng.IntN(170))
				b := int32(insights.DurationBucket(a.DurationSec))
				a.DurB = &b
				a.DialedAt = &claimed
			}
			if a.Result == v1alpha1.CallCompleted && i < calls {
				a.Result, a.DurationSec, a.DurB = v1alpha1.CallNoAnswer, 0, nil
			}
			attempts = append(attempts, a)
			add(a.rollupKey(), attemptCounts(a, 1))
			last, end = a, ended
			n++
		}
		phase := v1alpha1.DeliveryUnreachable
		switch {
		case last.State == StateFailed:
			phase = v1alpha1.DeliveryFailed
		case last.Result == v1alpha1.CallCompleted:
			phase = []v1alpha1.DeliveryPhase{v1alpha1.DeliveryConfirmed, v1alpha1.DeliveryConfirmed, v1alpha1.DeliveryConfirmed,
				v1alpha1.DeliveryRescheduleRequested, v1alpha1.DeliveryInstructionsRecorded, v1alpha1.DeliveryOptedOut}[rng.IntN(6)]
		}
		endHour := end.Truncate(time.Hour)
		window := end.Add(2 * time.Hour).Truncate(time.Hour)
		deliveries = append(deliveries, deliveryDoc{UID: uid, Namespace: sd.Namespace, Name: "parcel-" + uid, Campaign: campaign,
			Phase: string(phase), Region: region, Agent: agent, WindowStart: window, WindowEnd: window.Add(2 * time.Hour),
			WindowDay: windowDay(window), Attempts: int32(calls), LastResult: string(last.Result), CreatedAt: created, LK: listLK(sd.Namespace, created),
			UpdatedAt: end, EndKind: EndKind(phase), EndHour: &endHour})
		add(RollupKey{Namespace: sd.Namespace, Campaign: campaign, Region: region, Agent: agent, Hour: endHour}, endCounts(EndKind(phase), 1))
		hours[created.Truncate(time.Hour)] = true
		if err := write(false); err != nil {
			return err
		}
	}
	if err := write(true); err != nil {
		return err
	}
	for h := range hours {
		if err := s.noteListHour(ctx, sd.Namespace, h); err != nil {
			return err
		}
	}
	series := seriesSums{}
	for k, c := range buckets {
		if err := s.incRollup(ctx, k, *c, true); err != nil {
			return err
		}
		series.addBucket(k, *c)
	}
	for k, sum := range series {
		if err := s.incSeries(ctx, k, sum, true); err != nil {
			return err
		}
	}
	s.tally.mu.Lock()
	s.tally.touch(sd.Namespace)
	s.tally.mu.Unlock()
	return nil
}

// DropRollups deletes the rollups and series of namespace ("" for all): for tests and
// tools, before a Rebuild.
func (s *Store) DropRollups(ctx context.Context, namespace string) error {
	filter := bson.D{}
	if namespace != "" {
		filter = bson.D{{Key: "ns", Value: namespace}}
	}
	for _, c := range []*mongo.Collection{s.rollups, s.series} {
		if _, err := c.DeleteMany(ctx, filter); err != nil {
			return fmt.Errorf("store: drop %s: %w", c.Name(), err)
		}
	}
	return nil
}
