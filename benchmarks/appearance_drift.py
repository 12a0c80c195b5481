"""Does a capture drift in exposure or white balance between its photos? The most a per-image color
correction could gain on a trained teacher.

Real captures can change exposure or white balance from photo to photo; nerfstudio's appearance embedding
and Instant-NGP's per-image latents let the model explain that per image. Before a scene's teacher pays
for one, this study bounds what it can win: for each photo, a random half of its pixels fits the best
affine color map (a 3x3 matrix and an offset, least squares) from the trained teacher's render to the
photo, and the other half measures the error before and after. An affine map per image is what an
exposure or white-balance change is (and more); the gain is an upper bound for an appearance code of that
kind, measured on pixels the fit did not see. On the test photos, which the teacher never saw, a drift
the teacher could not explain shows as a gain there too.

    python -m benchmarks.appearance_drift --run-dir runs/flower --scene ../shared/data/real/flower
        [--pixels 6000] [--no-write]

Prints one table and writes the ``appearance_drift`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.results import markdown_table, write_section
from core.errors import CheckpointError, exit_on_user_error
from core.metrics import mse_to_psnr
from core.rays import generate_rays
from scenes.load import SceneConfig, SceneSplit, load_scene
from teacher.checkpoint import load_teacher
from teacher.protocol import RayRenderer

THREADS = 2
PAYS_DB = 0.2  # a mean test-photo gain below this is within the run-to-run noise of a teacher


def affine_fit_gain(pred: Tensor, target: Tensor,
                    generator: torch.Generator) -> tuple[float, float, Tensor]:
    """The error of one view's pixels before and after the best affine color map, fitted on half of them.

    Args:
        pred: ``[N, 3]`` rendered colors.
        target: ``[N, 3]`` the photo's colors at the same pixels.
        generator: draws the fitting half.

    Returns:
        ``(mse_before, mse_after, M)``: both on the held-out half; ``M [4, 3]`` maps ``[rgb, 1]`` to the
        photo.
    """
    n = pred.shape[0]
    order = torch.randperm(n, generator=generator)
    fit, held = order[: n // 2], order[n // 2:]
    x = torch.cat([pred, torch.ones(n, 1, dtype=pred.dtype)], 1).double()
    m = torch.linalg.lstsq(x[fit], target[fit].double()).solution
    before = float(((pred[held] - target[held]) ** 2).mean())
    after = float(((x[held] @ m - target[held].double()) ** 2).mean())
    return before, after, m.float()


def drift_rows(renderer: RayRenderer, split: SceneSplit, background: list[float], pixels: int,
               seed: int = 0) -> dict:
    """Fit every view of a split (see :func:`affine_fit_gain`); ``pixels`` random pixels a view.

    Returns:
        ``{"views", "psnr_before", "psnr_after", "gain_mean", "gain_max", "gain_spread" [3],
        "offset_spread" [3]}``: PSNR of the mean held-out error, the per-view gain in dB, and the standard
        deviation over views of the fitted per-channel gains (the matrix's diagonal) and offsets.
    """
    gen = torch.Generator().manual_seed(seed)
    bg = torch.tensor(background, dtype=torch.float32)
    photos = split.rgb(background)
    H, W = split.hw
    befores, afters, mats = [], [], []
    for v in range(split.n_views):
        o, d = generate_rays(split.c2w[v], split.K[v], H, W)
        idx = torch.randperm(H * W, generator=gen)[: min(pixels, H * W)]
        with torch.inference_mode():
            pred = renderer.render_rays(o[idx], d[idx], bg)["rgb"].float()
        before, after, m = affine_fit_gain(pred, photos[v].reshape(-1, 3)[idx], gen)
        befores.append(before)
        afters.append(after)
        mats.append(m)
    # an exact fit on both sides is 0 dB, not a division by zero
    b, a = torch.tensor(befores).clamp_min(1e-12), torch.tensor(afters).clamp_min(1e-12)
    gains = 10 * torch.log10(b / a)
    stacked = torch.stack(mats)
    return {"views": split.n_views, "psnr_before": float(mse_to_psnr(b.mean())),
            "psnr_after": float(mse_to_psnr(a.mean())), "gain_mean": float(gains.mean()),
            "gain_max": float(gains.max()),
            "gain_spread": torch.diagonal(stacked[:, :3], dim1=1, dim2=2).std(0).tolist(),
            "offset_spread": stacked[:, 3].std(0).tolist()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--run-dir", required=True, help="a run with teacher/teacher.ckpt")
    p.add_argument("--scene", required=True, help="the scene folder the teacher was trained on")
    p.add_argument("--pixels", type=int, default=6000, help="random pixels a view (half fit, half measure)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.pixels < 16:
        p.error("--pixels: must be at least 16")
    return args


@exit_on_user_error  # a bad run folder, scene or checkpoint: one line, exit 1
def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    ckpt = Path(args.run_dir) / "teacher" / "teacher.ckpt"
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no teacher checkpoint: train one with python -m teacher.train")
    teacher = load_teacher(ckpt)
    teacher.eval()
    scene = load_scene(SceneConfig(path=args.scene), splits=("train", "test"))
    rows = {name: drift_rows(teacher, scene.split(name), scene.background, args.pixels)
            for name in ("train", "test")}

    def spread(values: list[float]) -> str:
        return " / ".join(f"{v:.3f}" for v in values)

    table = markdown_table(
        ["photos", "views", "PSNR as rendered", "after a per-view affine map", "gain (mean / max)",
         "per-view gain spread (R / G / B)", "offset spread (R / G / B)"],
        [[name, r["views"], f"{r['psnr_before']:.2f} dB", f"{r['psnr_after']:.2f} dB",
          f"{r['gain_mean']:+.2f} / {r['gain_max']:+.2f} dB", spread(r["gain_spread"]),
          spread(r["offset_spread"])] for name, r in rows.items()])
    test_gain = rows["test"]["gain_mean"]
    verdict = (f"On the test photos the best per-image affine map gains {test_gain:+.2f} dB on average: "
               + ("an appearance code could pay on this capture." if test_gain >= PAYS_DB else
                  "this capture has no exposure or white-balance drift that an appearance code could win "
                  "back."))
    body = (f"Teacher `{ckpt}` on `{args.scene}`; {args.pixels} random pixels a view, half fit, half "
            f"measured (PSNR of the mean held-out error; gains in dB per view).\n\n{table}\n\n{verdict}\n")
    print(table)
    print(verdict)
    if not args.no_write:
        given = list(sys.argv[1:] if argv is None else argv)
        write_section("appearance_drift", body, " ".join(["python -m benchmarks.appearance_drift", *given]))
    return {"rows": rows, "test_gain": test_gain if math.isfinite(test_gain) else None}


if __name__ == "__main__":
    main()
