"""The process-group helpers of every stage: joining the launcher's group, ranks, barrier, a few sums.

Launched by ``torchrun`` (which sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``), a process joins the job's group with :func:`join_process_group` (the NeRF-XL teacher:
it keeps the group) or :func:`process_group` (data generation: it leaves the group it joined on exit):
NCCL with one GPU per process (``cuda:LOCAL_RANK``) when CUDA is present, else gloo on the CPU
(:func:`pipeline.run.collective_backend`). Lightning's DDP (the student) joins its own group; the data
pipeline reads its rank with :func:`rank_and_world`. Outside a group every helper acts on a world of
one. What is stage-specific stays in the stage (the NeRF-XL teacher's one exchange:
:mod:`teacher.xl.distributed`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from pipeline.run import collective_backend, local_rank

log = logging.getLogger(__name__)

BACKENDS = ("gloo", "nccl")


def env_world_size() -> int:
    """``WORLD_SIZE`` of the launcher's environment (1 outside ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    """Whether the environment of a ``torchrun`` worker is present."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether this process is in an initialised default process group."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group (``(0, 1)`` outside one)."""
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def collective_device() -> torch.device:
    """Where the group's collectives take their tensors: ``cuda:LOCAL_RANK`` with NCCL, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def join_process_group(backend: str = "auto", timeout_s: float | None = None
                       ) -> tuple[int, int, torch.device]:
    """Join the default process group of the ``torchrun`` environment (idempotent).

    Args:
        backend: ``auto`` (NCCL with CUDA, else gloo), ``gloo`` or ``nccl``.
        timeout_s: collective timeout (``None``: torch's default).

    Returns:
        ``(rank, world_size, device)``: ``cuda:LOCAL_RANK`` with NCCL, else ``cpu``.

    Raises:
        ValueError: an unknown backend.
    """
    name = collective_backend(backend)
    if name not in BACKENDS:
        raise ValueError(f"distributed.backend must be auto, gloo or nccl, got {backend!r}")
    device = torch.device("cuda", local_rank()) if name == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not active():
        dist.init_process_group(backend=name, timeout=timedelta(seconds=timeout_s) if timeout_s else None,
                                device_id=device if device.type == "cuda" else None)
    rank, world = dist.get_rank(), dist.get_world_size()
    log.info("rank %d/%d on %s (%s)", rank, world, device, name)
    return rank, world, device


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Yield ``(rank, world_size)``, joining the group the environment describes (``WORLD_SIZE > 1``)
    unless the caller already did, and leaving it on exit if it joined it."""
    joined = False
    if not active() and env_world_size() > 1:
        join_process_group()
        joined = True
    try:
        yield rank_and_world()
    finally:
        if joined:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op on a world of one)."""
    if active():
        dist.barrier()


def broadcast_tensor(t: Tensor, src: int = 0) -> Tensor:
    """Broadcast a tensor from rank ``src`` in place; returns it (no-op on a world of one)."""
    if active():
        dist.broadcast(t, src)
    return t


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Element-wise ``sum`` or ``max`` of a few numbers over the ranks (identity on a world of one)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return [float(v) for v in t.tolist()]
