"""Teacher training speed: test PSNR after 30, 60, 120 and 300 s of training, per hash-grid backend.

Each available backend trains the default config (``profile=cpu``) on the demo scene in one run; at
each mark training pauses (the pause is not counted), the test split is rendered (every
``--eval-every``-th view, full resolution, white background) and scored. The learning rate decays
over the whole budget (the last mark), so earlier marks see a higher rate than a run of that length.
The ``torch`` backend is the baseline of the ratio columns.

    THP_MEM_ALLOC_ENABLE=1 python -m benchmarks.teacher            # the full table
    THP_MEM_ALLOC_ENABLE=1 python -m benchmarks.teacher --short    # marks 10 and 20 s, for a check
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.results import markdown_table, write_section
from cuda.backend import AUTO_ORDER, resolve_backend
from pipeline.config import to_dataclass
from pipeline.seeding import seed_everything
from scenes.load import SceneSplit, load_scene
from teacher.config import TeacherConfig
from teacher.evaluate import evaluate
from teacher.train import new_teacher, train_teacher
from testing.stages import compose

log = logging.getLogger("benchmarks.teacher")


def subset(split: SceneSplit, every: int) -> SceneSplit:
    """Every ``every``-th view of a split."""
    sel = slice(0, None, every)
    return SceneSplit(split.images[sel], split.c2w[sel], split.K[sel], split.files[sel])


class EvaluateAtMarks(L.Callback):
    """Pauses training at each mark (seconds of training) to score the test views."""

    def __init__(self, marks: list[float], test: SceneSplit, background: list[float], chunk: int):
        self.marks = list(marks)
        self.test, self.background, self.chunk = test, background, chunk
        self.budget: Any = None  # set by train_teacher
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        elapsed = self.budget.elapsed
        if not self.marks or elapsed < self.marks[0]:
            return
        mark = self.marks.pop(0)
        start = time.perf_counter()
        result = evaluate(pl_module.teacher, self.test, self.background, self.chunk, n_renders=0,
                          progress=False)
        pl_module.teacher.train()
        self.rows.append({"mark": mark, "seconds": elapsed, "steps": trainer.global_step,
                          "samples": pl_module.samples_seen, "psnr": result["psnr"],
                          "eval_seconds": time.perf_counter() - start})
        log.info("%s s: %d steps, PSNR %.2f", mark, trainer.global_step, result["psnr"])
        self.budget.exclude(time.perf_counter() - start)


def bench_backend(backend: str, marks: list[float], eval_every: int, overrides: list[str]) -> list[dict]:
    """Train with one backend until the last mark; one row per mark."""
    overrides = [f"model.field.grid.backend={backend}", f"train.max_seconds={marks[-1]}",
        "train.max_steps=-1",
                 "train.checkpoint_seconds=100000", *overrides]
    cfg = to_dataclass(compose("teacher", overrides), TeacherConfig)
    seed_everything(cfg.seed)
    scene = load_scene(cfg.scene, splits=("train", "test"))
    teacher = new_teacher(cfg, scene)
    test = subset(scene.split("test"), eval_every)
    callback = EvaluateAtMarks(marks, test, scene.background, cfg.eval.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.run_dir = tmp
        train_teacher(cfg, teacher, scene.split("train"), Path(tmp) / "teacher", [callback])
    return callback.rows


def available_backends(cfg: TeacherConfig) -> list[str]:
    """``torch`` (the baseline) and every other backend that runs on this CPU."""
    names = ["torch"]
    for name in AUTO_ORDER:
        try:
            if name != "torch":
                resolve_backend(name, cfg.model.field.grid.spec(), torch.device("cpu"))
                names.append(name)
        except ValueError:
            continue
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marks", default="30,60,120,300", help="seconds of training to score at")
    parser.add_argument("--short", action="store_true", help="marks 10,20 s and every 20th test view")
    parser.add_argument("--eval-every", type=int, default=10, help="score every n-th test view")
    parser.add_argument("--backends", default="", help="comma list (default: every available one)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/teacher.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    marks = [10.0, 20.0] if args.short else [float(m) for m in args.marks.split(",")]
    eval_every = 20 if args.short else args.eval_every
    default_cfg = to_dataclass(compose("teacher", args.overrides), TeacherConfig)
    backends = args.backends.split(",") if args.backends else available_backends(default_cfg)
    results = {b: bench_backend(b, marks, eval_every, args.overrides + ["train.progress_bar=false"])
               for b in backends}
    base = {r["mark"]: r for r in results["torch"]} if "torch" in results else {}
    rows = []
    for backend, brows in results.items():
        for r in brows:
            ref = base.get(r["mark"])
            steps_s, samples_s = r["steps"] / r["seconds"], r["samples"] / r["seconds"]
            rows.append([backend, f"{r['mark']:.0f}", r["steps"], f"{r['psnr']:.2f}", f"{steps_s:.2f}",
                         f"{samples_s / 1e3:.1f}k",
                         f"{steps_s / (ref['steps'] / ref['seconds']):.2f}x" if ref else "-",
                         f"{r['psnr'] - ref['psnr']:+.2f}" if ref else "-", f"{r['eval_seconds']:.0f}"])
    n_views = len(range(0, 200, eval_every))
    table = markdown_table(
        ["backend", "train s", "steps", "test PSNR dB", "steps/s", "samples/s", "steps/s vs torch",
         "PSNR vs torch", "eval s"], rows)
    body = (f"Demo scene (mic, 100 px), default config (`profile=cpu`); PSNR on every {eval_every}th test "
            f"view ({n_views} views, full resolution, white background). One run per backend; the learning "
            f"rate decays over the last mark's budget.\n\n{table}")
    print(table)
    write_section("teacher", body)


if __name__ == "__main__":
    main()
