#!/usr/bin/env bash
# Builds the local stack's Go binaries from pinned modules of the Go module proxy,
# each through a generated wrapper module, into $TOOLS_DIR/<name>-<version>/.
# A binary is rebuilt only when its pin changes. Prints the bin folder of each tool.
#
#   hack/tools.sh [etcd|kubernetes|kwok|ferretdb ...]   (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=versions.env
source "$here/versions.env"
TOOLS_DIR=${TOOLS_DIR:-$root/.tools}
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

log() { printf '[tools] %s\n' "$*" >&2; }

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
    go get "go.etcd.io/etcd/server/v3@$v" "go.etcd.io/etcd/api/v3@$v" "go.etcd.io/etcd/client/pkg/v3@$v" \
      "go.etcd.io/etcd/client/v3@$v" "go.etcd.io/etcd/pkg/v3@$v" >/dev/null 2>&1 &&
    go build -trimpath -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  mv "$out.tmp" "$out"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION out="$TOOLS_DIR/kubernetes-$KUBERNETES_VERSION"
  [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/kube-scheduler" ] && return 0
  log "building kube-apiserver, kube-controller-manager, kube-scheduler $v"
  local src; src=$(new_wrapper kubernetes "$v")
  local staging=v0${v#v1}   # k8s.io/kubernetes v1.X.Y ships its staging modules as v0.X.Y
  local modfile
  modfile=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # k8s.io/kubernetes requires every staging module at v0.0.0: replace each with its release.
  local replaces
  replaces=$(awk '/^\t?k8s\.io\/[^ ]+ v0\.0\.0$/ {print $1} /^require/ {} ' "$modfile" | sed 's/^\t//' | sort -u)
  [ -n "$replaces" ] || { log "no staging modules found in $modfile"; return 1; }
  log "  replacing $(echo "$replaces" | wc -l) staging modules with $staging"
  (cd "$src" &&
    for m in $replaces; do go mod edit -replace "$m=$m@$staging"; done &&
    printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler/app"\n)\n' > tools.go &&
    go get "k8s.io/kubernetes@$v" >/dev/null 2>&1 && go mod tidy >/dev/null 2>&1)
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$v" | cut -d. -f2) -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  mkdir -p "$out.tmp"
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    log "  go build $c"
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp/$c" "k8s.io/kubernetes/cmd/$c")
  done
  mv "$out.tmp" "$out"
}

build_kwok() {
  local v=$KWOK_VERSION out="$TOOLS_DIR/kwok-$KWOK_VERSION"
  [ -x "$out/kwok" ] && return 0
  log "building kwok $v"
  local src; src=$(new_wrapper kwok "$v")
  (cd "$src" &&
    printf 'package tools\n\nimport _ "sigs.k8s.io/kwok/pkg/kwok/cmd"\n' > tools.go &&
    go get "sigs.k8s.io/kwok@$v" >/dev/null 2>&1 &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  mv "$out.tmp" "$out"
}

build_ferretdb() {
  local v=$FERRETDB_VERSION out="$TOOLS_DIR/ferretdb-$FERRETDB_VERSION"
  [ -x "$out/ferretdb" ] && return 0
  log "building FerretDB $v"
  local src; src=$(new_wrapper ferretdb "$v")
  (cd "$src" &&
    printf 'package tools\n\nimport _ "github.com/FerretDB/FerretDB/cmd/ferretdb"\n' > tools.go &&
    go get "github.com/FerretDB/FerretDB@$v" >/dev/null 2>&1 &&
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/ferretdb" github.com/FerretDB/FerretDB/cmd/ferretdb)
  mv "$out.tmp" "$out"
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(etcd kubernetes kwok ferretdb)
for n in "${names[@]}"; do
  case "$n" in
    etcd|kubernetes|kwok|ferretdb) "build_$n" ;;
    *) log "unknown tool '$n' (expected etcd, kubernetes, kwok or ferretdb)"; exit 2 ;;
  esac
done
