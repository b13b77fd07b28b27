#!/usr/bin/env bash
# The local test stack: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kwok (simulated nodes) and FerretDB, as plain processes on 127.0.0.1. With NODE=real, one
# real node (hack/real-node.sh) takes the place of the simulated ones.
#
#   [NODE=real] hack/local-stack.sh up      start it (safe to run again), write .local/env
#   hack/local-stack.sh down    stop exactly what `up` started and remove its state
#   hack/local-stack.sh status  say what runs; with the API server up, also the nodes'
#                               pressures and taints, the pods not running, the last warnings
#   hack/local-stack.sh stop|start COMPONENT   stop or restart one component (fault tests)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=versions.env
source "$here/versions.env"
STATE=${LOCAL_STACK_DIR:-$root/.local}
export TOOLS_DIR
NODE=${NODE:-simulated}
NODES=${LOCAL_STACK_NODES:-2}
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
POD_CIDR=10.244.0.0/16
# Kubernetes' default range; the operator benchmark keeps every run's NodePort Services and needs more.
NODE_PORT_RANGE=${LOCAL_STACK_NODE_PORT_RANGE:-30000-32767}
# The autoscaler's tests on the real node wait for its syncs; Kubernetes' default is 15s.
HPA_SYNC_PERIOD=${LOCAL_STACK_HPA_SYNC_PERIOD:-5s}
CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager kube-scheduler ferretdb)
PAUSE_IMAGE=docker.io/flaskmongo/pause:$KUBERNETES_VERSION
MONGO_STANDIN_IMAGE=docker.io/flaskmongo/mongo-standin:$FERRETDB_VERSION
# shellcheck source=real-node.sh
source "$here/real-node.sh"

