"""The low-resolution ray map of an image student: rays through the centres of ``s x s`` pixel blocks.

An image student evaluates its network once per block of ``s x s`` output pixels and upsamples; the ray
of a block goes through the block's centre (output pixel coordinates ``(j + 0.5) * s``, ``(i + 0.5) * s``
for block row ``i``, column ``j``). The same functions build the rays inside the exported graph (float
ops only: the pixel grid is a constant) and the rays of training crops, so a crop's rays are exactly the
full view's rays at those blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.ndc import MIN_DEPTH_DIR, NDCSpace


def block_centers(rows: int, cols: int, scale: int, top: int = 0, left: int = 0) -> Tensor:
    """``[rows, cols, 2]`` output-pixel coordinates ``(u, v)`` of the centres of blocks
    ``top .. top + rows - 1``, ``left .. left + cols - 1`` (block units) of ``scale x scale`` pixels."""
    v, u = torch.meshgrid(torch.arange(rows, dtype=torch.float32) + (top + 0.5),
                          torch.arange(cols, dtype=torch.float32) + (left + 0.5), indexing="ij")
    return torch.stack((u, v), dim=-1) * scale


def block_rays(
    c2w: Tensor,  # [B, 4, 4]
    K: Tensor,  # [B, 3, 3]
    centers: Tensor,  # [h, w, 2]
) -> tuple[Tensor, Tensor]:  # [B, 1, 1, 3], [B, h, w, 3]
    """Origins and unit directions of the rays through ``centers`` (pixel units) of each camera.

    Written with slices and elementwise ops only, so that it exports to plain ONNX (no Gather, no int64
    arithmetic, no reductions): the camera's intrinsics are read as ``K[:, 0:1, 0:1]``-style slices.

    Args:
        c2w: ``[B, 4, 4]`` camera-to-world poses (OpenCV convention of :mod:`core.cameras`).
        K: ``[B, 3, 3]`` intrinsics in pixels.
        centers: ``[h, w, 2]`` image points ``(u, v)``.

    Returns:
        ``rays_o [B, 1, 1, 3]`` camera centres (they broadcast against the directions) and
        ``rays_d [B, h, w, 3]`` unit directions.
    """
    uv = centers.permute(2, 0, 1)  # [2, h, w]; slices, not integer indexing (which exports as Gather)
    u, v = uv[0:1], uv[1:2]  # [1, h, w]
    fx, fy = K[:, 0:1, 0:1], K[:, 1:2, 1:2]  # [B, 1, 1]
    cx, cy = K[:, 0:1, 2:3], K[:, 1:2, 2:3]
    x = (u - cx) / fx  # [B, h, w]
    y = (v - cy) / fy
    # d = R @ (x, y, 1), one world component at a time (broadcasts, no batched matmul over h*w)
    R = c2w[:, :3, :3]
    dx, dy, dz = (x * R[:, i:i + 1, 0:1] + y * R[:, i:i + 1, 1:2] + R[:, i:i + 1, 2:3] for i in range(3))
    norm = torch.sqrt(dx * dx + dy * dy + dz * dz)
    d = torch.stack((dx / norm, dy / norm, dz / norm), dim=-1)  # [B, h, w, 3]
    o = c2w[:, :3, 3:4].transpose(1, 2)[:, None]  # [B, 1, 1, 3]
    return o, d


MISS_AT = 3.0  # box_coords: where a ray that misses the box reads its planes (normalised; the box: [-1, 1])
MISS_SLOPE = 1e4  # box_coords: a segment shorter than 1 / MISS_SLOPE (scene units) fades towards MISS_AT


def ndc_ray_map(
    rays_o: Tensor,  # [B, 1, 1, 3] or [B, h, w, 3]
    rays_d: Tensor,  # [B, h, w, 3]
    space: NDCSpace,
) -> tuple[Tensor, Tensor]:  # [B, h, w, 3], [B, h, w, 3]
    """World rays -> NDC origins and **unit** NDC directions of a forward-facing scene's frame ``space``:
    :func:`core.ndc.to_ndc` written for the graph (the frame's numbers as constants, one coordinate at a
    time, slices and elementwise ops only).

    A ray looking sideways or back from the reference camera (its depth slope below
    :data:`core.ndc.MIN_DEPTH_DIR`) is bent to that slope, as :func:`core.ndc.ndc_rays` bends the sideways
    ones (a backward one there keeps its negative slope and ends behind the cameras: such rays see no
    content in either).

    Args:
        rays_o: ``[B, 1, 1, 3]`` world origins (one per camera) or ``[B, h, w, 3]``.
        rays_d: ``[B, h, w, 3]`` world directions.
        space: the NDC frame.

    Returns:
        ``o [B, h, w, 3]`` on the near plane (NDC ``z = -1``) and ``d [B, h, w, 3]`` unit directions.
    """
    pose, near = [[float(v) for v in row] for row in space.c2w], float(space.near)
    sx, sy = (float(v) for v in space.scale)
    o_w = [rays_o[..., j:j + 1] - pose[j][3] for j in range(3)]
    d_w = [rays_d[..., j:j + 1] for j in range(3)]

    def to_camera(v: list[Tensor], i: int) -> Tensor:  # axis i of R^T v (R: the pose's rotation)
        return v[0] * pose[0][i] + v[1] * pose[1][i] + v[2] * pose[2][i]

    o, d = [to_camera(o_w, i) for i in range(3)], [to_camera(d_w, i) for i in range(3)]
    dz = torch.clamp(d[2], min=MIN_DEPTH_DIR)
    step = (near - o[2]) / dz  # onto the near plane
    ox, oy = o[0] + step * d[0], o[1] + step * d[1]  # [B, h, w, 1]
    nx, ny = ox * (sx / near), oy * (sy / near)
    ex, ey = (d[0] / dz) * sx - nx, (d[1] / dz) * sy - ny  # the NDC direction; its z is 2
    norm = torch.sqrt(ex * ex + ey * ey + 4.0)
    o_ndc = torch.cat((nx, ny, torch.full_like(nx, -1.0)), dim=-1)  # static shapes: a constant in the graph
    d_ndc = torch.cat((ex / norm, ey / norm, 2.0 / norm), dim=-1)
    return o_ndc, d_ndc


def box_segment(
    rays_o: Tensor,  # [B, h, w, 3] or [B, 1, 1, 3]
    rays_d: Tensor,  # [B, h, w, 3]
    aabb: Tensor,  # [6]
) -> tuple[Tensor, Tensor]:  # [B, h, w, 1], [B, h, w, 1]
    """Distances ``t_near <= t_far`` along each ray to where it enters and leaves the box (the slab
    method with elementwise ``Max``/``Min`` of slices: no reductions, no ``Gather`` in the graph).

    A ray that misses the box gets ``t_far = t_near`` (an empty segment at its entry, or behind the
    camera: ``t_near`` is clamped at 0).

    Args:
        rays_o: ``[B, h, w, 3]`` origins (or ``[B, 1, 1, 3]``: one per camera).
        rays_d: ``[B, h, w, 3]`` directions (no component exactly 0: callers' rays are normalised float
            directions; an exact 0 gives infinite slab distances, which min/max handle).
        aabb: ``[6]`` box, min xyz then max xyz.

    Returns:
        ``t_near [B, h, w, 1]`` and ``t_far [B, h, w, 1]``.
    """
    lo, hi = aabb[:3], aabb[3:]
    inv = 1.0 / rays_d
    t0 = (lo - rays_o) * inv
    t1 = (hi - rays_o) * inv
    t_min, t_max = torch.minimum(t0, t1), torch.maximum(t0, t1)  # [B, h, w, 3]
    lo_x, lo_y, lo_z = t_min[..., 0:1], t_min[..., 1:2], t_min[..., 2:3]  # [B, h, w, 1] each
    hi_x, hi_y, hi_z = t_max[..., 0:1], t_max[..., 1:2], t_max[..., 2:3]
    t_near = torch.clamp(torch.maximum(torch.maximum(lo_x, lo_y), lo_z), min=0.0)
    t_far = torch.maximum(torch.minimum(torch.minimum(hi_x, hi_y), hi_z), t_near)
    return t_near, t_far


def normalize_points(pts: Tensor, aabb: Tensor) -> Tensor:  # [..., 3] -> [..., 3]
    """World points -> the box's normalised frame ``[-1, 1]^3``."""
    lo, hi = aabb[:3], aabb[3:]
    return (pts - lo) * (2.0 / (hi - lo)) - 1.0


