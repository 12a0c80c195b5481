"""Pose samplers for pseudo-views (pure functions, deterministic per view).

View ``i`` of seed ``s`` is always the same camera, whatever the batch, shard or process that asks for
it: each view draws from its own generator ``numpy.random.default_rng([s, i])``.

Samplers:

* ``hemisphere`` (R2L's choice): directions uniform over the band of elevations the training cameras
  cover (relative to the scene centre and the rig's up direction), at their median distance, looking
  at the scene centre;
* ``jitter``: a random training camera rotated about the scene centre by at most ``jitter_deg`` and
  moved along its line to the centre by a factor in ``[1 - jitter_radius, 1 + jitter_radius]``;
* ``forward`` (R2L's sampler for forward-facing scenes): camera centres uniform in the training
  centres' bounding box grown ``box_scale`` times about its centre, viewing axes uniform in the same
  grown box of the training viewing axes (then normalised), image "down" from the rig's mean.

``auto`` (the stage's default) is ``forward`` for a forward-facing scene, ``hemisphere`` otherwise.

Both may zoom: each view's focal length is scaled by a factor uniform in ``focal_scale`` (R2L shows the
student closer views with 1-2x zoom); the principal point is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from core.cameras import look_at
from core.rig import camera_elevations, object_rig, orbit_basis

SAMPLERS = ("hemisphere", "jitter", "forward")
MAX_ELEVATION_DEG = 89.0  # keeps look_at away from the pole, where "up" is undefined


@dataclass
class SamplerConfig:
    """Pose sampler settings (``name`` and ``seed`` are set from the stage config).

    Attributes:
        focal_scale: ``[lo, hi]`` range of the per-view focal-length factor (``[1, 1]`` = no zoom).
        jitter_deg: largest rotation about the scene centre of the ``jitter`` sampler (degrees).
        jitter_radius: relative change of the camera distance of the ``jitter`` sampler.
        radius: camera distance of ``hemisphere``; ``None`` takes the training cameras' median.
        box_scale: growth of the ``forward`` sampler's boxes about their centres (R2L: 1.1).
    """

    focal_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    jitter_deg: float = 10.0
    jitter_radius: float = 0.1
    radius: float | None = None
    box_scale: float = 1.1


@dataclass
class Rig:
    """What the samplers need to know about the training cameras (all float64 numpy).

    Attributes:
        c2w: ``[C, 4, 4]`` training poses.
        K: ``[3, 3]`` base intrinsics (at the output image size).
        center: ``[3]`` point the cameras look at.
        up: ``[3]`` unit up direction of the rig.
        radius: median camera distance to ``center``.
        elevation: ``(lo, hi)`` elevation range of the training cameras, radians.
        down: ``[3]`` unit mean image-down axis of the cameras.
    """

    c2w: np.ndarray
    K: np.ndarray
    center: np.ndarray
    up: np.ndarray
    radius: float
    elevation: tuple[float, float]
    down: np.ndarray


def build_rig(c2w: Tensor, K: Tensor) -> Rig:
    """Describe a training rig: centre, up, radius and elevations of :func:`core.rig.object_rig`.

    Args:
        c2w: ``[C, 4, 4]`` training poses (OpenCV convention: column 1 points down in the image).
        K: ``[3, 3]`` intrinsics at the output image size.
    """
    record = object_rig(c2w)
    center = torch.tensor(record["center"], dtype=torch.float64)
    up = torch.tensor(record["up"], dtype=torch.float64)
    elev = camera_elevations(c2w, center, up)[1].numpy()
    cap = math.radians(MAX_ELEVATION_DEG)
    lo, hi = float(np.clip(elev.min(), -cap, cap)), float(np.clip(elev.max(), -cap, cap))
    poses = c2w.double().numpy()
    down = poses[:, :3, 1].mean(0)
    return Rig(c2w=poses, K=K.double().numpy(), center=center.numpy(), up=up.numpy(),
               radius=float(record["radius"]), elevation=(lo, hi), down=down / np.linalg.norm(down))


def view_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of view ``index`` under ``seed`` (independent of any other view)."""
    return np.random.default_rng([int(seed), int(index)])


def _look_at(eye: np.ndarray, rig: Rig) -> np.ndarray:
    c2w = look_at(torch.from_numpy(eye)[None], torch.from_numpy(rig.center), torch.from_numpy(rig.up))
    return c2w[0].double().numpy()


