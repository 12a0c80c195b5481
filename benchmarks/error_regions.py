"""Where a student's test error lies: background, flat object pixels, texture, edges and fine detail.

``python -m benchmarks.error_regions --run-dir runs/mic_100 [--scene PATH] [--views 30] [--no-teacher]
[--no-write]``

Renders the first ``--views`` test views with the run's student (either decoder) and its teacher, and
splits the pixels by the photo: the background (within :data:`BACKGROUND_TOL` of the scene's background
color in the sum of the channels), then the object's pixels by their local contrast (the larger of the
gray value's central differences across and down: :data:`CONTRAST_BINS`). For each region, and each model:
the share of the pixels, the share of the model's squared error, and its PSNR there. Then the same error
split by scale (:func:`by_scale`): the error of the ``--block x --block`` block means (what a ray map at
``1/block`` of the pixels could draw with flat blocks) and the rest, the error within the blocks (what an
image student's tail has to draw); the two add up to the whole. Prints one table and writes the
``error_regions`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.inference import _teacher_rgb, load_teacher_or_note
from benchmarks.results import markdown_table, write_section
from core.metrics import mse_to_psnr, psnr
from export.parity import view_rays
from scenes.load import SceneConfig, load_scene
from student.checkpoint import load_student
from student.evaluate import render_views

BACKGROUND_TOL = 0.02  # summed over the channels: a photo pixel this close to the background is background
CONTRAST_BINS = (0.05, 0.2)  # object pixels: flat below the first, texture up to the second, edges above


def contrast(gray: Tensor) -> Tensor:  # [V, H, W] -> [V, H, W]
    """The larger of the absolute central differences across and down (0 on the image's border)."""
    out = torch.zeros_like(gray)
    out[:, :, 1:-1] = (gray[:, :, 2:] - gray[:, :, :-2]).abs()
    out[:, 1:-1] = torch.maximum(out[:, 1:-1], (gray[:, 2:] - gray[:, :-2]).abs())
    return out


def regions(gt: Tensor, background: Tensor) -> dict[str, Tensor]:
    """``{name: [V, H, W] bool}``: the background and the object's pixels by contrast; they partition the
    pixels.

    Args:
        gt: ``[V, H, W, 3]`` photos composited on ``background``.
        background: ``[3]`` the background color.
    """
    bg = (gt - background).abs().sum(-1) < BACKGROUND_TOL
    c = contrast(gt.mean(-1))
    lo, hi = CONTRAST_BINS
    return {"background": bg,
            f"object, flat (contrast < {lo})": ~bg & (c < lo),
            f"object, texture ({lo} to {hi})": ~bg & (c >= lo) & (c < hi),
            f"object, edges and fine detail (>= {hi})": ~bg & (c >= hi)}


def breakdown(pred: Tensor, gt: Tensor, parts: dict[str, Tensor]) -> dict[str, tuple[float, float, float]]:
    """``{region: (share of pixels %, share of squared error %, PSNR dB)}`` of ``pred`` against ``gt``
    (``[V, H, W, 3]``); a region without pixels gets NaN shares of error and PSNR."""
    err = ((pred - gt) ** 2).mean(-1)  # [V, H, W]
    total = float(err.sum())
    out = {}
    for name, mask in parts.items():
        n = int(mask.sum())
        mse = float(err[mask].mean()) if n else math.nan
        out[name] = (100.0 * n / mask.numel(), 100.0 * float(err[mask].sum()) / total if n else math.nan,
                     mse_to_psnr(mse) if n and mse > 0 else math.nan)
    return out


def by_scale(pred: Tensor, gt: Tensor, block: int) -> dict[str, tuple[float, float]]:
    """``{part: (share of squared error %, PSNR dB)}``: ``pred``'s error against ``gt`` (``[V, H, W, 3]``)
    split into that of the ``block x block`` means and that within the blocks (the error minus its block
    mean). Over whole blocks the two squared errors add up to the whole; the pixels past the last whole
    block are left out. The PSNRs are over all the pixels (the mean squared error of each part)."""
    V, H, W, _ = pred.shape
    h, w = H // block * block, W // block * block
    if not (h and w):
        raise ValueError(f"a {H}x{W} view holds no {block}x{block} block")
    diff = (pred - gt)[:, :h, :w].permute(0, 3, 1, 2)  # [V, 3, h, w]
    means = F.avg_pool2d(diff, block)
    coarse = float((means ** 2).mean())
    whole = float((diff ** 2).mean())
    fine = whole - coarse  # the error's variance within the blocks
    return {f"block means ({block}x{block})": (100.0 * coarse / whole, mse_to_psnr(coarse)),
            "within the blocks": (100.0 * fine / whole, mse_to_psnr(max(fine, 1e-20)))}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/mic_100")
    p.add_argument("--scene", default=None, help="scene folder (default: the embedded demo)")
    p.add_argument("--views", type=int, default=30, help="first test views rendered")
    p.add_argument("--no-teacher", action="store_true", help="the student's rows only")
    p.add_argument("--block", type=int, default=None,
                   help="block side of the split by scale (default: an image student's scale, else 4)")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args(argv)


@torch.inference_mode()
def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    run = Path(args.run_dir)
    student, facts = load_student(run / "student" / "student.ckpt")
    scene = load_scene(SceneConfig(path=args.scene), splits=("test",))
    test = scene.split("test")
    n = min(args.views, test.n_views)
    background = torch.tensor(facts.background, dtype=torch.float32)
    gt = test.rgb(background)[:n]
    H, W = test.hw
    preds = {"student": render_views(student, test.c2w[:n], test.K[:n], H, W)}
    note = "teacher not asked for"
    if not args.no_teacher:
        teacher, note = load_teacher_or_note(run / "teacher" / "teacher.ckpt")
        if teacher is not None:
            frames = [_teacher_rgb(teacher, rays, background) for rays in view_rays(test, n)]
            preds["teacher"] = torch.stack([torch.from_numpy(f).reshape(H, W, 3) for f in frames])
    parts = regions(gt, background)
    block = args.block or getattr(getattr(student, "cfg", None), "scale", 4)
    rows: list[list[object]] = []
    for model, pred in preds.items():
        whole = psnr(pred, gt)
        rows.append([model, "whole views", "100.0", "100.0", f"{whole:.2f}"])
        for name, (pix, share, db) in breakdown(pred, gt, parts).items():
            rows.append([model, name, f"{pix:.1f}", f"{share:.1f}", f"{db:.2f}"])
        for name, (share, db) in by_scale(pred, gt, block).items():
            rows.append([model, name, "100.0", f"{share:.1f}", f"{db:.2f}"])
    table = markdown_table(["model", "region", "pixels %", "share of squared error %", "PSNR dB"], rows)
    notes = (f"Run `{run}`, the first {n} test views of `{scene.name}` ({H}x{W}); regions by the photo: "
             f"background within {BACKGROUND_TOL} of the background color (channel sum), the object's pixels "
             f"by contrast (the larger central difference of the gray value across and down); by scale: the "
             f"error of the {block}x{block} block means and the error within the blocks (they add up to the "
             f"whole). {note}.")
    print(table)
    if not args.no_write:
        write_section("error_regions", f"{notes}\n\n{table}\n")
    return table


if __name__ == "__main__":
    main()
