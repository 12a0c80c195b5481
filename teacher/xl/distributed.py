"""The partitioned teacher's own ``torch.distributed`` part: the one exchange and the region worker.

Launched by ``torchrun``, each process joins the job's group with
:func:`training.distributed.join_process_group` (NCCL with one GPU per process, ``cuda:LOCAL_RANK``,
when CUDA is present, else gloo on the CPU). Rank ``k`` owns region ``k``.

The forward exchange is one ``all_gather_into_tensor`` (named ``all_gather_single`` in torch >= 2.13)
of every rank's ``[N, 5]`` segment records (:mod:`teacher.xl.model`), outside autograd; the
backward pass exchanges nothing.
"""

from __future__ import annotations

import time
from typing import Self

import torch
import torch.distributed as dist
from torch import Tensor

from teacher.model import Teacher
from teacher.xl.geometry import crossing_order, ray_segments
from teacher.xl.model import composite_records, finish_rays, render_region_segment, substitute_own_record

# ``all_gather_single`` is the name torch >= 2.13 gives ``all_gather_into_tensor`` (same collective).
_ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def all_gather_records(own: Tensor) -> Tensor:
    """Gather every rank's segment records; the result carries no autograd history.

    Args:
        own: ``[N, F]`` this rank's records (same ``N`` and ``F`` on every rank).

    Returns:
        ``[K, N, F]`` records of all ranks, row ``k`` from rank ``k``.
    """
    world = dist.get_world_size()
    with torch.no_grad():
        src = own.detach().contiguous()
        out = src.new_empty((world, *src.shape))
        _ALL_GATHER(out.view(world * src.shape[0], *src.shape[1:]), src)  # gloo: concatenated form
    return out


class RegionWorker:
    """This rank's region of a partitioned teacher, rendering whole rays together with the other ranks.

    Every rank must call :meth:`render_chunk` with the same rays (the exchange is collective). A
    :class:`teacher.protocol.RayRenderer`, so :func:`teacher.evaluate.evaluate` takes it as it is.

    Args:
        region: the region's teacher (field + occupancy grid over ``boxes[rank]``).
        rank: this rank = the region's index.
        boxes: ``[K, 6]`` all region boxes (every rank needs them to order the segments).
        near: ray start distance.
        far: ray end distance.
    """

    def __init__(self, region: Teacher, rank: int, boxes: Tensor, near: float, far: float):
        self.region = region
        self.rank = rank
        self.boxes = boxes
        self.near = float(near)
        self.far = float(far)

    @property
    def aabb(self) -> Tensor:
        """``[6]`` scene box: the union of the region boxes (on this rank's device)."""
        return torch.cat([self.boxes[:, :3].amin(0), self.boxes[:, 3:].amax(0)])

    def eval(self) -> Self:
        """Put this rank's region in inference mode; returns the worker."""
        self.region.eval()
        return self

    def render_chunk(self, rays_o: Tensor, rays_d: Tensor, background: Tensor, seed: int | None = None,
                     ) -> dict[str, Tensor]:
        """Render rays with every rank; differentiable in this rank's parameters only.

        Args:
            rays_o: ``[N, 3]`` origins (identical on every rank).
            rays_d: ``[N, 3]`` unit directions.
            background: ``[N, 3]`` background colors.
            seed: base seed of the sample jitter (the region's is ``seed + rank``), or None.

        Returns:
            ``rgb [N, 3]``, ``depth [N]``, ``opacity [N]``, ``n_samples`` (this rank's samples) and
            ``exchange_seconds`` (time spent in the all-gather).
        """
        t_in, t_out = ray_segments(rays_o, rays_d, self.boxes, self.near, self.far)
        seg = render_region_segment(self.region, rays_o, rays_d, t_in[self.rank], t_out[self.rank],
                                    self.region.step_size, None if seed is None else seed + self.rank)
        start = time.perf_counter()
        gathered = all_gather_records(seg["record"])
        exchange = time.perf_counter() - start
        records = substitute_own_record(gathered, seg["record"], self.rank)
        rgb, depth_sum, opacity = composite_records(records, crossing_order(t_in, t_out))
        out = finish_rays(rgb, depth_sum, opacity, background, seg["n_samples"])
        out["exchange_seconds"] = torch.tensor(exchange)
        return out

    @torch.no_grad()
    def render_rays(self, rays_o: Tensor, rays_d: Tensor, background: Tensor, chunk: int | None = None,
                    ) -> dict[str, Tensor]:
        """Render any number of rays with every rank (inference; same outputs on every rank)."""
        chunk = chunk or self.region.cfg.render.chunk
        background = background.to(rays_o).expand(rays_o.shape[0], 3)
        parts = [
            self.render_chunk(rays_o[i : i + chunk], rays_d[i : i + chunk], background[i : i + chunk])
            for i in range(0, max(rays_o.shape[0], 1), chunk)
        ]
        return {k: torch.cat([p[k] for p in parts]) for k in ("rgb", "depth", "opacity")}
