#!/usr/bin/env bash
# The GPU path in one prepared run (at most 8 minutes) on a machine with one NVIDIA GPU: our CUDA hash-grid
# kernel against the reference, the teacher (profile=gpu, 60 s), pseudo-data, the student (bf16, 60 s),
# the exported student in ONNX Runtime (400x400 frame), NCCL and the NeRF-XL equivalence check, then the
# image student (bf16, 60 s). Prints one table and writes OUT_DIR/gpu_check.json (rewritten after every
# part). See docs/gpu.md.
#
# Usage: scripts/gpu_check.sh OUT_DIR [extra arguments of python -m benchmarks.gpu_check]
#
# The GPU machine (Python 3.12, torch + CUDA, lightning, onnx, onnxruntime, nvcc, ninja) has no network
# and lacks hydra-core, omegaconf and webdataset (and maybe pytest): they travel as wheels in
# scripts/gpu_wheels/ (not committed, about 5 MB), made on a machine with network by this one line
# (pinned to the versions of the project's .venv; `pip wheel` also builds antlr4's sdist into a wheel):
#
#   pip wheel --no-deps -w scripts/gpu_wheels hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 webdataset==1.0.2 braceexpand==0.1.7 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 Pygments==2.21.0
#
# Only the packages whose module does not import are installed (pip --no-index --no-deps from that folder).
# Without a CUDA GPU it stops with one `error:` line (exit 1). Exit 2: some row failed; 124: time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/gpu_check.sh OUT_DIR [extra arguments of python -m benchmarks.gpu_check]" >&2
  exit 1
fi
out=$1
shift
wheels=scripts/gpu_wheels
limit=${GPU_CHECK_LIMIT_S:-480}
start=$(date +%s)
[ -f .venv/bin/activate ] && . .venv/bin/activate
python=${PYTHON:-python3}

# module:package pairs; a package is installed only when its module does not import
missing=()
for pair in hydra:hydra-core omegaconf:omegaconf antlr4:antlr4-python3-runtime webdataset:webdataset \
            braceexpand:braceexpand pytest:pytest pluggy:pluggy iniconfig:iniconfig pygments:Pygments; do
  if ! "$python" -c "import ${pair%%:*}" >/dev/null 2>&1; then
    missing+=("${pair#*:}")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ ! -d "$wheels" ]; then
    echo "error: missing ${missing[*]} and no $wheels/ folder: see the download line in the header of $0" >&2
    exit 1
  fi
  echo "gpu_check: installing ${missing[*]} from $wheels/"
  "$python" -m pip install --quiet --no-index --no-deps --find-links "$wheels" "${missing[@]}"
fi

mkdir -p "$out"
export THP_MEM_ALLOC_ENABLE=1
rc=0
timeout -k 15 "$limit" "$python" -m benchmarks.gpu_check --out "$out" "$@" || rc=$?
echo "gpu_check.sh: ${rc} exit status, $(( $(date +%s) - start )) s in all (limit ${limit} s for the check)"
exit "$rc"
