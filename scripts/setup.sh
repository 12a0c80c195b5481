#!/usr/bin/env bash
# Create .venv and install the project for the CPU. torch is pinned in the same pip command as the
# rest, so no other package can pull a multi-GB CUDA build of torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[cpu,dev]"
