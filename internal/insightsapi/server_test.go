package insightsapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/delauto/delauto/internal/insights"
)

const base = "/api/v1/namespaces/" + teamA

// TestAccessTheKubernetesWay checks who gets in: a ServiceAccount token
// whose Role lets it list deliveries in teamA reads teamA; no token and a
// bad token are 401, teamB is 403; the refusals are logged without the
// token.
func TestAccessTheKubernetesWay(t *testing.T) {
	h := newHarness(t, listSource{n: 3})
	if r := h.get(base + "/analytics/overview"); r.code != http.StatusOK {
		t.Fatalf("own namespace: %d %s", r.code, r.body)
	}
	r := h.get(base+"/deliveries", "Authorization", "")
	if r.code != http.StatusUnauthorized || r.errorOf(t).Reason != ReasonUnauthorized || r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("no token: %d %s %v", r.code, r.body, r.header)
	}
	bad := "eyJhbGciOiJSUzI1NiJ9.not-a-token-the-apiserver-issued.c2ln"
	if r := h.get(base+"/deliveries", "Authorization", "Bearer "+bad); r.code != http.StatusUnauthorized {
		t.Errorf("bad token: %d %s", r.code, r.body)
	}
	r = h.get("/api/v1/namespaces/" + teamB + "/deliveries")
	if r.code != http.StatusForbidden || r.errorOf(t).Reason != ReasonForbidden {
		t.Errorf("other namespace: %d %s", r.code, r.body)
	}
	if !strings.Contains(string(r.body), "system:serviceaccount:"+teamA+":dashboard") {
		t.Errorf("the 403 does not say who was refused: %s", r.body)
	}
	logs := h.logs()
	for _, secret := range []string{h.token, bad, tokenHash(h.token)} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds a token or its cache key:\n%s", logs)
		}
	}
	if got := strings.Count(logs, "request refused"); got != 3 {
		t.Errorf("%d refusals logged, want 3:\n%s", got, logs)
	}
	if !strings.Contains(logs, "namespace="+teamB) || !strings.Contains(logs, "code=403") {
		t.Errorf("the 403 is not logged with its namespace and code:\n%s", logs)
	}
	if got := testutil.ToFloat64(h.srv.metrics.refusals.WithLabelValues("401")); got != 2 {
		t.Errorf("401 refusals counted %v, want 2", got)
	}
}

