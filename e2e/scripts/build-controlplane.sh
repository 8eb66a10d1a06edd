#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from the wrapper module in
# e2e/controlplane, once per machine: the binaries are cached under a directory keyed by
# the hash of go.mod/go.sum and linked into e2e/.bin (git-ignored).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$here/controlplane"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")"
key="$(cat "$mod/go.mod" "$mod/go.sum" "$0" | sha256sum | cut -c1-16)"
cache="${NODESHELL_CACHE:-$HOME/.cache/nodeshell}/controlplane-$key"
bin="$here/.bin"

if ! command -v go >/dev/null 2>&1; then
  echo "build-controlplane: Go is required (apt-get install golang or the machine's Go)" >&2
  exit 1
fi

bins=(kube-apiserver kube-controller-manager kubectl etcd)
missing=0
for b in "${bins[@]}"; do [[ -x "$cache/$b" ]] || missing=1; done
if ((missing)); then
  echo "build-controlplane: building kube-apiserver $k8s_version and etcd (cold: 10-20 min)" >&2
  mkdir -p "$cache.tmp"
  major="${k8s_version#v}"; major="${major%%.*}"
  minor="$(echo "$k8s_version" | cut -d. -f2)"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  (
    cd "$mod"
    export CGO_ENABLED=0 GOFLAGS=-mod=mod
    go build -ldflags "$ldflags" -o "$cache.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    go build -ldflags "$ldflags" -o "$cache.tmp/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
    go build -ldflags "$ldflags" -o "$cache.tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
    go build -ldflags "-s -w" -o "$cache.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$cache"
  mv "$cache.tmp" "$cache"
fi
mkdir -p "$bin"
for b in "${bins[@]}"; do
  ln -sfn "$cache/$b" "$bin/$b"
done
echo "$bin"
