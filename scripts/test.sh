#!/usr/bin/env bash
# The test command of the README: set up (idempotent), lint, type-check, compile-check the CUDA
# sources (when nvcc is on the PATH), then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export THP_MEM_ALLOC_ENABLE=1
ruff check .
mypy core cuda export data_gen student teacher
scripts/check_cuda.sh
python -m pytest -q "$@"
