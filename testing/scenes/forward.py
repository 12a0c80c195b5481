"""A forward-facing scene in LLFF layout: a tabletop as a phone capture sees it.

``poses_bounds.npy`` and ``images_8/image<i>.png`` (RGB, 504 x 378 by default, ``hwf`` written at 8x the
image size like real LLFF data): a textured back wall and table, two spheres and two boxes at depths 1:5
apart, no transparency; 35 cameras on a jittered 7 x 5 grid (:func:`testing.scenes.rigs.forward_poses`),
65 degrees horizontal field of view, the whole rig turned by a random rotation; per-view near/far bounds
from the visible depths as LLFF computes them. With ``detail=True`` the same geometry carries detail-rich
textures (printed text on the wall and boxes, a fine checker on the table, thin bars on the spheres).

The scene lives in a right-handed "rig" frame: +Y up, the cameras near the origin looking along +Z (so +X
is to the images' left), the table top at y = -1, the back wall at z = 11.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.cameras import focal_from_fov, intrinsics_matrix
from scenes.llff import LLFF_POSES, opencv_to_llff
from testing.scenes import textures
from testing.scenes.raycast import Box, Plane, Scene, Shape, Sphere, Surface, Texture, render, to_uint8
from testing.scenes.rigs import forward_poses, world_from_rig

FORWARD_WIDTH = 504  # LLFF's images_8 width (504 x 378)
FORWARD_FACTOR = 8  # hwf is written at 8x the image size, like real LLFF data
FORWARD_FOV_X = math.radians(65.0)
SUPERSAMPLE = 2  # rays per pixel side: edges are area-averaged like a downscaled photo
WALL_Z, TABLE_Y = 11.0, -1.0
SPHERES = (((-0.75, -0.55, 2.6), 0.45), ((1.6, -0.1, 6.5), 0.9))
SPHERE_COLORS = (([0.9, 0.35, 0.15], [0.95, 0.9, 0.75]), ([0.25, 0.7, 0.3], [0.95, 0.85, 0.2]))
BOXES = (((0.2, -1.0, 3.8), (1.2, 0.0, 4.6)), ((-3.0, -1.0, 7.5), (-1.4, 1.6, 8.5)))
BOX_COLORS = ([0.2, 0.45, 0.85], [0.6, 0.3, 0.7])
WALL_BASE = np.array([0.55, 0.5, 0.5])
WALL_WAVES = np.array([  # per channel, three waves (amplitude, x and y frequency, phase): smooth colors
    [[0.2, 1.3, 0.0, 0.7], [0.12, -2.3, 3.1, 0.0], [0.06, 7.7, 5.3, 0.0]],
    [[0.2, 0.0, 1.7, 1.1], [0.12, 2.9, 1.9, 0.0], [0.06, -4.1, 9.1, 0.0]],
    [[0.2, 0.9, -1.3, 0.0], [0.12, 4.3, 0.0, -0.5], [0.06, 6.7, 8.3, 0.0]],
])
LIGHT = np.array([-0.4, 0.8, -0.5]) / np.linalg.norm([-0.4, 0.8, -0.5])  # towards the light, rig frame


def _wall(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    amp, fx, fy, phase = np.moveaxis(WALL_WAVES, -1, 0)  # each [3 channels, 3 waves]
    return WALL_BASE + (amp * np.sin(p[:, 0:1, None] * fx + p[:, 1:2, None] * fy + phase)).sum(-1)


def _wood(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    x, z = p[:, 0:1], p[:, 2:3]
    grain = np.sin(11.0 * x + 2.0 * np.sin(1.5 * z) + 0.8 * np.sin(3.3 * z + x))
    return np.array([0.62, 0.42, 0.24]) * (0.8 + 0.2 * grain) * (0.9 + 0.1 * np.sin(2.1 * z))


def _sphere(k: int) -> Texture:
    warm, cool = SPHERE_COLORS[k]

    def texture(p: np.ndarray, n: np.ndarray) -> np.ndarray:
        mix = np.clip(0.5 + 1.5 * np.sin(9 * n[:, 1:2]) * np.sin(5 * np.arctan2(n[:, 2:3], n[:, 0:1])), 0, 1)
        return mix * np.array(warm) + (1 - mix) * np.array(cool)

    return texture


def _box(k: int) -> Texture:
    def texture(p: np.ndarray, n: np.ndarray) -> np.ndarray:
        x, y, z = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        stripes = 0.5 + 0.3 * np.sin(7 * (x + y + z)) + 0.2 * np.sin(19 * (x - z) + 3 * y)
        face = 0.85 + 0.15 * np.abs(n) @ [1.0, 0.6, 0.3]  # each face a little brighter or darker
        return np.array(BOX_COLORS[k]) * (0.6 + 0.5 * stripes) * face[:, None]

    return texture


def _detail_textures() -> list[Texture]:
    """Wall, table, spheres, boxes: printed text, a fine checker, thin bars over a fine checker, text."""
    ink = (0.08, 0.08, 0.12)
    return [
        textures.glyphs(0.5, ink, _wall),
        textures.checker(20.0, odd=(0.75, 0.55, 0.3), even=(0.45, 0.28, 0.15)),
        *(textures.bars(0.1, 0.012, ink, both=True, under=textures.checker(40.0, odd=warm, even=cool))
          for warm, cool in SPHERE_COLORS),
        *(textures.glyphs(0.12, ink, textures.constant(color)) for color in BOX_COLORS),
    ]


def forward_scene(detail: bool = False) -> Scene:
    """The tabletop in its rig frame (surfaces in this order: wall, table, spheres, boxes)."""
    shapes: list[Shape] = [Plane(2, WALL_Z, (0.0, 0.0, -1.0)), Plane(1, TABLE_Y, (0.0, 1.0, 0.0)),
              *(Sphere(c, r) for c, r in SPHERES), *(Box(lo, hi) for lo, hi in BOXES)]
    smooth = [_wall, _wood, *(_sphere(k) for k in range(len(SPHERES))), *(_box(k) for k in range(len(BOXES)))]
    looks = _detail_textures() if detail else smooth
    return Scene(tuple(Surface(shape, look) for shape, look in zip(shapes, looks)), light=tuple(LIGHT))


def render_forward(c2w: torch.Tensor, K: torch.Tensor, H: int, W: int, seed: int = 3, detail: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Render the forward scene from an OpenCV pose in the world frame of ``seed``.

    Args:
        c2w: ``[4, 4]`` world-frame camera-to-world pose.
        K: ``[3, 3]`` intrinsics of the ``H x W`` image.

    Returns:
        ``[H, W, 3]`` uint8 RGB (each pixel the mean of ``SUPERSAMPLE^2`` rays) and the ``[H * s, W * s]``
        depths along the optical axis (camera-space z) of the surfaces those rays hit.
    """
    rig_c2w = (torch.linalg.inv(world_from_rig(seed)) @ c2w.double()).float()
    frame = render(forward_scene(detail), rig_c2w, K, H, W, SUPERSAMPLE)
    assert np.isfinite(frame.depth).all(), "a ray hits nothing: the wall must fill every view"
    return to_uint8(frame.rgb), frame.depth


def write_forward_scene(root: Path, width: int = FORWARD_WIDTH, seed: int = 3, detail: bool = False) -> Path:
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
        rgb, depth = render_forward(pose, K, H, W, seed, detail)
        Image.fromarray(rgb, "RGB").save(folder / f"image{i:03d}.png")
        # LLFF's bounds: the 0.1 and 99.9 percentiles of the visible depths, here with a 10% margin
        bounds.append([0.9 * np.percentile(depth, 0.1), 1.1 * np.percentile(depth, 99.9)])
    poses = opencv_to_llff(c2w, FORWARD_FACTOR * np.array([H, W, focal]))
    np.save(root / LLFF_POSES, np.concatenate([poses.reshape(len(c2w), 15), np.array(bounds)], -1))
    return root
