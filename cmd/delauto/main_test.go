package main

import (
	"os"
	"testing"

	"github.com/delauto/delauto/internal/testservices"
)

var env *testservices.Env

// childEnv makes the test binary run main() instead of the tests: the tests
// start `delauto worker` as a real child process this way.
const childEnv = "DELAUTO_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	testservices.Main(m, testservices.Want{Redis: true, Mongo: true, Kube: true}, &env)
}
