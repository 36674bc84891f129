#!/usr/bin/env bash
# Set up a development/test environment from a fresh Debian clone. Idempotent: safe to re-run.
#  - system libraries napari needs for OpenGL/Qt under Xvfb (only when root or password-less sudo)
#  - .venv with PyTorch first, pinned: an unpinned torch pulls a multi-GB CUDA build
#  - this package, editable, with the `all` (Qt binding), `test` and `dev` (ruff, import-linter, mypy) extras
# Environment: PYTHON (interpreter for a new .venv, default python3), TORCH_SPEC (default
# torch==2.13.0), TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu for a CPU-only
# wheel where none lies on disk).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
APT_PACKAGES=(xvfb xauth libgl1-mesa-dri libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0
  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 libglib2.0-0)

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)   # -n: never hang on a password prompt
    if [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; then
      echo "setup: installing system packages: ${missing[*]}"
      "${sudo[@]}" apt-get update -qq
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    else
      echo "setup: WARNING: install these Debian packages (napari needs them under Xvfb): ${missing[*]}" >&2
    fi
  fi
fi

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv

# pip -q still prints a warning per unusable local index; drop those lines, keep pip's exit status.
pip_install() {
  .venv/bin/python -m pip --disable-pip-version-check -q install "$@" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
}
torch_args=("$TORCH_SPEC")
[[ -z $TORCH_INDEX_URL ]] || torch_args+=(--index-url "$TORCH_INDEX_URL")
pip_install "${torch_args[@]}"
pip_install -e ".[all,test,dev]"

.venv/bin/python -c "import napari_cellclf, napari, torch; print('setup: napari', napari.__version__, '| torch', torch.__version__, '| napari-cellclf', napari_cellclf.__version__)"

# Qt's xcb platform plugin fails at start-up, not at import, when a system library is missing.
if command -v xvfb-run >/dev/null 2>&1; then
  if ! QT_QPA_PLATFORM=xcb xvfb-run -a .venv/bin/python -c \
      "from qtpy.QtWidgets import QApplication; QApplication([])" >/dev/null 2>&1; then
    echo "setup: WARNING: Qt cannot start under Xvfb; see: QT_DEBUG_PLUGINS=1 xvfb-run -a" \
      ".venv/bin/python -c 'from qtpy.QtWidgets import QApplication; QApplication([])'" >&2
  fi
else
  echo "setup: WARNING: xvfb-run not found; napari tests need Xvfb" >&2
fi
