package insights

import (
	"math"
	"time"
)

// DurationBounds are the upper bounds (seconds, inclusive) of the call
// duration histogram's buckets; a last bucket holds everything longer.
var DurationBounds = []float64{5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600}

// PickupBounds are the upper bounds (milliseconds, inclusive) of the pickup
// latency histogram's buckets (due time to the worker's claim before dialing);
// a last bucket holds everything later.
var PickupBounds = []float64{5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}

// DurationBuckets and PickupBuckets are how many buckets each histogram has.
var (
	DurationBuckets = len(DurationBounds) + 1
	PickupBuckets   = len(PickupBounds) + 1
)

// Bucket returns the index of the bucket of bounds that v falls in.
func Bucket(bounds []float64, v float64) int {
	for i, b := range bounds {
		if v <= b {
			return i
		}
	}
	return len(bounds)
}

// DurationBucket is the duration histogram's bucket of a call of sec seconds.
func DurationBucket(sec int32) int { return Bucket(DurationBounds, float64(sec)) }

// PickupBucket is the pickup histogram's bucket of a latency of d (negative
// latencies, a claim ahead of the due time, count as 0).
func PickupBucket(d time.Duration) int {
	return Bucket(PickupBounds, math.Max(0, float64(d)/float64(time.Millisecond)))
}

// Counts are the counters of one rollup bucket (or a sum of buckets).
// Deliveries are counted in the hour they ended, calls in the hour the
// call ended.
type Counts struct {
	// Deliveries that ended with an outcome of calling (not cancelled),
	// and how: Confirmed + Reschedule + Instructions + OptOut + Failed +
	// Unreachable = Deliveries.
	Deliveries   int64
	Confirmed    int64
	Reschedule   int64
	Instructions int64
	OptOut       int64
	Failed       int64
	Unreachable  int64
	// Cancelled Deliveries (spec.cancelled), not among Deliveries.
	Cancelled int64
	// Calls are the calls placed that ended; Answered those a person
	// answered (result completed); Retries the calls that were not a
	// Delivery's first attempt; Rejected the dials Twilio refused (no call).
	Calls    int64
	Answered int64
	Retries  int64
	Rejected int64
	// DurSum and DurCount are the sum (seconds) and number of the call
	// durations reported (calls with a duration above 0).
	DurSum   int64
	DurCount int64
	// DurHist and PickupHist are the histograms (see DurationBounds and
	// PickupBounds); PickupHist counts calls with a known claim time.
	DurHist    []int64
	PickupHist []int64
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Deliveries += o.Deliveries
	c.Confirmed += o.Confirmed
	c.Reschedule += o.Reschedule
	c.Instructions += o.Instructions
	c.OptOut += o.OptOut
	c.Failed += o.Failed
	c.Unreachable += o.Unreachable
	c.Cancelled += o.Cancelled
	c.Calls += o.Calls
	c.Answered += o.Answered
	c.Retries += o.Retries
	c.Rejected += o.Rejected
	c.DurSum += o.DurSum
	c.DurCount += o.DurCount
	c.DurHist = addHist(c.DurHist, o.DurHist, DurationBuckets)
	c.PickupHist = addHist(c.PickupHist, o.PickupHist, PickupBuckets)
}

func addHist(a, b []int64, n int) []int64 {
	if len(b) == 0 {
		return a
	}
	if len(a) < n {
		a = append(a, make([]int64, n-len(a))...)
	}
	for i, v := range b {
		if i < len(a) {
			a[i] += v
		}
	}
	return a
}

// IsZero reports whether nothing was counted.
func (c Counts) IsZero() bool {
	if c.Deliveries != 0 || c.Cancelled != 0 || c.Calls != 0 || c.Answered != 0 || c.Rejected != 0 || c.Retries != 0 || c.DurCount != 0 || c.DurSum != 0 {
		return false
	}
	for _, h := range [][]int64{c.DurHist, c.PickupHist} {
		for _, v := range h {
			if v != 0 {
				return false
			}
		}
	}
	return true
}

// Overview computes the figures of c.
func (c Counts) Overview() Overview {
	o := Overview{Deliveries: c.Deliveries, Calls: c.Calls, Answered: c.Answered}
	if c.Deliveries > 0 {
		d := float64(c.Deliveries)
		o.ConfirmationRate = float64(c.Confirmed) / d
		o.RescheduleRate = float64(c.Reschedule) / d
		o.InstructionsRate = float64(c.Instructions) / d
		o.OptOutRate = float64(c.OptOut) / d
		o.FailureRate = float64(c.Failed) / d
		o.UnreachableRate = float64(c.Unreachable) / d
		o.RetriesPerDelivery = float64(c.Retries) / d
	}
	if c.DurCount > 0 {
		o.AvgCallDurationSec = float64(c.DurSum) / float64(c.DurCount)
	}
	o.P95CallDurationSec = Quantile(DurationBounds, c.DurHist, 0.95)
	o.PickupLatencyP95Ms = Quantile(PickupBounds, c.PickupHist, 0.95)
	return o
}

// Quantile estimates the q-quantile (0..1) of a histogram with the given
// bucket upper bounds, interpolating linearly inside the bucket it falls
// in (the first bucket starts at 0); in the last, open bucket it answers
// that bucket's lower bound. An empty histogram gives 0.
func Quantile(bounds []float64, hist []int64, q float64) float64 {
	var total int64
	for _, v := range hist {
		total += v
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum float64
	for i, v := range hist {
		if v <= 0 {
			continue
		}
		if cum+float64(v) >= rank {
			if i >= len(bounds) {
				return bounds[len(bounds)-1]
			}
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			return lo + (bounds[i]-lo)*(rank-cum)/float64(v)
		}
		cum += float64(v)
	}
	return bounds[len(bounds)-1]
}
