#!/usr/bin/env bash
# Builds AWS's session-manager-plugin from the wrapper module in e2e/ssmplugin, once per
# machine: cached under a directory keyed by go.mod/go.sum, linked into e2e/.bin.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$here/ssmplugin"
key="$(cat "$mod/go.mod" "$mod/go.sum" "$0" | sha256sum | cut -c1-16)"
cache="${NODESHELL_CACHE:-$HOME/.cache/nodeshell}/ssmplugin-$key"
if ! command -v go >/dev/null 2>&1; then
  echo "build-ssm-plugin: Go is required to build the interop peer" >&2
  exit 1
fi
if [[ ! -x "$cache/session-manager-plugin" ]]; then
  echo "build-ssm-plugin: building session-manager-plugin 1.2.677.0" >&2
  mkdir -p "$cache.tmp"
  (cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -ldflags "-s -w" \
     -o "$cache.tmp/session-manager-plugin" github.com/aws/session-manager-plugin/src/sessionmanagerplugin-main)
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
mkdir -p "$here/.bin"
ln -sfn "$cache/session-manager-plugin" "$here/.bin/session-manager-plugin"
echo "$here/.bin/session-manager-plugin"
