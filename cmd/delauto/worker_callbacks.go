package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twilio/twilio-go"

	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/workers/store"
)

// callbackDeps is what the worker process has for its Twilio callbacks
// server (port 8080).
type callbackDeps struct {
	// Name is the worker's name (the pod name).
	Name string
	// Campaign is the campaign in force, followed as its file changes.
	Campaign *campaignfile.Watcher
	// Store is the call log; Redis the worker's Redis.
	Store *store.Store
	Redis redis.UniversalClient
	// Twilio is the campaign account's REST client; AccountSID and
	// AuthToken its credentials (the token checks webhook signatures).
	Twilio     *twilio.RestClient
	AccountSID string
	AuthToken  string
	// CallbackURL overrides the campaign's public callback base URL (empty:
	// the campaign's).
	CallbackURL string
	// Registry receives the server's metrics (served on /metrics).
	Registry prometheus.Registerer
	// Logger is the worker's.
	Logger *slog.Logger
}

// newCallbacks builds the Twilio callbacks server of the worker: the
// handler served on the callbacks port, and the background work to run
// while the worker runs (nil when none). Until the callbacks server
// (workers/callbacks) is wired in here, the worker answers 404 on that port.
func newCallbacks(deps callbackDeps) (http.Handler, func(context.Context) error, error) {
	_ = deps
	return nil, nil, nil
}
