# The commands of this project. `make help` lists them.
SHELL := bash
TOOLS := hack/tools.sh
STACK := hack/local-stack.sh
KUBE_BIN := $(CURDIR)/.tools/kubernetes-$(shell sed -n 's/^KUBERNETES_VERSION=//p' hack/versions.env)
# The pinned kubectl, built with the control plane, comes first.
export PATH := $(KUBE_BIN):$(PATH)

.PHONY: help build test tools local-up local-down
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

build: ## build the operator and the webapp (release)
	cargo build --release --locked -p flaskmongo-operator -p flaskmongo-webapp

test: tools ## fmt, clippy and every test, against a local stack started and stopped here
	hack/test.sh

tools: ## build the local stack's binaries from pinned Go modules (once per pin)
	$(TOOLS)

local-up: tools ## start the local stack (Kubernetes control plane, simulated nodes, FerretDB); writes .local/env
	$(STACK) up

local-down: ## stop the local stack and remove its state
	$(STACK) down

.PHONY: bench bench-webapp bench-operator chaos demo
bench: bench-webapp bench-operator ## every benchmark; results in BENCHMARKS.md and target/bench/

bench-operator: tools ## operator latency, convergence at scale, footprint (BENCHMARKS.md)
	hack/bench-operator.sh

chaos: tools ## the long fault tests: operator kills, API server and FerretDB outages, churn
	hack/chaos.sh

bench-webapp: tools ## benchmark the webapp against Flask, gunicorn and a driver-only ceiling
	hack/bench-webapp.sh

demo: tools ## local control plane + operator + sample app + the /data API with curl
	hack/demo.sh
