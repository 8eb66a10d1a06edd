#!/usr/bin/env bash
# Stops the control plane started by e2e/scripts/e2e-up.sh: SIGTERM to `nodeshell dev`,
# which stops its children in order and removes the kubeconfigs it wrote.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
run="$root/e2e/.run"
pidfile="$run/dev.pid"

# True when the pid file names a live `nodeshell dev` (not a recycled pid).
running() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "nodeshell dev"
}

if [[ ! -f "$pidfile" ]]; then
  echo "e2e-down: nothing to stop (no $pidfile)" >&2
  exit 0
fi
pid="$(cat "$pidfile")"
if running; then
  kill -TERM "$pid"
  for ((i = 0; i < 120; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    # Its children still die with it: their lifeline pipe closes.
    echo "e2e-down: pid $pid ignored SIGTERM for 30s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
rm -f "$pidfile" "$run/dev.ready"
echo "e2e-down: stopped" >&2
