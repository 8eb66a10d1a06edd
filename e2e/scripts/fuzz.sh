#!/usr/bin/env bash
# Runs each fuzz target (today: frame_decode) for N seconds (default 60), starting from the
# committed seed corpus fuzz/seeds/<target> (valid frames written by the unit test
# `fuzz_seeds_are_valid_frames_and_match_the_committed_corpus` in src/ssm/payload.rs), so
# inputs pass the frame digest and reach the payload parsers. New inputs go to the git-ignored
# fuzz/corpus/<target>. Needs a nightly toolchain (cargo-fuzz is installed from crates.io
# when missing). Without nightly it says so and exits 0: the property tests in `cargo test`
# still cover the decoder. With nightly, any failure (build error, crash, leak, timeout, a
# missing seed corpus) exits non-zero.
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
# A failing `cargo fuzz list` inside $(...) would not stop the script: check it on its own.
if ! targets="$(cargo +nightly fuzz list)"; then
  echo "fuzz: FAILED — cargo +nightly fuzz list did not run" >&2
  exit 1
fi
if [ -z "$targets" ]; then
  echo "fuzz: FAILED — no fuzz targets found under fuzz/" >&2
  exit 1
fi
log_dir="fuzz/artifacts/logs"
mkdir -p "$log_dir"
for target in $targets; do
  seeds="fuzz/seeds/$target"
  corpus="fuzz/corpus/$target"
  nseeds=$(find "$seeds" -type f 2>/dev/null | wc -l)
  if [ "$nseeds" -eq 0 ]; then
    echo "fuzz: FAILED — $target has no seed corpus in $seeds (cargo test --lib fuzz_seeds writes it with NODESHELL_WRITE_FUZZ_SEEDS=1)" >&2
    exit 1
  fi
  mkdir -p "$corpus"
  log="$log_dir/$target.log"
  echo "fuzz: $target for ${secs}s from $nseeds seeds in $seeds"
  # The writable corpus comes first: libFuzzer adds new inputs to the first directory only,
  # so the committed seeds stay as they are.
  status=0
  cargo +nightly fuzz run "$target" "$corpus" "$seeds" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  tail -n 3 "$log"
  if [ "$status" -ne 0 ]; then
    echo "fuzz: FAILED — $target exited with status $status; full log in $log, crash input (if any) under fuzz/artifacts/$target" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written|error(\[|:)' "$log" | head -n 20 >&2 || true
    exit 1
  fi
  # libFuzzer reports how many inputs it read from the corpus directories: the seeds must be
  # among them (a wrong path would otherwise fuzz from nothing and still pass).
  if ! grep -Eq 'INFO: +seed corpus: files: [1-9]' "$log"; then
    echo "fuzz: FAILED — $target did not load its seed corpus; full log in $log" >&2
    exit 1
  fi
  if ! grep -q '^Done [0-9]* runs' "$log"; then
    echo "fuzz: FAILED — $target did not finish its run; full log in $log" >&2
    exit 1
  fi
done
