package main

import (
	"context"
	"time"

	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/workers/store"
)

// seed fills the call log with n ended attempts of namespace over the last
// week, with their delivery summaries and rollups (store.SeedInsights), and
// returns the call log as the API's Source.
func seed(ctx context.Context, st *store.Store, namespace string, n int) (insights.Source, error) {
	to := time.Now().UTC()
	err := st.SeedInsights(ctx, store.Seed{Namespace: namespace, Attempts: n, From: to.Add(-7 * 24 * time.Hour), To: to, RandSeed: 1})
	return st, err
}
