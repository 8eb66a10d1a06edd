#!/usr/bin/env bash
# Builds helm from the Go module proxy, once per machine: cached under a directory named by
# its version, linked into e2e/.bin. The chart tests run it through NODESHELL_HELM.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${NODESHELL_HELM_VERSION:-v3.19.5}"
cache="${NODESHELL_CACHE:-$HOME/.cache/nodeshell}/helm-$version"
if [[ ! -x "$cache/helm" ]]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "build-helm: Go is required to build helm $version" >&2
    exit 1
  fi
  echo "build-helm: building helm $version (first run only)" >&2
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  # go install into a private GOBIN: nothing lands in the user's GOPATH/bin.
  CGO_ENABLED=0 GOBIN="$cache.tmp" GOFLAGS=-mod=mod \
    go install -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$version"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
mkdir -p "$here/.bin"
ln -sfn "$cache/helm" "$here/.bin/helm"
echo "$here/.bin/helm"
