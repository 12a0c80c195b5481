"""Ray encodings: K points along each ray, normalised by the content box, then encoded.

Two encodings share the sampling (:class:`RayEncoder`):

* ``pe`` - R2L's: the points' coordinates, positionally encoded (``K x 3 x (1 + 2 n_freqs)`` inputs);
* ``hash`` - learned: trainable multiresolution hash-grid features (Instant-NGP's layout, our kernels
  through :class:`cuda.backend.HashGrid`) looked up at the K points and concatenated
  (``K x levels x features`` inputs), optionally with a low-order PE of the points.

Each ray is cut to a segment ``start + u * span`` (``u`` in ``[0, 1]``): either R2L's global
``[near, far]`` range, or (``ray_range="box"``) the part of ``[near, far]`` inside the content box (the
box around what the teacher found occupied), so all K points fall where the scene has content. Rays
that miss the content box show the background (the teacher renders nothing there either); so do rays
none of whose K bin-centre points lies in an occupied cell of the pseudo-data's empty-space grid, when
the encoder has one (:mod:`core.skipgrid`): the network is never asked about them, in training or after.

A forward-facing scene has no empty surround and no background: its encoder holds the scene's NDC
frame, turns world rays into NDC rays first (:func:`core.ndc.ndc_rays`, inside the exported graph too),
samples them in the NDC box (evenly in disparity, as R2L does on LLFF) and reports every ray as a hit.

Only ONNX-friendly ops (arithmetic, min/max, where, sin/cos, concat, reshape; the hash lookup as
int64 arithmetic, BitwiseXor and Gather when exported), so the encoding lives inside the exported graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from core.checks import at_least
from core.ndc import NDCSpace, ndc_rays
from core.rays import ray_aabb_intersect
from core.skipgrid import bits_record, pack_bits, points_occupied
from cuda.backend import HashGrid, HashGridConfig
from cuda.hashgrid_graph import hash_encode_graph

RAY_RANGES = ("box", "near_far")
ENCODINGS = ("pe", "hash", "planes")  # planes: the image decoder's (student.planes)


@dataclass
class GridConfig(HashGridConfig):
    """The learned (``hash``) encoding's feature store: a multiresolution hash grid over the content box
    (:class:`cuda.backend.HashGridConfig`: shape and training backend; the student's own, smaller, shape
    is the default of :attr:`student.model.StudentModelConfig.grid`), plus the points' own encoding.

    Attributes:
        point_freqs: octaves of a positional encoding of the points concatenated to the features
            (``-1``: none; ``0``: the normalised coordinates themselves).
    """

    point_freqs: int = -1

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad ``point_freqs`` (the shape: the base's)."""
        at_least(self, -1, "point_freqs")


