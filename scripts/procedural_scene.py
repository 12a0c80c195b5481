"""Write a procedural test scene: an object scene (Blender layout) or a forward-facing one (LLFF layout).

``--kind object`` (default): an off-centre checkered box and a striped, shaded sphere on a transparent
background, seen from random upper-hemisphere cameras at the NeRF-synthetic radius and field of view,
in NeRF-synthetic (Blender) format. It checks that the pipeline has nothing specific to the demo scene
(``benchmarks/RESULTS.md``, section ``procedural_scene``)::

    python scripts/procedural_scene.py /tmp/blocks && scripts/demo.sh scene.path=/tmp/blocks

``--kind forward``: a tabletop seen as a phone capture sees it, in LLFF layout (``poses_bounds.npy`` and
``images_8/`` at 504 x 378, ``hwf`` at 8x like real LLFF data): a textured back wall and table, two
spheres and two boxes at depths 1:5 apart, no transparency; 35 cameras on a jittered 7 x 5 grid in a
plane facing the scene, axes jittered by a few degrees, 65 degrees horizontal field of view, the whole
rig turned by a random rotation; per-view near/far bounds from the visible depths as LLFF computes
them::

    python scripts/procedural_scene.py /tmp/table --kind forward
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.cameras import focal_from_fov, intrinsics_matrix, look_at, opengl_to_opencv
from core.rays import generate_rays
from scenes.llff import LLFF_POSES, opencv_to_llff

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


# ------------------------------------------------------------------------------- forward-facing scene
# The scene lives in a right-handed "rig" frame: +Y up, the cameras near the origin looking along +Z (so
# +X is to the images' left), the table top at y = -1, the back wall at z = 11. The poses written are in
# a world frame turned and moved by a random rigid transform (world_from_rig), so nothing downstream can
# rely on the rig's axes.

FORWARD_WIDTH = 504  # LLFF's images_8 width (504 x 378)
FORWARD_FACTOR = 8  # hwf is written at 8x the image size, like real LLFF data
FORWARD_FOV_X = math.radians(65.0)
FORWARD_GRID = (7, 5)  # cameras per row, rows
WALL_Z, TABLE_Y = 11.0, -1.0
SPHERES = ((np.array([-0.75, -0.55, 2.6]), 0.45), (np.array([1.6, -0.1, 6.5]), 0.9))
SPHERE_COLORS = (([0.9, 0.35, 0.15], [0.95, 0.9, 0.75]), ([0.25, 0.7, 0.3], [0.95, 0.85, 0.2]))
BOXES = ((np.array([0.2, -1.0, 3.8]), np.array([1.2, 0.0, 4.6])),
         (np.array([-3.0, -1.0, 7.5]), np.array([-1.4, 1.6, 8.5])))
BOX_COLORS = ([0.2, 0.45, 0.85], [0.6, 0.3, 0.7])
WALL_BASE = np.array([0.55, 0.5, 0.5])
WALL_WAVES = np.array([  # per channel, three waves (amplitude, x and y frequency, phase): smooth colors
    [[0.2, 1.3, 0.0, 0.7], [0.12, -2.3, 3.1, 0.0], [0.06, 7.7, 5.3, 0.0]],
    [[0.2, 0.0, 1.7, 1.1], [0.12, 2.9, 1.9, 0.0], [0.06, -4.1, 9.1, 0.0]],
    [[0.2, 0.9, -1.3, 0.0], [0.12, 4.3, 0.0, -0.5], [0.06, 6.7, 8.3, 0.0]],
])
LIGHT = np.array([-0.4, 0.8, -0.5]) / np.linalg.norm([-0.4, 0.8, -0.5])  # towards the light, rig frame
SUPERSAMPLE = 2  # rays per pixel side: edges are area-averaged like a downscaled photo


def world_from_rig(seed: int) -> torch.Tensor:
    """``[4, 4]`` random rigid transform from the rig frame to the world frame written to the files."""
    rng = np.random.default_rng(seed + 1000)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # a uniformly random orthogonal matrix ...
    q[:, 0] *= np.linalg.det(q)  # ... turned into a rotation
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = q, rng.normal(scale=2.0, size=3)
    return torch.from_numpy(T)


def forward_poses(seed: int) -> torch.Tensor:
    """``[C, 4, 4]`` OpenCV poses in the rig frame: a jittered grid in the plane z = 0, looking along +Z."""
    rng = np.random.default_rng(seed)
    cols, rows = FORWARD_GRID
    gx, gy = np.meshgrid(np.linspace(-0.3, 0.3, cols), np.linspace(0.2, -0.2, rows))
    n = cols * rows
    jitter = rng.uniform(-1, 1, (n, 3)) * [0.04, 0.04, 0.05]
    eye = np.stack([gx.ravel(), gy.ravel(), np.zeros(n)], -1) + jitter
    yaw, pitch, roll = (np.radians(rng.uniform(-a, a, n)) for a in (3.0, 3.0, 1.5))
    axis = np.stack([np.tan(yaw), np.tan(pitch), np.ones(n)], -1)
    c2w = look_at(torch.from_numpy(eye), torch.from_numpy(eye + axis), torch.tensor([0.0, 1.0, 0.0])).double()
    cos, sin = torch.from_numpy(np.cos(roll)), torch.from_numpy(np.sin(roll))
    spin = torch.zeros(n, 3, 3, dtype=torch.float64)  # roll about the optical axis
    spin[:, 0, 0], spin[:, 0, 1], spin[:, 1, 0], spin[:, 1, 1], spin[:, 2, 2] = cos, -sin, sin, cos, 1.0
    c2w[:, :3, :3] = c2w[:, :3, :3] @ spin
    return c2w


def _first_hits(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance ``[N]`` to the first surface and its index ``[N]`` (0 wall, 1 table, 2.. spheres, boxes).

    Column by column: numpy reduces slowly over a last axis of 3.
    """
    o_cols, d_cols = np.ascontiguousarray(o.T), np.ascontiguousarray(d.T)
    (ox, oy, oz), (dx, dy, dz) = o_cols, d_cols
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = [(WALL_Z - oz) / dz, (TABLE_Y - oy) / dy]
        for (cx, cy, cz), radius in SPHERES:
            px, py, pz = ox - cx, oy - cy, oz - cz
            b = px * dx + py * dy + pz * dz
            disc = b * b - (px * px + py * py + pz * pz - radius**2)
            ts.append(np.where(disc > 0, -b - np.sqrt(np.abs(disc)), np.inf))
        for lo, hi in BOXES:
            slabs = [((a - oa) / da, (b - oa) / da) for a, b, oa, da in zip(lo, hi, o_cols, d_cols)]
            t_in = np.maximum.reduce([np.minimum(t0, t1) for t0, t1 in slabs])
            t_out = np.minimum.reduce([np.maximum(t0, t1) for t0, t1 in slabs])
            ts.append(np.where(t_in < t_out, t_in, np.inf))
    best, index = np.full(len(o), np.inf), np.zeros(len(o), dtype=np.int64)
    for k, t in enumerate(ts):
        closer = (t > 1e-6) & (t < best)  # NaN and negative distances are misses
        best, index = np.where(closer, t, best), np.where(closer, k, index)
    return best, index


