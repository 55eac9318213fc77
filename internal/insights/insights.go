// Package insights holds the delivery analytics DelAuto serves its users:
// per-namespace rollups of call outcomes kept up to date as outcomes
// arrive, the queries answered from them, and the paged delivery list.
//
// The types here are the contract between the rollup store and the read
// API (`delauto api`); they are what the API encodes as JSON.
package insights

import (
	"context"
	"errors"
	"time"
)

// Dimension is what a breakdown groups by.
type Dimension string

// The dimensions a breakdown can group by.
const (
	ByRegion   Dimension = "region"
	ByAgent    Dimension = "agent"
	ByCampaign Dimension = "campaign"
	ByHour     Dimension = "hour"
)

// Range selects outcomes by the hour they arrived in, [From, To), and
// optionally by campaign (its name in the namespace).
type Range struct {
	From     time.Time
	To       time.Time
	Campaign string
}

// Overview is the figures of a set of outcomes. Rates are fractions of
// Deliveries (0..1); a rate over no Deliveries is 0.
type Overview struct {
	Deliveries         int64   `json:"deliveries"`
	Calls              int64   `json:"calls"`
	Answered           int64   `json:"answered"`
	ConfirmationRate   float64 `json:"confirmationRate"`
	RescheduleRate     float64 `json:"rescheduleRate"`
	InstructionsRate   float64 `json:"instructionsRate"`
	OptOutRate         float64 `json:"optOutRate"`
	FailureRate        float64 `json:"failureRate"`
	UnreachableRate    float64 `json:"unreachableRate"`
	RetriesPerDelivery float64 `json:"retriesPerDelivery"`
	AvgCallDurationSec float64 `json:"avgCallDurationSeconds"`
	P95CallDurationSec float64 `json:"p95CallDurationSeconds"`
	PickupLatencyP95Ms float64 `json:"pickupLatencyP95Ms"`
}

// Group is one group of a breakdown: Key is the region, agent, campaign
// or hour (RFC 3339) it holds.
type Group struct {
	Key string `json:"key"`
	Overview
}

// Point is one step of a time series, starting at Start.
type Point struct {
	Start time.Time `json:"start"`
	Overview
}

// DeliveryQuery selects and pages the delivery list. Empty fields do not
// filter. WindowDay is a calendar day (YYYY-MM-DD, UTC) the delivery
// window starts on. Continue is the opaque token of the previous page.
type DeliveryQuery struct {
	Campaign  string
	Phase     string
	Region    string
	Agent     string
	WindowDay string
	Limit     int
	Continue  string
}

// DeliverySummary is the projection of a Delivery a list shows. It never
// holds the recipient's phone number.
type DeliverySummary struct {
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	Campaign    string    `json:"campaign"`
	Phase       string    `json:"phase"`
	Region      string    `json:"region,omitempty"`
	Agent       string    `json:"agent,omitempty"`
	WindowStart time.Time `json:"windowStart"`
	WindowEnd   time.Time `json:"windowEnd"`
	Attempts    int32     `json:"attempts"`
	LastResult  string    `json:"lastResult,omitempty"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// DeliveryPage is one page of the list; Continue is empty on the last.
type DeliveryPage struct {
	Items    []DeliverySummary `json:"items"`
	Continue string            `json:"continue,omitempty"`
}

// ErrBadContinue is returned for a continue token that was not issued
// for this query.
var ErrBadContinue = errors.New("continue token is not valid for this query")

// Source answers the read API's queries for one namespace at a time.
type Source interface {
	// Deliveries returns one page of the namespace's delivery list.
	Deliveries(ctx context.Context, namespace string, q DeliveryQuery) (DeliveryPage, error)
	// Overview sums the namespace's outcomes in r.
	Overview(ctx context.Context, namespace string, r Range) (Overview, error)
	// Breakdown groups the namespace's outcomes in r by dim, largest first.
	Breakdown(ctx context.Context, namespace string, dim Dimension, r Range) ([]Group, error)
	// Timeseries cuts r into steps of step (a whole number of hours).
	Timeseries(ctx context.Context, namespace string, step time.Duration, r Range) ([]Point, error)
}

// GenerationKey is the Redis key whose value changes whenever an outcome of
// namespace is recorded; the API's cache keys include it, so an outcome
// invalidates every cached answer of its namespace.
func GenerationKey(namespace string) string {
	return "delauto:insights:gen:" + namespace
}
