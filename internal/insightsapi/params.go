package insightsapi

import (
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/insights"
)

// Limits of the query parameters.
const (
	// DefaultLimit is the page size of the delivery list without limit.
	DefaultLimit = 100
	// MaxLimit is the largest page of the delivery list.
	MaxLimit = 500
	// DefaultMaxRange is the longest from..to by default (Config.MaxRange).
	DefaultMaxRange = 92 * 24 * time.Hour
	// DefaultWindow is from..to when neither is given: the last 24 hours.
	DefaultWindow = 24 * time.Hour
	// MaxPoints is the most steps a time series may have.
	MaxPoints = 1000
	// maxParamLen bounds every parameter's value.
	maxParamLen = 256
)

// phases are the Delivery phases the list filters by.
var phases = []string{
	string(v1.DeliveryPending), string(v1.DeliveryScheduled), string(v1.DeliveryCalling),
	string(v1.DeliveryConfirmed), string(v1.DeliveryRescheduleRequested), string(v1.DeliveryInstructionsRecorded),
	string(v1.DeliveryUnreachable), string(v1.DeliveryOptedOut), string(v1.DeliveryCancelled), string(v1.DeliveryFailed),
}

// dimensions are the values of breakdown's by.
var dimensions = []string{string(insights.ByRegion), string(insights.ByAgent), string(insights.ByCampaign), string(insights.ByHour)}

// query is a request's parameters, parsed and normalized.
type query struct {
	namespace  string
	deliveries insights.DeliveryQuery
	rng        insights.Range
	by         insights.Dimension
	step       time.Duration
}

// param is one query parameter of a route: how it reads into a query, and
// what /openapi.json says of it.
type param struct {
	name    string
	desc    string
	schema  map[string]any
	example string
	// read parses a present, non-empty value.
	read func(s *Server, v string, q *query) *Error
}

