package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/delauto/delauto/internal/testservices"
)

// tableRows are PostgreSQL's row counters of one table under FerretDB (one
// collection of the call log): rows inserted, updated, deleted, and the
// table's scans (each find, update or delete reads it once).
type tableRows struct{ ins, upd, del, scans int64 }

// callLogRows reads the row counters of every table under FerretDB, by
// collection (FerretDB names a collection's table "<collection>_<hash>").
// They count what the call log cost in PostgreSQL, whatever wrote it;
// PostgreSQL publishes them up to 10 s late.
func callLogRows(m *testservices.Mongo) (map[string]tableRows, error) {
	out, err := m.SQL(`SELECT regexp_replace(relname, '_[0-9a-f]{8}$', ''), n_tup_ins, n_tup_upd, n_tup_del,
		coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables`)
	if err != nil {
		return nil, err
	}
	rows := map[string]tableRows{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 5 {
			continue
		}
		var n [4]int64
		for i := range n {
			if n[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return nil, fmt.Errorf("pg_stat_user_tables: %q: %w", line, err)
			}
		}
		r := rows[f[0]]
		r.ins, r.upd, r.del, r.scans = r.ins+n[0], r.upd+n[1], r.del+n[2], r.scans+n[3]
		rows[f[0]] = r
	}
	return rows, nil
}

// rowsPerDelivery is the change of the counters from before to after, per
// Delivery of n, the busiest collections first: "attempts ins 1.0 upd 4.2
// del 0.0 scans 9.1".
func rowsPerDelivery(before, after map[string]tableRows, n int) []string {
	type entry struct {
		name string
		d    tableRows
	}
	var es []entry
	for name, a := range after {
		b := before[name]
		d := tableRows{a.ins - b.ins, a.upd - b.upd, a.del - b.del, a.scans - b.scans}
		if d.ins+d.upd+d.del+d.scans > 0 {
			es = append(es, entry{name, d})
		}
	}
	sort.Slice(es, func(i, j int) bool {
		wi, wj := es[i].d.ins+es[i].d.upd+es[i].d.del, es[j].d.ins+es[j].d.upd+es[j].d.del
		return wi > wj || wi == wj && es[i].name < es[j].name
	})
	per := func(v int64) float64 { return float64(v) / float64(max(n, 1)) }
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s ins %.1f upd %.1f del %.1f scans %.1f", e.name, per(e.d.ins), per(e.d.upd), per(e.d.del), per(e.d.scans)))
	}
	return out
}
