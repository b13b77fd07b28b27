#!/usr/bin/env bash
# `make bench-operator`: the operator's benchmarks (bench/operator-bench) against a local
# stack of their own, with the operator as a release build. Writes target/bench/operator.json
# and, with bench/report.py, the operator section of BENCHMARKS.md. Arguments go to the
# benchmark program (`--samples`, `--scales`, `--parallelism`, `--steady-seconds`,
# `--ready-timeout`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

cargo build --release --locked -p flaskmongo-operator -p operator-bench

# 1,000 objects make 3,000 pods (2 web and 1 MongoDB each), and the single-object and
# 100-object runs 450 more; a simulated node takes 1,000 pods, so 6 nodes hold them all.
export LOCAL_STACK_DIR=$root/target/bench-stack
export LOCAL_STACK_NODES=${LOCAL_STACK_NODES:-6}
# Every run starts from an empty cluster: the benchmark's namespaces must not exist yet.
hack/local-stack.sh down >/dev/null 2>&1 || true
trap 'hack/local-stack.sh down' EXIT
hack/local-stack.sh up
export LOCAL_STACK_ENV=$LOCAL_STACK_DIR/env

target/release/operator-bench --operator target/release/operator --json target/bench/operator.json "$@"
python3 bench/report.py operator --bench-dir target/bench --markdown BENCHMARKS.md
