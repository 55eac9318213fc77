package main

import (
	"context"
	"errors"

	"github.com/delauto/delauto/internal/insights"
	"github.com/delauto/delauto/workers/store"
)

// seed fills the call log with n attempts of namespace and their rollups,
// and returns the call log as the API's Source.
func seed(ctx context.Context, st *store.Store, namespace string, n int) (insights.Source, error) {
	src, ok := any(st).(insights.Source)
	if !ok {
		return nil, errors.New("the call log does not answer insights queries yet")
	}
	return src, errors.New("no seed function for the insights call log yet")
}
