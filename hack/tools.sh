#!/usr/bin/env bash
# Builds the local stack's Go binaries from pinned modules of the Go module proxy,
# each through a generated wrapper module, into $TOOLS_DIR/<name>-<version>/.
# A binary is rebuilt only when its pin changes. Prints the bin folder of each tool.
#
#   hack/tools.sh [etcd|kubernetes|kwok|ferretdb|coredns|metrics-server ...]   (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=versions.env
source "$here/versions.env"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

log() { printf '[tools] %s\n' "$*" >&2; }

# quiet CMD...: run CMD, showing its output only when it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

# new_wrapper NAME VERSION: a fresh wrapper module folder; prints its path.
new_wrapper() {
  local src="$TOOLS_DIR/src/$1-$2"
  rm -rf "$src" && mkdir -p "$src"
  (cd "$src" && go mod init "local.test/$1-wrapper" >/dev/null 2>&1)
  printf '%s' "$src"
}

build_etcd() {
  local v=$ETCD_VERSION out="$TOOLS_DIR/etcd-$ETCD_VERSION"
  [ -x "$out/etcd" ] && return 0
  log "building etcd $v (go.etcd.io/etcd/server/v3 and its sibling modules)"
  local src; src=$(new_wrapper etcd "$v")
  (cd "$src" &&
    printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3/embed"\n' > tools.go &&
    quiet go get "go.etcd.io/etcd/server/v3@$v" "go.etcd.io/etcd/api/v3@$v" "go.etcd.io/etcd/client/pkg/v3@$v" \
      "go.etcd.io/etcd/client/v3@$v" "go.etcd.io/etcd/pkg/v3@$v" &&
    go build -trimpath -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  mv "$out.tmp" "$out"
}

KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

build_kubernetes() {
  local v=$KUBERNETES_VERSION out="$TOOLS_DIR/kubernetes-$KUBERNETES_VERSION" c missing=()
  for c in "${KUBE_COMMANDS[@]}"; do [ -x "$out/$c" ] || missing+=("$c"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "building ${missing[*]} $v"
  local src="$TOOLS_DIR/src/kubernetes-$v"
  [ -f "$src/tools.go" ] || kubernetes_wrapper "$v" "$src"
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$v" | cut -d. -f2) -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  mkdir -p "$out"
  for c in "${missing[@]}"; do
    log "  go build $c"
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$out/$c.tmp" "$out/$c"
  done
}

# kubernetes_wrapper VERSION DIR: a module that builds k8s.io/kubernetes commands at VERSION.
kubernetes_wrapper() {
  local v=$1 src
  src=$(new_wrapper kubernetes "$v")
  local staging=v0${v#v1}   # k8s.io/kubernetes v1.X.Y ships its staging modules as v0.X.Y
  local modfile
  modfile=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # k8s.io/kubernetes requires every staging module at v0.0.0: replace each with its release.
  local replaces
  replaces=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$modfile" | sort -u)
  [ -n "$replaces" ] || { log "no staging modules found in $modfile"; return 1; }
  log "  replacing $(echo "$replaces" | wc -l) staging modules with $staging"
  # The wrapper imports each command's package so that `go mod tidy` records its dependencies.
  local imports="" c
  for c in "${KUBE_COMMANDS[@]}"; do
    case "$c" in
      kubectl) imports+=$'\t_ "k8s.io/kubectl/pkg/cmd"\n' ;;
      *) imports+=$'\t_ "k8s.io/kubernetes/cmd/'"$c"$'/app"\n' ;;
    esac
  done
  (cd "$src" &&
    for m in $replaces; do go mod edit -replace "$m=$m@$staging"; done &&
    printf 'package tools\n\nimport (\n%s)\n' "$imports" > tools.go.new &&
    quiet go get "k8s.io/kubernetes@$v" && mv tools.go.new tools.go && quiet go mod tidy)
}

build_kwok() {
  local v=$KWOK_VERSION out="$TOOLS_DIR/kwok-$KWOK_VERSION"
  [ -x "$out/kwok" ] && return 0
  log "building kwok $v"
  local src; src=$(new_wrapper kwok "$v")
  (cd "$src" &&
    printf 'package tools\n\nimport _ "sigs.k8s.io/kwok/pkg/kwok/cmd"\n' > tools.go &&
    quiet go get "sigs.k8s.io/kwok@$v" &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  mv "$out.tmp" "$out"
}

build_ferretdb() {
  local v=$FERRETDB_VERSION out="$TOOLS_DIR/ferretdb-$FERRETDB_VERSION"
  [ -x "$out/ferretdb" ] && return 0
  log "building FerretDB $v"
  local src; src=$(new_wrapper ferretdb "$v")
  # FerretDB embeds build/version/version.txt, which its published module lacks (the binary
  # panics at start without it): build from a copy of the module with that file written.
  local module
  module=$(cd "$src" && go mod download -json "github.com/FerretDB/FerretDB@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp -r "$module" "$src/ferretdb" && chmod -R u+w "$src/ferretdb"
  echo "$v" > "$src/ferretdb/build/version/version.txt"
  (cd "$src" &&
    printf 'package tools\n\nimport _ "github.com/FerretDB/FerretDB/cmd/ferretdb"\n' > tools.go &&
    go mod edit -replace "github.com/FerretDB/FerretDB=./ferretdb" &&
    quiet go get "github.com/FerretDB/FerretDB@$v" && quiet go mod tidy &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/ferretdb" github.com/FerretDB/FerretDB/cmd/ferretdb)
  mv "$out.tmp" "$out"
}

# CoreDNS with only the plugins the real node's cluster DNS uses: a smaller build than the
# release binary (whose cloud plugins bring hundreds of modules), and nothing that forwards.
build_coredns() {
  local v=$COREDNS_VERSION out="$TOOLS_DIR/coredns-$COREDNS_VERSION"
  [ -x "$out/coredns" ] && return 0
  log "building CoreDNS $v (bind, errors, health, ready, kubernetes, cache)"
  local src; src=$(new_wrapper coredns "$v")
  (cd "$src" &&
    cat > main.go <<'GO' &&
package main

import (
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
GO
    quiet go get "github.com/coredns/coredns@$v" && quiet go mod tidy &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/coredns" .)
  mv "$out.tmp" "$out"
}

build_metrics_server() {
  local v=$METRICS_SERVER_VERSION out="$TOOLS_DIR/metrics-server-$METRICS_SERVER_VERSION"
  [ -x "$out/metrics-server" ] && return 0
  log "building metrics-server $v"
  local src; src=$(new_wrapper metrics-server "$v")
  (cd "$src" &&
    printf 'package tools\n\nimport _ "sigs.k8s.io/metrics-server/pkg/server"\n' > tools.go &&
    quiet go get "sigs.k8s.io/metrics-server@$v" && quiet go mod tidy &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server)
  mv "$out.tmp" "$out"
}

main() {
  names=("$@")
  [ ${#names[@]} -gt 0 ] || names=(etcd kubernetes kwok ferretdb coredns metrics-server)
  for n in "${names[@]}"; do
    case "$n" in
      etcd|kubernetes|kwok|ferretdb|coredns) "build_$n" ;;
      metrics-server) build_metrics_server ;;
      *) log "unknown tool '$n' (expected etcd, kubernetes, kwok, ferretdb, coredns or metrics-server)"; exit 2 ;;
    esac
  done
}

# One line, so that editing this file while it runs cannot change what it runs next.
main "$@"; exit
