package main

import (
	"flag"
	"fmt"
	"net"
	"strings"

	"github.com/delauto/delauto/internal/stores"
)

// parseModeFlags parses a mode's flags with a usage line and summary, and
// refuses arguments left over.
func parseModeFlags(fs *flag.FlagSet, args []string, mode, summary string) error {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: delauto %s [flags]\n\n%s Flags:\n", mode, summary)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}

// serverAddrs reports, through bad, listen addresses that are not
// host:port and a service address equal to the operations address.
func serverAddrs(bad func(string, ...any), httpAddr, opsAddr string) {
	for _, a := range []struct{ name, v string }{{"--http-addr", httpAddr}, {"--ops-addr", opsAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			bad("%s %q is not host:port (or :port)", a.name, a.v)
		}
	}
	if httpAddr == opsAddr {
		bad("--http-addr and --ops-addr are both %s", httpAddr)
	}
}

// storeProblems reports, through bad, each problem of the store settings.
func storeProblems(bad func(string, ...any), conn *stores.Settings) {
	if err := conn.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			bad("%s", line)
		}
	}
}
