#!/usr/bin/env bash
# `make chaos`: the long fault tests. The operator scenarios of operator/tests/chaos.rs
# (SIGKILL during convergence, API server outage, leader killed during convergence, churn)
# with 300 objects and 2 minutes of churn, one at a time, against a stack of their own;
# then the webapp under a FerretDB outage (webapp/tests/outage.rs, which starts FerretDB
# processes of its own). Replay a failure with the CHAOS_SEED it printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

cargo test --locked -p flaskmongo-operator --test chaos --no-run

# 300 objects of 3 to 4 pods each: 2 simulated nodes of 1,000 pods hold them, for the
# shared stack and for the private one of the API server scenario alike.
export LOCAL_STACK_DIR=$root/target/chaos-stack
export LOCAL_STACK_NODES=${LOCAL_STACK_NODES:-2}
trap 'hack/local-stack.sh down' EXIT
hack/local-stack.sh up
export LOCAL_STACK_ENV=$LOCAL_STACK_DIR/env
export CHAOS_OBJECTS=${CHAOS_OBJECTS:-300}
export CHAOS_CHURN_SECONDS=${CHAOS_CHURN_SECONDS:-120}

# One scenario at a time: each one loads this 2-core machine on its own.
cargo test --locked -p flaskmongo-operator --test chaos -- --test-threads=1 --nocapture
cargo test --locked -p flaskmongo-webapp --test outage