log() { printf '[local-stack] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

pid_of() { cat "$STATE/pids/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# free_ports N: N distinct free TCP ports on 127.0.0.1.
free_ports() { python3 "$here/free_ports.py" "$1"; }

# ---------------------------------------------------------------- certificates
# ECDSA keys: quick to generate, accepted by every component.
NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

# sign NAME SUBJECT EXTFILE: a key and a certificate signed by the stack's CA, in the current folder.
sign() {
  openssl req -new "${NEWKEY[@]}" -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -sha256 -extfile "$3" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr"
}

gen_pki() {
  local pki=$STATE/pki
  mkdir -p "$pki" && cd "$pki"
  openssl req -x509 "${NEWKEY[@]}" -sha256 -days 3650 -keyout ca.key -out ca.crt -subj "/CN=flaskmongo-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  cat > server.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$SERVICE_IP,IP:$NODE_IP
EOF
  cat > client.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
  sign apiserver "/CN=kube-apiserver" server.ext
  sign admin "/O=system:masters/CN=flaskmongo-admin" client.ext
  sign kube-controller-manager "/CN=system:kube-controller-manager" client.ext
  sign kube-scheduler "/CN=system:kube-scheduler" client.ext
  openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out sa.key
  openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
  [ "$NODE" != real ] || node_pki
}

# kubeconfig USER: a kubeconfig for one client certificate.
write_kubeconfig() {
  local user=$1 out=$2
  cat > "$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $STATE/pki/$user.crt
    client-key: $STATE/pki/$user.key
contexts:
- name: local
  context: {cluster: local, user: $user}
current-context: local
EOF
}

# ---------------------------------------------------------------- processes
# launch NAME CMD...: start in its own session, log to logs/NAME.log, pid to pids/NAME.pid.
launch() {
  local name=$1; shift
  mkdir -p "$STATE/logs" "$STATE/pids"
  printf '%q ' "$@" > "$STATE/cmd.$name"
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/$name.pid"
}

# wait_until NAME SECONDS CMD...: poll CMD until it succeeds; on failure say who failed and why.
wait_until() {
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      log "$name exited during start-up; last lines of $STATE/logs/$name.log:"
      tail -n 25 "$STATE/logs/$name.log" >&2 || true
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$name not healthy after ${seconds}s; last lines of $STATE/logs/$name.log:"
      tail -n 25 "$STATE/logs/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

https_ok() { curl -fsS --max-time 2 --cacert "$STATE/pki/ca.crt" "$1"; }
http_ok() { curl -fsS --max-time 2 "$1"; }
kubectl_local() { "$KUBE_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

start_etcd() {
  launch etcd "$ETCD_BIN" --name=local --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="local=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync=true \
    --listen-metrics-urls="http://127.0.0.1:$ETCD_METRICS_PORT" --log-level=warn --quota-backend-bytes=4294967296
  wait_until etcd 30 http_ok "http://127.0.0.1:$ETCD_PORT/readyz"
}

start_kube_apiserver() {
  local pki=$STATE/pki node_flags
  if [ "$NODE" = real ]; then
    mapfile -t node_flags < <(node_apiserver_flags)
  else
    node_flags=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
  fi
  launch kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" --secure-port="$API_PORT" "${node_flags[@]}" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" --cert-dir="$pki/serving" \
    --client-ca-file="$pki/ca.crt" --authorization-mode=Node,RBAC \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range="$NODE_PORT_RANGE" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-signing-key-file="$pki/sa.key" --service-account-key-file="$pki/sa.pub" \
    --allow-privileged=true \
    --max-requests-inflight=1000 --max-mutating-requests-inflight=500
  wait_until kube-apiserver 90 https_ok "https://127.0.0.1:$API_PORT/readyz"
}

start_kube_controller_manager() {
  local pki=$STATE/pki kc=$STATE/kube-controller-manager.kubeconfig
  launch kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" --leader-elect=false \
    --kube-api-qps=200 --kube-api-burst=400 \
    --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10 --concurrent-statefulset-syncs=10 \
    --horizontal-pod-autoscaler-sync-period="$HPA_SYNC_PERIOD"
  wait_until kube-controller-manager 60 https_ok_insecure "https://127.0.0.1:$KCM_PORT/healthz"
}

start_kube_scheduler() {
  local kc=$STATE/kube-scheduler.kubeconfig
  launch kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false
  wait_until kube-scheduler 60 https_ok_insecure "https://127.0.0.1:$SCHED_PORT/healthz"
}

# KCM and the scheduler serve a self-signed certificate made in memory.
https_ok_insecure() { curl -fsSk --max-time 2 "$1"; }

# The Stage objects that make kwok play the kubelet: taken from the pinned kwok module itself.
write_kwok_config() {
  local dir
  dir=$(cd "$TOOLS_DIR/src/kwok-$KWOK_VERSION" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  {
    local f
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      cat "$dir/kustomize/stage/$f"
    done
    # kwok completes only the pods of Jobs; a kubelet completes any pod that runs once
    # (the operator's volume preparation pods among them).
    echo "---"
    sed -e 's/name: pod-complete$/name: pod-complete-run-once/' \
      -e "s/'.metadata.ownerReferences.\[\].kind'/'.spec.restartPolicy'/" \
      -e "s/- 'Job'$/- 'Never'/" "$dir/kustomize/stage/pod/fast/pod-complete.yaml"
  } > "$STATE/kwok.yaml"
}

start_kwok() {
  mkdir -p "$STATE/kwok"
  [ -f "$STATE/kwok.yaml" ] || write_kwok_config
  KWOK_WORKDIR="$STATE/kwok" launch kwok "$KWOK_BIN" \
    --kubeconfig="$STATE/kubeconfig" --config="$STATE/kwok.yaml" --manage-all-nodes=true \
    --server-address="127.0.0.1:$KWOK_PORT" --node-ip=127.0.0.1 --cidr="$POD_CIDR" \
    --node-lease-duration-seconds=40
  wait_until kwok 60 http_ok "http://127.0.0.1:$KWOK_PORT/healthz"
}

# Each simulated node takes 1,000 pods, with CPU and memory to spare for them: an object's
# three pods request 750m of CPU, so the pod count is what bounds a node.
create_nodes() {
  local i
  for i in $(seq 1 "$NODES"); do
    cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
spec:
  podCIDR: 10.244.$i.0/24
  podCIDRs: [10.244.$i.0/24]
status:
  allocatable: {cpu: "1000", memory: 4Ti, pods: "1000"}
  capacity: {cpu: "1000", memory: 4Ti, pods: "1000"}
---
EOF
  done | kubectl_local apply -f - >/dev/null
  # kubectl's timeout covers all the nodes, checked one after another: it grows with them.
  wait_until kwok $((60 + NODES)) kubectl_local wait --for=condition=Ready node --all --timeout=$((2 + NODES / 4))s
}

start_ferretdb() {
  FERRETDB_BIN=$FERRETDB_BIN launch ferretdb "$here/ferretdb.sh" "$FERRETDB_PORT" "$STATE/ferretdb" "$FERRETDB_DEBUG_PORT"
  wait_until ferretdb 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', $FERRETDB_PORT), 1)"
}

# ---------------------------------------------------------------- commands
load_ports() { # the ports of the running stack, kept in .local/ports
  # shellcheck disable=SC1091
  source "$STATE/ports"
}

resolve_bins() {
  local binary
  "$here/tools.sh" >&2
  ETCD_BIN=$TOOLS_DIR/etcd-$ETCD_VERSION/etcd
  KUBE_BIN=$TOOLS_DIR/kubernetes-$KUBERNETES_VERSION
  KWOK_BIN=$TOOLS_DIR/kwok-$KWOK_VERSION/kwok
  FERRETDB_BIN=$TOOLS_DIR/ferretdb-$FERRETDB_VERSION/ferretdb
  COREDNS_BIN=$TOOLS_DIR/coredns-$COREDNS_VERSION/coredns
  METRICS_SERVER_BIN=$TOOLS_DIR/metrics-server-$METRICS_SERVER_VERSION/metrics-server
  for binary in "$ETCD_BIN" "$KUBE_BIN/kube-apiserver" "$KUBE_BIN/kubectl" "$KWOK_BIN" "$FERRETDB_BIN" \
    "$COREDNS_BIN" "$METRICS_SERVER_BIN"; do
    [ -x "$binary" ] || die "missing $binary after hack/tools.sh"
  done
  command -v openssl >/dev/null || die "openssl not found on PATH (apt-get install -y openssl)"
}

# The node of the stack in $STATE (real or simulated), else the one asked for.
stack_node() {
  if [ -f "$STATE/ports" ]; then (load_ports && echo "$NODE"); else echo "$NODE"; fi
}

# The components of the stack in $STATE, by the node it was started with.
components() {
  if [ "$(stack_node)" = real ]; then
    printf '%s\n' "${CONTROL_PLANE[@]}" "${NODE_COMPONENTS[@]}"
  else
    printf '%s\n' "${CONTROL_PLANE[@]}" kwok
  fi
}

running() {
  [ -f "$STATE/env" ] || return 1
  local c
  for c in $(components); do alive "$c" || return 1; done
}

cmd_up() {
  if running; then
    log "already running; environment in $STATE/env"
    return 0
  fi
  [ -d "$STATE" ] && { log "removing the remains of an earlier stack"; cmd_down; }
  case "$NODE" in
    real) node_prerequisites ;;
    simulated) ;;
    *) die "NODE must be real or simulated, not '$NODE'" ;;
  esac
  resolve_bins
  local started=$SECONDS
  # A failed start leaves nothing running; its logs are kept beside the stack's folder.
  trap 'up_failed' EXIT
  mkdir -p "$STATE"
  read -r ETCD_PORT ETCD_PEER_PORT ETCD_METRICS_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT FERRETDB_PORT FERRETDB_DEBUG_PORT \
    KUBELET_HEALTHZ_PORT KUBE_PROXY_HEALTHZ_PORT KUBE_PROXY_METRICS_PORT COREDNS_HEALTH_PORT COREDNS_READY_PORT METRICS_SERVER_PORT \
    <<< "$(free_ports 15)"
  # Plain assignments: `declare` lines, sourced inside a function, would make locals.
  local v
  for v in ETCD_PORT ETCD_PEER_PORT ETCD_METRICS_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT FERRETDB_PORT FERRETDB_DEBUG_PORT \
    KUBELET_HEALTHZ_PORT KUBE_PROXY_HEALTHZ_PORT KUBE_PROXY_METRICS_PORT COREDNS_HEALTH_PORT COREDNS_READY_PORT METRICS_SERVER_PORT \
    ETCD_BIN KUBE_BIN KWOK_BIN FERRETDB_BIN COREDNS_BIN METRICS_SERVER_BIN NODE; do
    printf '%s=%q\n' "$v" "${!v}"
  done > "$STATE/ports"
  log "certificates"
  gen_pki
  write_kubeconfig admin "$STATE/kubeconfig"
  write_kubeconfig kube-controller-manager "$STATE/kube-controller-manager.kubeconfig"
  write_kubeconfig kube-scheduler "$STATE/kube-scheduler.kubeconfig"
  log "etcd on 127.0.0.1:$ETCD_PORT"; start_etcd
  log "kube-apiserver on 127.0.0.1:$API_PORT"; start_kube_apiserver
  log "kube-controller-manager, kube-scheduler, FerretDB"
  start_kube_controller_manager
  start_kube_scheduler
  start_ferretdb
  if [ "$NODE" = real ]; then
    node_up
  else
    log "kwok with $NODES simulated nodes"; start_kwok; create_nodes
  fi
  wait_until kube-controller-manager 60 kubectl_local get serviceaccount default -n default
  # The operator's namespace for volume preparation pods, as `kubectl apply -k config/default`
  # makes it: an operator run from here (tests, benchmarks, `make run`) finds it.
  kubectl_local apply --server-side -f "$root/config/manager/volume_preparation_namespace.yaml" >/dev/null
  cat > "$STATE/env" <<EOF
export KUBECONFIG=$STATE/kubeconfig
export MONGODB_URI=mongodb://127.0.0.1:$FERRETDB_PORT/
export FERRETDB_BIN=$FERRETDB_BIN
export LOCAL_STACK_DIR=$STATE
export KUBE_BIN=$KUBE_BIN
export PATH=$KUBE_BIN:\$PATH
EOF
  [ "$NODE" != real ] || node_env >> "$STATE/env"
  trap - EXIT
  log "ready in $((SECONDS - started))s: source $STATE/env"
}

up_failed() {
  rm -rf "$STATE.failed-logs"
  cp -r "$STATE/logs" "$STATE.failed-logs" 2>/dev/null || true
  log "start-up failed: stopping what started; its logs are in $STATE.failed-logs"
  cmd_down
}

# stop_pids PID...: TERM, then KILL whatever still runs after 5 s; returns once all are gone.
stop_pids() {
  local pid i
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || continue
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}

# Stops every process started for this stack (its components, and what `make demo` added).
cmd_down() {
  local file pids=()
  if [ -f "$STATE/ports" ] && [ "$(stack_node)" = real ]; then
    load_ports
    node_down
  fi
  for file in "$STATE"/pids/*.pid; do
    [ -f "$file" ] && pids+=("$(cat "$file")")
  done
  [ ${#pids[@]} -eq 0 ] || stop_pids "${pids[@]}"
  rm -rf "$STATE"
}

cmd_status() {
  local c
  for c in $(components); do
    if alive "$c"; then echo "$c: running (pid $(pid_of "$c"))"; else echo "$c: stopped"; fi
  done
  alive kube-apiserver || return 0
  # What a failed wait needs to name its cause: a node's pressure or taint, a pod that is
  # not running, and the warnings behind them.
  echo "# nodes: conditions that are not as they should be, taints"
  kubectl_local get nodes -o go-template='{{range .items}}{{$n := .metadata.name}}{{range .status.conditions}}{{if or (and (eq .type "Ready") (ne .status "True")) (and (ne .type "Ready") (eq .status "True"))}}{{$n}}: {{.type}}={{.status}} ({{.message}}){{"\n"}}{{end}}{{end}}{{range .spec.taints}}{{$n}}: taint {{.key}}:{{.effect}}{{"\n"}}{{end}}{{end}}' || true
  echo "# pods that are not Running or Succeeded"
  kubectl_local get pods -A -o wide --field-selector=status.phase!=Running,status.phase!=Succeeded || true
  echo "# the last warnings"
  kubectl_local get events -A --field-selector=type=Warning --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 || true
}

cmd_stop() {
  local c=${1:?component}
  local pid; pid=$(pid_of "$c")
  [ -n "$pid" ] || die "no pid file for $c"
  stop_pids "$pid"
}

cmd_start() {
  local c=${1:?component}
  load_ports
  alive "$c" && die "$c is already running"
  case "$c" in
    etcd) start_etcd ;;
    kube-apiserver) start_kube_apiserver ;;
    kube-controller-manager) start_kube_controller_manager ;;
    kube-scheduler) start_kube_scheduler ;;
    kwok) start_kwok ;;
    ferretdb) start_ferretdb ;;
    *) die "unknown component '$c' (one of: $(components | tr '\n' ' '))" ;;
  esac
}

main() {
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    stop) cmd_stop "${2:-}" ;;
    start) cmd_start "${2:-}" ;;
    *) die "usage: $0 up|down|status|stop COMPONENT|start COMPONENT" ;;
  esac
}

# One line, so that editing this file while it runs cannot change what it runs next.
main "$@"; exit
