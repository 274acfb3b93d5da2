#!/usr/bin/env bash
# napari with the napari-sam widget docked on a sample image, from a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup-venv.sh
exec .venv/bin/napari-sam demo "$@"