def _wall(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colors ``[N, 3]`` and normals ``[N, 3]`` of the back wall at points ``p`` (rig frame)."""
    amp, fx, fy, phase = np.moveaxis(WALL_WAVES, -1, 0)  # each [3 channels, 3 waves]
    color = WALL_BASE + (amp * np.sin(p[:, 0:1, None] * fx + p[:, 1:2, None] * fy + phase)).sum(-1)
    return color, np.tile([0.0, 0.0, -1.0], (len(p), 1))


def _table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, z = p[:, 0:1], p[:, 2:3]
    grain = np.sin(11.0 * x + 2.0 * np.sin(1.5 * z) + 0.8 * np.sin(3.3 * z + x))  # wood
    color = np.array([0.62, 0.42, 0.24]) * (0.8 + 0.2 * grain) * (0.9 + 0.1 * np.sin(2.1 * z))
    return color, np.tile([0.0, 1.0, 0.0], (len(p), 1))


def _sphere(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    centre, radius = SPHERES[k]
    warm, cool = SPHERE_COLORS[k]
    n = (p - centre) / radius
    mix = np.clip(0.5 + 1.5 * np.sin(9 * n[:, 1:2]) * np.sin(5 * np.arctan2(n[:, 2:3], n[:, 0:1])), 0, 1)
    return mix * np.array(warm) + (1 - mix) * np.array(cool), n


def _box(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = BOXES[k]
    rel = (p - (lo + hi) / 2) / ((hi - lo) / 2)
    n = np.where(np.abs(rel) == np.abs(rel).max(-1, keepdims=True), np.sign(rel), 0.0)
    x, y, z = p[:, 0:1], p[:, 1:2], p[:, 2:3]
    stripes = 0.5 + 0.3 * np.sin(7 * (x + y + z)) + 0.2 * np.sin(19 * (x - z) + 3 * y)
    face = 0.85 + 0.15 * np.abs(n) @ [1.0, 0.6, 0.3]  # each face a little brighter or darker
    return np.array(BOX_COLORS[k]) * (0.6 + 0.5 * stripes) * face[:, None], n


Surface = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # points -> colors, normals
SURFACES: list[Surface] = [_wall, _table, *(partial(_sphere, k=k) for k in range(len(SPHERES))),
                           *(partial(_box, k=k) for k in range(len(BOXES)))]  # in _first_hits' order


def _shade(p: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``[N, 3]`` Lambertian colors at points ``p`` (rig frame) of the surfaces ``index`` ``[N]``."""
    rgb = np.zeros_like(p)
    for k, surface in enumerate(SURFACES):
        hit = index == k
        color, normal = surface(p[hit])
        rgb[hit] = color * (0.4 + 0.6 * np.clip(normal @ LIGHT, 0, 1))[:, None]
    return np.clip(rgb, 0, 1)


def render_forward(c2w: torch.Tensor, K: torch.Tensor, H: int, W: int, seed: int = 3
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Render the forward scene from an OpenCV pose in the world frame of ``seed``.

    Args:
        c2w: ``[4, 4]`` world-frame camera-to-world pose.
        K: ``[3, 3]`` intrinsics of the ``H x W`` image.

    Returns:
        ``[H, W, 3]`` uint8 RGB (each pixel the mean of ``SUPERSAMPLE^2`` rays) and the ``[H * s, W * s]``
        depths along the optical axis (camera-space z) of the surfaces those rays hit.
    """
    s = SUPERSAMPLE
    rig_c2w = (torch.linalg.inv(world_from_rig(seed)) @ c2w.double()).float()
    K_sub = K.float().clone()
    K_sub[:2] *= s
    rays_o, rays_d = generate_rays(rig_c2w, K_sub, H * s, W * s)
    o, d = rays_o.double().numpy(), rays_d.double().numpy()
    t, index = _first_hits(o, d)
    assert np.isfinite(t).all(), "a ray hits nothing: the wall must fill every view"
    rgb = _shade(o + t[:, None] * d, index).reshape(H, s, W, s, 3).mean((1, 3))
    depth = t * (d @ rig_c2w[:3, 2].double().numpy())
    return (rgb * 255 + 0.5).astype(np.uint8), depth.reshape(H * s, W * s)


def write_forward_scene(root: Path, width: int = FORWARD_WIDTH, seed: int = 3) -> Path:
    """Write ``poses_bounds.npy`` and ``images_8/image<i>.png`` under ``root`` (LLFF layout, RGB)."""
    if width < 4 or width % 4:
        raise ValueError(f"--size {width}: the forward scene's width must be a positive multiple of 4")
    W, H = width, width * 3 // 4
    focal = focal_from_fov(FORWARD_FOV_X, W)
    K = intrinsics_matrix(focal, focal, W / 2, H / 2)
    c2w = world_from_rig(seed) @ forward_poses(seed)
    folder = root / f"images_{FORWARD_FACTOR}"
    folder.mkdir(parents=True, exist_ok=True)
    bounds = []
    for i, pose in enumerate(c2w):
        rgb, depth = render_forward(pose, K, H, W, seed)
        Image.fromarray(rgb, "RGB").save(folder / f"image{i:03d}.png")
        # LLFF's bounds: the 0.1 and 99.9 percentiles of the visible depths, here with a 10% margin
        bounds.append([0.9 * np.percentile(depth, 0.1), 1.1 * np.percentile(depth, 99.9)])
    poses = opencv_to_llff(c2w, FORWARD_FACTOR * np.array([H, W, focal]))
    np.save(root / LLFF_POSES, np.concatenate([poses.reshape(len(c2w), 15), np.array(bounds)], -1))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="output folder")
    parser.add_argument("--kind", choices=("object", "forward"), default="object",
                        help="object: Blender layout, RGBA; forward: LLFF layout, RGB")
    parser.add_argument("--size", type=int, default=None,
                        help="object: image width and height (default 100); forward: image width, a "
                        f"multiple of 4 (height 3/4 of it; default {FORWARD_WIDTH})")
    args = parser.parse_args(argv)
    if args.kind == "forward":
        try:
            print(write_forward_scene(args.root, args.size or FORWARD_WIDTH))
        except ValueError as exc:
            parser.error(str(exc))
    else:
        print(write_scene(args.root, args.size or 100))


if __name__ == "__main__":
    main()
