#!/usr/bin/env bash
# Runs the SSM frame-decoder fuzz target for N seconds (default 60). Needs a nightly
# toolchain (cargo-fuzz is installed from crates.io when missing). Without nightly it says
# so and exits 0: the property tests in `cargo test` still cover the decoder.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/../.."
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: skipped — no nightly toolchain on this machine (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io"
  cargo install --locked cargo-fuzz >/dev/null
fi
for target in $(cargo +nightly fuzz list); do
  echo "fuzz: $target for ${secs}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -n 3
done
