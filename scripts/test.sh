#!/usr/bin/env bash
# The test command of the README: set up (idempotent), lint, type-check, compile-check the CUDA
# sources (when nvcc is on the PATH), then run the test suite. Extra arguments go to pytest (e.g.
# -m "not slow": the quick selection, without the browser, multi-process and fault tests). It prints the
# 15 slowest tests and the suite's wall time.
# The web viewer's browser tests need Debian's Chromium: installed here with apt-get when missing and
# running as root (elsewhere they fail and say how to install it; they never skip).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium > /dev/null
fi
. .venv/bin/activate
export THP_MEM_ALLOC_ENABLE=1
ruff check .
mypy core scenes pipeline cuda training teacher data_gen student export report testing
scripts/check_cuda.sh
start=$SECONDS
status=0
python -m pytest -q --durations=15 "$@" || status=$?
echo "test suite: $((SECONDS - start)) s (pytest exit ${status}); scripts/test.sh: ${SECONDS} s"
exit "$status"
