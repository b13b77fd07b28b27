# shellcheck shell=bash
# The real node of `hack/local-stack.sh up` with NODE=real: Debian's containerd and runc, the
# CNI bridge, the kubelet and kube-proxy of the pinned Kubernetes, CoreDNS for cluster.local and
# metrics-server, all on this machine. Sourced by local-stack.sh, whose helpers it uses.
#
# Nothing it makes reaches past this machine: the node's address sits on the pods' bridge,
# which has no route out (pods get routes to the service range and the node only,
# and IP forwarding stays off), CoreDNS answers cluster.local and forwards nothing, NodePorts
# listen on 127.0.0.1, and containerd may only "pull" from 127.0.0.1:9, where nothing listens.
# Only one real node runs on a machine at a time: it owns fixed names (interfaces, cgroups).

NODE_NAME=flaskmongo-node
NODE_IP=10.245.0.1
POD_BRIDGE=fm-pods0
POD_SUBNET=10.244.0.0/24
POD_GATEWAY=10.244.0.1
CGROUP_ROOT=flaskmongo
NODE_LOCK=/run/flaskmongo-real-node
# The operator's default --volume-root: the stack's volumes there go with the stack.
VOLUME_ROOT=/var/lib/flaskmongo
NODE_COMPONENTS=(containerd kubelet kube-proxy coredns metrics-server)
# Debian's packages the node needs, by the command that shows each is there.
NODE_PACKAGES=(containerd:containerd runc:runc ctr:containerd iptables:iptables conntrack:conntrack
  ip:iproute2 /usr/lib/cni/bridge:containernetworking-plugins)

node_dir() { printf '%s/node' "$STATE"; }

# node_prerequisites: install what Debian provides, refuse what cannot be had, before anything
# starts, so a missing piece never leaves half a stack.
node_prerequisites() {
  [ "$(id -u)" = 0 ] || die "a real node needs root (containers, mounts, network namespaces); run as root or without NODE=real"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems || die "a real node needs overlayfs in the kernel (modprobe overlay); run without NODE=real"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] ||
    die "a real node needs cgroups mounted under /sys/fs/cgroup"
  local entry missing=()
  for entry in "${NODE_PACKAGES[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || [ -x "${entry%%:*}" ] || missing+=("${entry#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${missing[*]}: install these packages (no apt-get here)"
    log "installing ${missing[*]} from Debian"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2 ||
      die "could not install ${missing[*]} (apt-get install -y ${missing[*]})"
  fi
  local other
  other=$(cat "$NODE_LOCK" 2>/dev/null || true)
  if [ -n "$other" ] && [ "$other" != "$STATE" ]; then
    if kill -0 "$(cat "$other/pids/kubelet.pid" 2>/dev/null)" 2>/dev/null ||
      kill -0 "$(cat "$other/pids/containerd.pid" 2>/dev/null)" 2>/dev/null; then
      die "a real node already runs for $other: stop it first (LOCAL_STACK_DIR=$other hack/local-stack.sh down)"
    fi
    # A node whose processes are gone (a machine restarted, a session ended): its traces go.
    log "removing the remains of the real node of $other"
    (STATE=$other && { [ ! -f "$STATE/ports" ] || load_ports; } && node_down)
  fi
}

# The certificates of the node's components, signed by the stack's CA (gen_pki's `sign`).
node_pki() {
  cd "$STATE/pki"
  cat > node-server.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$NODE_NAME,DNS:metrics-server.kube-system.svc,IP:$NODE_IP
EOF
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" client.ext
  sign kubelet-serving "/CN=$NODE_NAME" node-server.ext
  sign metrics-server-serving "/CN=metrics-server" node-server.ext
  # The API server's identity towards kubelets (logs, exec) and aggregated APIs.
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client.ext
  sign front-proxy-client "/CN=front-proxy-client" client.ext
  sign kube-proxy "/CN=system:kube-proxy" client.ext
  cd - >/dev/null
}

# The API server's flags that a real node needs: pods reach it through the `kubernetes`
# Service at the node's address, it reaches kubelets with a client certificate, and it proxies
# the metrics API to metrics-server.
node_apiserver_flags() {
  local pki=$STATE/pki
  printf '%s\n' --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --endpoint-reconciler-type=lease \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --requestheader-client-ca-file="$pki/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    --enable-aggregator-routing=true
}

