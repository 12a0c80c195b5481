"""NeRF-XL partitioned teacher: one field per spatial region, rays composited segment by segment.

The scene box is split into ``K`` disjoint boxes (:mod:`teacher.xl.geometry`). Region ``k`` has its own
hash grid, density MLP, color MLP and occupancy grid; nothing is shared, so in distributed training
(:mod:`teacher.xl.distributed`) no gradient is ever exchanged and nothing needs DDP. (The color MLP is
~10k parameters against ~12M in a hash grid: a copy per region costs nothing, and NeRF-XL trains fully
independent networks per region too. Sharing it would make its gradient a sum over ranks, i.e. one
all-reduce per step.)

Per ray, region ``k`` renders its own segment ``[t_in_k, t_out_k]`` into a few numbers, the
*segment record* (``SEGMENT_FIELDS`` floats):

* ``C_k`` (3): the segment's color, already weighted by the transmittance inside the segment;
* ``T_k`` (1): the light that leaves the segment, ``prod_i (1 - alpha_i)`` over its samples;
* ``D_k`` (1): the segment's depth sum ``sum_i w_i t_i`` (``w_i`` counted from the segment's entry,
  ``t_i`` the sample's distance from the ray origin).

With the regions sorted by the distance at which the ray enters them, the ray's color, depth sum and
opacity are (NeRF-XL eq. 4)::

    C = sum_k A_k C_k,   D = sum_k A_k D_k,   opacity = 1 - prod_k T_k,   A_k = prod_{j<k} T_j,

which equals ordinary volume rendering over the union of the samples of all segments.
:class:`PartitionedTeacher` evaluates every region in one process (rendering, data generation, and the
reference of the tests); :mod:`teacher.xl.distributed` evaluates one region per rank.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from core.rendering import composite_segments
from teacher.model import Teacher, TeacherModelConfig
from teacher.render import render_in_chunks, render_segment, step_size_for
from teacher.xl.geometry import crossing_order, ray_segments

SEGMENT_FIELDS = 5  # C (3), T, D


def composite_records(
    records: Tensor,  # [K, N, 5]
    order: Tensor,  # [K, N]
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite the segment records of all regions in each ray's crossing order.

    Args:
        records: ``[K, N, 5]`` records ``(C_k, T_k, D_k)`` indexed by region.
        order: ``[K, N]`` int64, ``order[i, n]`` = ``i``-th region crossed by ray ``n``
            (:func:`teacher.xl.geometry.crossing_order`).

    Returns:
        ``rgb [N, 3]`` (before the background), ``depth_sum [N]`` and ``opacity [N]``.
    """
    sorted_records = torch.gather(records, 0, order[..., None].expand(-1, -1, records.shape[-1]))
    trans = sorted_records[..., 3]  # [K, N]
    colors_and_depth = torch.cat([sorted_records[..., :3], sorted_records[..., 4:5]], dim=-1)  # [K, N, 4]
    out, final_trans = composite_segments(colors_and_depth, trans)
    return out[:, :3], out[:, 3], 1.0 - final_trans


def substitute_own_record(
    gathered: Tensor,  # [K, N, 5]
    own: Tensor,  # [N, 5]
    rank: int,
) -> Tensor:
    """The gathered (constant) records with this rank's row replaced by its live, differentiable one.

    This is the loss formulation of NeRF-XL section 4 that makes each rank's backward pass exact
    without any gradient exchange. The composite color ``C = sum_m A_m C_m`` (with
    ``A_m = prod_{j<m} T_j``) depends on rank ``k``'s parameters ``theta_k`` only through its own
    record: through ``C_k`` (coefficient ``A_k``) and through ``T_k``, which multiplies every later
    segment and the background (``dC/dT_k = sum_{m>k} (prod_{j<m, j!=k} T_j) C_m``, and likewise for
    depth and opacity). So for any loss ``L(C, D, opacity)``::

        dL/dtheta_k = (dL/dC_k) dC_k/dtheta_k + (dL/dT_k) dT_k/dtheta_k + (dL/dD_k) dD_k/dtheta_k,

    where the partial derivatives ``dL/dC_k, dL/dT_k, dL/dD_k`` are functions of the *values* of all
    records only. Rank ``k`` therefore evaluates the ordinary loss on the composite built from the
    other ranks' gathered records as constants and its own record live: the surrogate
    ``L_k(theta_k) = L(composite(sg(R_1), .., R_k(theta_k), .., sg(R_K)))``. Its value is the true loss
    and its gradient in ``theta_k`` is exactly the single-device gradient, with no division by
    ``T_k`` (an equivalent linearised surrogate ``<dL/dC_k, C_k> + <dL/dT_k, T_k> + ...`` would need
    ``1/T_k`` or a second pass).

    Args:
        gathered: ``[K, N, 5]`` records of every rank, no autograd history.
        own: ``[N, 5]`` this rank's record, differentiable.
        rank: this rank's region index.

    Returns:
        ``[K, N, 5]`` records, differentiable in row ``rank`` only.
    """
    mask = torch.zeros(gathered.shape[0], 1, 1, dtype=torch.bool, device=gathered.device)
    mask[rank] = True
    return torch.where(mask, own.unsqueeze(0).to(gathered.dtype), gathered.detach())


