#!/usr/bin/env bash
# `make test`: format and lint checks, every test of the workspace (the integration tests
# against a local stack of their own, started here and stopped on exit), `make demo` from a
# clean state, and the Dockerfiles (hack/check-dockerfiles.py).
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

# Stacks of their own (state under target/), so a stack from `make local-up` is left alone.
test_stack=$root/target/test-stack
demo_stack=$root/target/demo-stack
cleanup() {
  LOCAL_STACK_DIR=$test_stack hack/local-stack.sh down
  LOCAL_STACK_DIR=$demo_stack hack/local-stack.sh down
}
trap cleanup EXIT
cleanup

step "local stack"
started=$SECONDS
LOCAL_STACK_DIR=$test_stack hack/local-stack.sh up
echo "stack start-up: $((SECONDS - started))s"

step "cargo test"
LOCAL_STACK_ENV=$test_stack/env cargo test --workspace --locked
LOCAL_STACK_DIR=$test_stack hack/local-stack.sh down

step "make demo, from a clean state"
LOCAL_STACK_DIR=$demo_stack timeout 900 hack/demo.sh

step "the Dockerfiles, built and run as far as this machine allows"
(source "$demo_stack/env" && hack/check-dockerfiles.py)
LOCAL_STACK_DIR=$demo_stack hack/local-stack.sh down
