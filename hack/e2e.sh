#!/usr/bin/env bash
# `make e2e`: the user's whole path on a fresh real-node stack (hack/real-node.sh), with the
# images built here: install the operator with `kubectl apply -k config/default`, apply the
# sample, `kubectl get flaskmongoapps`, `curl` the NodePort, read the operator's logs, lose the
# mongo pod and a web pod, roll the web pods out under load, drive the autoscaler with load,
# delete a second object with its data, then `down` must leave nothing.
#
# Every check prints PASS or FAIL; the last line counts them. Timings are printed as measured.
# Under CI=true a missing prerequisite fails the run; elsewhere too, with how to get it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
STATE=${E2E_STACK_DIR:-$root/target/e2e-stack}
export LOCAL_STACK_DIR=$STATE NODE=real
NAMESPACE=e2e-$(date +%s)
APP=flask-app
LOAD_SECONDS=${E2E_LOAD_SECONDS:-90}
passed=0 failed=0

step() { printf '\n== %s\n' "$*"; }
check() { # check DESCRIPTION COMMAND...: one assertion a user would make
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "PASS $what"; else failed=$((failed + 1)); echo "FAIL $what"; fi
}
measured() { printf 'MEASURED %s\n' "$*"; }
# wait_for SECONDS COMMAND...: poll until COMMAND succeeds; false after SECONDS.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -lt "$deadline" ] || return 1; sleep 1; done
}

# What a real node may leave on this machine, for the check after `down`.
traces() {
  echo "# mounts"; findmnt -rn -o TARGET | sort
  # Rules and chains of their own; the tables themselves stay once made.
  echo "# iptables rules"; { iptables-save; ip6tables-save; } | grep -E '^(-A |:[^ ]+ - )' | sed 's/ \[[0-9]*:[0-9]*\]$//' | sort
  echo "# network namespaces"; ip netns list | sort
  echo "# links"; ip -o link | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "# cgroups"; find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d | sort
  echo "# sysctls"; sysctl net.ipv4.conf.all.route_localnet net.ipv4.ip_forward
  echo "# containerd shim sockets"; ls /run/containerd/s 2>/dev/null || true
  echo "# processes of the stack or in containers"
  local pid own_mnt; own_mnt=$(readlink /proc/self/ns/mnt)
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    # Redirections apply left to right: the error of a process gone meanwhile is silenced
    # only when 2>/dev/null comes first.
    local cmd; cmd=$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline") || continue
    if [[ $cmd == *"$STATE"* ]] || [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" != "$own_mnt" ]; then
      [ -n "$cmd" ] && echo "$cmd"
    fi
  done | grep -v -e "^grep " | sort
}

# load SECONDS CLIENTS PATH: GET requests on the NodePort; prints "ok failed kinds", kinds being
# each kind of failure with its count and when it first and last happened (seconds from the
# start), or "-".
load() {
  python3 - "$NODE_ADDRESS" "$NODE_PORT" "$@" <<'PY'
import http.client, sys, threading, time
host, port, seconds, clients, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ok = 0
failures = {}  # kind -> [count, first, last]
lock = threading.Lock()
start = time.monotonic()
def client():
    global ok
    conn = None
    end = start + seconds
    while time.monotonic() < end:
        try:
            conn = conn or http.client.HTTPConnection(host, port, timeout=3)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            failure = None if response.status == 200 else f"HTTP-{response.status}"
        except (OSError, http.client.HTTPException) as error:
            failure, conn = type(error).__name__, None
        at = time.monotonic() - start
        with lock:
            if failure is None:
                ok += 1
            else:
                seen = failures.setdefault(failure, [0, at, at])
                seen[0] += 1
                seen[2] = at
        if failure:
            time.sleep(0.05)
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
kinds = ",".join(f"{kind}x{n}@{first:.1f}-{last:.1f}s" for kind, (n, first, last) in sorted(failures.items()))
print(ok, sum(n for n, _, _ in failures.values()), kinds or "-")
PY
}

kube() { kubectl -n "$NAMESPACE" "$@"; }
replicas() { kube get deployment "$APP-web" -o jsonpath='{.status.readyReplicas}'; }

for tool in python3 curl iptables-save findmnt; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool is missing (apt-get install -y python3 curl iptables util-linux)"; exit 1; }
done

step "the machine before the stack"
hack/local-stack.sh down
before=$(traces)

step "a fresh real-node stack"
started=$SECONDS
hack/local-stack.sh up
measured "real-node stack up, node Ready: $((SECONDS - started)) s"
# shellcheck disable=SC1091
source "$STATE/env"
# Keeps the stack's logs, which `down` removes, in target/e2e-logs (in place of earlier ones).
keep_logs() {
  rm -rf "$root/target/e2e-logs"
  cp -r "$STATE/logs" "$root/target/e2e-logs" 2>/dev/null &&
    echo "e2e: the stack's logs are in target/e2e-logs" >&2 || true
}
cleanup() {
  local status=$?
  if [ $status -ne 0 ]; then
    echo "e2e: failed" >&2
    hack/local-stack.sh status >&2 || true
    keep_logs
  fi
  hack/local-stack.sh down
}
trap cleanup EXIT

step "install the operator: kubectl apply -k config/default"
kubectl apply --server-side -k config/default
started=$SECONDS
check "the operator's Deployment rolls out in-cluster" \
  kubectl rollout status -n flaskmongo-system deployment/flaskmongo-operator --timeout=180s
measured "operator rolled out: $((SECONDS - started)) s"
check "one operator replica holds the leader Lease" wait_for 60 \
  bash -c "kubectl get lease -n flaskmongo-system -o jsonpath='{.items[*].spec.holderIdentity}' | grep -q flaskmongo-operator"

step "apply the sample, with the MongoDB stand-in image ($MONGO_STANDIN_IMAGE)"
kubectl create namespace "$NAMESPACE"
# As a cautious cluster administrator would: every pod of the app, MongoDB's included, must
# meet the `restricted` Pod Security Standard.
kubectl label namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted >/dev/null
# A small CPU request so that load on two shared cores moves the autoscaler, and a short
# scale-down window so that the way back to the minimum is seen within the test.
hack/standin-sample.sh '{"spec": {"web": {"resources": {"requests": {"cpu": "20m"}}},
  "autoscaling": {"maxReplicas": 4, "targetCPUUtilizationPercentage": 50, "scaleDownStabilizationWindowSeconds": 15}}}' |
  kube apply -f -
