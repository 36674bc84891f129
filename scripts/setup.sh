#!/usr/bin/env bash
# Set up a development/test environment from a fresh Debian clone. Idempotent: safe to re-run.
#  - system libraries napari needs for OpenGL under Xvfb (only when root or sudo is available)
#  - .venv with the CPU build of PyTorch first (an unpinned torch pulls a multi-GB CUDA build)
#  - this package, editable, with the `all` (Qt binding) and `test` extras
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
APT_PACKAGES=(xvfb xauth libgl1-mesa-dri libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0
  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 libglib2.0-0)

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    if [[ -z $sudo ]] || command -v sudo >/dev/null 2>&1; then
      echo "setup: installing system packages: ${missing[*]}"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "setup: please install these Debian packages (napari needs them for OpenGL): ${missing[*]}" >&2
    fi
  fi
fi

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch" # fail loudly if the torch install above did not work
"${PIP[@]}" install -e ".[all,test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import napari_cellclf, napari, torch; print('setup: napari', napari.__version__, '| torch', torch.__version__, '| napari-cellclf', napari_cellclf.__version__)"
