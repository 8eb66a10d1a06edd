#!/usr/bin/env bash
# Starts a local control plane in the background for e2e runs and manual testing: a real
# kube-apiserver + etcd (+ garbage collector) with nodeshell's CRDs and RBAC, through
# `nodeshell dev --control-plane-only`. Pid, log, kubeconfigs and the ready marker live in
# e2e/.run; e2e/scripts/e2e-down.sh stops it. Prints `export KUBECONFIG=...` on stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
run="$root/e2e/.run"
pidfile="$run/dev.pid"
log="$run/dev.log"
ready="$run/dev.ready"
timeout="${NODESHELL_E2E_UP_TIMEOUT:-180}"
mkdir -p "$run"

# True when the pid file names a live `nodeshell dev` (not a recycled pid).
running() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "nodeshell dev"
}

if running; then
  echo "e2e-up: already running (pid $(cat "$pidfile")); e2e/scripts/e2e-down.sh stops it" >&2
  echo "export KUBECONFIG=$run/kubeconfig"
  exit 0
fi

bindir="${NODESHELL_CONTROLPLANE_BIN:-$root/e2e/.bin}"
if [[ ! -x "$bindir/kube-apiserver" || ! -x "$bindir/etcd" || ! -x "$bindir/kube-controller-manager" ]]; then
  echo "e2e-up: control-plane binaries missing in $bindir; building them (cached afterwards)" >&2
  "$root/e2e/scripts/build-controlplane.sh" >&2
fi

nodeshell="${NODESHELL_BIN:-}"
if [[ -z "$nodeshell" ]]; then
  echo "e2e-up: building nodeshell (debug)" >&2
  (cd "$root" && cargo build --quiet --bin nodeshell >&2)
  nodeshell="${CARGO_TARGET_DIR:-$root/target}/debug/nodeshell"
fi

rm -f "$ready"
# setsid: a later Ctrl-C in this terminal must not reach the background control plane.
(cd "$root" && exec setsid "$nodeshell" dev --control-plane-only --run-dir "$run" \
  >"$log" 2>&1 </dev/null) &
pid=$!
echo "$pid" >"$pidfile"

for ((i = 0; i < timeout * 4; i++)); do
  if [[ -f "$ready" ]]; then
    echo "e2e-up: control plane ready at $(cat "$ready") (pid $pid, log $log)" >&2
    echo "export KUBECONFIG=$run/kubeconfig"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "e2e-up: nodeshell dev exited before it was ready; its log ($log) ends with:" >&2
    tail -n 30 "$log" >&2
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.25
done
echo "e2e-up: not ready after ${timeout}s; stopping it. Log: $log" >&2
tail -n 30 "$log" >&2
kill -TERM "$pid" 2>/dev/null || true
rm -f "$pidfile"
exit 1
