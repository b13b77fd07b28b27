#!/usr/bin/env bash
# `make demo`: from a clone to a running FlaskMongoApp. Where this machine can run a real node
# (root and overlayfs), the operator runs in-cluster from the images built here, and the demo
# ends as the original project did: curl on the NodePort of the pods the operator made.
# Elsewhere the nodes are simulated and the webapp answers as a local process. Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
STATE=${LOCAL_STACK_DIR:-$root/.local}
export LOCAL_STACK_DIR=$STATE
NAMESPACE=demo
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }


# A real node needs root (containers, mounts, network) and overlayfs (image layers).
why_not_real() {
  [ "$(id -u)" = 0 ] || { echo "this user is not root"; return; }
  grep -qw overlay /proc/filesystems || echo "the kernel has no overlayfs"
}

real_demo() {
  step "Building the images (operator, webapp, the MongoDB stand-in, pause) as OCI archives"
  hack/tools.sh ferretdb
  hack/images.py build

  step "Starting the local stack with a real node (control plane, containerd, kubelet, kube-proxy, CoreDNS, metrics-server)"
  NODE=real hack/local-stack.sh up
  # shellcheck disable=SC1091
  source "$STATE/env"
  # The stack stays up either way; a failed step says what the cluster looks like.
  trap 'status=$?; [ $status -eq 0 ] || hack/local-stack.sh status >&2' EXIT

  step "Installing the operator in-cluster: kubectl apply -k config/default"
  run kubectl apply --server-side -k config/default
  run kubectl rollout status -n flaskmongo-system deployment/flaskmongo-operator --timeout=180s

  step "Applying the sample FlaskMongoApp in namespace $NAMESPACE (MongoDB: the FerretDB stand-in built here)"
  kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  hack/standin-sample.sh | run kubectl apply -n "$NAMESPACE" -f -
  run kubectl wait -n "$NAMESPACE" --for=condition=Ready flaskmongoapp/flask-app --timeout=300s

  step "What the operator made, running on node $(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')"
  run kubectl get flaskmongoapps -n "$NAMESPACE"
  run kubectl get pods,service,hpa -n "$NAMESPACE" -o wide
  run kubectl logs -n flaskmongo-system deploy/flaskmongo-operator --tail=3

  step "The /data API on the NodePort, as in the original project"
  local url=http://$NODE_ADDRESS:$(kubectl get flaskmongoapp -n "$NAMESPACE" flask-app -o jsonpath='{.status.nodePort}')
  run curl -sS -X POST -H 'Content-Type: application/json' -d '{"sampleKey":"sampleValue"}' "$url/data"
  run curl -sS "$url/data"

  step "Done. The stack keeps running:"
  cat <<EOF
  source $STATE/env                       # kubectl for the local stack
  kubectl get flaskmongoapps -A
  curl $url/data
  make local-down                          # stop everything, containers included
EOF
}

reason=$(why_not_real)
if [ -z "$reason" ]; then
  real_demo
  exit
fi
echo "No real node here ($reason): the nodes are simulated and the webapp runs as a local process."

step "Starting the local stack (etcd, kube-apiserver, controller-manager, scheduler, kwok, FerretDB)"
hack/local-stack.sh up
# shellcheck disable=SC1091
source "$STATE/env"


step "Building the operator and the webapp"
cargo build --locked -p flaskmongo-operator -p flaskmongo-webapp
operator=$root/target/debug/operator
webapp=$root/target/debug/webapp

step "Installing the CRD and RBAC of config/default"
run kubectl apply --server-side -k config/crd
run kubectl apply --server-side -f config/manager/namespace.yaml -f config/manager/volume_preparation_namespace.yaml
run kubectl apply --server-side -k config/rbac
kubectl wait --for=condition=Established crd/flaskmongoapps.flaskmongo.dev --timeout=30s >/dev/null

step "Running the operator as its ServiceAccount (log: $STATE/logs/operator.log)"
if kill -0 "$(cat "$STATE/pids/operator.pid" 2>/dev/null)" 2>/dev/null; then
  echo "already running (pid $(cat "$STATE/pids/operator.pid"))"
else
  # The operator gets exactly what config/rbac grants: a kubeconfig with its ServiceAccount's token.
  token=$(kubectl create token flaskmongo-operator -n flaskmongo-system --duration=24h)
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  cat > "$STATE/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority: "$STATE/pki/ca.crt"}}]
users: [{name: flaskmongo-operator, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: flaskmongo-operator}}]
current-context: local
EOF
  KUBECONFIG=$STATE/operator.kubeconfig setsid "$operator" run --leader-election=false --metrics-addr=127.0.0.1:0 \
    >>"$STATE/logs/operator.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/operator.pid"
  echo "started (pid $!)"
fi

step "Applying the sample FlaskMongoApp (config/samples/flaskmongoapp.yaml) in namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
run kubectl apply -n "$NAMESPACE" -f config/samples/flaskmongoapp.yaml
run kubectl wait -n "$NAMESPACE" --for=condition=Ready flaskmongoapp/flask-app --timeout=120s

step "What the operator made"
run kubectl get flaskmongoapps -n "$NAMESPACE"
run kubectl get deployment,statefulset,service,hpa,secret,pvc -n "$NAMESPACE" -l app.kubernetes.io/instance=flask-app
run kubectl get persistentvolume "$NAMESPACE-flask-app-mongo"
cat <<EOF

The nodes here are simulated (kwok): the scheduler places the pods and they are marked
Running and Ready, but no container runs ($reason). As root, on a kernel with overlayfs,
\`make demo\` runs them on a real node.
EOF

step "The webapp as a local process against the local MongoDB-wire server"
if kill -0 "$(cat "$STATE/pids/webapp.pid" 2>/dev/null)" 2>/dev/null; then
  port=$(cat "$STATE/webapp.port")
else
  port=$(python3 hack/free_ports.py 1)
  MONGODB_URI=${MONGODB_URI%/}/flask_db setsid "$webapp" --listen-address 127.0.0.1 --port "$port" \
    >>"$STATE/logs/webapp.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/webapp.pid"
  echo "$port" > "$STATE/webapp.port"
fi
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
run curl -sS -X POST -H 'Content-Type: application/json' -d '{"sampleKey":"sampleValue"}' "http://127.0.0.1:$port/data"
run curl -sS "http://127.0.0.1:$port/data"

step "Done. The stack keeps running:"
cat <<EOF
  source $STATE/env                       # kubectl and MONGODB_URI for the local stack
  kubectl get flaskmongoapps -A
  curl http://127.0.0.1:$port/data
  tail -f $STATE/logs/operator.log
  make local-down                          # stop everything
EOF
