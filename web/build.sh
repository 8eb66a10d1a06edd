#!/usr/bin/env bash
# Builds the web console into web/dist/ (embedded into the binary by build.rs).
# Installs the npm packages first when node_modules is missing or older than the lock file.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "web/build.sh: the web console needs Node.js 20+ and npm (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # playwright-core never downloads a browser; the variable keeps it that way.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/assets"
node_modules/.bin/esbuild src/main.js --bundle --format=esm --target=es2022 --minify \
  --legal-comments=none --log-level=warning --outfile="$out/assets/console.js"
node_modules/.bin/esbuild src/styles.css --bundle --minify --log-level=warning \
  --outfile="$out/assets/console.css"
cp index.html "$out/index.html"
cp favicon.svg "$out/assets/favicon.svg"

# Copy only what changed: an unchanged web/dist keeps cargo from rebuilding the crate.
mkdir -p dist
(cd "$out" && find . -type f) | while read -r f; do
  if ! cmp -s "$out/$f" "dist/$f"; then
    mkdir -p "dist/$(dirname "$f")"
    cp "$out/$f" "dist/$f"
  fi
done
(cd dist && find . -type f) | while read -r f; do
  [ -e "$out/$f" ] || rm -f "dist/$f"
done
echo "web console built in web/dist ($(du -sh dist | cut -f1))"
