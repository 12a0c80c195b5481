"""Student encoding and shape at equal wall-clock: which CPU-profile student learns fastest here.

    python -m benchmarks.student_shape [--seconds 90] [--pseudo runs/mic_100/pseudo] [--only NAME,...]

Every variant trains for the same number of seconds (bf16 autocast, fused Adam, warm-up then cosine decay
over the time budget) on the demo run's pseudo-rays held in memory, drawn uniformly at random, and is
scored on every 8th test view of the scene (mean per-view PSNR). The first row is R2L's recipe at the
previous CPU-profile shape: every ray sampled over the same ``[near, far]``, points normalised by the
scene box, 10 octaves. The others sample inside the content box (``model.ray_range=box``) and skip the
rays that miss it (:class:`student.data.ContentRays`).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.results import markdown_table, write_section
from core.metrics import psnr
from core.rays import generate_rays
from core.shards import PseudoMeta, read_meta
from scenes.load import SceneConfig, load_scene
from student.data import ContentRays, load_shard_rays
from student.evaluate import render_rays
from student.model import R2LStudent, StudentModelConfig, flops_per_ray


@dataclass
class Variant:
    name: str
    ray_range: str = "box"
    n_freqs: int = 4
    width: int = 256
    depth: int = 8
    batch: int = 4096
    lr: float = 4e-3


VARIANTS = [
    Variant("R2L sampling, 16x128, 10 oct, B=1024, lr 1e-3 (previous default)", "near_far", 10, 128, 16,
            1024, 1e-3),
    Variant("content box, 16x128, 10 oct, B=1024, lr 1e-3", "box", 10, 128, 16, 1024, 1e-3),
    Variant("content box, 16x128, 6 oct, B=1024, lr 1e-3", "box", 6, 128, 16, 1024, 1e-3),
    Variant("content box, 8x256, 6 oct, lr 2e-3", "box", 6, 256, 8, 4096, 2e-3),
    Variant("content box, 8x256, 6 oct", "box", 6),
    Variant("content box, 8x256, 4 oct (default)", "box", 4),
    Variant("content box, 8x256, 3 oct", "box", 3),
    Variant("content box, 6x256, 4 oct", "box", 4, 256, 6),
    Variant("content box, 12x256, 4 oct", "box", 4, 256, 12),
    Variant("content box, 8x256, 4 oct, lr 2e-3", "box", 4, 256, 8, 4096, 2e-3),
]


def train_variant(v: Variant, meta: PseudoMeta, rays: torch.Tensor, seconds: float,
                  test: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = StudentModelConfig(n_points=16, n_freqs=v.n_freqs, width=v.width, depth=v.depth,
                             ray_range=v.ray_range)
    facts = meta.scene
    box = facts.content_aabb if v.ray_range == "box" else facts.aabb
    model = R2LStudent(cfg, torch.tensor(box), facts.near, facts.far, facts.background).train()
    data = ContentRays(box, facts.near, facts.far)(rays) if v.ray_range == "box" else rays
    opt = torch.optim.Adam(model.parameters(), lr=v.lr, fused=True)
    gen = torch.Generator().manual_seed(0)
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        decay = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * elapsed / seconds))
        for group in opt.param_groups:
            group["lr"] = v.lr * min(1.0, (steps + 1) / 200) * decay
        batch = data[torch.randint(0, data.shape[0], (v.batch,), generator=gen)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(batch[:, 0:3], batch[:, 3:6])
        loss = ((pred.float() - batch[:, 6:9]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    scores = [psnr(render_rays(model, o, d).reshape(gt.shape), gt) for o, d, gt in test]
    return {"psnr": float(np.mean(scores)), "rays_per_s": steps * v.batch / seconds,
            "mflop": flops_per_ray(cfg) / 1e6, "trained_fraction": data.shape[0] / rays.shape[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="training seconds per variant")
    parser.add_argument("--pseudo", type=Path, default=Path("runs/mic_100/pseudo"))
    parser.add_argument("--only", default=None, help="comma-separated variant indices (0-based)")
    args = parser.parse_args()
    meta = read_meta(args.pseudo)
    rays = load_shard_rays(meta, content_only=False)
    scene = load_scene(SceneConfig(), splits=("test",)).split("test")
    gt = scene.rgb(meta.scene.background)
    H, W = scene.hw
    test = [(*generate_rays(scene.c2w[i], scene.K[i], H, W), gt[i]) for i in range(0, scene.n_views, 8)]
    chosen = VARIANTS if args.only is None else [VARIANTS[int(i)] for i in args.only.split(",")]
    rows = []
    for v in chosen:
        r = train_variant(v, meta, rays, args.seconds, test)
        rows.append([v.name, f"{r['mflop']:.2f}", f"{r['trained_fraction']:.2f}", round(r["rays_per_s"]),
                     f"{r['psnr']:.2f}"])
        print(rows[-1], flush=True)
    table = markdown_table(["variant (K = 16)", "MFLOP/ray", "rays trained on", "rays/s", "test PSNR"], rows)
    print(table)
    body = (f"Demo-scene pseudo-data `{args.pseudo}` ({meta.n_views} views), {args.seconds:.0f} s of "
            f"training per variant, one after another in one process; PSNR over {len(test)} test views "
            f"(every 8th). "
            f"Load average at the end: {os.getloadavg()[0]:.1f} on 2 cores.\n\n{table}\n")
    write_section("student_shape", body)


if __name__ == "__main__":
    main()
