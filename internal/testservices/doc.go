// Package testservices starts the real services DelAuto's tests run against,
// on free loopback ports, and tears them down when the tests end:
//
//   - a Kubernetes API (envtest with the kube-apiserver and etcd that
//     `make tools` builds into bin/), with the CRDs of config/crd/bases;
//   - redis-server (Debian's package), alone or as a 3-master Redis Cluster;
//   - a MongoDB-wire server: FerretDB on a throwaway PostgreSQL cluster.
//
// A test package asks for what it needs from TestMain:
//
//	var env *testservices.Env
//
//	func TestMain(m *testing.M) {
//		testservices.Main(m, testservices.Want{Redis: true, Mongo: true}, &env)
//	}
//
// A service that cannot start fails the whole package with the reason; no
// test is skipped.
package testservices
