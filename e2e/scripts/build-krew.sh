#!/usr/bin/env bash
# Builds krew (the kubectl plugin manager) from the Go module proxy, once per machine: cached
# under a directory named by its version, linked into e2e/.bin. The krew manifest test
# installs the plugin archive with it through NODESHELL_KREW.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${NODESHELL_KREW_VERSION:-v0.4.4}"
cache="${NODESHELL_CACHE:-$HOME/.cache/nodeshell}/krew-$version"
if [[ ! -x "$cache/krew" ]]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "build-krew: Go is required to build krew $version" >&2
    exit 1
  fi
  echo "build-krew: building krew $version (first run only)" >&2
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  # go install into a private GOBIN: nothing lands in the user's GOPATH/bin.
  CGO_ENABLED=0 GOBIN="$cache.tmp" GOFLAGS=-mod=mod \
    go install -ldflags "-s -w" "sigs.k8s.io/krew/cmd/krew@$version"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
mkdir -p "$here/.bin"
ln -sfn "$cache/krew" "$here/.bin/krew"
echo "$here/.bin/krew"
