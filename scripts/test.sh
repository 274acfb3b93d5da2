#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, the virtual environment, the checked contracts (import
# layers, types of the core, the docs site), then pytest under Xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup-venv.sh
.venv/bin/lint-imports --no-cache
.venv/bin/mypy
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -ra --durations=15 "$@"