node_network_up() {
  # The bridge exists before the CNI plugin sees it, with the gateway address, so the plugin
  # need not act as gateway: that would switch on IP forwarding for the whole machine. It
  # also carries the node's address (the kubelet refuses a loopback one).
  # One real node per machine: a bridge of that name is a remain of an ended one.
  ip link del "$POD_BRIDGE" 2>/dev/null || true
  ip link add "$POD_BRIDGE" type bridge
  ip addr add "$POD_GATEWAY/24" dev "$POD_BRIDGE"
  ip addr add "$NODE_IP/32" dev "$POD_BRIDGE"
  ip link set "$POD_BRIDGE" up
  mkdir -p "$(node_dir)/cni"
  cat > "$(node_dir)/cni/10-flaskmongo.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "flaskmongo",
  "plugins": [
    {
      "type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$(node_dir)/cni-ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}, {"dst": "$NODE_IP/32"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
}

node_containerd_config() {
  local dir; dir=$(node_dir)
  mkdir -p "$dir/containerd/certs.d/_default" "$dir/containerd/certs.d/docker.io"
  # No registry can be reached, and none may be tried: every host resolves to a closed port.
  local hosts='server = "http://127.0.0.1:9"'
  echo "$hosts" > "$dir/containerd/certs.d/_default/hosts.toml"
  echo "$hosts" > "$dir/containerd/certs.d/docker.io/hosts.toml"
  cat > "$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Lowering a process's OOM score is refused on this kind of machine; without this every
  # sandbox fails in runc.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/containerd/certs.d"
EOF
}

node_kubelet_config() {
  local dir pki=$STATE/pki; dir=$(node_dir)
  # Pods get cluster DNS and nothing of this machine's resolvers.
  : > "$dir/resolv.conf"
  cat > "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$dir/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
# This machine's cgroups are v1; the kubelet refuses them unless told.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $dir/resolv.conf
podLogsDir: $dir/pod-logs
# Images cannot be pulled again here: never collect them, never evict for disk. The node
# shares this machine's disk, whose free space a build can take down to a few percent; a
# disk threshold ("1%" of a 250 GB disk is 2.5 GB) would taint the node with disk-pressure and
# leave every new pod Pending. "0%" switches a threshold off.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%", imagefs.inodesFree: "0%"}
serializeImagePulls: false
maxPods: 110
EOF
  cat > "$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
clusterCIDR: $POD_SUBNET
# NodePorts on 127.0.0.1 only: reachable from this machine, from nowhere else.
nodePortAddresses: [127.0.0.1/32]
iptables: {localhostNodePorts: true}
# Leave the machine's conntrack table sizes alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  cat > "$dir/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
  bind $NODE_IP
  errors
  health 127.0.0.1:$COREDNS_HEALTH_PORT
  ready 127.0.0.1:$COREDNS_READY_PORT
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $STATE/kubeconfig local
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
  }
  cache 30
}
EOF
}

