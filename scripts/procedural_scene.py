"""Write a procedural test scene in NeRF-synthetic (Blender) format: a second scene unlike the demo's.

An off-centre checkered box and a striped, shaded sphere on a transparent background, seen from random
upper-hemisphere cameras at the NeRF-synthetic radius and field of view. It checks that the pipeline has
nothing specific to the demo scene (``benchmarks/RESULTS.md``, section ``procedural_scene``)::

    python scripts/procedural_scene.py /tmp/blocks && scripts/demo.sh scene.path=/tmp/blocks
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.cameras import focal_from_fov, intrinsics_matrix, look_at, opengl_to_opencv
from core.rays import generate_rays

FOV_X = 0.6911112070083618  # NeRF synthetic's camera_angle_x
RADIUS = 4.031  # NeRF synthetic's camera distance
BOX = (np.array([0.1, -0.9, -0.6]), np.array([1.1, 0.1, 0.3]))
SPHERE_CENTRE, SPHERE_RADIUS = np.array([-0.5, 0.4, 0.0]), 0.55


def camera_pose(azimuth: float, elevation: float) -> torch.Tensor:
    """``[4, 4]`` OpenCV camera-to-world pose looking at the origin, +Z up."""
    eye = RADIUS * torch.tensor([math.cos(azimuth) * math.cos(elevation),
                                 math.sin(azimuth) * math.cos(elevation), math.sin(elevation)])
    return look_at(eye[None], torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))[0]


def render(c2w: torch.Tensor, size: int) -> np.ndarray:
    """``[size, size, 4]`` uint8 RGBA image of the OpenCV pose ``c2w``, one ray through each pixel centre."""
    focal = focal_from_fov(FOV_X, size)
    rays_o, rays_d = generate_rays(c2w, intrinsics_matrix(focal, focal, size / 2, size / 2), size, size)
    o, d = rays_o.double().numpy().reshape(size, size, 3), rays_d.double().numpy().reshape(size, size, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (BOX[0] - o) / d, (BOX[1] - o) / d
    t_box = np.minimum(t0, t1).max(-1)
    hit_box = (t_box < np.maximum(t0, t1).min(-1)) & (t_box > 0)
    checks = np.floor((o + t_box[..., None] * d) * 5).sum(-1) % 2
    rgb = np.where(hit_box[..., None], np.where(checks[..., None] > 0, [0.9, 0.3, 0.1], [0.1, 0.2, 0.8]), 0.0)
    oc = o - SPHERE_CENTRE
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - SPHERE_RADIUS**2)
    t_sph = -b - np.sqrt(np.clip(disc, 0, None))
    hit_sph = (disc > 0) & (t_sph > 0) & ((t_sph < t_box) | ~hit_box)
    normal = (o + t_sph[..., None] * d - SPHERE_CENTRE) / SPHERE_RADIUS
    shade = 0.4 + 0.6 * np.clip(normal @ np.array([0.3, 0.5, 0.8]), 0, 1)[..., None]
    stripes = np.where(np.sin(12 * normal[..., 2:3]) > 0, [0.2, 0.8, 0.3], [0.95, 0.95, 0.9]) * shade
    rgb = np.where(hit_sph[..., None], stripes, rgb)
    rgba = np.concatenate([rgb, (hit_box | hit_sph)[..., None].astype(float)], -1)
    return (rgba * 255 + 0.5).astype(np.uint8)


def write_scene(root: Path, size: int = 100, n_views: dict[str, int] | None = None, seed: int = 3) -> Path:
    """Write ``transforms_{split}.json`` and ``{split}/r_{i}.png`` under ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (n_views or {"train": 100, "val": 10, "test": 200}).items():
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(n):
            c2w = camera_pose(rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 1.3))
            Image.fromarray(render(c2w, size), "RGBA").save(root / split / f"r_{i}.png")
            c2w_gl = opengl_to_opencv(c2w)  # the flip is its own inverse: Blender files hold OpenGL poses
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w_gl.tolist()})
        meta = {"camera_angle_x": FOV_X, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="output folder")
    parser.add_argument("--size", type=int, default=100, help="image width and height in pixels")
    args = parser.parse_args()
    print(write_scene(args.root, args.size))


if __name__ == "__main__":
    main()
