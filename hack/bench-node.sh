#!/usr/bin/env bash
# `make bench-node`: the webapp on a real node. On a fresh real-node stack of its own
# (hack/real-node.sh), with the images built here: install the operator, run one FlaskMongoApp
# with the MongoDB stand-in at one web replica, then bench/node.py measures the webapp as a
# plain process, at its pod address and behind its NodePort, and the autoscaler under load.
# Writes target/bench/node.json and the real node's section of BENCHMARKS.md. Needs root.
#
# Settings (environment), defaults in brackets: BENCH_NODE_PARTS [network,autoscaler], to
# rerun one part alone; BENCH_PAIRS [3] rounds of the network part, BENCH_DURATION [10 s] and
# BENCH_CONNECTIONS [4] of each of its runs; BENCH_AUTOSCALER_RUNS [3] loads of
# BENCH_AUTOSCALER_LOAD [120 s] each.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=versions.env
source hack/versions.env
OUT=$root/target/bench
STATE=${BENCH_NODE_STACK_DIR:-$root/target/bench-node-stack}
export LOCAL_STACK_DIR=$STATE NODE=real
NAMESPACE=bench-node
APP=flask-app
# The webapp binary the image holds (hack/images.py builds it for Dockerfile.webapp).
WEBAPP_BIN=$root/target/dockerfile-check/cargo-target/$(uname -m)-unknown-linux-gnu/release/webapp

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "a real node needs root: run make bench-node as root"
[ -x "$WEBAPP_BIN" ] || die "no webapp binary at $WEBAPP_BIN: run make images first"
log "building bench-load (release)"
cargo build --release --locked -p bench-load

hack/local-stack.sh down
hack/local-stack.sh up
trap 'hack/local-stack.sh down' EXIT
# shellcheck disable=SC1091
source "$STATE/env"

log "installing the operator: kubectl apply -k config/default"
kubectl apply --server-side -k config/default >/dev/null
kubectl rollout status -n flaskmongo-system deployment/flaskmongo-operator --timeout=180s
kubectl create namespace "$NAMESPACE" >/dev/null
# One web pod, so that every request of the network part reaches the same pod on every side,
# and CPU limits no load reaches, so that the pods are not throttled where the process is not.
hack/standin-sample.sh '{"spec": {"autoscaling": {"enabled": false},
  "web": {"replicas": 1, "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "128Mi"}}},
  "mongo": {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}}}}' |
  kubectl -n "$NAMESPACE" apply -f - >/dev/null
kubectl -n "$NAMESPACE" wait --for=condition=Ready "flaskmongoapp/$APP" --timeout=300s

versions=$(python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  webapp "$("$WEBAPP_BIN" --version)" kubernetes "$KUBERNETES_VERSION" \
  containerd "$(containerd --version | cut -d' ' -f3)" runc "$(runc --version | head -n 1 | cut -d' ' -f3)" \
  "FerretDB (stand-in)" "$FERRETDB_VERSION" kernel "$(uname -r)")
mkdir -p "$OUT"
python3 bench/node.py --namespace "$NAMESPACE" --app "$APP" --webapp "$WEBAPP_BIN" \
  --load target/release/bench-load --node-address "$NODE_ADDRESS" --versions "$versions" \
  --parts "${BENCH_NODE_PARTS:-network,autoscaler}" --pairs "${BENCH_PAIRS:-3}" \
  --duration "${BENCH_DURATION:-10}" --connections "${BENCH_CONNECTIONS:-4}" \
  --autoscaler-runs "${BENCH_AUTOSCALER_RUNS:-3}" --autoscaler-load "${BENCH_AUTOSCALER_LOAD:-120}" \
  --out "$OUT/node-raw.json"

python3 bench/report.py node --bench-dir "$OUT" --markdown BENCHMARKS.md
log "results: $OUT/node.json and BENCHMARKS.md"
