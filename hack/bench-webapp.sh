#!/usr/bin/env bash
# `make bench-webapp`: the webapp (release build) side by side with the Flask app it replaces
# (`python app.py` and gunicorn with 4 workers, from bench/flask_app) and a driver-only ceiling,
# all against one FerretDB of its own on 127.0.0.1, all loaded by bench/load.
# Writes target/bench/webapp.json and the webapp section of BENCHMARKS.md.
#
# Settings (environment), defaults in brackets: BENCH_CONNECTIONS [4] and BENCH_DURATION [10 s]
# for the small workloads, BENCH_LARGE_CONNECTIONS [1] and BENCH_LARGE_DURATION [60 s] for the
# 100,000-document GET; BENCH_PAIRS [3], the rounds, each of which runs every server once;
# BENCH_WORKLOADS [get_100,post,get_100k], to rerun some alone; BENCH_MAX_LOAD [1.5], the load
# average to wait for before measuring, for at most BENCH_QUIET_WAIT [300] seconds, so that
# other work skews the figures less.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
# shellcheck source=versions.env
source "$here/versions.env"
OUT=$root/target/bench
VENV=$root/.venv-bench
FERRETDB_BIN=$TOOLS_DIR/ferretdb-$FERRETDB_VERSION/ferretdb

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

ferretdb_pid=""
runner_pid=""
cleanup() {
  local pid
  for pid in "$runner_pid" "$ferretdb_pid"; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    # The runner stops its servers before it exits; bounded all the same.
    timeout 60 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building the webapp, the load (and ceiling) and process-usage (release)"
cargo build --release --locked -p flaskmongo-webapp -p bench-load
cargo build --release --locked -p testenv --bin process-usage

log "Python environment $VENV (bench/requirements.txt)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt

[ -x "$FERRETDB_BIN" ] || hack/tools.sh ferretdb
[ -x "$FERRETDB_BIN" ] || die "no FerretDB at $FERRETDB_BIN after hack/tools.sh ferretdb"

mkdir -p "$OUT"
state=$OUT/ferretdb
rm -rf "$state" && mkdir -p "$state"
read -r port debug_port < <(python3 hack/free_ports.py 2)
log "FerretDB $FERRETDB_VERSION on 127.0.0.1:$port"
FERRETDB_BIN=$FERRETDB_BIN setsid hack/ferretdb.sh "$port" "$state" "$debug_port" >"$OUT/ferretdb.log" 2>&1 </dev/null &
ferretdb_pid=$!
deadline=$((SECONDS + 30))
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
  kill -0 "$ferretdb_pid" 2>/dev/null || { tail -n 20 "$OUT/ferretdb.log" >&2; die "FerretDB exited during start-up"; }
  [ $SECONDS -lt $deadline ] || die "FerretDB not listening after 30s; see $OUT/ferretdb.log"
  sleep 0.2
done

max_load=${BENCH_MAX_LOAD:-1.5}
deadline=$((SECONDS + ${BENCH_QUIET_WAIT:-300}))
until python3 -c "import os, sys; sys.exit(os.getloadavg()[0] >= $max_load)"; do
  if [ $SECONDS -ge $deadline ]; then
    log "load average still $(cut -d' ' -f1 /proc/loadavg) (wanted < $max_load): measuring anyway"
    break
  fi
  log "waiting for the load average ($(cut -d' ' -f1 /proc/loadavg)) to fall below $max_load"
  sleep 15
done

# In the background so that the EXIT trap can stop it (and so its servers) on an interrupt.
python3 bench/run.py --mongodb-uri "mongodb://127.0.0.1:$port/" \
  --webapp target/release/webapp --load target/release/bench-load --usage target/release/process-usage \
  --python "$VENV/bin/python" --gunicorn "$VENV/bin/gunicorn" --ferretdb "$FERRETDB_BIN" --ferretdb-pid "$ferretdb_pid" \
  --connections "${BENCH_CONNECTIONS:-4}" --duration "${BENCH_DURATION:-10}" \
  --large-connections "${BENCH_LARGE_CONNECTIONS:-1}" --large-duration "${BENCH_LARGE_DURATION:-60}" \
  --pairs "${BENCH_PAIRS:-3}" --workloads "${BENCH_WORKLOADS:-get_100,post,get_100k}" \
  --out "$OUT/webapp-raw.json" &
runner_pid=$!
wait "$runner_pid"
runner_pid=""

python3 bench/report.py webapp --bench-dir "$OUT" --markdown BENCHMARKS.md
log "results: $OUT/webapp.json and BENCHMARKS.md"