// labelValue is a free-text filter's form: a Kubernetes name or label value.
var labelValue = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,252}[A-Za-z0-9])?$`)

func textParam(name, desc string, set func(q *query, v string)) param {
	return param{name: name, desc: desc, schema: map[string]any{"type": "string", "maxLength": 253, "pattern": labelValue.String()},
		read: func(_ *Server, v string, q *query) *Error {
			if !labelValue.MatchString(v) {
				return badParam(name, "%q is not a name (letters, digits, '.', '_', '-', at most 253)", v)
			}
			set(q, v)
			return nil
		}}
}

// timeParam is an RFC 3339 time.
func timeParam(name, desc, example string, set func(q *query, t time.Time)) param {
	return param{name: name, desc: desc, schema: map[string]any{"type": "string", "format": "date-time"}, example: example,
		read: func(_ *Server, v string, q *query) *Error {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return badParam(name, "%q is not an RFC 3339 time such as %s", v, example)
			}
			set(q, t)
			return nil
		}}
}

var (
	campaignParam = param{name: "campaign", desc: "only this CallCampaign (its name in the namespace)",
		schema: map[string]any{"type": "string", "maxLength": 253, "pattern": `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`},
		read: func(_ *Server, v string, q *query) *Error {
			if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
				return badParam("campaign", "%q is not a CallCampaign name: %s", v, strings.Join(errs, "; "))
			}
			q.rng.Campaign, q.deliveries.Campaign = v, v
			return nil
		}}
	fromParam = timeParam("from", "start of the range (RFC 3339), rounded down to the hour; default: 24 hours before to",
		"2026-11-01T00:00:00Z", func(q *query, t time.Time) { q.rng.From = t })
	toParam = timeParam("to", "end of the range (RFC 3339, exclusive), rounded up to the hour; default: the end of the current hour",
		"2026-11-02T00:00:00Z", func(q *query, t time.Time) { q.rng.To = t })
	rangeParams = []param{fromParam, toParam, campaignParam}

	deliveryParams = []param{
		campaignParam,
		{name: "phase", desc: "only Deliveries in this phase", schema: map[string]any{"type": "string", "enum": phases},
			read: func(_ *Server, v string, q *query) *Error {
				if !slices.Contains(phases, v) {
					return badParam("phase", "%q is not a Delivery phase (%s)", v, strings.Join(phases, ", "))
				}
				q.deliveries.Phase = v
				return nil
			}},
		textParam("region", "only Deliveries of this region", func(q *query, v string) { q.deliveries.Region = v }),
		textParam("agent", "only Deliveries relayed to this agent", func(q *query, v string) { q.deliveries.Agent = v }),
		{name: "windowDay", desc: "only Deliveries whose window starts on this day (YYYY-MM-DD, UTC)",
			schema: map[string]any{"type": "string", "format": "date"}, example: "2026-11-30",
			read: func(_ *Server, v string, q *query) *Error {
				if _, err := time.Parse(time.DateOnly, v); err != nil {
					return badParam("windowDay", "%q is not a day such as 2026-11-30", v)
				}
				q.deliveries.WindowDay = v
				return nil
			}},
		{name: "limit", desc: "page size", schema: map[string]any{"type": "integer", "minimum": 1, "maximum": MaxLimit, "default": DefaultLimit},
			read: func(_ *Server, v string, q *query) *Error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > MaxLimit {
					return badParam("limit", "%q is not a whole number from 1 to %d", v, MaxLimit)
				}
				q.deliveries.Limit = n
				return nil
			}},
		{name: "continue", desc: "the continue token of the previous page, unchanged, with the same filters",
			schema: map[string]any{"type": "string", "maxLength": maxParamLen},
			read: func(_ *Server, v string, q *query) *Error {
				q.deliveries.Continue = v
				return nil
			}},
	}

	byParam = param{name: "by", desc: "what to group by (hour: the hour of arrival, RFC 3339)", schema: map[string]any{"type": "string", "enum": dimensions},
		read: func(_ *Server, v string, q *query) *Error {
			if !slices.Contains(dimensions, v) {
				return badParam("by", "%q is not one of %s", v, strings.Join(dimensions, ", "))
			}
			q.by = insights.Dimension(v)
			return nil
		}}
	stepParam = param{name: "step", desc: "length of a step: a whole number of hours as a Go duration (1h, 6h, 24h); default 1h; at most " + strconv.Itoa(MaxPoints) + " steps",
		schema: map[string]any{"type": "string", "pattern": `^[0-9]+h$`, "default": "1h"}, example: "6h",
		read: func(_ *Server, v string, q *query) *Error {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Hour || d%time.Hour != 0 {
				return badParam("step", "%q is not a whole number of hours such as 1h or 24h", v)
			}
			q.step = d
			return nil
		}}
)

// parse reads the parameters of r's query into q: every parameter must be
// one of the route's, given once, non-empty and at most maxParamLen long.
func (s *Server) parse(rt *route, values url.Values, q *query) *Error {
	for name, vs := range values {
		i := slices.IndexFunc(rt.params, func(p param) bool { return p.name == name })
		if i < 0 {
			return badParam(name, "unknown parameter (this route takes %s)", rt.paramNames())
		}
		if len(vs) != 1 {
			return badParam(name, "given %d times", len(vs))
		}
		if len(vs[0]) > maxParamLen {
			return badParam(name, "longer than %d characters", maxParamLen)
		}
	}
	// In the route's order, so the first bad parameter named is stable.
	for _, p := range rt.params {
		v := values.Get(p.name)
		if v == "" {
			continue
		}
		if e := p.read(s, v, q); e != nil {
			return e
		}
	}
	return s.defaults(rt, values, q)
}

// defaults fills what was not given and checks what depends on several
// parameters.
func (s *Server) defaults(rt *route, values url.Values, q *query) *Error {
	if rt.deliveries {
		if q.deliveries.Limit == 0 {
			q.deliveries.Limit = DefaultLimit
		}
		return nil
	}
	if q.rng.To.IsZero() {
		q.rng.To = s.now()
	}
	q.rng.To = ceilHour(q.rng.To)
	if q.rng.From.IsZero() {
		q.rng.From = q.rng.To.Add(-DefaultWindow)
	}
	q.rng.From = q.rng.From.UTC().Truncate(time.Hour)
	if !q.rng.From.Before(q.rng.To) {
		name := "from"
		if values.Get("from") == "" {
			name = "to"
		}
		return badParam(name, "from (%s) must be before to (%s) once rounded to hours", q.rng.From.Format(time.RFC3339), q.rng.To.Format(time.RFC3339))
	}
	if d := q.rng.To.Sub(q.rng.From); d > s.maxRange {
		return badParam("from", "the range from..to is %s, longer than the most, %s", hours(d), hours(s.maxRange))
	}
	if rt.op == "breakdown" && q.by == "" {
		return badParam("by", "required: one of %s", strings.Join(dimensions, ", "))
	}
	if rt.op == "timeseries" {
		if q.step == 0 {
			q.step = time.Hour
		}
		if n := q.rng.To.Sub(q.rng.From) / q.step; n > MaxPoints {
			return badParam("step", "%s over %s makes %d steps, more than %d", hours(q.step), hours(q.rng.To.Sub(q.rng.From)), n, MaxPoints)
		}
	}
	return nil
}

// key is the normalized query: the same answer has the same key however
// its parameters were spelled or ordered.
func (q *query) key(op string) string {
	var b strings.Builder
	b.WriteString(op)
	add := func(k, v string) {
		if v != "" {
			b.WriteString("&" + k + "=" + url.QueryEscape(v))
		}
	}
	if op == "deliveries" {
		d := q.deliveries
		add("campaign", d.Campaign)
		add("phase", d.Phase)
		add("region", d.Region)
		add("agent", d.Agent)
		add("windowDay", d.WindowDay)
		add("limit", strconv.Itoa(d.Limit))
		add("continue", d.Continue)
		return b.String()
	}
	add("from", q.rng.From.UTC().Format(time.RFC3339))
	add("to", q.rng.To.UTC().Format(time.RFC3339))
	add("campaign", q.rng.Campaign)
	add("by", string(q.by))
	if q.step > 0 {
		add("step", hours(q.step))
	}
	return b.String()
}

// ceilHour rounds t up to a whole hour, in UTC.
func ceilHour(t time.Time) time.Time {
	t = t.UTC()
	if f := t.Truncate(time.Hour); !f.Equal(t) {
		return f.Add(time.Hour)
	}
	return t
}

// hours spells a whole number of hours as 6h.
func hours(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}
