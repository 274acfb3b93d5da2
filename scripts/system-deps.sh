#!/usr/bin/env bash
# Installs, through apt, what a fresh Debian/Ubuntu machine lacks to run napari-sam and its tests:
# Python's venv module, a virtual X server (Xvfb) and xdotool (real input) for the Qt tests, and the libraries Qt's xcb platform needs.
# Installs nothing when everything is present.
set -euo pipefail

wanted=(xvfb xauth xdotool libgl1 libegl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
        libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0)
python3 -c "import ensurepip, venv" 2>/dev/null || wanted+=("python3-venv")

missing=()
for package in "${wanted[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ! dpkg -s libglib2.0-0 >/dev/null 2>&1 && ! dpkg -s libglib2.0-0t64 >/dev/null 2>&1; then
  missing+=("glib")
fi
((${#missing[@]})) || exit 0

if ! command -v apt-get >/dev/null; then
  echo "Missing system packages (${missing[*]}) and no apt-get: install their equivalents by hand." >&2
  exit 1
fi
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "Installing system packages: ${missing[*]}"
$sudo apt-get update -qq
if [[ " ${missing[*]} " == *" glib "* ]]; then
  missing=("${missing[@]/glib/}")
  if apt-cache show libglib2.0-0t64 >/dev/null 2>&1; then missing+=(libglib2.0-0t64); else missing+=(libglib2.0-0); fi
fi
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ${missing[@]}
