#!/usr/bin/env bash
# Create .venv and install the project for the CPU. torch is pinned in the same pip command as the
# rest, so no other package can pull a multi-GB CUDA build of torch first. With npm present, also
# install the web viewer's runtime (onnxruntime-web, pinned by export/viewer/web/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[cpu,dev,colmap]"
if command -v npm > /dev/null; then
  # npm ci only when the lockfile changed since the last install
  if ! cmp -s export/viewer/web/package-lock.json export/viewer/web/node_modules/.package-lock.stamp 2> /dev/null; then
    npm ci --prefix export/viewer/web --no-audit --no-fund --loglevel=error
    cp export/viewer/web/package-lock.json export/viewer/web/node_modules/.package-lock.stamp
  fi
else
  echo "note: npm not found: the web viewer (python -m export.viewer) needs it for onnxruntime-web" >&2
fi
