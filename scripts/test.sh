#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, the virtual environment, then pytest under Xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup-venv.sh
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -ra --durations=15 "$@"