cgroup_dirs() { # every hierarchy's folder of the node's pods, even those not made yet
  local h
  for h in /sys/fs/cgroup/*/; do
    printf '%s%s\n' "$h" "$CGROUP_ROOT"
  done
}

start_containerd() {
  launch containerd containerd --config "$(node_dir)/containerd/config.toml"
  wait_until containerd 30 ctr --address "$(node_dir)/containerd.sock" version
}

start_kubelet() {
  local d
  for d in $(cgroup_dirs); do mkdir -p "$d"; done
  mkdir -p "$(node_dir)/kubelet"
  launch kubelet "$KUBE_BIN/kubelet" --config="$(node_dir)/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --root-dir="$(node_dir)/kubelet"
  wait_until kubelet 60 http_ok "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
}

start_kube_proxy() {
  launch kube-proxy "$KUBE_BIN/kube-proxy" --config="$(node_dir)/kube-proxy.yaml"
  wait_until kube-proxy 30 http_ok "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
}

start_coredns() {
  launch coredns "$COREDNS_BIN" -conf "$(node_dir)/Corefile"
  wait_until coredns 30 http_ok "http://127.0.0.1:$COREDNS_READY_PORT/ready"
}

# metrics-server runs beside the node, as CoreDNS does, and serves the metrics API through the
# API server's aggregation layer: a Service without selector whose endpoint is the node address.
start_metrics_server() {
  local pki=$STATE/pki kc=$STATE/kubeconfig
  launch metrics-server "$METRICS_SERVER_BIN" --bind-address="$NODE_IP" --secure-port="$METRICS_SERVER_PORT" \
    --tls-cert-file="$pki/metrics-server-serving.crt" --tls-private-key-file="$pki/metrics-server-serving.key" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --kubelet-use-node-status-port --metric-resolution=10s --kubelet-request-timeout=5s
  wait_until metrics-server 60 https_ok "https://$NODE_IP:$METRICS_SERVER_PORT/readyz"
  kubectl_local apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec:
  ports: [{name: https, port: 443, targetPort: $METRICS_SERVER_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {kubernetes.io/service-name: metrics-server, endpointslice.kubernetes.io/managed-by: flaskmongo-local-stack}
addressType: IPv4
endpoints: [{addresses: [$NODE_IP]}]
ports: [{name: https, port: $METRICS_SERVER_PORT, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: metrics-server, namespace: kube-system, port: 443}
  caBundle: $(base64 -w0 < "$pki/ca.crt")
EOF
}

# node_up: the node after the control plane; returns when the node is Ready and its images
# are in containerd.
node_up() {
  echo "$STATE" > "$NODE_LOCK"
  write_kubeconfig kubelet "$STATE/kubelet.kubeconfig"
  write_kubeconfig kube-proxy "$STATE/kube-proxy.kubeconfig"
  # kube-proxy reads Services, EndpointSlices and Nodes, and writes Events.
  kubectl_local create clusterrolebinding flaskmongo-kube-proxy --clusterrole=system:node-proxier --user=system:kube-proxy >/dev/null
  node_network_up
  node_containerd_config
  node_kubelet_config
  log "containerd"; start_containerd
  log "images"; "$here/images.py" load --address "$(node_dir)/containerd.sock" >&2
  log "kubelet (node $NODE_NAME at $NODE_IP), kube-proxy, CoreDNS, metrics-server"
  start_kubelet
  # kube-proxy lets 127.0.0.1 be routed, for NodePorts there; `down` puts the setting back.
  sysctl -n net.ipv4.conf.all.route_localnet > "$(node_dir)/route_localnet"
  start_kube_proxy
  start_coredns
  start_metrics_server
  wait_until kubelet 60 kubectl_local wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}

# remove_kube_chains iptables|ip6tables: the KUBE-* chains and the rules jumping to them, which
# the kubelet makes and kube-proxy's own clean-up leaves.
remove_kube_chains() {
  local cmd=$1 table rule chain
  command -v "$cmd" >/dev/null || return 0
  for table in filter nat mangle; do
    "$cmd" -t "$table" -S 2>/dev/null | { grep -E '^-A .* -j KUBE-' || true; } | while read -r rule; do
      eval "$cmd -t $table ${rule/#-A/-D}" || true
    done
    for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
      "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
      "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

# node_env: the lines .local/env gains for a real node.
node_env() {
  cat <<EOF
export NODE=real
# NodePorts answer on this address of this machine.
export NODE_ADDRESS=127.0.0.1
# Built here from the pinned FerretDB: the official mongo image cannot be fetched here.
export MONGO_STANDIN_IMAGE=$MONGO_STANDIN_IMAGE
export CONTAINERD_ADDRESS=$(node_dir)/containerd.sock
EOF
}

# node_down: stop the pods through the kubelet (so the CNI plugin releases their addresses and
# the kubelet unmounts their volumes), then the node, then remove every trace it left: iptables
# rules, interfaces, mounts and cgroups. Safe on a half-started node.
node_down() {
  local sock dir pid d
  dir=$(node_dir)
  sock=$dir/containerd.sock
  # The folders of the volumes this stack's pods used, removed once nothing mounts them.
  local volumes=()
  if alive kube-apiserver; then
    mapfile -t volumes < <(kubectl_local get pv -o jsonpath='{range .items[*]}{.spec.hostPath.path}{"\n"}{end}' 2>/dev/null |
      { grep "^$VOLUME_ROOT/[^.]" || true; })
  fi
  if alive kubelet && alive kube-apiserver; then
    # Nothing may replace the pods while they go.
    stop_pids "$(pid_of kube-controller-manager)" "$(pid_of kube-scheduler)"
    kubectl_local delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ] && [ -n "$(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null)" ]; do sleep 0.5; done
  fi
  local others=()
  for c in kubelet kube-proxy coredns metrics-server; do pid=$(pid_of "$c"); [ -z "$pid" ] || others+=("$pid"); done
  [ ${#others[@]} -eq 0 ] || stop_pids "${others[@]}"
  # What the kubelet did not stop: its containers' processes, then their shims.
  for d in $(cgroup_dirs); do
    [ ! -d "$d" ] || find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  # Shims outlive containerd; killed, they leave their sockets (under /run/containerd/s).
  local shims shim_sockets=()
  shims=$(pgrep -f "containerd-shim-runc-v2 .*-address $sock" || true)
  for pid in $shims; do
    mapfile -t -O ${#shim_sockets[@]} shim_sockets < <(ss -xlpn | awk -v p="pid=$pid," 'index($0, p) {print $5}')
  done
  [ -z "$shims" ] || kill -KILL $shims 2>/dev/null || true
  [ ${#shim_sockets[@]} -eq 0 ] || rm -f "${shim_sockets[@]}"
  pid=$(pid_of containerd)
  [ -z "$pid" ] || stop_pids "$pid"
  if [ -x "$KUBE_BIN/kube-proxy" ]; then "$KUBE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  remove_kube_chains iptables
  remove_kube_chains ip6tables
  [ ! -f "$dir/route_localnet" ] || sysctl -qw "net.ipv4.conf.all.route_localnet=$(cat "$dir/route_localnet")"
  ip link del "$POD_BRIDGE" 2>/dev/null || true
  # Mounts deepest first: volumes, overlay root file systems, network namespaces, the
  # kubelet's own bind mount of its root folder.
  findmnt -rn -o TARGET | { grep -F "$dir/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  for d in $(cgroup_dirs); do
    [ ! -d "$d" ] || find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  local volume
  for volume in "${volumes[@]}"; do
    rm -rf "$volume"
    # The namespace's folder and the root, which the kubelet made with the first volume.
    rmdir "$(dirname "$volume")" "$VOLUME_ROOT" 2>/dev/null || true
  done
  rm -f "$NODE_LOCK"
}