started=$SECONDS
check "kubectl wait --for=condition=Ready flaskmongoapp/$APP" \
  kube wait --for=condition=Ready "flaskmongoapp/$APP" --timeout=300s
measured "apply → Ready: $((SECONDS - started)) s"
kube get flaskmongoapps
check "kubectl get flaskmongoapps shows Ready and 2/2 web pods" \
  bash -c "kubectl -n $NAMESPACE get flaskmongoapps --no-headers | grep -E '^$APP +True +2/2 +true +30080 '"
NODE_PORT=$(kube get flaskmongoapp "$APP" -o jsonpath='{.status.nodePort}')
data_dir=$(kubectl get pv -l "app.kubernetes.io/instance=$APP" -o jsonpath="{.items[?(@.spec.claimRef.namespace=='$NAMESPACE')].spec.hostPath.path}")
echo "MongoDB's volume: $data_dir"

step "curl on the NodePort ($NODE_ADDRESS:$NODE_PORT)"
url=http://$NODE_ADDRESS:$NODE_PORT
post=$(curl -sS -w '%{http_code} ' -o "$STATE/post" -X POST -H 'Content-Type: application/json' -d '{"sampleKey":"sampleValue"}' "$url/data")
post+=$(cat "$STATE/post")
echo "$post"
check "POST /data answers 201 {\"status\":\"Data inserted\"}" test "$post" = '201 {"status":"Data inserted"}'
get=$(curl -sS "$url/data")
echo "$get"
check "GET /data returns the document without _id" test "$get" = '[{"sampleKey":"sampleValue"}]'
check "the volume's directory is the operator's, under its volume root, and holds the stored documents" \
  bash -c "[[ '$data_dir' == /var/lib/flaskmongo/$NAMESPACE/$APP-* ]] && ls '$data_dir' | grep -q sqlite"
