"""COLMAP on photos with known poses: registration, camera-centre error, phase times, and the teacher.

Renders ``--views`` photos (``--size`` px) of the textured procedural object of
:mod:`benchmarks.textured_scene` with masks, runs ``scenes.colmap.reconstruct`` on them (what
``python -m scenes.colmap PHOTOS OUT --masks MASKS`` does) and compares the recovered cameras with the
true ones after a similarity (Umeyama) alignment: centre error as a fraction of the rig radius, viewing
axis error, focal length error. Then the teacher is trained twice with the same fixed step count (so
that load on the shared CPU does not change the result), once on the recovered scene and once on the
same photos with the true poses, and their test PSNRs are compared.

Targets: >= 95% of the photos registered, centre error <= 1% of the rig radius, recovered-pose teacher
within 1 dB of the true-pose teacher. Prints one table and writes ``benchmarks/colmap.json``.

    python -m benchmarks.colmap [--views 100] [--size 400] [--steps 1500] [--work runs/colmap_bench]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.results import markdown_table
from core.cameras import opengl_to_opencv
from core.io import write_json
from scenes.colmap import reconstruct
from testing.scenes.photos import align_similarity, write_photos, write_true_scene
from testing.scenes.rigs import CAMERA_RADIUS as RADIUS

REPO = Path(__file__).resolve().parents[1]
OUT_JSON = Path(__file__).resolve().parent / "colmap.json"


def recovered_cameras(scene: Path) -> tuple[list[str], np.ndarray, float]:
    """Photo names, ``[C, 4, 4]`` OpenCV poses and the focal length of a written scene."""
    meta = json.loads((scene / "transforms.json").read_text())
    names = [Path(f["file_path"]).name for f in meta["frames"]]
    gl = torch.tensor([f["transform_matrix"] for f in meta["frames"]], dtype=torch.float64)
    return names, opengl_to_opencv(gl).numpy(), float(meta["fl_x"])


def pose_errors(c2w: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Centre error (fraction of the rig radius) and axis error (degrees) after a similarity alignment."""
    aligned, _, R, _ = align_similarity(c2w[:, :3, 3], truth[:, :3, 3])
    centre = np.linalg.norm(aligned - truth[:, :3, 3], axis=-1) / RADIUS
    cos = ((R @ c2w[:, :3, 2].T).T * truth[:, :3, 2]).sum(-1)
    axis = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return {"centre_mean": float(centre.mean()), "centre_max": float(centre.max()),
            "axis_mean_deg": float(axis.mean()), "axis_max_deg": float(axis.max())}


def train_teacher(scene: Path, run_dir: Path, steps: int) -> dict[str, Any]:
    """``python -m teacher.train`` for exactly ``steps`` steps; its ``metrics.json``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "teacher.train", f"scene.path={scene}", f"run_dir={run_dir}",
           "train.max_seconds=null", f"train.max_steps={steps}", "train.progress_bar=false",
           "eval.progress_bar=false"]
    print("$", " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True)
    return json.loads((run_dir / "teacher" / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--steps", type=int, default=1500, help="teacher steps per run (0: no teachers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "colmap_bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.work.resolve()
    capture, recovered, true_scene = work / "capture", work / "recovered", work / "true_poses"
    for folder in (capture, recovered, true_scene):
        shutil.rmtree(folder, ignore_errors=True)

    start = time.perf_counter()
    true_c2w, K, names = write_photos(capture, args.views, args.size, args.seed)
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    path = reconstruct(capture / "images", recovered, capture / "masks")
    total_s = time.perf_counter() - start
    meta = json.loads(path.read_text())
    seconds = meta["colmap"]["seconds"]
    got, c2w, focal = recovered_cameras(recovered)
    errors = pose_errors(c2w, true_c2w.double().numpy()[[names.index(n) for n in got]])
    result: dict[str, Any] = {
        "views": args.views, "size": args.size, "registered": len(got),
        "registered_fraction": len(got) / args.views, **errors,
        "focal_error": abs(focal / float(K[0, 0]) - 1), "render_seconds": render_s,
        "seconds": {**seconds, "other": total_s - sum(seconds.values()), "total": total_s},
        "cameras": meta["colmap"]["cameras"],
    }

    if args.steps > 0:
        write_true_scene(true_scene, capture / "images", capture / "masks", true_c2w, K, names, args.size)
        result["teacher_steps"] = args.steps
        for label, scene in (("true", true_scene), ("recovered", recovered)):
            metrics = train_teacher(scene, work / f"teacher_{label}", args.steps)
            result[f"teacher_{label}"] = {"psnr": metrics["test"]["psnr"], "ssim": metrics["test"]["ssim"],
                                          "n_test": metrics["test"].get("n_views"),
                                          "train_seconds": metrics["train_seconds"]}
    write_json(OUT_JSON, {"command": " ".join(["python -m benchmarks.colmap", *sys.argv[1:]]), **result})
    print(markdown_table(["", "measured", "target"], table_rows(result)))


def table_rows(r: dict[str, Any]) -> list[list[object]]:
    s = r["seconds"]
    rows: list[list[object]] = [
        ["photos registered", f"{r['registered']} of {r['views']} ({100 * r['registered_fraction']:.0f}%)",
         ">= 95%"],
        ["camera-centre error, mean / max (% of rig radius)",
         f"{100 * r['centre_mean']:.2f} / {100 * r['centre_max']:.2f}", "<= 1%"],
        ["viewing-axis error, mean / max", f"{r['axis_mean_deg']:.2f} / {r['axis_max_deg']:.2f} deg", ""],
        ["focal length error", f"{100 * r['focal_error']:.2f}%", ""],
        ["lens (COLMAP model, distortion at the border)", ", ".join(
            f"{c['model']} {c['distortion_px']} px{' (undistorted)' if c['undistorted'] else ''}"
            for c in r["cameras"]), ""],
        ["time: features / matching / mapping / rest (s)",
         f"{s['features']:.1f} / {s['matching']:.1f} / {s['mapping']:.1f} / {s['other']:.1f}", ""],
        ["time: total (s)", f"{s['total']:.1f}", ""],
    ]
    if "teacher_true" in r:
        t, c = r["teacher_true"], r["teacher_recovered"]
        rows += [
            [f"teacher test PSNR, true poses ({r['teacher_steps']} steps)", f"{t['psnr']:.2f} dB", ""],
            [f"teacher test PSNR, recovered poses ({r['teacher_steps']} steps)", f"{c['psnr']:.2f} dB",
             "within 1 dB"],
            ["difference (recovered - true)", f"{c['psnr'] - t['psnr']:+.2f} dB", ""],
        ]
    return rows


if __name__ == "__main__":
    main()
