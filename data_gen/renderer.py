"""Rendering shards with the teacher: cameras -> rays -> teacher -> encoded samples -> tar."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError
from core.io import sha256_file
from core.rays import generate_rays
from core.shards import PseudoMeta
from data_gen.poses import Rig, SamplerConfig, sample_views
from data_gen.shards import encode_view, write_encoded
from scenes.load import Scene
from teacher.protocol import RenderableTeacher

log = logging.getLogger(__name__)

AABB_TOLERANCE = 1e-4


@dataclass
class Timer:
    """Seconds spent rendering (rays + teacher), encoding (PNG/npy) and writing (tar, fsync, hash)."""

    render: float = 0.0
    encode: float = 0.0
    write: float = 0.0

    @property
    def total(self) -> float:
        return self.render + self.encode + self.write


def teacher_info(ckpt: Path) -> dict[str, Any]:
    """``{"checkpoint_sha256", "test_psnr"}`` of a teacher checkpoint (PSNR from its ``metrics.json``)."""
    psnr = None
    metrics = ckpt.parent / "metrics.json"
    if metrics.is_file():
        try:
            psnr = json.loads(metrics.read_text()).get("test", {}).get("psnr")
        except (OSError, json.JSONDecodeError, AttributeError):
            log.warning("%s: unreadable; teacher test PSNR left empty in meta.json", metrics)
    return {"checkpoint_sha256": sha256_file(ckpt), "test_psnr": psnr}


def load_checked_teacher(ckpt: Path, scene: Scene, device: torch.device, backend: str) -> RenderableTeacher:
    """Load the teacher and check it was trained on this scene's box.

    Raises:
        CheckpointError: missing/corrupt checkpoint (from ``load_teacher``), or a teacher whose scene box
            differs from the configured scene's (another scene or other ``scene.*`` settings).
    """
    from teacher.checkpoint import load_teacher  # imported here: data_gen depends on teacher only to render

    teacher: RenderableTeacher = load_teacher(ckpt, device=str(device), backend=backend)
    aabb = teacher.aabb.detach().float().cpu()
    if aabb.shape != scene.aabb.shape or not torch.allclose(aabb, scene.aabb, atol=AABB_TOLERANCE):
        raise CheckpointError(
            f"{ckpt}: teacher was trained with scene box {[round(v, 4) for v in aabb.tolist()]}, but scene "
            f"'{scene.name}' has box {[round(v, 4) for v in scene.aabb.tolist()]} (check scene.* overrides)")
    teacher.eval()
    return teacher


class ShardRenderer:
    """Renders the views of one shard and writes them as a tar.

    Views are batched into teacher calls of at most ``batch_rays`` rays (at least one whole view), counted
    from the shard's first view, so the batches (and thus the bytes) do not depend on which process
    renders the shard.
    """

    def __init__(self, teacher: RenderableTeacher, rig: Rig, meta: PseudoMeta, sampler_cfg: SamplerConfig,
                 batch_rays: int, device: torch.device, timer: Timer) -> None:
        self.teacher = teacher
        self.rig = rig
        self.meta = meta
        self.sampler = str(meta.sampler["name"])
        self.seed = int(meta.sampler["seed"])
        self.sampler_cfg = sampler_cfg
        self.batch_rays = batch_rays
        self.device = device
        self.timer = timer
        self.background = torch.tensor(meta.scene.background, dtype=torch.float32, device=device)

    def render_views(self, indices: range) -> dict[str, torch.Tensor]:
        """Teacher renders of the views ``indices``.

        Returns:
            ``c2w [V, 4, 4]``, ``K [V, 3, 3]``, ``rgb [V, H, W, 3]``, ``depth [V, H, W]``,
            ``alpha [V, H, W]`` (CPU float32).
        """
        H, W = self.meta.height, self.meta.width
        c2w, K = sample_views(self.sampler, self.seed, indices, self.rig, self.sampler_cfg)
        rays = [generate_rays(c2w[v], K[v], H, W) for v in range(len(indices))]
        rays_o = torch.cat([o for o, _ in rays]).to(self.device)
        rays_d = torch.cat([d for _, d in rays]).to(self.device)
        with torch.inference_mode():
            out = self.teacher.render_rays(rays_o, rays_d, self.background)
        shape = (len(indices), H, W)
        return {"c2w": c2w, "K": K, "rgb": out["rgb"].float().cpu().reshape(*shape, 3),
                "depth": out["depth"].float().cpu().reshape(shape),
                "alpha": out["opacity"].float().cpu().reshape(shape)}

    def write(self, path: Path, first: int, n: int, on_view: Callable[[], None] | None = None) -> str:
        """Render views ``first .. first + n - 1`` into the shard ``path``; returns its sha256."""
        H, W = self.meta.height, self.meta.width
        per_call = max(1, self.batch_rays // (H * W))
        encoded = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + first)  # in case the teacher draws random numbers
            for start in range(first, first + n, per_call):
                t0 = time.perf_counter()
                views = self.render_views(range(start, min(start + per_call, first + n)))
                t1 = time.perf_counter()
                for v in range(views["c2w"].shape[0]):
                    encoded.append(encode_view(
                        start + v, views["rgb"][v], views["c2w"][v], views["K"][v],
                        views["depth"][v] if "depth" in self.meta.fields else None,
                        views["alpha"][v] if "alpha" in self.meta.fields else None, self.meta.rgb_format))
                    if on_view:
                        on_view()
                self.timer.render += t1 - t0
                self.timer.encode += time.perf_counter() - t1
        t0 = time.perf_counter()
        sha = write_encoded(path, encoded)
        self.timer.write += time.perf_counter() - t0
        return sha
