#!/usr/bin/env bash
# Builds promtool (Prometheus's checker of metric names and rules) from the Go module proxy,
# once per machine: cached under a directory named by its version, linked into e2e/.bin.
# The monitoring tests run it through NODESHELL_PROMTOOL.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${NODESHELL_PROMTOOL_VERSION:-v0.316.0}"
cache="${NODESHELL_CACHE:-$HOME/.cache/nodeshell}/promtool-$version"
if [[ ! -x "$cache/promtool" ]]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "build-promtool: Go is required to build promtool $version" >&2
    exit 1
  fi
  echo "build-promtool: building promtool $version (first run only)" >&2
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  # go install into a private GOBIN: nothing lands in the user's GOPATH/bin.
  CGO_ENABLED=0 GOBIN="$cache.tmp" GOFLAGS=-mod=mod \
    go install -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@$version"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
mkdir -p "$here/.bin"
ln -sfn "$cache/promtool" "$here/.bin/promtool"
echo "$here/.bin/promtool"
