"""Forward-facing scenes: NDC rays against a world box from the bounds and camera frusta (the teacher).

The two ways NeRF-style systems handle a forward-facing capture: NDC (NeRF, R2L: the frustum of the
average camera from a near plane to infinity becomes a box, sampled evenly in disparity) or a bounded
world box around the training frusta between the near and far bounds (Instant-NGP's way, with a far
plane). Both teachers are trained with the same fixed step count (so load on the shared CPU does not
change the result) on a forward-facing LLFF scene, with every other setting at its default, and their
test PSNR, samples per ray and time are compared. Prints one table and writes
``benchmarks/forward_rays.json``.

    python scripts/procedural_scene.py /tmp/table --kind forward
    python -m benchmarks.forward_rays --scene /tmp/table [--steps 700] [--work runs/forward_rays]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.results import markdown_table, write_section
from core.io import write_json
from pipeline.config import to_dataclass
from scenes.llff import load_llff
from teacher.config import TeacherConfig
from teacher.train import run
from testing.stages import compose

OUT_JSON = Path(__file__).resolve().parent / "forward_rays.json"


def frustum_box(scene: Path) -> tuple[list[float], float, float]:
    """World box around every training camera's frustum between its near and far bounds, and near/far
    as distances along unit rays (the bounds are depths: the image corners are farther)."""
    data = load_llff(scene, ("train",), None, None)
    train = data.splits["train"]
    H, W = train.hw
    corners = []
    max_stretch = 1.0
    for c2w, K, (near, far) in zip(train.c2w, train.K, data.bounds[: train.n_views].tolist()):
        u = torch.tensor([0.0, W, 0.0, W])
        v = torch.tensor([0.0, 0.0, H, H])
        d = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones(4)], -1)
        max_stretch = max(max_stretch, float(d.norm(dim=-1).max()))
        for depth in (near, far):
            corners.append(c2w[:3, 3] + (depth * d) @ c2w[:3, :3].T)
    pts = torch.cat(corners)
    near = float(data.bounds[:, 0].min())
    far = float(data.bounds[:, 1].max()) * max_stretch
    return torch.cat([pts.amin(0), pts.amax(0)]).tolist(), near, far


def train_variant(scene: Path, work: Path, name: str, steps: int, overrides: list[str]) -> dict[str, Any]:
    cfg = to_dataclass(compose("teacher", [f"scene.path={scene}", f"run_dir={work / name}",
                                           f"train.max_steps={steps}", "train.max_seconds=null",
                                           "train.progress_bar=false", "eval.progress_bar=false",
                                           *overrides]), TeacherConfig)
    start = time.perf_counter()
    metrics = run(cfg)
    return {"variant": name, "test_psnr": round(metrics["test"]["psnr"], 2), "steps": metrics["steps"],
            "train_s": round(metrics["train_seconds"], 1), "samples_per_ray": round(
                metrics["samples"] / max(metrics["steps"] * cfg.train.batch_rays, 1), 1),
            "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True, help="a forward-facing LLFF scene")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--work", type=Path, default=Path("runs/forward_rays"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    box, near, far = frustum_box(args.scene)
    aabb = "[" + ",".join(f"{v:.6g}" for v in box) + "]"
    rows = [
        train_variant(args.scene, args.work, "ndc", args.steps, ["scene.kind=forward"]),
        train_variant(args.scene, args.work, "world_box", args.steps,
                      ["scene.kind=object", f"scene.aabb={aabb}", f"scene.near={near:.6g}",
                       f"scene.far={far:.6g}"]),
    ]
    headers = list(rows[0])
    table = markdown_table(headers, [[r[h] for h in headers] for r in rows])
    print(table)
    write_json(OUT_JSON, {"world_box": {"aabb": box, "near": near, "far": far}, "rows": rows})
    write_section("forward_rays", f"Scene {args.scene.name}, {args.steps} teacher steps each.\n\n{table}")


if __name__ == "__main__":
    main()
