// Command etcd is etcd's server, built from go.etcd.io/etcd/server/v3 at the
// version Kubernetes 1.37.2 pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