check "MongoDB runs as its own user (999) without capabilities, and owns its data, private to it" \
  bash -c "[ \"\$(stat -c '%u:%g %a' '$data_dir')\" = '999:999 700' ] &&
    pid=\$(pgrep -f -u 999 /usr/local/bin/ferretdb | head -n 1) && [ -n \"\$pid\" ] &&
    grep -q '^CapEff:[[:space:]]*0000000000000000$' /proc/\$pid/status"
welcome=$(curl -sS "$url/")
echo "$welcome"
check "GET / answers as the seed's app" bash -c "[[ '$welcome' == 'Welcome to the Flask app! The current time is: '* ]]"

step "kubectl logs -n flaskmongo-system deploy/flaskmongo-operator"
kubectl logs -n flaskmongo-system deploy/flaskmongo-operator --tail=5
check "the operator's log lines are JSON" bash -c \
  "kubectl logs -n flaskmongo-system deploy/flaskmongo-operator | python3 -c 'import json,sys; [json.loads(l) for l in sys.stdin]'"
check "the leader's log shows the children it created for $NAMESPACE/$APP" bash -c \
  "kubectl logs -n flaskmongo-system -l app.kubernetes.io/name=flaskmongo-operator --tail=-1 | python3 -c '
import json, sys
lines = [json.loads(line) for line in sys.stdin]
created = [l for l in lines if l[\"message\"] == \"created\" and l[\"span\"][\"object.ref\"].endswith(\"/$APP.$NAMESPACE\")]
sys.exit(not created)'"

# no_request_fails SECONDS WHAT ACTION [PATH]: runs the function ACTION 3 s into SECONDS of GET
# PATH (/data unless given) from 2 clients on the NodePort; not one request may fail.
no_request_fails() {
  local seconds=$1 what=$2 action=$3 path=${4:-/data} loader ok fails kinds
  load "$seconds" 2 "$path" > "$STATE/during-$action" &
  loader=$!
  sleep 3
  "$action"
  wait "$loader"
  read -r ok fails kinds < "$STATE/during-$action"
  measured "requests $what: $ok answered, $fails failed (failures: $kinds)"
  check "no request fails $what" test "$fails" -eq 0 -a "$ok" -gt 0
}

step "lose the mongo pod: the StatefulSet brings it back on the same volume"
replace_the_mongo_pod() {
  local old_uid started=$SECONDS
  old_uid=$(kube get pod "$APP-mongo-0" -o jsonpath='{.metadata.uid}')
  kube delete pod "$APP-mongo-0" --wait=false
  check "a new mongo pod is Ready" wait_for 120 bash -c \
    "[ \"\$(kubectl -n $NAMESPACE get pod $APP-mongo-0 -o jsonpath='{.metadata.uid} {.status.containerStatuses[0].ready}')\" != '$old_uid true' ] &&
     kubectl -n $NAMESPACE get pod $APP-mongo-0 -o jsonpath='{.status.containerStatuses[0].ready}' | grep -q true"
  measured "mongo pod replaced and Ready: $((SECONDS - started)) s"
}
# The web pods stay in their Service meanwhile, so `GET /`, which needs no database, goes on
# answering. The 30 s cover the replacement and the web pods' readiness probes after it.
no_request_fails 30 "to GET / while the mongo pod is replaced" replace_the_mongo_pod /
check "GET /data returns the earlier document" wait_for 30 bash -c "[ \"\$(curl -sS $url/data)\" = '$get' ]"

step "lose a web pod while requests go on"
delete_a_web_pod() {
  kube delete pod --wait=false \
    "$(kube get pods -l app.kubernetes.io/instance=$APP,app.kubernetes.io/component=web -o jsonpath='{.items[0].metadata.name}')"
}
# The stopping pod drains first.
no_request_fails 20 "while a web pod is replaced" delete_a_web_pod
check "the web Deployment is back to 2 ready pods" wait_for 120 bash -c "[ \"\$(kubectl -n $NAMESPACE get deployment $APP-web -o jsonpath='{.status.readyReplicas}')\" = 2 ]"

step "change the web tier while requests go on: kubectl patch rolls the web pods out"
roll_out_a_change() {
  local started=$SECONDS
  kube patch flaskmongoapp "$APP" --type merge -p '{"spec": {"web": {"env": [{"name": "RUST_LOG", "value": "info"}]}}}'
  check "the operator puts the change into the web Deployment" wait_for 30 bash -c \
    "kubectl -n $NAMESPACE get deployment $APP-web -o jsonpath='{.spec.template.spec.containers[0].env}' | grep -q RUST_LOG"
  check "the web Deployment rolls it out" kube rollout status "deployment/$APP-web" --timeout=120s
  measured "web rollout done: $((SECONDS - started)) s after the patch"
}
no_request_fails 40 "while the web pods are rolled out" roll_out_a_change

step "load through the NodePort for ${LOAD_SECONDS}s: the autoscaler adds web pods from real CPU metrics"
check "metrics-server reports the web pods' CPU" wait_for 90 bash -c "kubectl -n $NAMESPACE top pods --no-headers | grep -q '$APP-web'"
# The load of the step before may have moved the autoscaler: start from a quiet minimum, two
# metrics periods long, so that the figures below time this load alone.
calm() {
  [ "$(kube get hpa "$APP-web" -o jsonpath='{.status.desiredReplicas}/{.status.currentReplicas}')" = 2/2 ] &&
    [ "$(replicas)" = 2 ]
}
check "the autoscaler is at its minimum before the load" wait_for 240 bash -c "
  $(declare -f kube replicas calm); APP=$APP NAMESPACE=$NAMESPACE; calm && sleep 20 && calm"
started=$SECONDS
load "$LOAD_SECONDS" 4 /data > "$STATE/load" &
loader=$!
first_added=""
while kill -0 "$loader" 2>/dev/null; do
  if [ -z "$first_added" ] && [ "$(replicas)" -gt 2 ] 2>/dev/null; then
    first_added=$((SECONDS - started))
    measured "start of load → first added web pod Ready: $first_added s"
  fi
  sleep 1
done
wait "$loader"
peak=$(kube get hpa "$APP-web" -o jsonpath='{.status.desiredReplicas}')
kube get hpa "$APP-web"
read -r ok fails kinds < "$STATE/load"
measured "load: $ok requests answered, $fails failed (failures: $kinds), in ${LOAD_SECONDS}s; replicas wanted at the end: $peak"
check "the autoscaler raised the web pods above minReplicas (2)" test -n "$first_added"
started=$SECONDS
check "after the load the web pods return to minReplicas" wait_for 240 bash -c \
  "[ \"\$(kubectl -n $NAMESPACE get deployment $APP-web -o jsonpath='{.spec.replicas}')\" = 2 ]"
measured "end of load → back to 2 replicas: $((SECONDS - started)) s (scale-down window 15 s)"

step "a second object, under deletionPolicy: Delete: kubectl delete stops its MongoDB, then its data goes"
DOOMED=doomed
hack/standin-sample.sh '{"metadata": {"name": "'"$DOOMED"'"}, "spec": {"web": {"replicas": 1,
  "service": {"nodePort": null}, "resources": {"requests": {"cpu": "20m"}}}, "autoscaling": {"enabled": false},
  "mongo": {"storage": {"deletionPolicy": "Delete"}}}}' | kube apply -f - >/dev/null
