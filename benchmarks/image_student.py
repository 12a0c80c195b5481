"""Quality study of the image student (student.image_model): distil it from a run's pseudo-views, finetune
on the photos, and compare its test PSNR with the teacher's, at equal wall-clock per candidate.

The image student draws one ray per ``s x s`` block and upsamples (the device design of
``docs/device_student.md``); this script trains it on whole pseudo-views (the demo's are 100 x 100: a
view is one batch item) with Adam, per-group learning rates (planes / network) decaying exponentially to
2% of their start after a short warm-up, then on the training photos at a fraction of those rates.
Object scenes only (the planes cover the content box in the world frame).

    python -m benchmarks.image_student --run-dir runs/mic_100 [--seconds 240] [--ft-seconds 60]
        [--configs '[{"scale": 4}, {"scale": 4, "resolutions": [32, 64, 128], "channels": 8}]']

Prints one table and writes the ``image_student`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from torch import Tensor

from benchmarks.results import markdown_table, write_section
from core.metrics import psnr
from core.shards import decode_sample, read_meta
from scenes.load import SceneConfig, load_scene
from student.image_model import ImageStudent, ImageStudentConfig

Views = tuple[Tensor, Tensor, Tensor]  # rgb [V, H, W, 3], c2w [V, 4, 4], K [V, 3, 3]
WARMUP_FRACTION = 0.05  # of each stage's seconds: learning rates ramp up from 0


def pseudo_views(run_dir: Path) -> tuple[Views, Any]:
    """Every pseudo-view of ``<run_dir>/pseudo`` and its metadata."""
    meta = read_meta(run_dir / "pseudo")
    rgbs, c2ws, Ks = [], [], []
    for sample in wds.WebDataset([str(p) for p in meta.shard_paths()], shardshuffle=False, empty_check=False):
        rgb, c2w, K = decode_sample(sample)
        rgbs.append(torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)))
        c2ws.append(torch.from_numpy(c2w))
        Ks.append(torch.from_numpy(K))
    return (torch.stack(rgbs), torch.stack(c2ws), torch.stack(Ks)), meta


def photo_views(scene_path: str | None, split: str, background: list[float]) -> Views:
    """A split of the scene's photos, composited on ``background``."""
    views = load_scene(SceneConfig(path=scene_path), splits=(split,)).split(split)
    rgba = views.images
    rgb = rgba[..., :3] * rgba[..., 3:] + torch.tensor(background) * (1 - rgba[..., 3:])
    return rgb, views.c2w, views.K


def train(model: ImageStudent, views: Views, seconds: float, lr: float, plane_lr: float, batch: int,
          seed: int, bf16: bool = False) -> int:
    """Whole-view batches for ``seconds`` of wall-clock (under bf16 autocast with ``bf16``); returns the
    steps taken."""
    rgb, c2w, K = views
    H, W = rgb.shape[1:3]
    opt = torch.optim.Adam([{"params": model.encoding.parameters(), "lr": plane_lr},
                            {"params": model.decoder.parameters(), "lr": lr}], betas=(0.9, 0.99), eps=1e-15)
    base = [group["lr"] for group in opt.param_groups]
    g = torch.Generator().manual_seed(seed)
    start, steps = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        warmup = min(1.0, elapsed / (WARMUP_FRACTION * seconds))  # a ramp: full rates at once collapsed a run
        for group, rate in zip(opt.param_groups, base):
            group["lr"] = rate * warmup * 0.02 ** (elapsed / seconds)
        idx = torch.randint(0, len(rgb), (batch,), generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.render(c2w[idx], K[idx], H, W)
        loss = F.mse_loss(out.float(), rgb[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return steps


@torch.no_grad()
def view_psnr(model: ImageStudent, views: Views) -> float:
    """Mean PSNR over the views."""
    rgb, c2w, K = views
    H, W = rgb.shape[1:3]
    model.eval()
    values = [float(psnr(model.render(c2w[i:i + 1], K[i:i + 1], H, W)[0], rgb[i])) for i in range(len(rgb))]
    model.train()
    return float(np.mean(values))


def main(argv: list[str] | None = None) -> None:
    """Train each candidate in turn and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=Path("runs/mic_100"))
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--ft-seconds", type=float, default=60.0)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--plane-lr", type=float, default=1e-2)
    p.add_argument("--ft-lr-scale", type=float, default=0.25, help="finetune rates / distill rates")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for training (evaluation in fp32)")
    p.add_argument("--configs", default='[{"scale": 4}]', help="JSON list of ImageStudentConfig changes")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    pseudo, meta = pseudo_views(args.run_dir)
    teacher = json.loads((args.run_dir / "teacher" / "metrics.json").read_text())["test"]["psnr"]
    photos = photo_views(meta.scene_path, "train", meta.scene.background)
    test = photo_views(meta.scene_path, "test", meta.scene.background)
    rows = []
    for changes in json.loads(args.configs):
        torch.manual_seed(0)
        cfg = ImageStudentConfig(**changes)
        model = ImageStudent(cfg, list(meta.scene.content_aabb))
        steps = train(model, pseudo, args.seconds, args.lr, args.plane_lr, args.batch, seed=0, bf16=args.bf16)
        distilled = view_psnr(model, test)
        ft_steps = train(model, photos, args.ft_seconds, args.lr * args.ft_lr_scale,
                         args.plane_lr * args.ft_lr_scale, args.batch, seed=1,
                         bf16=args.bf16)
        final = view_psnr(model, test)
        n_params = sum(q.numel() for q in model.parameters())
        rows.append([json.dumps(changes), f"{n_params / 1e6:.2f} M", f"{steps} + {ft_steps}",
                     round(distilled, 2), round(final, 2), round(teacher, 2), round(final - teacher, 2)])
        print(rows[-1], flush=True)
    headers = ["changes to ImageStudentConfig()", "params", "steps (distill + finetune)",
               "test PSNR after distill", "after finetune", "teacher", "student - teacher"]
    table = markdown_table(headers, rows)
    notes = (f"{args.seconds:.0f} s distill on the pseudo-views + {args.ft_seconds:.0f} s finetune on the "
             f"photos per row (rates x {args.ft_lr_scale:g}), {args.batch} whole views a step, "
             f"lr {args.lr:g} (planes {args.plane_lr:g}), a {WARMUP_FRACTION:.0%} warm-up, "
             f"{'bf16 autocast' if args.bf16 else 'fp32'}; "
             f"scene {meta.scene.scene_name}, {len(pseudo[0])} pseudo-views of "
             f"{pseudo[0].shape[1]}x{pseudo[0].shape[2]}. Steps depend on the machine's load.")
    print(table)
    if math.isfinite(teacher):
        write_section("image_student", f"{table}\n\n{notes}")


if __name__ == "__main__":
    main()