def _hemisphere(rng: np.random.Generator, rig: Rig, cfg: SamplerConfig) -> np.ndarray:
    lo, hi = rig.elevation
    z = rng.uniform(math.sin(lo), math.sin(hi))  # uniform in sin(elevation): uniform on the band's area
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    e1, e2 = (e.numpy() for e in orbit_basis(torch.from_numpy(rig.up)))
    ring = math.sqrt(max(1.0 - z * z, 0.0))
    direction = ring * (math.cos(azimuth) * e1 + math.sin(azimuth) * e2) + z * rig.up
    radius = cfg.radius if cfg.radius is not None else rig.radius
    return _look_at(rig.center + radius * direction, rig)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """``[3, 3]`` rotation by ``angle`` radians about unit ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def _jitter(rng: np.random.Generator, rig: Rig, cfg: SamplerConfig) -> np.ndarray:
    base = rig.c2w[rng.integers(len(rig.c2w))]
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    R = _rotation(axis, math.radians(cfg.jitter_deg) * rng.uniform(0.0, 1.0))
    scale = 1.0 + cfg.jitter_radius * rng.uniform(-1.0, 1.0)
    c2w = np.eye(4)
    c2w[:3, :3] = R @ base[:3, :3]
    c2w[:3, 3] = rig.center + scale * (R @ (base[:3, 3] - rig.center))
    return c2w


def grown_box(points: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` of the bounding box of ``points [C, 3]`` grown ``scale`` times about its centre."""
    lo, hi = points.min(0), points.max(0)
    mid, half = (lo + hi) / 2, (hi - lo) / 2 * scale
    return mid - half, mid + half


def _forward(rng: np.random.Generator, rig: Rig, cfg: SamplerConfig) -> np.ndarray:
    c_lo, c_hi = grown_box(rig.c2w[:, :3, 3], cfg.box_scale)
    a_lo, a_hi = grown_box(rig.c2w[:, :3, 2], cfg.box_scale)
    forward = rng.uniform(a_lo, a_hi)
    forward /= np.linalg.norm(forward)
    right = np.cross(rig.down, forward)  # OpenCV frame: right = down x forward
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2] = right, np.cross(forward, right), forward
    c2w[:3, 3] = rng.uniform(c_lo, c_hi)
    return c2w


_SAMPLE = {"hemisphere": _hemisphere, "jitter": _jitter, "forward": _forward}


def sample_view(name: str, seed: int, index: int, rig: Rig, cfg: SamplerConfig) -> tuple[Tensor, Tensor]:
    """The camera of view ``index``.

    Returns:
        ``c2w [4, 4]`` (OpenCV convention) and ``K [3, 3]``, both float32.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLERS}")
    rng = view_rng(seed, index)
    c2w = _SAMPLE[name](rng, rig, cfg)
    lo, hi = cfg.focal_scale
    zoom = rng.uniform(lo, hi) if hi > lo else lo
    K = rig.K.copy()
    K[0, 0] *= zoom
    K[1, 1] *= zoom
    return torch.from_numpy(c2w).float(), torch.from_numpy(K).float()


def sample_views(name: str, seed: int, indices: range | list[int], rig: Rig,
                 cfg: SamplerConfig) -> tuple[Tensor, Tensor]:
    """Cameras of several views: ``c2w [V, 4, 4]`` and ``K [V, 3, 3]`` (float32)."""
    cams = [sample_view(name, seed, i, rig, cfg) for i in indices]
    return torch.stack([c for c, _ in cams]), torch.stack([k for _, k in cams])


def validate_sampler(name: str, cfg: SamplerConfig) -> None:
    """Raise ``ValueError`` with a one-line message for unusable sampler settings."""
    if name not in (*SAMPLERS, "auto"):
        raise ValueError(f"sampler={name!r} is not one of {('auto', *SAMPLERS)}")
    if len(cfg.focal_scale) != 2 or not 0 < cfg.focal_scale[0] <= cfg.focal_scale[1]:
        raise ValueError(f"sampler_params.focal_scale must be [lo, hi] with 0 < lo <= hi, "
                         f"got {cfg.focal_scale}")
    if cfg.jitter_deg < 0 or not 0 <= cfg.jitter_radius < 1:
        raise ValueError("sampler_params.jitter_deg must be >= 0 and jitter_radius in [0, 1)")
    if cfg.box_scale < 1:
        raise ValueError(f"sampler_params.box_scale must be >= 1, got {cfg.box_scale}")
    if cfg.radius is not None and cfg.radius <= 0:
        raise ValueError(f"sampler_params.radius must be positive, got {cfg.radius}")
