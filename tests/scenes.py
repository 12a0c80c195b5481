"""A tiny procedural scene: a colored sphere seen by a ring of cameras, written in Blender format."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.cameras import focal_from_fov, intrinsics_matrix, look_at, opengl_to_opencv
from core.rays import generate_rays

REPO = Path(__file__).resolve().parents[1]
# a deliberately small teacher (``python -m teacher.train`` overrides) so that a good run takes seconds
TINY_TEACHER = [
    "train.max_steps=2",
    "train.max_seconds=60",
    "train.batch_rays=256",
    "train.progress_bar=false",
    "eval.progress_bar=false",
    "model.field.grid.n_levels=4",
    "model.field.grid.log2_hashmap_size=12",
    "model.field.grid.max_resolution=64",
    "model.occupancy.resolution=16",
]
# a small student (``python -m student.train`` overrides): finetune only, 20 steps
TINY_STUDENT = ["model.depth=4", "model.width=32", "model.n_points=8", "model.n_freqs=4",
                "train.num_workers=0", "train.progress_bar=false", "train.distill.enabled=false",
                "train.finetune.max_steps=20", "train.finetune.batch_size=256",
                "train.finetune.warmup_steps=0", "eval.chunk=128"]
SPHERE_RADIUS = 0.8
CAMERA_RADIUS = 4.0
FOV_X = 0.69


def ring_poses(n: int, elevation_deg: float = 30.0, offset: float = 0.0) -> torch.Tensor:
    """``[n, 4, 4]`` OpenCV poses on a ring around the origin, looking at it (world +Z up)."""
    az = torch.arange(n, dtype=torch.float32) / n * 2 * math.pi + offset
    el = math.radians(elevation_deg)
    eye = CAMERA_RADIUS * torch.stack(
        [torch.cos(az) * math.cos(el), torch.sin(az) * math.cos(el), torch.full_like(az, math.sin(el))], -1
    )
    return look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))


def render_sphere(c2w: torch.Tensor, K: torch.Tensor, size: int) -> np.ndarray:
    """``[size, size, 4]`` uint8 RGBA image of the analytic sphere (color from the normal)."""
    rays_o, rays_d = generate_rays(c2w, K, size, size)
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - SPHERE_RADIUS**2
    disc = b * b - c
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp_min(0))
    normal = torch.nn.functional.normalize(rays_o + t[:, None] * rays_d, dim=-1)
    rgb = torch.where(hit[:, None], 0.5 + 0.5 * normal, torch.zeros_like(normal))
    rgba = torch.cat([rgb, hit[:, None].float()], -1).reshape(size, size, 4)
    return (rgba.numpy() * 255 + 0.5).astype(np.uint8)


def make_procedural_scene(root: Path, n_train: int = 8, n_test: int = 2, size: int = 16) -> Path:
    """Write ``transforms_{train,val,test}.json`` and RGBA PNGs of the sphere scene under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    K = intrinsics_matrix(*(2 * [focal_from_fov(FOV_X, size)]), size / 2, size / 2)
    for split, n, offset in (("train", n_train, 0.0), ("val", n_test, 0.3), ("test", n_test, 0.7)):
        (root / split).mkdir(exist_ok=True)
        poses = ring_poses(n, offset=offset)
        frames = []
        for i, c2w in enumerate(poses):
            Image.fromarray(render_sphere(c2w, K, size), "RGBA").save(root / split / f"r_{i}.png")
            c2w_gl = opengl_to_opencv(c2w)  # the flip is its own inverse
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w_gl.tolist()})
        meta = {"camera_angle_x": FOV_X, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


def make_photo_pseudo_run(run_dir: Path, scene_root: Path) -> Path:
    """Write ``<run_dir>/pseudo/``: shards of the scene's train photos (no teacher needed); returns run_dir.

    Three shards (3 + 3 + 2 views of an 8-view scene) on a white background, written with
    ``data_gen.shards.write_shard``, and their ``meta.json``.
    """
    from core.io import write_json
    from core.shards import PseudoMeta, ShardInfo, shard_name
    from data_gen.shards import write_shard
    from scenes.load import SceneConfig, load_scene

    folder = run_dir / "pseudo"
    scene = load_scene(SceneConfig(path=str(scene_root)), splits=("train", "test"))
    train = scene.split("train")
    rgb = train.rgb([1.0, 1.0, 1.0])
    shards, first = [], 0
    for index, count in enumerate((3, 3, 2)):
        views = [{"view_index": i, "rgb": rgb[i], "c2w": train.c2w[i], "K": train.K[i]}
                 for i in range(first, first + count)]
        sha = write_shard(folder / shard_name(index), views)
        shards.append(ShardInfo(shard_name(index), first, count, sha))
        first += count
    meta = PseudoMeta(image_size=list(train.hw), near=scene.near, far=scene.far, aabb=scene.aabb.tolist(),
                      background=[1.0, 1.0, 1.0], n_views=first, views_per_shard=3, shards=shards,
                      sampler={"name": "train_photos", "seed": 0}, teacher={}, scene={"name": "tiny"})
    write_json(folder / "meta.json", meta.to_dict())
    return run_dir


def run_cli(module: str, cwd: Path, overrides: list[str], timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <overrides>`` in ``cwd`` with this repository importable; output captured."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def teacher_cfg(scene: Path, run_dir: Path, *overrides: str) -> Any:
    """The real composed ``teacher`` config (a ``TeacherConfig``) shrunk to :data:`TINY_TEACHER`, then
    ``overrides``."""
    from pipeline.config import to_dataclass
    from teacher.config import TeacherConfig
    from testing.stages import compose

    base = [*TINY_TEACHER, f"scene.path={scene}", f"run_dir={run_dir}"]
    return to_dataclass(compose("teacher", base + list(overrides)), TeacherConfig)


def data_gen_cfg(scene: Path, run_dir: Path, *overrides: str) -> Any:
    """The real composed ``data_gen`` config (a ``DataGenConfig``), shrunk: tiny scene at 8x8, few views,
    no progress bar."""
    from data_gen.render import DataGenConfig
    from pipeline.config import to_dataclass
    from testing.stages import compose

    base = [f"scene.path={scene}", f"run_dir={run_dir}", "n_views=7", "views_per_shard=3", "image_scale=0.5",
            "progress=false"]
    return to_dataclass(compose("data_gen", base + list(overrides)), DataGenConfig)


def shard_hashes(folder: Path) -> dict[str, str]:
    """``{shard file name: sha256}`` of a pseudo-data folder."""
    from core.io import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.glob("shard-*.tar"))}


def run_js(source: str) -> Any:
    """Run an ES module in node from the viewer's folder (its modules importable as ``./camera.js``...);
    return the JSON it prints. Fails (never skips) without node: CI installs it with npm."""
    import shutil

    node = shutil.which("node")
    assert node, "node is needed for the viewer's JS tests (it is installed with npm)"
    out = subprocess.run([node, "--input-type=module", "-e", source], cwd=REPO / "export" / "web",
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)
