# DelAuto developer commands. `make help` lists them.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
export PATH := $(LOCALBIN):$(PATH)

# Pinned tool versions. The Kubernetes and FerretDB pins live in the wrapper
# modules under hack/tools/ (their go.mod files).
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION ?= v3.22.0

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
HELM ?= $(LOCALBIN)/helm
K8S_BINS := $(LOCALBIN)/kube-apiserver $(LOCALBIN)/etcd $(LOCALBIN)/kubectl
E2E_BINS := $(LOCALBIN)/kube-controller-manager $(LOCALBIN)/kube-scheduler
KWOK_BINS := $(LOCALBIN)/kwok $(LOCALBIN)/kwokctl
FERRETDB ?= $(LOCALBIN)/ferretdb
PROM_BINS := $(LOCALBIN)/promtool $(LOCALBIN)/prometheus $(LOCALBIN)/promql-names

# envtest finds kube-apiserver and etcd here.
export KUBEBUILDER_ASSETS ?= $(LOCALBIN)
# The test services package finds FerretDB here.
export DELAUTO_FERRETDB ?= $(FERRETDB)

GO_TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

##@ Tools

.PHONY: tools
tools: $(K8S_BINS) $(FERRETDB) $(PROM_BINS) $(CONTROLLER_GEN) $(HELM) redis ## Build every local tool into bin/ (reused when built).

.PHONY: redis
redis: ## Install Debian's redis-server when missing.
	@hack/install-redis.sh

$(LOCALBIN):
	@mkdir -p $(LOCALBIN)

$(K8S_BINS) &: hack/tools/k8s/go.mod hack/tools/k8s/go.sum hack/tools/k8s/etcd/main.go | $(LOCALBIN)
	@hack/build-tool.sh hack/tools/k8s "kube-apiserver, etcd and kubectl (Kubernetes 1.37.2)" k8s.io/kubernetes/cmd/kube-apiserver ./etcd k8s.io/kubernetes/cmd/kubectl

$(E2E_BINS) &: hack/tools/k8s/go.mod hack/tools/k8s/go.sum | $(LOCALBIN)
	@hack/build-tool.sh hack/tools/k8s "kube-controller-manager and kube-scheduler (Kubernetes 1.37.2)" k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler

$(FERRETDB): hack/tools/ferretdb/go.mod hack/tools/ferretdb/go.sum hack/tools/ferretdb/main.go | $(LOCALBIN)
	@hack/build-tool.sh hack/tools/ferretdb "FerretDB v1.24.2" .

$(PROM_BINS) &: hack/tools/prometheus/go.mod hack/tools/prometheus/go.sum hack/tools/prometheus/promql-names/main.go | $(LOCALBIN)
	@hack/build-tool.sh hack/tools/prometheus "promtool, prometheus and promql-names (Prometheus v0.316.0; a cold build compiles every service-discovery SDK and takes long)" github.com/prometheus/prometheus/cmd/promtool github.com/prometheus/prometheus/cmd/prometheus ./promql-names

.PHONY: prometheus-tools
prometheus-tools: $(PROM_BINS) ## Build promtool, prometheus and promql-names into bin/.

$(CONTROLLER_GEN): $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
	@ln -sf controller-gen-$(CONTROLLER_TOOLS_VERSION) $@
$(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION): | $(LOCALBIN)
	@hack/install-tool.sh $@ sigs.k8s.io/controller-tools/cmd/controller-gen $(CONTROLLER_TOOLS_VERSION)

$(HELM): $(LOCALBIN)/helm-$(HELM_VERSION)
	@ln -sf helm-$(HELM_VERSION) $@
$(LOCALBIN)/helm-$(HELM_VERSION): | $(LOCALBIN)
	@hack/install-tool.sh $@ helm.sh/helm/v3/cmd/helm $(HELM_VERSION)

$(KWOK_BINS) &: hack/tools/kwok/go.mod hack/tools/kwok/go.sum hack/tools/kwok/tools.go | $(LOCALBIN)
	@hack/build-tool.sh hack/tools/kwok "kwok and kwokctl v0.8.0 (fake nodes for the local cluster)" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl

