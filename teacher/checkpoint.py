"""``teacher.ckpt``: save and load a trained teacher, plain or partitioned (NeRF-XL).

One file kind (``teacher``) for both: a partitioned checkpoint's config adds ``partitions.boxes`` and its
state holds every region (``regions.<k>.<key>``). This module sits above both models, so
:func:`load_teacher` dispatches on the file without either model importing the other's loader.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.checkpoint import load_checkpoint, save_checkpoint
from core.errors import CheckpointError
from core.ndc import NDCSpace
from cuda.backend import HashGridConfig
from pipeline.config import to_dataclass, to_plain
from teacher.model import Teacher, TeacherModelConfig, build_teacher
from teacher.xl.model import PartitionedTeacher, build_partitioned_teacher

CHECKPOINT_KIND = "teacher"


def teacher_config(teacher: Teacher) -> dict[str, Any]:
    """The checkpoint ``config`` of a teacher: model settings, scene box, near/far, NDC frame."""
    return {"model": to_plain(teacher.cfg), "aabb": teacher.aabb.tolist(), "near": teacher.near,
            "far": teacher.far, "ndc": teacher.ndc.to_dict() if teacher.ndc is not None else None}


def partitioned_config(model_cfg: TeacherModelConfig, boxes: Tensor, aabb: Tensor, near: float,
                       far: float) -> dict[str, Any]:
    """The checkpoint ``config`` of a partitioned teacher: the teacher's, plus ``partitions.boxes``."""
    return {"model": to_plain(model_cfg), "aabb": [float(v) for v in aabb.tolist()], "near": float(near),
            "far": float(far), "partitions": {"boxes": [[float(v) for v in b] for b in boxes.tolist()]}}


def is_partitioned(payload: dict[str, Any]) -> bool:
    """Whether a loaded teacher checkpoint holds a partitioned teacher."""
    return isinstance(payload.get("config"), dict) and "partitions" in payload["config"]


def save_teacher(path: str | Path, teacher: Teacher | PartitionedTeacher, **extra: Any) -> Path:
    """Write ``teacher.ckpt`` (kind ``teacher``, atomic): weights, occupancy grids, config, scene bounds."""
    if isinstance(teacher, PartitionedTeacher):
        config = partitioned_config(teacher.cfg, teacher.boxes, teacher.aabb, teacher.near, teacher.far)
    else:
        config = teacher_config(teacher)
    state = {k: v.detach().cpu() for k, v in teacher.state_dict().items()}
    return save_checkpoint(path, CHECKPOINT_KIND, state, config, **extra)


def saved_model_config(saved: dict[str, Any]) -> TeacherModelConfig:
    """The model config stored in a checkpoint; one written before the field nested its grid (the grid's
    keys beside ``hidden_dim``) reads the same.

    Raises:
        UserError: an unknown key or a bad value.
    """
    saved = dict(saved)
    field = dict(saved.get("field") or {})
    grid_keys = [f.name for f in dataclasses.fields(HashGridConfig)]
    flat = {key: field.pop(key) for key in grid_keys if key in field}
    if flat:
        field["grid"] = {**field.get("grid", {}), **flat}
        saved["field"] = field
    return to_dataclass(saved, TeacherModelConfig)


def load_teacher(path: str | Path, device: torch.device | str = "cpu", backend: str = "auto",
                 ) -> Teacher | PartitionedTeacher:
    """Rebuild a teacher from a checkpoint written by :func:`save_teacher` (or merged by NeRF-XL training).

    Both kinds satisfy :class:`teacher.protocol.RenderableTeacher`; a partitioned one renders all its
    regions in this process.

    Args:
        path: ``<run_dir>/teacher/teacher.ckpt``.
        device: where to put it.
        backend: hash-grid backend to use (the checkpoint works with any).

    Raises:
        CheckpointError: missing, corrupt or mismatched file, or the resume point of a partitioned
            training that has not finished (``finished=False``) (one line, naming it).
    """
    payload = load_checkpoint(path, kind=CHECKPOINT_KIND)
    if payload.get("finished") is False:  # NeRF-XL writes teacher.ckpt while training, as its resume point
        raise CheckpointError(f"{path}: the partitioned teacher's training has not finished (stopped at step "
                              f"{payload.get('step')}); rerun python -m teacher.train with the same settings "
                              f"to finish it before using it")
    if is_partitioned(payload):
        return _load_partitioned(path, payload, device, backend)
    config = payload.get("config") or {}
    try:
        model_cfg = saved_model_config(config["model"])
        model_cfg.field.grid.backend = backend
        ndc = NDCSpace.from_dict(config["ndc"]) if config.get("ndc") is not None else None
        teacher = build_teacher(model_cfg, torch.tensor(config["aabb"], dtype=torch.float32),
                                float(config["near"]), float(config["far"]), device, ndc)
    except (KeyError, TypeError, ValueError) as exc:  # UserError is a ValueError
        raise CheckpointError(f"{path}: teacher config is missing or invalid ({exc})") from None
    try:
        teacher.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match the stored config ({first})") from None
    return teacher.eval()


def _load_partitioned(path: str | Path, payload: dict[str, Any], device: torch.device | str,
                      backend: str) -> PartitionedTeacher:
    """Rebuild a :class:`PartitionedTeacher` from a loaded checkpoint ``payload``.

    Raises:
        CheckpointError: the config or the weights do not match (one line, naming ``path``).
    """
    config = payload["config"]
    try:
        model_cfg = saved_model_config(config["model"])
        model_cfg.field.grid.backend = backend
        boxes = torch.tensor(config["partitions"]["boxes"], dtype=torch.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 6 or boxes.shape[0] < 1:
            raise TypeError(f"partition boxes of shape {tuple(boxes.shape)}, expected [K, 6]")
        aabb = torch.tensor(config["aabb"], dtype=torch.float32)
        near, far = float(config["near"]), float(config["far"])
        teacher = build_partitioned_teacher(model_cfg, boxes, aabb, near, far, device)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: partitioned teacher config is missing or invalid ({exc})") from None
    try:
        result = teacher.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as exc:  # a shape mismatch
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: weights do not match the stored partitions ({detail})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: weights do not match the stored partitions (missing "
                              f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return teacher.eval()
