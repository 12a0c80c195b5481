"""Student encodings and shapes at equal wall-clock, through the real pipeline, on one or more scenes.

    python -m benchmarks.student_encoding [--distill 120] [--finetune 40] [--runs runs/mic_100,runs/blocks]
        [--only NAME,...]

For every scene run folder (holding ``teacher/`` and ``pseudo/`` from the demo's first two stages) and
every variant: ``python -m student.train`` with the variant's overrides and the same distill / finetune
budgets, then ``python -m export.onnx`` (fp32 only), then the exported file timed by
``export.runtime.LightField`` (the runtime's default: rays that miss the content box skipped) on test
view 0 at the scene's size and at 400x400 (same pose, intrinsics scaled). Reported: test PSNR after each
stage (mean per-view, every test view the teacher reports), the teacher's, kFLOP per ray of the MLP,
table reads per ray, ONNX bytes, ms per frame. Each variant trains in a subprocess, so one does not
slow the next.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.results import markdown_table, write_section


@dataclass
class Variant:
    name: str
    overrides: list[str] = field(default_factory=list)


HASH = ["model.encoding=hash", "train.distill.lr=2e-3", "train.distill.encoding_lr=1e-2",
        "train.finetune.lr=5e-4", "train.finetune.encoding_lr=2e-3"]


def _hash(k: int, levels: int, width: int, depth: int, log2t: int = 17, nmax: int = 128, feats: int = 2,
          extra: list[str] | None = None) -> list[str]:
    return HASH + [f"model.n_points={k}", f"model.grid.n_levels={levels}", f"model.width={width}",
                   f"model.depth={depth}", f"model.grid.log2_hashmap_size={log2t}",
                   f"model.grid.max_resolution={nmax}", f"model.grid.n_features={feats}"] + (extra or [])


VARIANTS = [
    Variant("pe K16 8x256 (previous default)", [
        "model.encoding=pe", "model.n_points=16", "model.n_freqs=4", "model.width=256", "model.depth=8",
        "train.distill.lr=4e-3", "train.distill.lr_final=4e-5", "train.finetune.lr=1e-3",
        "train.finetune.lr_final=1e-5"]),
    Variant("hash K32 L4 F2 4x128 T2^17 Nmax128", _hash(32, 4, 128, 4)),
    Variant("hash K16 L4 F2 4x128 T2^17 Nmax128", _hash(16, 4, 128, 4)),
    Variant("hash K32 L4 F2 4x64 T2^17 Nmax128", _hash(32, 4, 64, 4)),
    Variant("hash K32 L4 F2 6x128 T2^17 Nmax128", _hash(32, 4, 128, 6)),
    Variant("hash K32 L6 F2 4x128 T2^17 Nmax256", _hash(32, 6, 128, 4, nmax=256)),
    Variant("hash K24 L4 F4 4x128 T2^17 Nmax128", _hash(24, 4, 128, 4, feats=4)),
]


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ,
                                                                            "THP_MEM_ALLOC_ENABLE": "1"})
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (see {log})")


def _time_frames(onnx_path: Path, sizes: list[int], budget_s: float = 20.0) -> dict[int, float]:
    """ms per frame of test view 0's pose at each square size (misses skipped): the best of up to 5 runs,
    fewer when a frame is slow (about ``budget_s`` per size)."""
    from export.runtime import LightField

    field_ = LightField(onnx_path)
    out = {}
    c2w = np.array(json.loads((onnx_path.parent / "pose0.json").read_text()))
    for size in sizes:
        t = time.perf_counter()
        field_.render(c2w, image_size=(size, size))  # K: the training cameras', scaled (same field of view)
        first = time.perf_counter() - t
        ts = [first * 1e3]
        for _ in range(min(5, int(budget_s / max(first, 1e-3)))):
            t = time.perf_counter()
            field_.render(c2w, image_size=(size, size))
            ts.append((time.perf_counter() - t) * 1e3)
        out[size] = min(ts)
    return out


def run_variant(run: Path, v: Variant, args: argparse.Namespace, scene_path: str | None) -> dict:
    slug = "".join(c if c.isalnum() else "_" for c in v.name)[:60]
    out = Path(args.work) / run.name / slug
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher").unlink(missing_ok=True)
    (out / "teacher").symlink_to((run / "teacher").resolve())
    common = [f"run_dir={out}"] + ([f"scene.path={scene_path}"] if scene_path else [])
    log = out / "bench.log"
    start = time.perf_counter()
    _run([sys.executable, "-m", "student.train", *common, f"pseudo_dir={run / 'pseudo'}",
          f"train.distill.max_seconds={args.distill}", f"train.finetune.max_seconds={args.finetune}",
          "train.progress_bar=false", *v.overrides], log)
    train_s = time.perf_counter() - start
    _run([sys.executable, "-m", "export.onnx", *common, "variants=[fp32]", "static_variants=[]",
          "parity.max_test_views=8"], log)
    metrics = json.loads((out / "student" / "metrics.json").read_text())
    export = json.loads((out / "export" / "export.json").read_text())
    from scenes.load import SceneConfig, load_scene

    scene = load_scene(SceneConfig(path=scene_path), splits=("test",))
    (out / "export" / "pose0.json").write_text(json.dumps(scene.split("test").c2w[0].tolist()))
    ms = _time_frames(out / "export" / "student.onnx", sorted({scene.split("test").hw[0], 400}))
    stages = metrics["stages"]
    return {
        "scene": run.name, "variant": v.name,
        "distill_psnr": stages.get("distill", {}).get("test", {}).get("psnr"),
        "finetune_psnr": metrics["test"]["psnr"], "teacher_psnr": metrics.get("teacher_test_psnr"),
        "kflop": metrics["flops_per_ray"] / 1e3, "lookups": metrics.get("lookups_per_ray", 0),
        "onnx_bytes": export["variants"]["student"]["bytes"], "ms": {str(k): v for k, v in ms.items()},
        "distill_steps": stages.get("distill", {}).get("steps"), "train_s": round(train_s),
        "parity": export["parity"]["fp32_max_abs_err"], "budget_s": [args.distill, args.finetune],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distill", type=float, default=120.0, help="distill seconds per variant")
    parser.add_argument("--finetune", type=float, default=40.0, help="finetune seconds per variant")
    parser.add_argument("--runs", default="runs/mic_100", help="comma-separated scene run folders")
    parser.add_argument("--scenes", default="", help="comma-separated scene.path per run ('' = demo)")
    parser.add_argument("--work", default="runs/bench_student_encoding", help="scratch folder")
    parser.add_argument("--only", default="", help="comma-separated variant indices")
    args = parser.parse_args()
    runs = [Path(r) for r in args.runs.split(",")]
    scenes = (args.scenes.split(",") if args.scenes else [""] * len(runs))
    chosen = [VARIANTS[int(i)] for i in args.only.split(",")] if args.only else VARIANTS
    results_path = Path(args.work) / "results.jsonl"
    Path(args.work).mkdir(parents=True, exist_ok=True)
    for run, scene in zip(runs, scenes):
        for v in chosen:
            res = run_variant(run, v, args, scene or None)
            with open(results_path, "a") as f:
                f.write(json.dumps(res) + "\n")
            print(json.dumps(res), flush=True)
    # the table holds every row of the scratch folder's results.jsonl: runs of earlier invocations too
    # (one scene or variant at a time), each with its own budgets
    rows = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
    table = [[r["scene"], r["variant"], r["teacher_psnr"] and round(r["teacher_psnr"], 2),
              r["distill_psnr"] and round(r["distill_psnr"], 2), round(r["finetune_psnr"], 2),
              round(r["finetune_psnr"] - (r["teacher_psnr"] or 0), 2), round(r["kflop"]), r["lookups"],
              r["onnx_bytes"], *[round(v, 1) for v in r["ms"].values()], r["distill_steps"],
              "+".join(f"{b:g}" for b in r.get("budget_s", [100, 30]))] for r in rows]
    sizes = list(rows[0]["ms"]) if rows else []
    headers = ["scene", "variant", "teacher dB", "distill dB", "finetune dB", "vs teacher", "kFLOP/ray",
               "table reads/ray", "ONNX bytes", *[f"ONNX fp32 ms @{s}px" for s in sizes], "distill steps",
               "budget s"]
    body = ("Every variant: the budget's seconds of distill + finetune (bf16, the stage's defaults "
            "otherwise), in its own process, one after another; test PSNR over the "
            "teacher's test views; ONNX fp32 frame times by `export.runtime.LightField` (misses skipped), "
            "best of up to 5 (fewer for slow frames), test view 0's pose.\n\n"
            + markdown_table(headers, table))
    print(body)
    write_section("student_encoding", body)


if __name__ == "__main__":
    main()
