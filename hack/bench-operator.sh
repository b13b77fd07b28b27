#!/usr/bin/env bash
# `make bench-operator`: the operator's benchmarks (bench/operator-bench) against a local
# stack of their own, with the operator as a release build. Writes target/bench/operator.json
# and, with bench/report.py, the operator section of BENCHMARKS.md. Arguments go to the
# benchmark program (`--samples`, `--scales`, `--pairs`, `--parallelism`, `--steady-seconds`,
# `--ready-timeout`, `--json`). A run written to target/bench/operator-NAME.json is reported
# under the main run of target/bench/operator.json, as a further run (one written outside
# target/bench leaves BENCHMARKS.md as it is); for 5,000 objects:
#   LOCAL_STACK_NODES=32 LOCAL_STACK_NODE_PORT_RANGE=30000-49999 hack/bench-operator.sh \
#     --json target/bench/operator-5000.json --samples 0 --scales 5000 --pairs 1 --ready-timeout 3600
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

cargo build --release --locked -p flaskmongo-operator -p operator-bench

# Each object makes 3 pods (2 web and 1 MongoDB), with the operator and with the baseline
# alike: 3 pairs of runs at 100 and 1,000 objects and 50 single objects make 19,950 pods. A
# simulated node takes 1,000 pods, so 21 nodes hold them all. Each object has one NodePort
# Service too: 6,650 of them, more than Kubernetes' default range of 2,768 ports.
export LOCAL_STACK_DIR=$root/target/bench-stack
export LOCAL_STACK_NODES=${LOCAL_STACK_NODES:-21}
export LOCAL_STACK_NODE_PORT_RANGE=${LOCAL_STACK_NODE_PORT_RANGE:-30000-39999}
# Every run starts from an empty cluster: the benchmark's namespaces must not exist yet.
hack/local-stack.sh down >/dev/null 2>&1 || true
# What the run writes to target/bench is newer than this file.
started=$(mktemp)
trap 'rm -f "$started"; hack/local-stack.sh down' EXIT
hack/local-stack.sh up
export LOCAL_STACK_ENV=$LOCAL_STACK_DIR/env

# The benchmark's defaults name the release build and target/bench/operator.json.
target/release/operator-bench "$@"
# The report reads target/bench only: a run whose figures went elsewhere leaves it as it is.
if [ -z "$(find target/bench -maxdepth 1 -name 'operator*.json' -newer "$started" 2>/dev/null)" ]; then
  echo "no figures written to target/bench; BENCHMARKS.md was left as it is"
  exit 0
fi
python3 bench/report.py operator --bench-dir target/bench --markdown BENCHMARKS.md
