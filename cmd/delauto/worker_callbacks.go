package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twilio/twilio-go"

	"github.com/delauto/delauto/internal/campaignfile"
	"github.com/delauto/delauto/workers/callbacks"
	"github.com/delauto/delauto/workers/relay"
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
	// Twilio is the campaign account's REST client; Tokens returns the
	// auth tokens whose webhook signatures are accepted now.
	Twilio *twilio.RestClient
	Tokens func() []string
	// CallbackURL overrides the campaign's public callback base URL (empty:
	// the campaign's).
	CallbackURL string
	// RelaySecret is the relay webhook's signing key (relay.SecretSource).
	RelaySecret func() ([]byte, error)
	// RelayAllowPrivate lets the relay webhook use http and private
	// addresses (--relay-allow-private).
	RelayAllowPrivate bool
	// Registry receives the server's metrics (served on /metrics).
	Registry prometheus.Registerer
	// Logger is the worker's.
	Logger *slog.Logger
}

// newCallbacks builds the Twilio callbacks server of the worker
// (workers/callbacks): the handler served on the callbacks port, and its
// background work (the journal drainer writing status callbacks to the call
// log, and the relay sender telling agents), run while the worker runs.
func newCallbacks(deps callbackDeps) (http.Handler, func(context.Context) error, error) {
	srv, err := callbacks.New(callbacks.Config{
		Campaign:  deps.Campaign,
		Store:     deps.Store,
		Redis:     deps.Redis,
		Tokens:    deps.Tokens,
		Twilio:    deps.Twilio,
		PublicURL: deps.CallbackURL,
		Consumer:  deps.Name,
		Logger:    deps.Logger,
		Relay: relay.Config{
			// The campaign's relay webhook key, mounted by the operator.
			Secret:       deps.RelaySecret,
			AllowPrivate: deps.RelayAllowPrivate,
		},
	})
	if err != nil {
		return nil, nil, err
	}
	if deps.Registry != nil {
		if err := srv.RegisterMetrics(deps.Registry); err != nil {
			return nil, nil, err
		}
	}
	return srv.Handler(), srv.Run, nil
}
