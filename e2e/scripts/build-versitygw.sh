#!/usr/bin/env bash
# Builds versitygw (github.com/versity/versitygw, Apache-2.0), an S3-compatible server with
# Object Lock, from the Go module proxy, once per machine: cached under a directory named by
# its version, linked into e2e/.bin. The S3 sink test starts it through NODESHELL_VERSITYGW.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${NODESHELL_VERSITYGW_VERSION:-v1.8.0}"
cache="${NODESHELL_CACHE:-$HOME/.cache/nodeshell}/versitygw-$version"
if [[ ! -x "$cache/versitygw" ]]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "build-versitygw: Go is required to build versitygw $version" >&2
    exit 1
  fi
  echo "build-versitygw: building versitygw $version (first run only, a few minutes)" >&2
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  # go install into a private GOBIN: nothing lands in the user's GOPATH/bin.
  CGO_ENABLED=0 GOBIN="$cache.tmp" GOFLAGS=-mod=mod \
    go install -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$version"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
mkdir -p "$here/.bin"
ln -sfn "$cache/versitygw" "$here/.bin/versitygw"
echo "$here/.bin/versitygw"
