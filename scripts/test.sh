#!/usr/bin/env bash
# The test command of the README: set up (idempotent), lint, type-check, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
ruff check .
mypy core
python -m pytest -q "$@"
