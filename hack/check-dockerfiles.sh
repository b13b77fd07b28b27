#!/usr/bin/env bash
# No container engine runs here, so the Dockerfiles are checked as far as this machine
# allows: each one's final `cargo build` runs here as written, and the binary that the
# runtime stage copies must then exist, be a release build, and answer --help.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for dockerfile in Dockerfile.operator Dockerfile.webapp; do
  build=$(grep -o 'cargo build --release[^\\]*' "$dockerfile" | tail -n 1 | sed 's/ *$//')
  binary=$(sed -n 's|^COPY --from=build /src/\(target/release/[^ ]*\) .*|\1|p' "$dockerfile")
  [ -n "$build" ] && [ -n "$binary" ] || { echo "$dockerfile: no cargo build or no COPY --from=build found"; exit 1; }
  echo "$dockerfile: $build"
  $build
  [ -x "$binary" ] || { echo "$dockerfile copies $binary, which '$build' did not produce"; exit 1; }
  "$binary" --help >/dev/null || { echo "$dockerfile: $binary --help failed"; exit 1; }
  echo "$dockerfile: $binary $(du -h "$binary" | cut -f1)"
done
