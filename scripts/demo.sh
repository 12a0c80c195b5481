#!/usr/bin/env bash
# The whole pipeline on the embedded demo scene (NeRF synthetic "mic", 100 px), CPU profile:
# teacher -> pseudo-data -> student (distill + finetune) -> ONNX export -> video -> web viewer, then the
# metrics table.
# Extra arguments are passed to every stage, so give only keys every stage takes: the run section
# (scene.path=..., run_dir=runs/demo, seed=, device=, threads=) and profile=cpu|gpu|paper. The render step
# (export.runtime.render, numpy + ONNX Runtime) reads them with OmegaConf, not Hydra: it accepts the same keys.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export THP_MEM_ALLOC_ENABLE=1
python -m teacher.train "$@"
python -m data_gen.render "$@"
python -m student.train "$@"
python -m export.onnx "$@"
python -m export.runtime.render "$@"
python -m export.viewer "$@"
python -m report "$@"
