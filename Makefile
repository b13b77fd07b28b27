# The commands of this project. `make help` lists them.
SHELL := bash
TOOLS := hack/tools.sh
STACK := hack/local-stack.sh
KUBE_BIN := $(shell source hack/versions.env && echo "$$TOOLS_DIR/kubernetes-$$KUBERNETES_VERSION")
# The pinned kubectl, built with the control plane, comes first.
export PATH := $(KUBE_BIN):$(PATH)

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
OPERATOR_IMAGE := flaskmongo/operator:$(VERSION)
WEBAPP_IMAGE := flaskmongo/webapp:$(VERSION)
SAMPLE := config/samples/flaskmongoapp.yaml

# `make local-up NODE=real`: one real node (containerd, kubelet, kube-proxy) instead of kwok's.
NODE ?= simulated
export NODE

.PHONY: help build test tools images e2e local-up local-down run manifests docker-build minikube-deploy undeploy
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

build: ## build the operator and the webapp (release)
	cargo build --release --locked -p flaskmongo-operator -p flaskmongo-webapp

test: tools ## fmt, clippy and every test, against a local stack started and stopped here
	hack/test.sh

tools: ## build the local stack's binaries from pinned Go modules (once per pin)
	$(TOOLS)

images: ## the operator, webapp, MongoDB stand-in and pause images as OCI archives (target/images/)
	$(TOOLS) ferretdb
	hack/images.py build

e2e: tools images ## on a fresh real-node stack: the user's path from kubectl apply to curl on the NodePort
	hack/e2e.sh

local-up: tools $(if $(filter real,$(NODE)),images) ## start the local stack (control plane, FerretDB, simulated nodes or NODE=real); writes .local/env
	$(STACK) up

local-down: ## stop the local stack and remove its state
	$(STACK) down

.PHONY: bench bench-webapp bench-operator bench-node chaos demo
bench: bench-webapp bench-operator bench-node ## every benchmark; results in BENCHMARKS.md and target/bench/

bench-operator: tools ## operator latency, convergence at scale, footprint (BENCHMARKS.md)
	hack/bench-operator.sh

bench-node: tools images ## on a real node: the webapp behind its NodePort vs a plain process, the autoscaler (root)
	hack/bench-node.sh

chaos: tools ## the long fault tests: operator kills, API server and FerretDB outages, churn
	hack/chaos.sh

bench-webapp: tools ## benchmark the webapp against Flask, gunicorn and a driver-only ceiling
	hack/bench-webapp.sh

demo: tools ## local control plane + operator + sample app + the /data API with curl
	hack/demo.sh

run: ## run the operator on this machine against the current kubeconfig
	cargo run -p flaskmongo-operator -- run --metrics-addr 127.0.0.1:8080

manifests: ## regenerate config/crd/ from the Rust types
	cargo run -q -p flaskmongo-operator -- crd > config/crd/flaskmongo.dev_flaskmongoapps.yaml

docker-build: ## build both images with Docker
	docker build -f Dockerfile.operator -t $(OPERATOR_IMAGE) --build-arg VERSION=$(VERSION) .
	docker build -f Dockerfile.webapp -t $(WEBAPP_IMAGE) --build-arg VERSION=$(VERSION) .

minikube-deploy: ## build the images inside Minikube, install the operator, run the sample
	minikube image build -t $(OPERATOR_IMAGE) -f Dockerfile.operator .
	minikube image build -t $(WEBAPP_IMAGE) -f Dockerfile.webapp .
	kubectl apply --server-side -k config/default
	kubectl rollout status -n flaskmongo-system deployment/flaskmongo-operator --timeout=180s
	kubectl apply -f $(SAMPLE)
	kubectl wait --for=condition=Ready flaskmongoapp/flask-app --timeout=300s
	@echo "The app answers at: curl http://$$(minikube ip):30080/data"

undeploy: ## remove the sample and the operator (a Retain volume and its Secret stay)
	kubectl delete -f $(SAMPLE) --ignore-not-found --wait=true
	kubectl delete -k config/default --ignore-not-found
