"""``Teacher``: the field, its occupancy grid and the renderer behind one ``render_rays`` call.

A plain ``nn.Module`` (no Lightning), so data generation and export use it without a Trainer.
:func:`teacher.checkpoint.load_teacher` rebuilds one from ``<run_dir>/teacher/teacher.ckpt``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.ndc import NDCSpace, to_ndc
from core.rays import ray_aabb_intersect
from teacher.field import FieldConfig, TeacherField
from teacher.occupancy import OccupancyConfig, OccupancyGrid, carve_from_masks
from teacher.render import MarchConfig, render_in_chunks, render_segment, step_size_for

log = logging.getLogger(__name__)

@dataclass
class TeacherModelConfig:
    """The teacher's network, occupancy grid and ray marching."""

    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    occupancy: OccupancyConfig = dataclasses.field(default_factory=OccupancyConfig)
    render: MarchConfig = dataclasses.field(default_factory=MarchConfig)


class Teacher(nn.Module):
    """Instant-NGP teacher of one scene.

    Args:
        cfg: model settings.
        aabb: ``[6]`` scene box (NDC box for a forward-facing scene).
        near: ray start distance.
        far: ray end distance.
        ndc: the NDC frame of a forward-facing scene: :meth:`render_rays` takes world rays and marches
            them in NDC (``None``: the box, near and far are in the world frame).
    """

    aabb: Tensor

    def __init__(self, cfg: TeacherModelConfig, aabb: Tensor, near: float, far: float,
                 ndc: NDCSpace | None = None):
        super().__init__()
        self.cfg = cfg
        self.near = float(near)
        self.far = float(far)
        self.ndc = ndc
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.field = TeacherField(cfg.field, self.aabb)
        self.occupancy = OccupancyGrid(cfg.occupancy, self.aabb)
        self.step_size = step_size_for(self.aabb, cfg.render)

    @property
    def backend(self) -> str:
        """The hash-grid backend in use."""
        return self.field.grid.backend

    def update_occupancy(self, step: int) -> bool:
        """Refresh the occupancy grid at training ``step`` if it is an update step."""
        def opacity(x: Tensor) -> Tensor:
            return self.field.query_density(x)[0] * self.step_size

        return self.occupancy.update(step, opacity)

    def carve_occupancy(self, c2w: Tensor, K: Tensor, alphas: Tensor) -> float:
        """Restrict the occupancy grid to the visual hull of training masks; returns the kept fraction.

        Args:
            c2w: ``[C, 4, 4]`` training poses.
            K: ``[C, 3, 3]`` intrinsics.
            alphas: ``[C, H, W]`` alpha masks.
        """
        cfg = self.cfg.occupancy
        allowed = carve_from_masks(self.aabb.cpu(), cfg.resolution, c2w.cpu(), K.cpu(), alphas.cpu(),
                                   cfg.carve_dilation, cfg.carve_min_views)
        self.occupancy.restrict(allowed.to(self.aabb.device))
        return float(allowed.float().mean())

    def render_rays(
        self,
        rays_o: Tensor,  # [N, 3]
        rays_d: Tensor,  # [N, 3]
        background: Tensor,  # [3] or [N, 3]
        chunk: int | None = None,
        distortion: bool = False,
    ) -> dict[str, Tensor]:
        """Render rays onto a background, ``chunk`` rays at a time.

        Args:
            rays_o: ``[N, 3]`` world origins.
            rays_d: ``[N, 3]`` unit world directions.
            background: ``[3]`` color, or ``[N, 3]`` one per ray.
            chunk: rays per chunk (default ``cfg.render.chunk``).
            distortion: also return each ray's distortion (the training loss's term).

        Returns:
            ``rgb [N, 3]``, ``depth [N]`` (expected distance of the hit, 0 where nothing is hit; NDC
            length in a forward-facing scene), ``opacity [N]`` and ``n_samples`` (scalar); with
            ``distortion`` also ``distortion [N]`` (:func:`core.rendering.distortion_packed` of each
            ray's weights).
        """
        if self.ndc is not None:
            rays_o, rays_d = to_ndc(rays_o, rays_d, self.ndc)
        # samples outside occupied cells are dropped anyway: march only the box around them
        box = self.content_aabb()
        return render_in_chunks(lambda o, d, bg: self._render_chunk(o, d, bg, box, distortion), rays_o,
                                rays_d, background, chunk or self.cfg.render.chunk)

    def content_aabb(self) -> Tensor:
        """``[6]`` box around the occupied cells: rays that miss it render as pure background."""
        return self.occupancy.occupied_aabb()

    def occupied_cells(self) -> list[tuple[Tensor, Tensor]]:
        """``(binary [R^3], aabb [6])`` of the occupancy grid: samples outside its cells are dropped."""
        return [(self.occupancy.binary, self.occupancy.aabb)]

    def _render_chunk(self, rays_o: Tensor, rays_d: Tensor, background: Tensor, box: Tensor,
                      distortion: bool) -> dict[str, Tensor]:
        t_min, t_max, _ = ray_aabb_intersect(rays_o, rays_d, box, self.near, self.far)
        seg = render_segment(self.field, rays_o, rays_d, t_min, t_max, self.occupancy.binary,
                             self.step_size, self.cfg.render, distortion)
        rgb = seg["rgb"] + seg["trans"][:, None] * background
        depth = seg["depth_sum"] / seg["opacity"].clamp_min(1e-6)
        out = {"rgb": rgb, "depth": depth, "opacity": seg["opacity"], "n_samples": seg["n_samples"]}
        if "distortion" in seg:
            out["distortion"] = seg["distortion"]
        return out


def build_teacher(cfg: TeacherModelConfig, aabb: Tensor, near: float, far: float,
                  device: torch.device | str = "cpu", ndc: NDCSpace | None = None) -> Teacher:
    """Construct a teacher for a scene box and ray range (in the NDC frame ``ndc`` if given)."""
    with torch.device(device):
        return Teacher(cfg, aabb.to(device), near, far, ndc)
