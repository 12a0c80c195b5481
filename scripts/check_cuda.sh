#!/usr/bin/env bash
# Compile-check the CUDA kernels with plain `nvcc -c` (no torch, no GPU needed). Nothing on this
# project's machines can run them; this proves they build. Skips (exit 0) when nvcc is not on the PATH.
# Usage: scripts/check_cuda.sh [extra nvcc flags, e.g. -arch=sm_86]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
  echo "check_cuda: nvcc not on the PATH, skipped"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in cuda/*.cu; do
  nvcc -std=c++17 -O3 -Xcompiler -Wall -Werror all-warnings -I cuda "$@" -c "$src" -o "$out/$(basename "$src").o"
  echo "check_cuda: $src ok ($(nvcc --version | tail -1))"
done
# The shared header must also build as plain C++ (it is what the CPU kernel uses).
c++ -std=c++17 -O2 -Wall -Wextra -Werror -fopenmp -I cuda -c cuda/hashgrid_cpu.cpp -o "$out/hashgrid_cpu.o"
echo "check_cuda: cuda/hashgrid_cpu.cpp ok"
