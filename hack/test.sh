#!/usr/bin/env bash
# `make test`: format and lint checks, then every test of the workspace, with the
# integration tests against a local stack of their own, started here and stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build the tests"
cargo test --workspace --locked --no-run

# A stack of its own (state under target/), so a stack from `make local-up` is left alone.
export LOCAL_STACK_DIR=$root/target/test-stack
trap 'hack/local-stack.sh down' EXIT
step "local stack"
stack_started=$SECONDS
hack/local-stack.sh up
echo "stack start-up: $((SECONDS - stack_started))s"
export LOCAL_STACK_ENV=$LOCAL_STACK_DIR/env

step "cargo test"
cargo test --workspace --locked -- ${TEST_ARGS:-}
