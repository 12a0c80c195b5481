"""Object scenes in NeRF-synthetic (Blender) layout: ``transforms_{train,val,test}.json`` and RGBA
``{split}/r_{i}.png`` on a transparent background.

* :func:`make_procedural_scene`: the tests' tiny scene, a sphere colored by its normal, seen by a ring of
  cameras at 16x16 (8 train, 2 val, 2 test views by default);
* :func:`write_object_scene`: an off-centre box and a sphere from random upper-hemisphere cameras at
  NeRF-synthetic's radius and field of view (``scripts/procedural_scene.py --kind object``). Its
  textures are a checkerboard and shaded stripes, or with ``detail=True`` detail-rich ones (printed
  text on the box, a fine checker under thin bars on the sphere) that a student must resolve pixel by
  pixel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.cameras import focal_from_fov, intrinsics_matrix, opengl_to_opencv
from testing.scenes import textures
from testing.scenes.raycast import Box, Scene, Sphere, Surface, render, to_uint8
from testing.scenes.rigs import FOV_X, SYNTHETIC_FOV_X, ring_poses, synthetic_poses

SPHERE_RADIUS = 0.8  # the tiny scene's sphere, at the origin
TINY = Scene((Surface(Sphere((0.0, 0.0, 0.0), SPHERE_RADIUS), textures.normal_color, lit=None),))

_BOX = Box((0.1, -0.9, -0.6), (1.1, 0.1, 0.3))
_BALL = Sphere((-0.5, 0.4, 0.0), 0.55)
_LIGHT = (0.3, 0.5, 0.8)  # as first written (not unit length: 0.99); the box is unlit
BLOCKS = Scene((
    Surface(_BOX, textures.checker(5.0, odd=(0.9, 0.3, 0.1), even=(0.1, 0.2, 0.8)), lit=None),
    Surface(_BALL, textures.stripes(12.0, (0.2, 0.8, 0.3), (0.95, 0.95, 0.9))),
), light=_LIGHT)
_INK, _PAPER = (0.08, 0.08, 0.12), (0.93, 0.9, 0.82)
DETAIL = Scene((  # at 400 px a font pixel is ~3 px, a bar ~2 px, a check ~4 px; at 100 px all alias
    Surface(_BOX, textures.glyphs(0.18, _INK, textures.constant(_PAPER)), lit=None),
    Surface(_BALL, textures.bars(0.15, 0.015, (0.1, 0.1, 0.1), both=True,
                                 under=textures.checker(33.0, odd=(0.9, 0.75, 0.2), even=(0.2, 0.45, 0.8)))),
), light=_LIGHT)


def write_blender(root: Path, scene: Scene, poses: Mapping[str, torch.Tensor], fov_x: float, size: int
                  ) -> Path:
    """Render ``scene`` from each split's OpenCV ``poses [C, 4, 4]`` at ``size x size`` (field of view
    ``fov_x``) into ``root`` in Blender layout; returns ``root``."""
    focal = focal_from_fov(fov_x, size)
    K = intrinsics_matrix(focal, focal, size / 2, size / 2)
    for split, c2ws in poses.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, c2w in enumerate(c2ws):
            frame = render(scene, c2w, K, size, size)
            rgba = np.concatenate([frame.rgb, frame.alpha[..., None]], -1)
            Image.fromarray(to_uint8(rgba), "RGBA").save(root / split / f"r_{i}.png")
            c2w_gl = opengl_to_opencv(c2w)  # the flip is its own inverse: Blender files hold OpenGL poses
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w_gl.tolist()})
        meta = {"camera_angle_x": fov_x, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


def make_procedural_scene(root: Path, n_train: int = 8, n_test: int = 2, size: int = 16) -> Path:
    """Write the tiny sphere scene under ``root``: ``n_train`` ring views, ``n_test`` val and test views
    between them (azimuths offset by 0.3 and 0.7 rad), ``size x size`` pixels; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    poses = {"train": ring_poses(n_train), "val": ring_poses(n_test, offset=0.3),
             "test": ring_poses(n_test, offset=0.7)}
    return write_blender(root, TINY, poses, FOV_X, size)


def write_object_scene(root: Path, size: int = 100, n_views: Mapping[str, int] | None = None, seed: int = 3,
                       detail: bool = False) -> Path:
    """Write the box-and-sphere scene under ``root``: per split (default 100 train, 10 val, 200 test) views
    from random upper-hemisphere cameras drawn from ``seed`` in turn, ``size x size`` pixels; with
    ``detail``, the detail-rich textures (same geometry, same cameras). Returns ``root``."""
    rng = np.random.default_rng(seed)
    poses = {split: synthetic_poses(n, rng) for split, n in (n_views or {"train": 100, "val": 10,
                                                                         "test": 200}).items()}
    return write_blender(root, DETAIL if detail else BLOCKS, poses, SYNTHETIC_FOV_X, size)