def ray_segment(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    box: Tensor,  # [6]
    near: float,
    far: float,
    clip_to_box: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The sampled segment of each ray and whether the ray meets the box.

    Args:
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` unit directions.
        box: ``[6]`` content box (min xyz, max xyz).
        near: start of the ray range.
        far: end of the ray range.
        clip_to_box: sample only the part of ``[near, far]`` inside ``box`` (else all of it).

    Returns:
        ``start [N, 3]`` (first point), ``span [N, 3]`` (segment vector: ``start + span`` is the last
        point) and ``hit [N]`` (bool: the ray meets ``box`` within ``[near, far]``). A ray that misses
        gets a zero-length segment inside ``[near, far]`` (bounded values, ignored by the model).
    """
    t_in, t_out, hit = ray_aabb_intersect(rays_o, rays_d, box, near, far)
    if clip_to_box:
        t_in, t_out = t_in.clamp(near, far), t_out.clamp(near, far)
    else:
        t_in, t_out = torch.full_like(t_in, near), torch.full_like(t_out, far)
    start = rays_o + t_in[:, None] * rays_d
    return start, (t_out - t_in)[:, None] * rays_d, hit


def segment_points(start: Tensor, span: Tensor, n_points: int, jitter: bool = False) -> Tensor:
    """``n_points`` points per segment, one per equal bin.

    Args:
        start: ``[N, 3]`` segment starts.
        span: ``[N, 3]`` segment vectors.
        n_points: ``K`` points per segment.
        jitter: uniform random position within each bin (training) instead of the bin centre.

    Returns:
        ``[N, K, 3]`` points ``start + (k + u) / K * span``, ``u = 0.5`` or uniform in ``[0, 1)``.
    """
    n = start.shape[0]
    offsets = torch.arange(n_points, dtype=start.dtype, device=start.device)  # [K]
    if jitter:
        u = torch.rand(n, n_points, dtype=start.dtype, device=start.device)
    else:
        u = torch.full((1, n_points), 0.5, dtype=start.dtype, device=start.device)
    frac = (offsets + u) / n_points  # [N or 1, K]
    return start[:, None, :] + frac[..., None] * span[:, None, :]


def ray_points(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    near: float,
    far: float,
    n_points: int,
    jitter: bool = False,
) -> Tensor:
    """R2L's sampling: ``n_points`` points per ray, one per equal bin of ``[near, far]``; ``[N, K, 3]``."""
    return segment_points(rays_o + near * rays_d, (far - near) * rays_d, n_points, jitter)


def segment_occupied(
    start: Tensor,  # [N, 3]
    span: Tensor,  # [N, 3]
    n_points: int,
    bits: Tensor,  # [ceil(G^3 / 8)] uint8
    resolution: int,
) -> Tensor:
    """Whether any of the K bin-centre points of each normalised segment lies in a set cell.

    Args:
        start: ``[N, 3]`` segment starts, content box mapped to ``[-1, 1]^3``.
        span: ``[N, 3]`` segment vectors (same frame).
        n_points: ``K``.
        bits: the empty-space grid over the content box, packed (:func:`core.skipgrid.pack_bits`).
        resolution: its cells per axis ``G``.

    Returns:
        ``[N]`` bool (bin centres, also while training: which rays count does not jitter).
    """
    unit = ((segment_points(start, span, n_points) + 1.0) * 0.5).clamp(0.0, 1.0)  # [N, K, 3]
    return points_occupied(unit, bits, resolution)


def positional_encoding(x: Tensor, n_freqs: int) -> Tensor:
    """NeRF positional encoding ``[x, sin(2^k x), cos(2^k x)]_{k<n_freqs}`` along the last axis.

    Args:
        x: ``[N, D]`` values.
        n_freqs: number of octaves.

    Returns:
        ``[N, D * (1 + 2 n_freqs)]``.
    """
    freqs = 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)  # [n_freqs]
    xf = (x[..., None] * freqs).flatten(-2)  # [N, D * n_freqs]
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], dim=-1)


class RayEncoder(nn.Module):
    """Rays -> the student's input vector and a hit mask.

    Args:
        box: ``[6]`` content box; points are mapped so it becomes ``[-1, 1]^3``.
        near: start of the ray range.
        far: end of the ray range.
        n_points: ``K`` points per ray.
        n_freqs: positional-encoding octaves.
        ray_range: ``"box"`` (sample the part of ``[near, far]`` inside ``box``) or ``"near_far"`` (R2L).
        ndc: NDC frame of a forward-facing scene (then ``box``, ``near`` and ``far`` are in NDC).
        occupancy: ``[G, G, G]`` bool empty-space grid over ``box`` (already dilated for ``n_points``,
            :func:`core.skipgrid.dilation_radius`): rays none of whose points lies in a set cell are
            misses. ``None``: only rays that miss the box are.
    """

    name = "pe"
    box: Tensor  # [6] content box (buffer)
    center: Tensor  # [3] box centre (buffer)
    half_extent: Tensor  # [3] box half-size (buffer)
    ndc_c2w: Tensor  # [4, 4] NDC reference pose (buffer; identity without NDC)
    ndc_scale: Tensor  # [2] NDC scale (buffer)
    skip_bits: Tensor  # [ceil(G^3 / 8)] uint8 packed empty-space grid (buffer; empty without one)

    def __init__(self, box: Tensor, near: float, far: float, n_points: int = 16, n_freqs: int = 10,
                 ray_range: str = "box", ndc: NDCSpace | None = None, occupancy: Tensor | None = None):
        super().__init__()
        if ray_range not in RAY_RANGES:
            raise ValueError(f"ray_range must be one of {RAY_RANGES}, got {ray_range!r}")
        box = torch.as_tensor(box, dtype=torch.float32).clone()
        if box.shape != (6,) or not bool((box[3:] > box[:3]).all()):
            raise ValueError(f"content box must be [xmin, ymin, zmin, xmax, ymax, zmax], got {box.tolist()}")
        self.register_buffer("box", box)
        self.register_buffer("center", (box[:3] + box[3:]) / 2)
        self.register_buffer("half_extent", (box[3:] - box[:3]) / 2)
        self.near, self.far = float(near), float(far)
        self.n_points, self.n_freqs, self.ray_range = n_points, n_freqs, ray_range
        self.ndc = ndc
        # not persistent: rebuilt from the ndc record the checkpoint keeps (older checkpoints load as is)
        self.register_buffer("ndc_c2w", torch.tensor(ndc.c2w) if ndc is not None else torch.eye(4),
                             persistent=False)
        self.register_buffer("ndc_scale", torch.tensor(ndc.scale) if ndc is not None else torch.ones(2),
                             persistent=False)
        if occupancy is not None and (occupancy.ndim != 3 or len(set(occupancy.shape)) != 1):
            raise ValueError(f"empty-space grid must be [G, G, G], got {list(occupancy.shape)}")
        # not persistent either: the checkpoint keeps it packed among the scene facts
        self.skip_resolution = int(occupancy.shape[0]) if occupancy is not None else 0
        self.register_buffer("skip_bits", pack_bits(occupancy) if occupancy is not None
                             else torch.zeros(0, dtype=torch.uint8), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.n_points * 3 * (1 + 2 * self.n_freqs)

    def segment(self, rays_o: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """World ``rays_o, rays_d [N, 3]`` -> normalised segment ``start [N, 3]``, ``span [N, 3]``,
        ``hit [N]`` (all True in NDC: a forward-facing scene has no misses)."""
        if self.ndc is not None:
            rays_o, rays_d = ndc_rays(rays_o, rays_d, self.ndc_c2w, self.ndc_scale, self.ndc.near)
            rays_d = torch.nn.functional.normalize(rays_d, dim=-1)
        start, span, hit = ray_segment(rays_o, rays_d, self.box, self.near, self.far, self.ray_range == "box")
        if self.ndc is not None:
            hit = torch.ones_like(hit)
        return (start - self.center) / self.half_extent, span / self.half_extent, hit

    def occupancy_record(self) -> dict[str, Any] | None:
        """The empty-space grid as a JSON-able record (:func:`core.skipgrid.bits_record`), or ``None``."""
        return bits_record(self.skip_bits, self.skip_resolution) if self.skip_resolution else None

    def hits(self, start: Tensor, span: Tensor, hit: Tensor) -> Tensor:
        """The box test ``hit [N]`` narrowed by the empty-space grid (if any) on the normalised segments
        ``start, span [N, 3]``."""
        if not self.skip_resolution:
            return hit
        return hit & segment_occupied(start, span, self.n_points, self.skip_bits, self.skip_resolution)

    def points(self, rays_o: Tensor, rays_d: Tensor, jitter: bool = False) -> tuple[Tensor, Tensor]:
        """``rays_o, rays_d [N, 3]`` -> the K normalised points ``[N, K, 3]`` (in ``[-1, 1]`` for rays
        that meet the box) and ``hit [N]`` (the ray meets the box and, with an empty-space grid, crosses
        a set cell)."""
        start, span, hit = self.segment(rays_o, rays_d)
        return segment_points(start, span, self.n_points, jitter), self.hits(start, span, hit)

    def forward(self, rays_o: Tensor, rays_d: Tensor, jitter: bool = False) -> tuple[Tensor, Tensor]:
        """``rays_o, rays_d [N, 3]`` -> encoding ``[N, K * 3 * (1 + 2 n_freqs)]`` and ``hit [N]``."""
        pts, hit = self.points(rays_o, rays_d, jitter)
        return positional_encoding(pts.flatten(1), self.n_freqs), hit


def point_features_dim(n_points: int, point_freqs: int) -> int:
    """Width of the optional PE of the points (``point_freqs < 0``: none)."""
    return 0 if point_freqs < 0 else n_points * 3 * (1 + 2 * point_freqs)


class HashRayEncoder(RayEncoder):
    """Rays -> hash-grid features of their K points (concatenated) and a hit mask.

    The content box maps to the grid's unit cube. Training runs the lookup on ``grid.backend`` (our
    kernels); while the model is being exported (``torch.export``, which the ONNX exporter uses) it runs
    :func:`cuda.hashgrid_graph.hash_encode_graph`, the same function in ops ONNX has.

    Args:
        box: ``[6]`` content box.
        near: start of the ray range.
        far: end of the ray range.
        n_points: ``K`` points per ray.
        grid: the feature store.
        ray_range: ``"box"`` or ``"near_far"``.
        ndc: NDC frame of a forward-facing scene.
        occupancy: empty-space grid (see :class:`RayEncoder`).
    """

    name = "hash"

    def __init__(self, box: Tensor, near: float, far: float, n_points: int, grid: GridConfig,
                 ray_range: str = "box", ndc: NDCSpace | None = None, occupancy: Tensor | None = None):
        super().__init__(box, near, far, n_points, max(grid.point_freqs, 0), ray_range, ndc, occupancy)
        self.grid_cfg = grid
        self.grid = HashGrid(grid.spec(), backend=grid.backend)

    @property
    def out_dim(self) -> int:
        spec = self.grid.spec
        extra = point_features_dim(self.n_points, self.grid_cfg.point_freqs)
        return self.n_points * spec.n_output_dims + extra

    def lookup(self, x: Tensor) -> Tensor:
        """Points ``[M, 3]`` in ``[0, 1]^3`` -> features ``[M, L * F]`` (the graph twin while exporting)."""
        if torch.compiler.is_exporting() or torch.jit.is_tracing():
            return hash_encode_graph(x, self.grid.params, self.grid.spec)
        return self.grid(x.contiguous())

    def forward(self, rays_o: Tensor, rays_d: Tensor, jitter: bool = False) -> tuple[Tensor, Tensor]:
        """``rays_o, rays_d [N, 3]`` -> features ``[N, out_dim]`` (point-major) and ``hit [N]``."""
        pts, hit = self.points(rays_o, rays_d, jitter)  # [N, K, 3]
        unit = ((pts.reshape(-1, 3) + 1.0) * 0.5).clamp(0.0, 1.0)  # [N K, 3]
        feats = self.lookup(unit).reshape(pts.shape[0], -1)  # [N, K L F]
        if self.grid_cfg.point_freqs >= 0:
            feats = torch.cat([feats, positional_encoding(pts.flatten(1), self.grid_cfg.point_freqs)], -1)
        return feats, hit