.PHONY: e2e-tools
e2e-tools: tools $(E2E_BINS) $(KWOK_BINS) ## Also build kube-controller-manager, kube-scheduler, kwok and kwokctl (the local cluster).

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRDs and RBAC under config/.
	$(CONTROLLER_GEN) rbac:roleName=operator crd:maxDescLen=400 paths="./api/...;./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@hack/sync-chart-crds.sh

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet every package (the end-to-end test too).
	go vet -tags e2e ./...

.PHONY: lint
lint: vet $(HELM) ## gofmt check, go vet and helm lint.
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n $$bad ]]; then echo "gofmt would change:"; echo "$$bad"; exit 1; fi
	$(HELM) lint charts/delauto

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when committed generated files are stale.
	@hack/verify-generated.sh

.PHONY: test
test: e2e-tools lint verify-generated check-rules ## The full check: tools (the local cluster's too), lint, generated files current, alert rules, every test, a short fuzz of every fuzz target (make fuzz), the end-to-end run, the chaos run's short profile.
	go test $(GO_TEST_FLAGS) ./...
	$(MAKE) fuzz FUZZTIME=$(TEST_FUZZTIME)
	$(MAKE) test-e2e
	$(MAKE) test-chaos

.PHONY: check-rules
check-rules: $(PROM_BINS) ## promtool check and unit-test the chart's alert rules.
	$(LOCALBIN)/promtool check rules charts/delauto/files/prometheus-rules.yaml
	$(LOCALBIN)/promtool test rules charts/delauto/tests/prometheus-rules-test.yaml


.PHONY: demo
demo: e2e-tools redis ## Start the whole system locally, run a few hundred Deliveries with a live table, keep it up until Ctrl-C (DELIVERIES=300).
	go run ./hack/demo -deliveries $(or $(DELIVERIES),300) $(DEMO_FLAGS)

.PHONY: test-e2e
test-e2e: e2e-tools redis ## The whole system on a local cluster (the last step of `make test`): chart-installed operator (2 replicas), workers as real processes, 200 Deliveries.
	go test -tags e2e -count=1 -timeout 30m -v ./hack/e2e

# TEST_FUZZTIME is how long `make test` fuzzes each fuzz target (make fuzz).
TEST_FUZZTIME ?= 5s

# CHAOS_PROFILE (default, ci or load), CHAOS_SEED, CHAOS_DELIVERIES and
# CHAOS_DURATION are read by hack/chaos; CHAOS_FLAGS are passed as they are.
.PHONY: chaos
chaos: e2e-tools redis ## The whole system under faults on a seeded schedule: 5,000 Deliveries over 10 min (CHAOS_SEED=n replays a run; CHAOS_PROFILE=ci is make test's short run).
	go run ./hack/chaos $(CHAOS_FLAGS)

# LOAD_RATES (e.g. 2,4,8) are the load profile's steps, Deliveries a second.
.PHONY: load
load: e2e-tools redis ## The whole system's ceiling: no faults, Deliveries due at once at a rising rate (a minute each) until the pickup p99 exceeds 1 s; names the bottleneck (docs/operations.md).
	go run ./hack/chaos -profile load $(CHAOS_FLAGS)

.PHONY: test-chaos
test-chaos: e2e-tools redis ## The chaos run's short profile, the last step of `make test`: 500 Deliveries over 2 min under every fault kind, a new seed each run (printed; CHAOS_SEED=n replays it).
	go run ./hack/chaos -profile ci $(CHAOS_FLAGS)

FUZZTIME ?= 5m

.PHONY: fuzz
fuzz: check-fuzz-targets fuzz-callbacks fuzz-language fuzz-parsers ## Fuzz everything that parses outside input: the webhooks, the answer matcher and the parsers (fuzz-parsers), FUZZTIME each (default 5m).

.PHONY: check-fuzz-targets
check-fuzz-targets: ## Fail when a fuzz target of the tree is not run by make fuzz.
	@hack/check-fuzz-targets.sh

