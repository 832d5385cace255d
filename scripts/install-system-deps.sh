#!/usr/bin/env bash
# System packages the tests and the viewer need: Xvfb (a virtual display for napari under
# pytest-xvfb), the X/GL libraries Qt 6 loads, and libvips' CLI (`vips tiffsave` writes the
# tests' generic tiled TIFF slides). Idempotent: installs only what is missing.
set -euo pipefail

PACKAGES=(
  xvfb xauth
  libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0
  libxcb-randr0 libxcb-shape0 libxcb-cursor0 libxcb-xkb1 libxkbcommon-x11-0
  libegl1 libgl1 libglx-mesa0 libgl1-mesa-dri libdbus-1-3 libfontconfig1 libglib2.0-0
  libvips-tools
)

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: not a Debian/Ubuntu system; install Xvfb and Qt's X libraries yourself" >&2
  exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-system-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