// TestAuthAnswersAreCachedByTokenHash checks that a second request within
// the TTL asks the apiserver nothing, and that the caches hold hashes of
// tokens, never tokens.
func TestAuthAnswersAreCachedByTokenHash(t *testing.T) {
	cs, token := reader(t)
	a, err := NewKubeAuth(cs, AuthOptions{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := a.Authorize(context.Background(), token, teamA); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Authorize(context.Background(), token, teamB); err == nil {
		t.Fatal("teamB allowed")
	}
	miss := func(review string) float64 { return testutil.ToFloat64(a.lookups.WithLabelValues(review, cacheMiss)) }
	hit := func(review string) float64 { return testutil.ToFloat64(a.lookups.WithLabelValues(review, cacheHit)) }
	if miss("tokenreview") != 1 || hit("tokenreview") != 3 {
		t.Errorf("TokenReview: %v misses, %v hits; want 1 and 3", miss("tokenreview"), hit("tokenreview"))
	}
	if miss("subjectaccessreview") != 2 || hit("subjectaccessreview") != 2 {
		t.Errorf("SubjectAccessReview: %v misses, %v hits; want 2 (one per namespace) and 2", miss("subjectaccessreview"), hit("subjectaccessreview"))
	}
	for _, c := range []map[string]bool{keysOf(a.tokens), keysOf(a.access)} {
		for k := range c {
			if strings.Contains(k, token) || !strings.HasPrefix(k, tokenHash(token)) {
				t.Errorf("cache key %q is not the token's hash", k)
			}
		}
	}
}

func keysOf[V any](c *ttlCache[V]) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for k := range c.m {
		out[k] = true
	}
	return out
}

// TestTTLCacheIsBounded checks expiry and the size bound.
func TestTTLCacheIsBounded(t *testing.T) {
	c := newTTLCache[int](10*time.Second, 16)
	now := time.Unix(0, 0)
	c.now = func() time.Time { return now }
	c.put("a", 1)
	if v, ok := c.get("a"); !ok || v != 1 {
		t.Fatal("fresh entry missing")
	}
	now = now.Add(10 * time.Second)
	if _, ok := c.get("a"); ok {
		t.Fatal("entry outlived its TTL")
	}
	for i := range 1000 {
		c.put(string(rune('A'+i%26))+strings.Repeat("x", i), i)
		if c.len() > 16 {
			t.Fatalf("%d entries, bound 16", c.len())
		}
	}
}

// TestBadParametersAre400NamingThem checks every refusal of a parameter.
func TestBadParametersAre400NamingThem(t *testing.T) {
	h := newHarness(t, listSource{n: 3})
	for _, c := range []struct{ path, param string }{
		{"/analytics/overview?from=yesterday", "from"},
		{"/analytics/overview?to=2026-13-01T00:00:00Z", "to"},
		{"/analytics/overview?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "from"},
		{"/analytics/overview?from=2026-11-01T00:00:00Z&to=2026-11-01T00:00:00Z", "from"},
		{"/analytics/overview?from=2025-01-01T00:00:00Z&to=2026-11-01T00:00:00Z", "from"},
		{"/analytics/overview?campaign=Not_A_Name", "campaign"},
		{"/analytics/overview?by=region", "by"},
		{"/analytics/overview?from=2026-11-01T00:00:00Z&from=2026-11-02T00:00:00Z", "from"},
		{"/analytics/breakdown", "by"},
		{"/analytics/breakdown?by=planet", "by"},
		{"/analytics/timeseries?step=90m", "step"},
		{"/analytics/timeseries?step=fortnight", "step"},
		{"/analytics/timeseries?step=0h", "step"},
		{"/analytics/timeseries?step=1h&from=2026-08-01T00:00:00Z&to=2026-11-01T00:00:00Z", "step"},
		{"/deliveries?limit=0", "limit"},
		{"/deliveries?limit=501", "limit"},
		{"/deliveries?limit=ten", "limit"},
		{"/deliveries?continue=%21%21not-issued", "continue"},
		{"/deliveries?phase=Lost", "phase"},
		{"/deliveries?windowDay=30.11.2026", "windowDay"},
		{"/deliveries?region=" + url.QueryEscape("a b"), "region"},
		{"/deliveries?from=2026-11-01T00:00:00Z", "from"},
		{"/deliveries?campaign=" + strings.Repeat("a", 300), "campaign"},
	} {
		r := h.get(base + c.path)
		if r.code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", c.path, r.code, r.body)
			continue
		}
		e := r.errorOf(t)
		if e.Reason != ReasonBadParameter || e.Parameter != c.param || !strings.HasPrefix(e.Message, c.param+": ") {
			t.Errorf("%s: %+v, want parameter %s named", c.path, e, c.param)
		}
	}
	if r := h.get("/api/v1/namespaces/Team_A/deliveries"); r.code != http.StatusBadRequest || r.errorOf(t).Parameter != "namespace" {
		t.Errorf("bad namespace: %d %s", r.code, r.body)
	}
	for _, ok := range []string{
		"/analytics/timeseries?step=24h&from=2026-08-01T00:00:00Z&to=2026-11-01T00:00:00Z",
		"/analytics/breakdown?by=hour&campaign=berlin",
		"/deliveries?limit=500&phase=Confirmed&windowDay=2026-11-30&region=berlin-mitte&agent=agent-7&campaign=berlin",
	} {
		if r := h.get(base + ok); r.code != http.StatusOK {
			t.Errorf("%s: %d %s", ok, r.code, r.body)
		}
	}
}

// TestRangesAreRoundedToHours checks the defaults and rounding of from and
// to, which make "now" queries of one hour share a cache entry.
func TestRangesAreRoundedToHours(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 42, 7, 0, time.UTC)
	h := newHarness(t, listSource{}, func(c *Config) { c.Now = func() time.Time { return now } })
	var a OverviewAnswer
	decode(t, h.get(base+"/analytics/overview"), &a)
	if want := time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC); !a.Range.To.Equal(want) || !a.Range.From.Equal(want.Add(-24*time.Hour)) {
		t.Errorf("default range %v..%v", a.Range.From, a.Range.To)
	}
	decode(t, h.get(base+"/analytics/overview?from=2026-11-29T08:30:00%2B01:00&to=2026-11-29T12:00:01Z&campaign=berlin"), &a)
	if a.Range.From != time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC) || a.Range.To != time.Date(2026, 11, 29, 13, 0, 0, 0, time.UTC) || a.Range.Campaign != "berlin" {
		t.Errorf("range %+v", a.Range)
	}
	var ts TimeseriesAnswer
	decode(t, h.get(base+"/analytics/timeseries?step=6h"), &ts)
	if ts.Step != "6h" || len(ts.Points) != 4 {
		t.Errorf("timeseries step %s, %d points; want 6h and 4", ts.Step, len(ts.Points))
	}
}

