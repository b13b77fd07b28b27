#!/usr/bin/env bash
# `make test`: format and lint checks, every test of the workspace (the integration tests
# against a local stack of their own, started here and stopped on exit), `make demo` from a
# clean state, the Dockerfiles (hack/check-dockerfiles.py), and the end-to-end test on a real
# node (hack/e2e.sh) with the images built here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# One build, not an edit loop: incremental state would only take disk (2.6 GB).
export CARGO_INCREMENTAL=0
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

# A real node needs root and overlayfs: CI must have them; elsewhere their absence is said,
# and `make demo` runs on simulated nodes.
real_node=yes
if [ "$(id -u)" != 0 ] || ! grep -qw overlay /proc/filesystems; then
  [ "${CI:-}" != true ] || { echo "make test: the real node needs root and overlayfs, and CI has not both" >&2; exit 1; }
  real_node=no
  echo "make test: NOT RUN: the images and the end-to-end test (hack/e2e.sh) need root and overlayfs" >&2
fi

if [ $real_node = yes ]; then
  step "the images (hack/images.py)"
  hack/images.py build
fi

step "make demo, from a clean state"
LOCAL_STACK_DIR=$demo_stack timeout 900 hack/demo.sh

step "the Dockerfiles, built and run as far as this machine allows"
(source "$demo_stack/env" && hack/check-dockerfiles.py)
LOCAL_STACK_DIR=$demo_stack hack/local-stack.sh down

if [ $real_node = yes ]; then
  step "the end-to-end test on a real node (hack/e2e.sh)"
  hack/e2e.sh
fi
