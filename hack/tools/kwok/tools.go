//go:build tools

// Package tools pins kwok and kwokctl (sigs.k8s.io/kwok), which start the
// local cluster of `make demo` and `make test-e2e` from binaries: fake nodes
// whose pods the DelAuto pod runner turns into real processes.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
	_ "sigs.k8s.io/kwok/cmd/kwokctl"
)