# PARSER_FUZZ_TARGETS are the fuzz targets of fuzz-parsers, as package:Target
# (set it to run some of them).
PARSER_FUZZ_TARGETS = \
	./internal/campaignfile:FuzzParse \
	./internal/outcome:FuzzConsume \
	./internal/callurls:FuzzParse \
	./internal/callurls:FuzzRoundTrip \
	./internal/phone:FuzzValidate \
	./internal/phone:FuzzMask \
	./internal/phone:FuzzScrub \
	./internal/script:FuzzRender \
	./internal/schedule:FuzzPlan \
	./workers/relay:FuzzSMSText
.PHONY: fuzz-parsers
fuzz-parsers: $(FERRETDB) redis ## Fuzz the parsers of outside input (campaign file, outcome events, callback URLs, phone numbers, greetings, schedules, the agent's SMS), FUZZTIME each (default 5m).
	@set -e; for t in $(PARSER_FUZZ_TARGETS); do \
		hack/fuzz.sh $${t%%:*} $${t##*:} $(FUZZTIME); \
	done
.PHONY: fuzz-callbacks
fuzz-callbacks: $(FERRETDB) redis ## Fuzz the Twilio webhook parsing, state transitions and handler, FUZZTIME each (default 5m).
	hack/fuzz.sh ./workers/callbacks FuzzWebhookForms $(FUZZTIME)
	hack/fuzz.sh ./workers/callbacks FuzzStatusTransitions $(FUZZTIME)
	hack/fuzz.sh ./workers/callbacks FuzzWebhookHandler $(FUZZTIME) -parallel 1

.PHONY: fuzz-language
fuzz-language: ## Fuzz the matcher of spoken menu answers in every built-in language, FUZZTIME (default 5m).
	hack/fuzz.sh ./internal/language FuzzMatch $(FUZZTIME)

##@ Benchmarks (commands, not timed tests; results in docs/benchmarks.md)

.PHONY: bench-operator
bench-operator: tools ## 10,000 Deliveries over 20 campaigns: time to schedule all, operator RSS, API writes per Delivery.
	go run ./hack/bench/operator $(BENCH_OPERATOR_FLAGS)

.PHONY: bench-autoscale
bench-autoscale: tools ## Autoscaler: spike (100, 1,000, 10,000 due) to replicas patched, vs KEDA+HPA defaults; flaps in a replayed day.
	go run ./hack/bench/autoscale $(BENCH_AUTOSCALE_FLAGS)

.PHONY: bench-queue
bench-queue: tools ## Queue drain, pickup latency and lateness vs asynq and BullMQ.
	hack/bench/queue/run.sh

.PHONY: bench-callbacks
bench-callbacks: $(FERRETDB) redis ## Signed status callbacks at rising rates against the callback server on Redis and FerretDB.
	go run ./hack/bench/callbacks $(BENCH_CALLBACKS_FLAGS)

.PHONY: bench-worker
bench-worker: $(FERRETDB) redis ## Worker pipeline calls/s vs the store's own ceiling on FerretDB, duplicates, lost (N=20000 C=32; e.g. make bench-worker N=2000).
	go run ./hack/bench/worker -n $(or $(N),20000) -c $(or $(C),32) $(BENCH_WORKER_FLAGS)

.PHONY: bench-api
bench-api: $(K8S_BINS) $(FERRETDB) redis ## Insights API on 100,000 seeded attempts: cache-miss p95, artillery (seed profile, ensure p95 < 500 ms, errors < 0.1 %), vegeta ceiling at p95 <= 50 ms (e.g. make bench-api N=2000 BENCH_API_FLAGS="-warmup 5s -load 10s -stress 5s -rates 200,400 -step 3s -miss-requests 100").
	@cd hack/bench/api && { [ -x node_modules/.bin/artillery ] || npm ci --no-audit --no-fund --ignore-scripts --loglevel=error; }
	go run ./hack/bench/api -n $(or $(N),100000) $(BENCH_API_FLAGS)

.PHONY: bench-store
bench-store: $(FERRETDB) ## Call log store ceiling on FerretDB: per-attempt dial sequence, claims, callbacks.
	go test ./workers/store -run '^$$' -bench '^Benchmark([^D]|D[^u])' -benchtime 2000x -count 5 -timeout 30m
	go test ./workers/store -run '^$$' -bench '^BenchmarkDueBefore$$' -benchtime 50x -count 5 -timeout 30m
