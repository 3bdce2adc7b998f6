#!/usr/bin/env bash
# Creates a virtual environment with dmipy 1.0.5 (the last release; it needs
# numpy < 1.25) and, when it installs, AMICO (PyPI dmri-amico), for
# `cargo xtask bench-compare microstructure`.
# Usage: bash setup_dmipy.sh [VENV_DIR]  (default: $OSIPY_DMIPY_VENV or ~/.cache/osipy-dmipy-venv)
# Prints the path of the venv's python on its last line.
set -euo pipefail
venv="${1:-${OSIPY_DMIPY_VENV:-$HOME/.cache/osipy-dmipy-venv}}"
if [ ! -x "$venv/bin/python" ]; then
  py=""
  for cand in python3.11 "$HOME"/.pyenv/versions/3.11*/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
  done
  if [ -z "$py" ]; then
    echo "no Python 3.11 found; dmipy 1.0.5 with numpy 1.24 needs one" >&2
    exit 1
  fi
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "numpy==1.24.4" "scipy==1.10.1" "dipy==1.9.0" pathos
  "$venv/bin/pip" install -q --no-deps "dmipy==1.0.5"
  "$venv/bin/pip" install -q dmri-amico >&2 || echo "AMICO did not install; the bench runs without it" >&2
fi
"$venv/bin/python" -c 'import dmipy, numpy; assert numpy.__version__.startswith("1.24"), numpy.__version__'
echo "$venv/bin/python"
