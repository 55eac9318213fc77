package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/delauto/delauto/internal/stores"
)

// runInsights is `delauto insights`.
func runInsights(args []string) error { return insightsCmd(context.Background(), args, os.Stdout) }

// insightsCmd runs an insights maintenance command, printing progress to out.
func insightsCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "rebuild" {
		return fmt.Errorf("usage: delauto insights rebuild [--namespace NS] [flags]")
	}
	fs := flag.NewFlagSet("insights rebuild", flag.ContinueOnError)
	namespace := fs.String("namespace", "", "rebuild the rollups of this namespace only (default: every namespace)")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	var conn stores.Settings
	conn.Register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: delauto insights rebuild [--namespace NS] [flags]

Recomputes the insights rollups (the counters behind the read API's
analytics and CallCampaign.status.summary) from the call log: the ended
attempts and the Delivery summaries. It repairs rollups that were lost or
damaged; outcomes recorded while it runs may be miscounted in their hour,
so run it when calls are quiet, or again afterwards.
Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var errs []string
	if fs.NArg() > 0 {
		errs = append(errs, "unexpected arguments: "+strings.Join(fs.Args(), " "))
	}
	if *namespace != "" {
		if msgs := validation.IsDNS1123Label(*namespace); len(msgs) > 0 {
			errs = append(errs, "--namespace: "+strings.Join(msgs, "; "))
		}
	}
	if err := conn.ValidateMongo(); err != nil {
		errs = append(errs, strings.Split(err.Error(), "\n")...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid arguments:\n  %s", strings.Join(errs, "\n  "))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := conn.Store(ctx)
	if err != nil {
		return err
	}
	defer st.Close(context.Background())
	start := time.Now()
	rep, err := st.Rebuild(ctx, *namespace, func(format string, args ...any) {
		fmt.Fprintf(out, "%6.1fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "rebuilt: %d calls and %d delivery ends in %d buckets and %d series documents, %d stale buckets removed, %d calls without an end hour not counted, %d delivery summaries given their list hour\n",
		rep.Calls, rep.Deliveries, rep.Buckets, rep.Series, rep.Removed, rep.Unbucketed, rep.ListKeys)
	return nil
}