check "kubectl wait --for=condition=Ready flaskmongoapp/$DOOMED" \
  kube wait --for=condition=Ready "flaskmongoapp/$DOOMED" --timeout=300s
check "the operator has added its finalizer" bash -c \
  "kubectl -n $NAMESPACE get flaskmongoapp $DOOMED -o jsonpath='{.metadata.finalizers}' | grep -q flaskmongo.dev/cleanup"
doomed_pv=$(kubectl get pv -l "app.kubernetes.io/instance=$DOOMED" -o jsonpath="{.items[?(@.spec.claimRef.namespace=='$NAMESPACE')].metadata.name}")
doomed_dir=$(kubectl get pv "$doomed_pv" -o jsonpath='{.spec.hostPath.path}')
started=$SECONDS
kube delete flaskmongoapp "$DOOMED" --wait=false >/dev/null
check "the object, its claim, its volume $doomed_pv and its Secret are gone" wait_for 120 bash -c \
  "! kubectl -n $NAMESPACE get flaskmongoapp $DOOMED && ! kubectl -n $NAMESPACE get pvc data-$DOOMED-mongo-0 &&
   ! kubectl get pv $doomed_pv && ! kubectl -n $NAMESPACE get secret $DOOMED-mongo-credentials"
measured "delete → the object and its data gone: $((SECONDS - started)) s"
check "the leader's log shows MongoDB's StatefulSet stopped, then deleted" bash -c \
  "kubectl logs -n flaskmongo-system -l app.kubernetes.io/name=flaskmongo-operator --tail=-1 | python3 -c '
import json, sys
lines = [json.loads(line) for line in sys.stdin]
said = [l[\"message\"] for l in lines if l.get(\"child\") == \"StatefulSet $DOOMED-mongo\" and l[\"message\"] in (\"stopped\", \"deleted\")]
sys.exit(said != [\"stopped\", \"deleted\"])'"
check "its files stay on the node (no hostPath volume's data is deleted by Kubernetes); removed by hand" \
  bash -c "[ -d '$doomed_dir' ] && rm -rf '$doomed_dir'"

step "make local-down leaves nothing behind"
trap - EXIT
[ "$failed" -eq 0 ] || keep_logs
kubectl delete namespace "$NAMESPACE" --wait=false >/dev/null
hack/local-stack.sh down
after=$(traces)
check "no process, mount, iptables rule, network namespace, link or cgroup of the stack remains" \
  diff <(echo "$before") <(echo "$after")
check "the stack's volume went with it, and the folders made for it" \
  bash -c "[ ! -e '$data_dir' ] && [ ! -e '$(dirname "$data_dir")' ]"

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
