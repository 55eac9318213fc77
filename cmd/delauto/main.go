// Command delauto is DelAuto's single binary. Its first argument picks the
// mode:
//
//	delauto api        the delivery insights read API (lists, analytics)
//	delauto operator   the Kubernetes operator (controller-runtime manager)
//	delauto worker     place the calls of a campaign's shards and serve
//	                   its Twilio webhooks (run by the operator's worker
//	                   Deployments)
//	delauto erase      erase a person's data (delauto erase --phone +49...)
//	delauto insights   insights maintenance (delauto insights rebuild)
//	delauto version    print the version
//
// Each mode documents its flags with -h.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// modes are the subcommands; each parses its own flags from args.
var modes = map[string]struct {
	summary string
	run     func(args []string) error
}{
	"api":      {"serve the delivery insights read API (lists, analytics)", runAPI},
	"erase":    {"erase a person's data: delauto erase --phone +4915112345678", runErase},
	"insights": {"rebuild the analytics rollups from the call log: delauto insights rebuild", runInsights},
	"operator": {"run the Kubernetes operator", runOperator},
	"version":  {"print the version", func([]string) error { fmt.Println(version); return nil }},
	"worker":   {"place the calls of a campaign's shards", runWorker},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: delauto <mode> [flags]\n\nmodes:")
	names := make([]string, 0, len(modes))
	for n := range modes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, modes[n].summary)
	}
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	m, ok := modes[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "delauto: unknown mode %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := m.run(os.Args[2:]); errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "delauto %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
