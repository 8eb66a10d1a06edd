#!/usr/bin/env bash
# Makes the browser test runnable: Debian's Chromium (playwright-core drives it; no browser
# is ever downloaded from elsewhere) and the console's npm packages, playwright-core among
# them. Quiet when everything is already there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
chromium="${NODESHELL_CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$chromium" ]]; then
  if [[ "$chromium" != /usr/bin/chromium ]]; then
    echo "install-browser: NODESHELL_CHROMIUM=$chromium is not an executable" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: /usr/bin/chromium is missing and apt-get is not available;" \
      "install Chromium and set NODESHELL_CHROMIUM to its path" >&2
    exit 1
  fi
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    sudo=(sudo)
  fi
  echo "install-browser: installing Debian's chromium" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    chromium >/dev/null
fi

# web/build.sh runs `npm ci` only when node_modules is missing or older than the lock file.
if [[ -x "$root/web/build.sh" ]]; then
  "$root/web/build.sh" >/dev/null
fi
