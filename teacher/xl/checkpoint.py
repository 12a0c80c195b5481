"""Checkpoints of partitioned training: one file per region and step, merged into ``teacher.ckpt``.

Each rank (or, in one process, each region) writes ``partitions/region-<k>-step-<S>.ckpt`` atomically
(region weights, occupancy grid, optimizer state). After a barrier, rank 0 merges the ``K`` files of
step ``S`` into ``teacher.ckpt`` (atomic; kind ``teacher``, loadable by ``teacher.checkpoint.load_teacher``
as a :class:`teacher.xl.model.PartitionedTeacher`) and only then deletes older region files. A
kill at any moment leaves a ``teacher.ckpt`` whose step has a complete set of region files, which
is where training resumes (with any number of processes: the files are per region, not per rank).

A region file of that step that is missing or unreadable gets the policy of Lightning's ``last.ckpt``
(:mod:`training.checkpoints`): region files are disposable resume points, so :func:`resume_point` logs
one warning naming the file, moves it aside to ``<name>.unreadable``, deletes the other region files
(useless without it) and training starts fresh; the next checkpoint replaces ``teacher.ckpt``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.checkpoint import load_checkpoint, save_checkpoint
from core.errors import CheckpointError
from teacher.checkpoint import CHECKPOINT_KIND, is_partitioned, partitioned_config
from teacher.model import Teacher, TeacherModelConfig
from teacher.xl.model import region_state_key

log = logging.getLogger(__name__)

REGION_KIND = "teacher-region"


def region_file(folder: Path, region: int, step: int) -> Path:
    """``<folder>/partitions/region-<k>-step-<S>.ckpt``."""
    return folder / "partitions" / f"region-{region:03d}-step-{step:09d}.ckpt"


def save_region(folder: Path, region_index: int, region: Teacher, optimizer: torch.optim.Optimizer,
                step: int) -> Path:
    """Write one region's weights and optimizer state at ``step`` (atomic)."""
    state = {k: v.detach().cpu() for k, v in region.state_dict().items()}
    return save_checkpoint(region_file(folder, region_index, step), REGION_KIND, state, {},
                           region=region_index, step=step, optimizer=_to_cpu(optimizer.state_dict()))


def merge_regions(folder: Path, model_cfg: TeacherModelConfig, boxes: Tensor, aabb: Tensor, near: float,
                  far: float, step: int, **extra: Any) -> Path:
    """Merge the region files of ``step`` into ``<folder>/teacher.ckpt``, then drop older region files."""
    state: dict[str, Tensor] = {"aabb": aabb.detach().float().cpu(), "boxes": boxes.detach().float().cpu()}
    for k in range(boxes.shape[0]):
        part = load_checkpoint(region_file(folder, k, step), kind=REGION_KIND)
        state.update({region_state_key(k, key): v for key, v in part["state_dict"].items()})
    config = partitioned_config(model_cfg, boxes, aabb, near, far)
    path = save_checkpoint(folder / "teacher.ckpt", CHECKPOINT_KIND, state, config, step=step, **extra)
    for old in (folder / "partitions").glob("region-*-step-*.ckpt"):
        if int(old.stem.rsplit("-", 1)[1]) < step:
            old.unlink(missing_ok=True)
    log.info("merged %d regions of step %d into %s", boxes.shape[0], step, path)
    return path


def resume_point(folder: Path, n_regions: int) -> tuple[int, Tensor] | None:
    """Step and boxes to resume from, or None for a fresh start (call it on one rank only).

    Temporary files of saves killed midway are removed. A missing or unreadable region file of the merged
    step means a fresh start, with one warning (the policy in the module docstring).

    Raises:
        CheckpointError: ``teacher.ckpt`` is unreadable or not a partitioned checkpoint of ``n_regions``
            regions.
    """
    for tmp in [*folder.glob(".teacher.ckpt.*.tmp"), *(folder / "partitions").glob(".region-*.tmp")]:
        tmp.unlink(missing_ok=True)
    path = folder / "teacher.ckpt"
    if not path.exists():
        return None
    payload = load_checkpoint(path, kind=CHECKPOINT_KIND)
    if not is_partitioned(payload):
        raise CheckpointError(f"{path}: holds an unpartitioned teacher; use another run_dir or "
                              f"distributed.partitions=1")
    boxes = torch.tensor(payload["config"]["partitions"]["boxes"], dtype=torch.float32)
    if boxes.shape[0] != n_regions:
        raise CheckpointError(f"{path}: holds {boxes.shape[0]} partitions, not "
                              f"distributed.partitions={n_regions}")
    step = int(payload.get("step", 0))
    for k in range(n_regions):
        part = region_file(folder, k, step)
        problem = _region_problem(part, k, step)
        if problem is not None:
            _start_fresh(folder, part, problem)
            return None
    return step, boxes


def _region_problem(path: Path, region: int, step: int) -> str | None:
    """Why ``path`` cannot resume ``region`` at ``step`` (None: it can), without reading its tensors."""
    if not path.is_file():
        return "missing"
    try:
        part = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises almost anything on a truncated file
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    keys = set(part) if isinstance(part, dict) else set()
    if not {"state_dict", "optimizer"} <= keys or part.get("kind") != REGION_KIND:
        return "not a region checkpoint"
    if (part.get("region"), part.get("step")) != (region, step):
        return f"holds region {part.get('region')} of step {part.get('step')}"
    return None


def _start_fresh(folder: Path, part: Path, problem: str) -> None:
    """Move the unusable region file ``part`` aside, delete the other region files, warn once."""
    kept = ""
    if part.is_file():
        aside = part.with_name(f"{part.name}.unreadable")
        os.replace(part, aside)
        kept = f" (file kept as {aside.name})"
    for other in (folder / "partitions").glob("region-*-step-*.ckpt"):
        other.unlink(missing_ok=True)
    log.warning("%s: unusable resume checkpoint (%s); starting this stage fresh%s", part, problem, kept)


def load_region(folder: Path, region_index: int, region: Teacher, optimizer: torch.optim.Optimizer,
                step: int) -> None:
    """Restore one region's weights and optimizer state of ``step``."""
    path = region_file(folder, region_index, step)
    part = load_checkpoint(path, kind=REGION_KIND)
    try:
        region.load_state_dict(part["state_dict"])
        optimizer.load_state_dict(part["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: does not match this configuration ({first})") from None


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