func decode(t *testing.T, r response, v any) {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatal(err)
	}
}

// TestRoutesAndMethods checks the JSON 404 and 405.
func TestRoutesAndMethods(t *testing.T) {
	h := newHarness(t, listSource{})
	if r := h.get("/api/v1/namespaces/" + teamA + "/nothing"); r.code != http.StatusNotFound || r.errorOf(t).Reason != ReasonNotFound {
		t.Errorf("unknown route: %d %s", r.code, r.body)
	}
	resp, err := http.Post(h.url+base+"/deliveries", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
		t.Errorf("POST: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestOpenAPICoversEveryRoute checks that /openapi.json is served without a
// token and documents every route, parameter and refusal.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	h := newHarness(t, listSource{})
	r := h.get("/openapi.json", "Authorization", "")
	if r.code != http.StatusOK {
		t.Fatalf("%d %s", r.code, r.body)
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Parameters []struct{ Name, In string }
			Responses  map[string]any
		}
		Components struct{ Schemas map[string]any }
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	for _, rt := range routes {
		op, ok := doc.Paths[rt.pattern]["get"]
		if !ok {
			t.Errorf("%s missing", rt.pattern)
			continue
		}
		var names []string
		for _, p := range op.Parameters {
			names = append(names, p.Name)
		}
		for _, p := range append([]param{{name: "namespace"}}, rt.params...) {
			if !slices.Contains(names, p.name) {
				t.Errorf("%s: parameter %s not documented", rt.pattern, p.name)
			}
		}
		for _, code := range []string{"200", "304", "400", "401", "403", "503"} {
			if op.Responses[code] == nil {
				t.Errorf("%s: response %s not documented", rt.pattern, code)
			}
		}
		if _, ok := doc.Components.Schemas[rt.schema]; !ok {
			t.Errorf("%s: schema %s missing", rt.pattern, rt.schema)
		}
	}
	// Every $ref names a schema of the document.
	for _, ref := range strings.Split(string(r.body), `"$ref": "#/components/schemas/`)[1:] {
		name, _, _ := strings.Cut(ref, `"`)
		if doc.Components.Schemas[name] == nil {
			t.Errorf("$ref to missing schema %s", name)
		}
	}
	// The overview schema has every field the answer has.
	ov, _ := json.Marshal(insights.Overview{})
	var fields map[string]any
	_ = json.Unmarshal(ov, &fields)
	props := doc.Components.Schemas["Overview"].(map[string]any)["properties"].(map[string]any)
	for f := range fields {
		if props[f] == nil {
			t.Errorf("Overview schema lacks %s", f)
		}
	}
}
