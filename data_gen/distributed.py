"""The little ``torch.distributed`` that data generation needs: ranks, a barrier, a sum.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) :func:`process_group` joins the job's process
group (gloo on the CPU, NCCL when CUDA is present) unless the caller already did, and leaves it on exit
if it joined it. Without ``WORLD_SIZE`` everything is a no-op on a world of one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from pipeline.run import collective_backend, local_rank


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Yield ``(rank, world_size)``, joining the process group described by the environment if needed."""
    joined = False
    if not _active() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = collective_backend()
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)
        joined = True
    try:
        yield (dist.get_rank(), dist.get_world_size()) if _active() else (0, 1)
    finally:
        if joined:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op on a world of one)."""
    if _active():
        dist.barrier()


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Element-wise ``sum`` or ``max`` of a few numbers over the ranks (identity on a world of one)."""
    if not _active():
        return list(values)
    device = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return [float(v) for v in t.tolist()]
