"""Ray casting of analytic scenes in numpy: spheres, boxes and planes with procedural textures.

A :class:`Scene` is a tuple of :class:`Surface` s (a shape, a texture, a Lambert shading or none) in front
of a background (a color, or transparent). The rays come from :func:`core.rays.generate_rays` (the
project's one camera convention); everything after that is float64 numpy. Ray-shape distances are
computed on ``[3, N]`` columns: numpy reduces slowly over a last axis of 3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch

from core.rays import generate_rays

Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]  # points [N, 3], normals [N, 3] -> albedo [N, 3]
HIT_EPS = 1e-6  # a distance at or below this (or NaN) is a miss: no surface touches a camera


class Shape(Protocol):
    """What a surface's geometry answers: where a ray meets it, and its normal there."""

    def distance(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Distance ``[N]`` along rays ``o, d [3, N]`` (columns) to the first hit; a miss: ``inf``, <= 0
        or NaN."""
        ...

    def normals(self, p: np.ndarray) -> np.ndarray:
        """Unit outward normals ``[N, 3]`` at points ``p [N, 3]`` on the shape."""
        ...


@dataclass(frozen=True)
class Sphere:
    center: Sequence[float]
    radius: float

    def distance(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        (ox, oy, oz), (dx, dy, dz) = o, d
        cx, cy, cz = self.center
        px, py, pz = ox - cx, oy - cy, oz - cz
        b = px * dx + py * dy + pz * dz
        disc = b * b - (px * px + py * py + pz * pz - self.radius**2)
        return np.where(disc > 0, -b - np.sqrt(np.abs(disc)), np.inf)

    def normals(self, p: np.ndarray) -> np.ndarray:
        return (p - np.asarray(self.center)) / self.radius


@dataclass(frozen=True)
class Box:
    """An axis-aligned box from corner ``lo`` to corner ``hi``."""

    lo: Sequence[float]
    hi: Sequence[float]

    def distance(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):  # rays parallel to a slab: +-inf or NaN
            slabs = [((a - oa) / da, (b - oa) / da) for a, b, oa, da in zip(self.lo, self.hi, o, d)]
        t_in = np.maximum.reduce([np.minimum(t0, t1) for t0, t1 in slabs])
        t_out = np.minimum.reduce([np.maximum(t0, t1) for t0, t1 in slabs])
        return np.where(t_in < t_out, t_in, np.inf)

    def normals(self, p: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        rel = (p - (lo + hi) / 2) / ((hi - lo) / 2)  # +-1 on the face a point lies on
        return np.where(np.abs(rel) == np.abs(rel).max(-1, keepdims=True), np.sign(rel), 0.0)


@dataclass(frozen=True)
class Plane:
    """The infinite plane ``x[axis] = offset``, facing ``normal``."""

    axis: int
    offset: float
    normal: Sequence[float]

    def distance(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.offset - o[self.axis]) / d[self.axis]

    def normals(self, p: np.ndarray) -> np.ndarray:
        return np.tile(np.asarray(self.normal, dtype=np.float64), (len(p), 1))


@dataclass(frozen=True)
class Surface:
    """A shape, its texture, and its shading: ``albedo * (ambient + diffuse * max(0, normal . light))``, or
    the albedo as it is when ``lit`` is None."""

    shape: Shape
    texture: Texture
    lit: tuple[float, float] | None = (0.4, 0.6)  # (ambient, diffuse)


@dataclass(frozen=True)
class Scene:
    """Surfaces in front of a background (``None``: transparent), lit from direction ``light`` (towards
    the light, not normalized here: the scenes state theirs)."""

    surfaces: tuple[Surface, ...]
    light: Sequence[float] = (0.0, 0.0, 1.0)
    background: Sequence[float] | None = None


class Frame(NamedTuple):
    """One rendered view (``s`` the supersampling factor)."""

    rgb: np.ndarray  # [H, W, 3] float in [0, 1], each pixel the mean of its s^2 rays
    alpha: np.ndarray  # [H, W] float: the fraction of a pixel's rays that hit a surface
    depth: np.ndarray  # [H*s, W*s] camera-space z of each ray's hit (inf: a miss)


def first_hits(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance ``[N]`` to the first surface along rays ``o, d [N, 3]`` and its index ``[N]`` (-1: none)."""
    o_cols, d_cols = np.ascontiguousarray(o.T), np.ascontiguousarray(d.T)
    best, index = np.full(len(o), np.inf), np.full(len(o), -1, dtype=np.int64)
    for k, surface in enumerate(scene.surfaces):
        t = surface.shape.distance(o_cols, d_cols)
        closer = (t > HIT_EPS) & (t < best)  # NaN and negative distances are misses; ties go to the first
        best, index = np.where(closer, t, best), np.where(closer, k, index)
    return best, index


def shade(scene: Scene, p: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``[N, 3]`` colors in [0, 1] at points ``p [N, 3]`` of surfaces ``index [N]`` (-1: the background)."""
    rgb = np.zeros_like(p)
    if scene.background is not None:
        rgb[index < 0] = scene.background
    light = np.asarray(scene.light, dtype=np.float64)
    for k, surface in enumerate(scene.surfaces):
        hit = index == k
        normal = surface.shape.normals(p[hit])
        color = surface.texture(p[hit], normal)
        if surface.lit is not None:
            ambient, diffuse = surface.lit
            color = color * (ambient + diffuse * np.clip(normal @ light, 0, 1))[:, None]
        rgb[hit] = color
    return np.clip(rgb, 0, 1)


def render(scene: Scene, c2w: torch.Tensor, K: torch.Tensor, H: int, W: int, supersample: int = 1) -> Frame:
    """Render an ``H x W`` view of ``scene`` from the OpenCV pose ``c2w [4, 4]`` with intrinsics ``K [3, 3]``.

    With ``supersample = s``, ``s x s`` rays per pixel are averaged (edges area-averaged, as in a photo
    downscaled from a larger one).
    """
    s, c2w = supersample, c2w.float()
    K_sub = K.float().clone()
    K_sub[:2] *= s
    rays_o, rays_d = generate_rays(c2w, K_sub, H * s, W * s)
    o, d = rays_o.double().numpy(), rays_d.double().numpy()
    t, index = first_hits(scene, o, d)
    hit = index >= 0
    p = o + np.where(hit, t, 0.0)[:, None] * d
    rgb = shade(scene, p, index).reshape(H, s, W, s, 3).mean((1, 3))
    alpha = hit.astype(np.float64).reshape(H, s, W, s).mean((1, 3))
    depth = np.where(hit, t, np.inf) * (d @ c2w[:3, 2].double().numpy())
    return Frame(rgb, alpha, depth.reshape(H * s, W * s))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8, rounded to the nearest step."""
    return (image * 255 + 0.5).astype(np.uint8)
