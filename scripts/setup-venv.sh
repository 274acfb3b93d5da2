#!/usr/bin/env bash
# Creates (or refreshes) the virtual environment .venv with napari-sam, its test and docs tools and a pinned torch.
# Set TORCH_INDEX_URL to take torch from another wheel index (for example PyTorch's CPU-only or CUDA index).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
stamp="$venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
[[ -f $stamp ]] && exit 0
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -c constraints.txt ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$(grep -Po '^torch==\K.*' constraints.txt)"
"${pip[@]}" -c constraints.txt -e ".[test,docs]"
rm -f "$venv"/.installed-*
touch "$stamp"