def box_coords(
    rays_o: Tensor,  # [B, h, w, 3] or [B, 1, 1, 3]
    rays_d: Tensor,  # [B, h, w, 3]
    t_near: Tensor,  # [B, h, w, 1]
    t_far: Tensor,  # [B, h, w, 1]
    aabb: Tensor,  # [6]
    frac: Tensor,  # [K]
) -> tuple[Tensor, Tensor, Tensor]:  # 3 x [B, K, h, w]
    """``K`` points of each ray's segment inside the box (``t_near``, ``t_far``: :func:`box_segment`), in
    the box's ``[-1, 1]^3``, one coordinate at a time, ``[B, K, h, w]`` each (the ``K`` depths as image
    planes).

    Every op broadcasts over leading axes of whole ``h x w`` images: ONNX Runtime's CPU provider runs a
    broadcast over a last axis of 3 (``[..., K, 3]``) element by element, several times slower. The box's
    normalisation is folded in: ``x = ((o - lo) * 2 / (hi - lo) - 1) + (d * 2 / (hi - lo)) * t``.

    A ray that misses the box (an empty segment) gets all its points at :data:`MISS_AT` on every axis, a
    box width outside it, where the planes read exactly zero: its features are zero in PyTorch and in
    every runtime alike (its entry point would lie on or near the box's boundary, and for a ray far
    from the box, such as a forward-facing scene's NDC ray that runs almost parallel to the near plane,
    float32 rounding of large numbers moves it across the boundary differently in each). A segment
    shorter than ``1 / MISS_SLOPE`` fades between the two. The decoder learns the background for them.

    The same segment and bin centres as ``core.rays.ray_aabb_intersect`` + ``student.encoding``'s
    ``segment_points`` (tests/test_student_image.py compares with the former), written again because
    those export to ``ReduceMax``, ``Where`` and shape-computed constants, outside the portable op set of
    ``export.image``; making ``ray_aabb_intersect`` itself portable would let both call one function.

    Args:
        rays_o: ``[B, h, w, 3]`` origins (or ``[B, 1, 1, 3]``: one per camera).
        rays_d: ``[B, h, w, 3]`` directions.
        t_near: ``[B, h, w, 1]`` where each ray enters the box.
        t_far: ``[B, h, w, 1]`` where it leaves.
        aabb: ``[6]`` box, min xyz then max xyz.
        frac: ``[K]`` fractions of the segment (bin centres: ``(k + 0.5) / K``); a tensor, so that the
            exported graph holds it as a constant.

    Returns:
        ``x, y, z``: ``[B, K, h, w]`` each, normalised.
    """
    scale = 2.0 / (aabb[3:] - aabb[:3])  # [3]: normalize_points' scale, for the directions
    near = t_near.permute(0, 3, 1, 2)  # [B, 1, h, w]
    length = t_far.permute(0, 3, 1, 2) - near  # [B, 1, h, w]
    t = near + length * frac[:, None, None]  # [B, K, h, w]
    o = normalize_points(rays_o, aabb).permute(0, 3, 1, 2)  # [B, 3, 1, 1] or [B, 3, h, w]
    d = (rays_d * scale).permute(0, 3, 1, 2)  # [B, 3, h, w]
    hit = torch.clamp(length * MISS_SLOPE, max=1.0)  # [B, 1, h, w]: 0 for a miss
    miss = (1.0 - hit) * MISS_AT
    x, y, z = ((o[:, i:i + 1] + d[:, i:i + 1] * t) * hit + miss for i in range(3))
    return x, y, z


def pixel_centers(centers: Tensor, scale: int) -> Tensor:  # [h, w, 2] -> [h*s, w*s, 2]
    """Centres of the ``s x s`` output pixels of each block, from the block centres
    (:func:`block_centers`), as one ``[h*s, w*s, 2]`` image of ``(u, v)`` (row-major blocks, each
    block's pixels in raster order: the layout ``DepthToSpace`` gives)."""
    h, w, _ = centers.shape
    offs = torch.arange(scale, dtype=centers.dtype, device=centers.device) + (0.5 - scale / 2)  # [s]
    dv, du = torch.meshgrid(offs, offs, indexing="ij")
    off = torch.stack((du, dv), dim=-1)  # [s, s, 2]
    pix = centers[:, None, :, None, :] + off[None, :, None, :, :]  # [h, s, w, s, 2]
    return pix.reshape(h * scale, w * scale, 2)
