// Command promql-names parses PromQL expressions with Prometheus' own parser
// and prints, for each, the metric names it selects or its parse error. The
// chart test uses it to check that every expression of the dashboard and
// the alert rules parses and names only metrics DelAuto registers, without
// Prometheus' dependencies entering the product's go.mod.
//
// Input (stdin): a JSON list of expressions. Output (stdout): a JSON list of
// {"expr": ..., "metrics": [...], "error": "..."} in the same order.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics"`
	Error   string   `json:"error,omitempty"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql-names: stdin must be a JSON list of expressions:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(exprs))
	p := parser.NewParser(parser.Options{})
	for _, e := range exprs {
		r := result{Expr: e, Metrics: []string{}}
		expr, err := p.ParseExpr(e)
		if err != nil {
			r.Error = err.Error()
			out = append(out, r)
			continue
		}
		seen := map[string]bool{}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName {
					if m.Type != labels.MatchEqual {
						r.Error = "a metric name matcher other than = cannot be checked: " + m.String()
					}
					name = m.Value
				}
			}
			if name == "" {
				r.Error = "a selector without a metric name: " + vs.String()
			} else if !seen[name] {
				seen[name] = true
				r.Metrics = append(r.Metrics, name)
			}
			return nil
		})
		sort.Strings(r.Metrics)
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "promql-names:", err)
		os.Exit(1)
	}
}
