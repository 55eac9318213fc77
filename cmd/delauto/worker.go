package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/delauto/delauto/workers/worker"
)

// parseWorkerConfig reads `delauto worker`'s flags (environment variables,
// the operator's worker contract, give their defaults) and validates them.
func parseWorkerConfig(args []string, getenv func(string) string) (*worker.Config, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	c := &worker.Config{}
	c.RegisterFlags(fs, getenv)
	if err := parseModeFlags(fs, args, "worker", "Places the calls of one campaign's shards (see workers/worker)."); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// runWorker is `delauto worker`: the first SIGTERM or SIGINT drains the
// worker and exits, a second aborts the attempts in flight.
func runWorker(args []string) error {
	cfg, err := parseWorkerConfig(args, os.Getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Level()})).With("worker", cfg.Name)
	slog.SetDefault(log)
	redis.SetLogger(redisLogger{log.With("component", "redis-client")})

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var aborted sync.Once
	abort := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			log.Info("signal: draining, then exiting", "signal", s.String())
			stop()
		case <-ctx.Done():
			return
		}
		s := <-sigs
		log.Warn("second signal: aborting the attempts in flight", "signal", s.String())
		aborted.Do(func() { close(abort) })
	}()
	return worker.Run(ctx, cfg, log, abort)
}

// redisLogger sends go-redis's own messages (reconnects) to the JSON log.
type redisLogger struct{ log *slog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.log.Warn(fmt.Sprintf(format, v...))
}
