// Command demo runs DelAuto the way a user installs it, on this machine
// (`make demo`): a local cluster whose pods are real processes, Redis,
// FerretDB, the Twilio simulator, the Helm chart, config/samples and two
// campaigns with a few hundred generated Deliveries. It redraws a live table
// until every generated Delivery is done, prints a summary and how to look
// around, and keeps everything running until Ctrl-C, which stops all it
// started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/delauto/delauto/internal/localcluster"
	"github.com/delauto/delauto/internal/twiliosim"
)

// campaigns are the generated campaigns: namespace, name, regions.
var campaigns = []struct {
	ns, name string
	regions  []string
}{
	{"team-a", "evening", []string{"north", "south", "west"}},
	{"team-b", "express", []string{"central"}},
}

func main() {
	n := flag.Int("deliveries", 300, "generated Deliveries (beside config/samples)")
	dir := flag.String("dir", "", "run folder: the cluster, the pods' files and every log (default: a new folder in the temp dir)")
	exit := flag.Bool("exit", false, "exit once every generated Delivery is done instead of waiting for Ctrl-C")
	flag.Parse()
	if err := run(*n, *dir, !*exit); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(n int, dir string, wait bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "delauto-demo-"); err != nil {
			return err
		}
	}
	bin := filepath.Join(repo, "bin")
	began := time.Now()
	fmt.Println(">> DelAuto demo; the run's folder is", dir)
	sys, err := localcluster.StartSystem(ctx, localcluster.SystemOptions{
		Repo: repo, Bin: bin, Dir: dir, OperatorReplicas: 2,
		Sim:      twiliosim.Options{TimeScale: 0.05, Mix: twiliosim.DefaultMix(), Seed: 1, CPS: 50},
		Progress: os.Stdout,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println(">> stopping everything the demo started ...")
		sys.Stop()
		fmt.Println(">> stopped; nothing is left running. Logs stay in", dir)
	}()

	fmt.Printf(">> applying two campaigns and %d Deliveries due now, and config/samples (due later)\n", n)
	var yaml strings.Builder
	total := 0
	for _, c := range campaigns {
		yaml.WriteString(sys.Campaign(c.ns, c.name, "00:00", "23:59", 2, c.regions) + "\n")
	}
	start := time.Now().Add(3 * time.Minute)
	for i := range n {
		c := campaigns[i%len(campaigns)]
		yaml.WriteString(localcluster.Delivery(c.ns, c.name, fmt.Sprintf("parcel-%04d", i), c.regions[i%len(c.regions)],
			fmt.Sprintf("+1415556%04d", i), fmt.Sprintf("+1628556%04d", i%20), start))
		total++
	}
	if err := sys.Apply(ctx, yaml.String()); err != nil {
		return err
	}
	for _, c := range campaigns {
		if err := sys.RouteCallbacks(c.ns, c.name); err != nil {
			return err
		}
	}
	if err := applySamples(ctx, sys, bin, repo); err != nil {
		fmt.Println(">> config/samples not applied:", err)
	}
	promURL, err := startPrometheus(ctx, sys, bin, repo, dir)
	if err != nil {
		fmt.Println(">> Prometheus not started:", err)
	}

	last := live(ctx, sys, campaignNamespaces(), total)
	fmt.Println()
	fmt.Print(last.summary(sys))
	fmt.Printf("wall time: %s\n\n", time.Since(began).Round(time.Second))
	kubectl := filepath.Join(bin, "kubectl")
	fmt.Printf("Look around (the cluster keeps running):\n  export KUBECONFIG=%s\n  %s get dlv,cc -A\n  %s describe cc -n %s %s\n  %s get pods -A -o wide\n  logs of every pod: %s\n",
		sys.Cluster.Kubeconfig, kubectl, kubectl, campaigns[0].ns, campaigns[0].name, kubectl, filepath.Join(dir, "pods", "logs"))
	if promURL != "" {
		fmt.Printf("  Prometheus (HTTP API and rules; key queries):\n")
		for _, q := range keyQueries {
			fmt.Printf("    %s/api/v1/query?query=%s\n", promURL, q)
		}
	}
	if wait && ctx.Err() == nil {
		fmt.Println("\nCtrl-C stops everything.")
		<-ctx.Done()
	}
	return nil
}

func campaignNamespaces() []string {
	var out []string
	for _, c := range campaigns {
		out = append(out, c.ns)
	}
	return out
}

// applySamples applies config/samples into the default namespace with the
// Secrets they name.
func applySamples(ctx context.Context, sys *localcluster.System, bin, repo string) error {
	if err := sys.Apply(ctx, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: delauto-stores, namespace: default}
stringData: {REDIS_URL: %q, MONGO_URI: %q}
---
apiVersion: v1
kind: Secret
metadata: {name: dispatch-webhook, namespace: default}
stringData: {secret: a-demo-signing-key}
`, sys.Services.Redis.URL(), sys.Services.Mongo.URI)); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), "--kubeconfig", sys.Cluster.Kubeconfig, "apply", "-k", filepath.Join(repo, "config", "samples"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// live redraws the table in place until every generated Delivery is done or
// ctx ends.
func live(ctx context.Context, sys *localcluster.System, namespaces []string, total int) snapshot {
	var prev snapshot
	lines := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s, err := take(ctx, sys, namespaces, prev)
		if err == nil {
			out := s.table(total)
			if lines > 0 {
				fmt.Printf("\033[%dA\033[J", lines)
			}
			fmt.Print(out)
			lines = strings.Count(out, "\n")
			prev = s
			if s.done >= total {
				return s
			}
		}
		select {
		case <-ctx.Done():
			return prev
		case <-tick.C:
		}
	}
}
