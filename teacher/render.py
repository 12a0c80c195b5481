"""Volume rendering of one ray segment with the teacher field (reusable by a partitioned teacher).

:func:`render_segment` renders rays over their own ``[t_min, t_max]`` interval and returns what
:func:`core.rendering.composite_segments` needs to join several segments (NeRF-XL): the segment's
color (already weighted, no background), its transmittance, its weighted depth sum and its opacity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from core.checks import at_least, in_range, positive
from core.rendering import accumulate_along_rays, distortion_packed, render_weights_from_density
from teacher.field import TeacherField
from teacher.marching import RaySamples, early_termination_mask, march_rays


@dataclass
class MarchConfig:
    """Ray-marching settings.

    Attributes:
        steps_per_diagonal: step size is the box diagonal divided by this (Instant-NGP: 1024, i.e.
            ``sqrt(3) / 1024`` of the unit cube).
        min_transmittance: rays stop once their transmittance falls below this.
        alpha_threshold: samples with opacity below this are skipped (0 keeps all).
        chunk: rays rendered at once by ``Teacher.render_rays`` (bounds temporaries).
        jitter: randomise sample offsets along each ray during training.
    """

    steps_per_diagonal: int = 1024
    min_transmittance: float = 1e-4
    alpha_threshold: float = 0.0
    chunk: int = dataclasses.field(default=4096, metadata={"provenance": False})  # memory, not results
    jitter: bool = True

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        at_least(self, 1, "steps_per_diagonal", "chunk")
        positive(self, "min_transmittance")
        in_range(self, 0.0, 1.0, "min_transmittance", "alpha_threshold")


def step_size_for(aabb: Tensor, cfg: MarchConfig) -> float:
    """Marching step of a box ``[6]``: its diagonal over ``cfg.steps_per_diagonal``."""
    return float((aabb[3:] - aabb[:3]).norm()) / cfg.steps_per_diagonal


def render_segment(
    field: TeacherField,
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    t_min: Tensor,  # [N]
    t_max: Tensor,  # [N]
    occupancy: Tensor | None,  # [R^3] bool
    step_size: float,
    cfg: MarchConfig,
    distortion: bool = False,
) -> dict[str, Tensor]:
    """Render rays over ``[t_min, t_max]`` with empty-space skipping and early termination.

    In training mode (``field.training`` with grad enabled) densities are first evaluated without
    grad to find the contributing samples, which alone are evaluated again with grad; otherwise one
    pass evaluates densities and only contributing samples get a color.

    Args:
        field: the radiance field.
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` unit directions.
        t_min: ``[N]`` segment starts.
        t_max: ``[N]`` segment ends.
        occupancy: ``[R^3]`` occupancy bits over ``field.aabb``, or None.
        step_size: marching step.
        cfg: marching settings.
        distortion: also return each ray's distortion (for the training loss).

    Returns:
        ``rgb [N, 3]`` (weighted segment color), ``trans [N]`` (light left after the segment),
        ``depth_sum [N]`` (``sum w t``), ``opacity [N]`` (``sum w``), ``n_samples`` (scalar) and, with
        ``distortion``, ``distortion [N]``.
    """
    n_rays = rays_o.shape[0]
    train = field.training and torch.is_grad_enabled()
    offsets = torch.rand(n_rays, device=rays_o.device) if train and cfg.jitter else None
    samples = march_rays(rays_o, rays_d, t_min, t_max, step_size, occupancy, field.aabb, offsets)
    x = samples.positions(rays_o, rays_d)
    if train:
        with torch.no_grad():
            sigmas, _ = field.query_density(x)
        keep = early_termination_mask(samples, sigmas, n_rays, cfg.min_transmittance, cfg.alpha_threshold)
        samples, x = samples.select(keep), x[keep]
        sigmas, rgbs = field(x, rays_d[samples.ray_indices])
    else:
        sigmas, geo = field.query_density(x)
        keep = early_termination_mask(samples, sigmas, n_rays, cfg.min_transmittance, cfg.alpha_threshold)
        samples, sigmas = samples.select(keep), sigmas[keep]
        rgbs = field.query_color(geo[keep], rays_d[samples.ray_indices])
    return composite_samples(samples, sigmas, rgbs, n_rays, distortion)


def composite_samples(
    samples: RaySamples,
    sigmas: Tensor,  # [S]
    rgbs: Tensor,  # [S, 3]
    n_rays: int,
    distortion: bool = False,
) -> dict[str, Tensor]:
    """Accumulate packed samples into per-ray segment color, transmittance, depth sum and opacity (and,
    with ``distortion``, :func:`core.rendering.distortion_packed` of their weights)."""
    weights, _, _ = render_weights_from_density(
        samples.t_starts, samples.t_ends, sigmas, samples.ray_indices, n_rays
    )
    t_mid = 0.5 * (samples.t_starts + samples.t_ends)
    rgb = accumulate_along_rays(weights, rgbs, samples.ray_indices, n_rays)
    depth_sum = accumulate_along_rays(weights, t_mid[:, None], samples.ray_indices, n_rays)[:, 0]
    opacity = accumulate_along_rays(weights, None, samples.ray_indices, n_rays)[:, 0]
    sigma_delta = sigmas * (samples.t_ends - samples.t_starts)
    optical_depth = sigma_delta.new_zeros(n_rays).index_add(0, samples.ray_indices, sigma_delta)
    out = {
        "rgb": rgb,
        "trans": torch.exp(-optical_depth),
        "depth_sum": depth_sum,
        "opacity": opacity,
        "n_samples": torch.tensor(samples.t_starts.numel()),
    }
    if distortion:
        out["distortion"] = distortion_packed(weights, samples.t_starts, samples.t_ends, samples.ray_indices,
                                              n_rays)
    return out


def render_in_chunks(
    render_chunk: Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]],
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    background: Tensor,  # [3] or [N, 3]
    chunk: int,
) -> dict[str, Tensor]:
    """Render rays ``chunk`` at a time (big temporaries page-fault on CPUs) and join the results.

    Args:
        render_chunk: ``(rays_o, rays_d, background [n, 3]) -> {"rgb", "depth", "opacity", "n_samples"}``.
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` unit directions.
        background: ``[3]`` color, or ``[N, 3]`` one per ray.
        chunk: rays per call.

    Returns:
        ``rgb [N, 3]``, ``depth [N]``, ``opacity [N]`` and ``n_samples`` (scalar, summed over chunks),
        and ``distortion [N]`` when the chunks return it. An empty batch still makes one
        (empty) call, so the outputs keep their shapes and dtypes.
    """
    background = background.to(rays_o).expand(rays_o.shape[0], 3)
    parts = [
        render_chunk(rays_o[i : i + chunk], rays_d[i : i + chunk], background[i : i + chunk])
        for i in range(0, max(rays_o.shape[0], 1), chunk)
    ]
    out: dict[str, Tensor] = {k: torch.cat([p[k] for p in parts])
                              for k in ("rgb", "depth", "opacity", "distortion") if k in parts[0]}
    out["n_samples"] = sum(p["n_samples"] for p in parts)  # type: ignore[assignment]
    return out
