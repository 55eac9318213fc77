// Command demo runs DelAuto the way a user installs it, on this machine
// (`make demo`): a local cluster whose pods are real processes, Redis,
// FerretDB, the Twilio simulator, the Helm chart, config/samples and two
// campaigns with a few hundred generated Deliveries. It redraws a live table
// while the workers scale up for the calls due, until every generated
// Delivery and the German sample Delivery are done and the workers scaled
// back down; then it prints a summary, the TwiML of the German call and how
// to look around, and keeps everything running until Ctrl-C, which stops all
// it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
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
	exit := flag.Bool("exit", false, "exit once every generated Delivery is done and the workers scaled down, instead of waiting for Ctrl-C")
	scaleDown := flag.Duration("scale-down-delay", 30*time.Second, "the generated campaigns' spec.workers.scaleDownDelay (the API's default, 5m, outlasts the demo)")
	spread := flag.Duration("spread", 2*time.Minute, "the generated Deliveries' calls fall due evenly over this time from the start")
	flag.Parse()
	if err := run(*n, *dir, !*exit, *scaleDown, *spread); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(n int, dir string, wait bool, scaleDown, spread time.Duration) error {
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
		// Calls run in real time: the simulator scales their time limit
		// with everything else while webhooks take real time, so a faster
		// scale on a busy machine ends calls early (see hack/e2e).
		Sim:      twiliosim.Options{TimeScale: 1, Mix: twiliosim.DefaultMix(), Seed: 1, CPS: 50},
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

	fmt.Printf(">> applying two campaigns and %d Deliveries whose calls fall due over the next %s (scaleDownDelay %s, so the workers scale down while you watch; the default is 5m)\n", n, spread, scaleDown)
	var yaml strings.Builder
	total := 0
	for _, c := range campaigns {
		// The simulator's webhooks reach the campaign's callback Service
		// from its first call on.
		if err := sys.RouteCallbacks(c.ns, c.name); err != nil {
			return err
		}
		yaml.WriteString(sys.Campaign(localcluster.CampaignOptions{Namespace: c.ns, Name: c.name, HoursStart: "00:00", HoursEnd: "23:59",
			MaxAttempts: 2, Regions: c.regions, ScaleDownDelay: scaleDown}))
	}
	// The campaigns call 5m (their lead time) before a window opens: the
	// windows open from 5m on, spread over the spread, so the calls fall due
	// from now on over it and the workers scale up ahead of them.
	first := time.Now().Add(5 * time.Minute)
	for i := range n {
		c := campaigns[i%len(campaigns)]
		start := first.Add(spread * time.Duration(i) / time.Duration(max(n, 1)))
		yaml.WriteString(localcluster.Delivery(c.ns, c.name, fmt.Sprintf("parcel-%04d", i), c.regions[i%len(c.regions)],
			fmt.Sprintf("+1415556%04d", i), fmt.Sprintf("+1628556%04d", i%20), start))
		total++
	}
	if err := sys.Apply(ctx, yaml.String()); err != nil {
		return err
	}
	fmt.Printf(">> applying config/samples with the simulator's Twilio credentials; the German %s/%s is due now and answers %q\n", sampleNamespace, sampleDelivery, sampleAnswer)
	german, err := applySamples(ctx, sys, bin, repo)
	if err != nil {
		fmt.Println(">> config/samples not applied:", err)
	} else if !german.due {
		fmt.Printf(">> %s: %s; the demo does not wait for it\n", sampleDelivery, german.why)
	}
	promURL, err := startPrometheus(ctx, sys, bin, repo, dir)
	if err != nil {
		fmt.Println(">> Prometheus not started:", err)
	}

	v := view{namespaces: campaignNamespaces(), total: total, scaleDownDelay: scaleDown, german: german}
	last := v.live(ctx, sys)
	fmt.Println()
	fmt.Print(last.summary(sys))
	if german != nil && german.due {
		fmt.Print(germanReport(ctx, sys, german, dir))
	}
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

// germanReport says how the German sample's call went and shows the TwiML
// the simulator got for it.
func germanReport(ctx context.Context, sys *localcluster.System, s *sample, dir string) string {
	var b strings.Builder
	d, err := sampleStatus(ctx, sys)
	if err != nil {
		return fmt.Sprintf("German sample %s: %v\n", sampleDelivery, err)
	}
	fmt.Fprintf(&b, "German sample %s/%s (%s, language %s): %s", d.Namespace, d.Name, d.Spec.Recipient.Name, d.Spec.Recipient.Language, d.Status.Phase)
	if r := d.Status.Response; r != nil {
		fmt.Fprintf(&b, ", answered %s (speech %q)", r.Choice, r.Speech)
	}
	b.WriteString("\n")
	twiml, file, err := sampleTwiML(sys, s, dir)
	if err != nil {
		fmt.Fprintf(&b, "  no TwiML: %v\n", err)
		return b.String()
	}
	fmt.Fprintf(&b, "  the TwiML the simulator got for it (also in %s):\n", file)
	for _, l := range strings.Split(strings.TrimRight(twiml, "\n"), "\n") {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	return b.String()
}
