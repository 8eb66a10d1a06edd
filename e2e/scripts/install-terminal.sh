#!/usr/bin/env bash
# Makes the kubectl plugin's terminal test runnable: Debian's tmux (the test drives the plugin
# in a real terminal through it). Quiet when it is already there.
set -euo pipefail

if command -v tmux >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-terminal: tmux is missing and apt-get is not available; install tmux" >&2
  exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  sudo=(sudo)
fi
echo "install-terminal: installing Debian's tmux" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends tmux >/dev/null