class PartitionedTeacher(nn.Module):
    """All regions of a partitioned teacher in one process, with the ``Teacher.render_rays`` contract.

    Each region is a :class:`teacher.model.Teacher` over its own box (field + occupancy grid); all
    march with the step of the whole scene box, so sample density matches the unpartitioned teacher.

    Args:
        cfg: model settings shared by the regions.
        boxes: ``[K, 6]`` region boxes (:func:`teacher.xl.geometry.median_split_boxes`).
        aabb: ``[6]`` scene box (the union of the boxes).
        near: ray start distance.
        far: ray end distance.
        seed: region ``k`` is initialised from ``init_seed(seed, k)`` (as on rank ``k``).
    """

    aabb: Tensor
    ndc = None  # object scenes only: forward-facing (NDC) scenes are refused by teacher.xl.train
    boxes: Tensor

    def __init__(self, cfg: TeacherModelConfig, boxes: Tensor, aabb: Tensor, near: float, far: float,
                 seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.near = float(near)
        self.far = float(far)
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.register_buffer("boxes", torch.as_tensor(boxes, dtype=torch.float32).clone())
        self.step_size = step_size_for(self.aabb, cfg.render)
        self.regions = nn.ModuleList(
            build_region(cfg, b, self.aabb, near, far, init_seed(seed, k)) for k, b in enumerate(self.boxes)
        )

    @property
    def n_regions(self) -> int:
        return len(self.regions)

    @property
    def region_list(self) -> list[Teacher]:
        """The regions' teachers, in region order."""
        return [cast(Teacher, r) for r in self.regions]

    @property
    def backend(self) -> str:
        """The hash-grid backend in use."""
        return self.region_list[0].backend

    def update_occupancy(self, step: int, seed: int = 0) -> bool:
        """Refresh every region's occupancy grid at training ``step`` (each from its own seed)."""
        updated = False
        for k, region in enumerate(self.region_list):
            updated |= update_region_occupancy(region, step, region_seed(seed, step, k))
        return updated

    def occupied_cells(self) -> list[tuple[Tensor, Tensor]]:
        """``(binary [R^3], aabb [6])`` of every region's occupancy grid."""
        return [(r.occupancy.binary, r.occupancy.aabb) for r in self.region_list]

    def content_aabb(self) -> Tensor:
        """``[6]`` union of the regions' occupied boxes (the scene box if no cell is occupied)."""
        boxes = [r.content_aabb() for r in self.region_list if bool(r.occupancy.binary.any())]
        if not boxes:
            return self.aabb.clone()
        stacked = torch.stack(boxes)
        return torch.cat([stacked[:, :3].amin(0), stacked[:, 3:].amax(0)])

    def render_rays(
        self,
        rays_o: Tensor,  # [N, 3]
        rays_d: Tensor,  # [N, 3]
        background: Tensor,  # [3] or [N, 3]
        chunk: int | None = None,
    ) -> dict[str, Tensor]:
        """Render rays onto a background, ``chunk`` rays at a time (as ``Teacher.render_rays``).

        Returns:
            ``rgb [N, 3]``, ``depth [N]``, ``opacity [N]`` and ``n_samples`` (scalar).
        """
        return render_in_chunks(self.render_chunk, rays_o, rays_d, background, chunk or self.cfg.render.chunk)

    def render_chunk(self, rays_o: Tensor, rays_d: Tensor, background: Tensor, seed: int | None = None,
                     ) -> dict[str, Tensor]:
        """Render one chunk: every region's segment, then the composite (differentiable)."""
        t_in, t_out = ray_segments(rays_o, rays_d, self.boxes, self.near, self.far)
        records, n_samples = [], 0
        for k, region in enumerate(self.region_list):
            seg = render_region_segment(region, rays_o, rays_d, t_in[k], t_out[k], self.step_size,
                                        None if seed is None else seed + k)
            records.append(seg["record"])
            n_samples += int(seg["n_samples"])
        rgb, depth_sum, opacity = composite_records(torch.stack(records), crossing_order(t_in, t_out))
        return finish_rays(rgb, depth_sum, opacity, background, n_samples)


def build_region(cfg: TeacherModelConfig, box: Tensor, aabb: Tensor, near: float, far: float,
                 seed: int | None = None) -> Teacher:
    """Region ``box``'s teacher (field + occupancy grid over the box) marching with ``aabb``'s step.

    ``seed`` (see :func:`init_seed`) makes its initial weights independent of what else the process
    built before, so one process holding every region and ``K`` ranks start from the same weights.
    """
    if seed is None:
        region = Teacher(cfg, box, near, far)
    else:
        with torch.random.fork_rng(devices=[box.device] if box.is_cuda else []):
            torch.manual_seed(seed)
            region = Teacher(cfg, box, near, far)
    region.step_size = step_size_for(torch.as_tensor(aabb, dtype=torch.float32), cfg.render)
    return region


def init_seed(seed: int, region: int) -> int:
    """Seed of region ``region``'s initial weights."""
    return seed * 7919 + 104729 + region


def region_seed(seed: int, step: int, region: int) -> int:
    """Seed of the random draws of ``region`` at ``step``: the same in one process or on its rank."""
    return (seed * 1_000_003 + step) * 1009 + region


def update_region_occupancy(region: Teacher, step: int, seed: int) -> bool:
    """``region.update_occupancy(step)`` with its random cell choices drawn from ``seed``."""
    with torch.random.fork_rng(devices=[region.aabb.device] if region.aabb.is_cuda else []):
        torch.manual_seed(seed)
        return region.update_occupancy(step)


def render_region_segment(
    region: Teacher,
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    t_in: Tensor,  # [N]
    t_out: Tensor,  # [N]
    step_size: float,
    seed: int | None = None,
) -> dict[str, Tensor]:
    """One region's segment of each ray as a record ``[N, 5]`` = ``(C_k, T_k, D_k)``.

    Args:
        region: the region's teacher.
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` unit directions.
        t_in: ``[N]`` entry distances into the region.
        t_out: ``[N]`` exit distances (``<= t_in``: the ray misses it; record ``(0, 1, 0)``).
        step_size: marching step (the scene's).
        seed: seeds the sample jitter in training (None: the global generator).

    Returns:
        ``record [N, 5]`` and ``n_samples`` (scalar).
    """
    def run() -> dict[str, Tensor]:
        occupancy = cast(Tensor, region.occupancy.binary)
        return render_segment(region.field, rays_o, rays_d, t_in, t_out, occupancy, step_size,
                              region.cfg.render)

    if seed is None:
        seg = run()
    else:
        with torch.random.fork_rng(devices=[rays_o.device] if rays_o.is_cuda else []):
            torch.manual_seed(seed)
            seg = run()
    record = torch.cat([seg["rgb"], seg["trans"][:, None], seg["depth_sum"][:, None]], dim=-1)
    return {"record": record, "n_samples": seg["n_samples"]}


def finish_rays(rgb: Tensor, depth_sum: Tensor, opacity: Tensor, background: Tensor,
                n_samples: int | Tensor) -> dict[str, Tensor]:
    """Composite output -> ``Teacher.render_rays`` outputs (background added, depth normalised)."""
    return {
        "rgb": rgb + (1.0 - opacity)[:, None] * background,
        "depth": depth_sum / opacity.clamp_min(1e-6),
        "opacity": opacity,
        "n_samples": torch.as_tensor(n_samples),
    }


def build_partitioned_teacher(cfg: TeacherModelConfig, boxes: Tensor, aabb: Tensor, near: float, far: float,
                              device: torch.device | str = "cpu", seed: int = 0) -> PartitionedTeacher:
    """Construct a partitioned teacher (all regions in this process)."""
    with torch.device(device):
        return PartitionedTeacher(cfg, boxes.to(device), aabb.to(device), near, far, seed)


def region_state_key(region: int, key: str) -> str:
    """Key of a region's tensor in a partitioned teacher's ``state_dict``."""
    return f"regions.{region}.{key}"
