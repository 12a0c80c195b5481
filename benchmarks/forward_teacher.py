"""The teacher on a real forward-facing capture: today's defaults against the settings before them.

Each variant trains the teacher of the same scene with the unchanged stage command (wall-clock budget,
every other setting at its default) and evaluates it on the test views; the variants differ only in the
teacher's ``forward`` group (:class:`teacher.config.ForwardConfig`):

* ``before``: no distortion loss, the object scenes' 150 s (``forward.distortion=0
  forward.seconds_factor=1``): the teacher before the group existed;
* ``no_distortion``: the forward budget (300 s) without the distortion loss;
* ``from_start``: the distortion loss from the first step instead of after a quarter of the budget;
* ``default``: the defaults (300 s, distortion loss 0.01 from a quarter of the budget on).

Prints one table (test PSNR / SSIM, steps, samples a ray, occupied cells, evaluation seconds a view) and
writes ``benchmarks/forward_teacher.json`` and the ``forward_teacher`` section of ``RESULTS.md``. Budgets
are wall-clock: run it on a quiet machine.

    python -m benchmarks.forward_teacher --scene ../shared/data/real/flower [--variants before default]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.results import markdown_table, write_section
from core.io import write_json
from pipeline.config import to_dataclass
from teacher.config import TeacherConfig
from teacher.train import run
from testing.stages import compose

OUT_JSON = Path(__file__).resolve().parent / "forward_teacher.json"
VARIANTS = {
    "before": ["forward.distortion=0", "forward.seconds_factor=1"],
    "no_distortion": ["forward.distortion=0"],
    "from_start": ["forward.distortion_start=0"],
    "default": [],
}


def train_variant(scene: Path, work: Path, name: str, extra: list[str]) -> dict[str, Any]:
    """Train and evaluate one variant in ``work/name`` (``extra``: overrides for every variant); its row."""
    cfg = to_dataclass(compose("teacher", [f"scene.path={scene}", f"run_dir={work / name}",
                                           "train.progress_bar=false", "eval.progress_bar=false",
                                           *VARIANTS[name], *extra]), TeacherConfig)
    start = time.perf_counter()
    m = run(cfg)
    return {"variant": name, "test_psnr": round(m["test"]["psnr"], 2),
            "test_ssim": round(m["test"]["ssim"], 3),
            "train_s": round(m["train_seconds"], 1), "steps": m["steps"],
            "samples_per_ray": round(m["samples"] / max(m["steps"] * cfg.train.batch_rays, 1), 1),
            "occupied": round(m["occupied_fraction"], 2),
            "eval_s_per_view": round(m["eval_seconds"] / max(m["test"]["n_views"], 1), 2),
            "wall_s": round(time.perf_counter() - start)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True, help="a forward-facing LLFF scene")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="teacher overrides for every variant (the published figures use none)")
    parser.add_argument("--work", type=Path, default=Path("runs/forward_teacher"))
    parser.add_argument("--json", type=Path, default=OUT_JSON)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = [train_variant(args.scene, args.work, name, args.set) for name in args.variants]
    headers = list(rows[0])
    table = markdown_table(headers, [[r[h] for h in headers] for r in rows])
    print(table)
    record = {"scene": str(args.scene), "rows": rows}
    write_json(args.json, record)
    write_section("forward_teacher", (
        f"Scene `{args.scene.name}`; the teacher stage's command with every default, the variants "
        "differing only in the `forward` group (`before`: `forward.distortion=0 forward.seconds_factor=1`, "
        "the settings before it; `no_distortion`: `forward.distortion=0`; `from_start`: "
        "`forward.distortion_start=0`). samples_per_ray: samples "
        "evaluated with grad per training ray, averaged over the run; occupied: occupancy-grid cells set "
        "at the end.\n\n" + table))
    return record


if __name__ == "__main__":
    main()
