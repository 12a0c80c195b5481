"""The empty-space grid in the student: quality and cost with and without it, same pseudo-data.

Trains the CPU-profile student twice on one run's pseudo-data, ``model.skip_empty=true`` (rays whose K
points all lie in cells the teacher left empty show the background and are left out of training) and
``false`` (every ray that meets the content box is evaluated and trained on), for the same fixed
number of steps in each stage (so that load on the shared machine does not change the result), and
reports the test PSNR after each stage, the share of test rays evaluated and the training seconds.

    python -m benchmarks.skip_empty [--run-dir runs/mic_100] [--distill-steps 1500] [--finetune-steps 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import markdown_table, write_section
from export.runtime import rays_cross_cells


def train(pseudo: Path, out: Path, skip: bool, distill_steps: int, finetune_steps: int) -> dict[str, Any]:
    """One student run (a subprocess, as a user runs it); returns its metrics.json and wall seconds."""
    overrides = [f"run_dir={out}", f"pseudo_dir={pseudo}", f"model.skip_empty={str(skip).lower()}",
                 f"train.distill.max_steps={distill_steps}", "train.distill.max_seconds=null",
                 f"train.finetune.max_steps={finetune_steps}", "train.finetune.max_seconds=null",
                 "train.progress_bar=false"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "student.train", *overrides], check=True)
    metrics = json.loads((out / "student" / "metrics.json").read_text())
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics


def evaluated_share(pseudo: Path, n_points: int) -> float:
    """Share of the pseudo-rays meeting the content box (the first 400,000) that the dilated grid keeps."""
    from core.shards import read_meta
    from core.skipgrid import dilate_grid, dilation_radius, unpack_grid
    from student.data import load_shard_rays

    meta = read_meta(pseudo)
    if meta.scene.occupancy is None:
        return 1.0
    rays = load_shard_rays(meta).numpy()[:400_000]
    o, d = rays[:, 0:3], rays[:, 3:6]
    import torch

    cells = unpack_grid(meta.scene.occupancy, "meta.json")
    cells = dilate_grid(torch.from_numpy(cells), dilation_radius(cells.shape[0], n_points)).numpy()
    # load_shard_rays keeps the rays that meet the content box already
    facts = meta.scene
    kept = rays_cross_cells(o, d, facts.content_aabb, facts.near, facts.far, n_points, cells, margin=0.0)
    return float(np.mean(kept))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/mic_100")
    ap.add_argument("--distill-steps", type=int, default=1500)
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--work", default="runs/skip_empty_bench")
    args = ap.parse_args()
    pseudo = Path(args.run_dir) / "pseudo"
    rows, records = [], {}
    for skip in (False, True):
        m = train(pseudo, Path(args.work) / f"skip_{str(skip).lower()}", skip, args.distill_steps,
                  args.finetune_steps)
        records[str(skip)] = m
        stages = m["stages"]
        rows.append([f"skip_empty={str(skip).lower()}", round(m["test"]["psnr"], 2),
                     round(stages["distill"]["test"]["psnr"], 2), stages["distill"]["steps"],
                     stages["finetune"]["steps"],
                     round(stages["distill"]["seconds"] + stages["finetune"]["seconds"]),
                     round(m["wall_seconds"])])
        print(rows[-1], flush=True)
    share = evaluated_share(pseudo, int(records["True"]["model"]["n_points"]))
    table = markdown_table(["student", "test PSNR after finetune (dB)", "after distill (dB)", "distill steps",
                            "finetune steps", "train s", "run s"], rows)
    print(table)
    (Path(args.work) / "skip_empty.json").write_text(json.dumps(records, indent=2, default=str))
    write_section("skip_empty", table + f"\n\nSame pseudo-data (`{pseudo}`), CPU profile, fixed steps. "
                  "Of the pseudo-rays that meet the content box, the dilated grid keeps "
                  f"{100 * share:.0f}% (the rest show the background without the network).")


if __name__ == "__main__":
    main()
