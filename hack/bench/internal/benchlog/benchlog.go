// Package benchlog is how the benchmarks report on standard error: a
// progress line stamped with the time of day, and the error that ends a run.
package benchlog

import (
	"fmt"
	"os"
	"time"
)

// Logf writes one progress line, prefixed with the time of day.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Fail reports err, prefixed with the benchmark's name, and exits 1.
func Fail(name string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(1)
}
