#!/usr/bin/env bash
# Set up everything dnas needs on a fresh Debian machine: system packages (when root) and the venv.
# Usage: scripts/setup.sh [--test]. Idempotent: re-running installs only what is missing. Called by `make`; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# System packages: Fashion-MNIST offline (real data for the CPU demos and tests); with --test also
# PostgreSQL (the multi-worker search test) and Chromium (the report's browser test).
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ "${1:-}" = "--test" ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v chromium >/dev/null || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: optional system packages missing (${need[*]}); install them with apt-get as root" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
# (This machine's pip config lists local indexes that may be absent; hide only those warnings.)
# --no-cache-dir: the CUDA build of torch is gigabytes; a cached copy beside the installed one once
# filled a CI machine's disk (ENOSPC during set-up).
pip() { "$VENV/bin/python" -m pip -q --disable-pip-version-check --no-cache-dir "$@" 2> >(grep -v "^WARNING: Location" >&2); }
# The CUDA build of torch and torchvision takes about 5.6 GB in the venv (measured on x86-64): say
# so up front where the disk has less than 6 GiB free, rather than only pip's ENOSPC midway.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  free_kib=$(df -Pk "$VENV" | awk 'NR == 2 {print $4}')
  if [ "${free_kib:-0}" -lt $((6 * 1024 * 1024)) ]; then
    echo "setup: only $((free_kib / 1024)) MiB free for $VENV; torch needs about 6 GiB: free some space or set VENV to a folder on a larger disk" >&2
  fi
fi
# torch first, pinned to the releases this project is tested with (a CUDA build that also runs on CPU).
"$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null || pip install "torch==2.14.1" "torchvision==0.29.1"
pip install -e ".[test]"
"$VENV/bin/python" -c "import dnas, dnas_cli, torch, optuna, fvcore, plotly, typer" \
  || { echo "setup: the environment is incomplete; see the messages above" >&2; exit 1; }
