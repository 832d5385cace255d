#!/usr/bin/env bash
# The engine on the oldest versions pyproject.toml admits: Python 3.11, torch 2.4.1 (+ its
# torchvision 0.19.1) and timm 1.0.10, the rest at their newest. Builds .venv-minimum (once;
# ~5 GB: PyPI's torch 2.4 is a CUDA build) and runs the engine's CPU test suite there (the
# GUI tests and the lint/type gates need the main venv). `make check-minimum`.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv-minimum}
MIN_PINS=(torch==2.4.1 torchvision==0.19.1 timm==1.0.10)  # tests/xt_engine/test_import_boundary.py reads these
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
"$VENV/bin/python" -m pip install -q "${MIN_PINS[@]}"
"$VENV/bin/python" -m pip install -q "${MIN_PINS[@]}" . pytest
"$VENV/bin/python" -c "import sys, torch, timm; print('check-minimum: Python', sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not gui" tests/xt_engine \
  --deselect tests/xt_engine/test_quality_gates.py "$@"
