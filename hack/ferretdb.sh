#!/usr/bin/env bash
# FerretDB (the MongoDB wire protocol over SQLite files) on 127.0.0.1, in the foreground, as
# the local stack, the webapp's tests and the webapp's benchmark run it:
#
#   hack/ferretdb.sh PORT DIR [DEBUG_PORT]
#
# listens on 127.0.0.1:PORT, keeps its data and state under DIR, and serves its own metrics
# on 127.0.0.1:DEBUG_PORT (a port the kernel picks by default). The binary is $FERRETDB_BIN,
# else the one `make tools` builds for the pin of hack/versions.env.
set -euo pipefail
usage="usage: hack/ferretdb.sh PORT DIR [DEBUG_PORT]"
port=${1:?$usage}
dir=${2:?$usage}
debug_port=${3:-0}
if [ -z "${FERRETDB_BIN:-}" ]; then
  # shellcheck source=versions.env
  source "$(dirname "$0")/versions.env"
  FERRETDB_BIN=$TOOLS_DIR/ferretdb-$FERRETDB_VERSION/ferretdb
fi
if [ ! -x "$FERRETDB_BIN" ]; then
  echo "hack/ferretdb.sh: no FerretDB at $FERRETDB_BIN: build it with \`make tools\` (or set FERRETDB_BIN)" >&2
  exit 1
fi
mkdir -p "$dir/data"
# Without telemetry, so that nothing leaves this machine; exec, so that the caller's pid is
# FerretDB's own (stopping it is a plain kill, its CPU time is read from that pid).
exec "$FERRETDB_BIN" --listen-addr="127.0.0.1:$port" --handler=sqlite --sqlite-url="file:$dir/data/" \
  --state-dir="$dir" --telemetry=disable --debug-addr="127.0.0.1:$debug_port" --log-level=warn
