"""Save and load the student: weights, network shape and the scene metadata export needs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import load_checkpoint, save_checkpoint
from core.errors import CheckpointError
from core.ndc import NDCSpace
from core.skipgrid import unpack_grid
from student.model import R2LStudent, StudentModelConfig

KIND = "student"


def save_student(path: str | Path, model: R2LStudent, scene_meta: dict[str, Any], **extra: Any) -> Path:
    """Atomically save a student.

    Args:
        path: checkpoint file.
        model: the network.
        scene_meta: JSON-able scene facts: ``aabb`` [6] (scene box), ``content_aabb`` [6] (the
            student's content box), ``near``, ``far``, ``image_size`` [H, W],
            ``K`` (3x3 intrinsics of the training cameras), ``camera_convention``, ``scene_name``,
            ``background`` [3], ``ndc`` (the NDC frame of a forward-facing scene, or None),
            ``occupancy`` (the encoder's empty-space grid, :func:`core.skipgrid.bits_record`, or None).
        extra: more JSON-able entries (e.g. ``metrics``).
    """
    config = {"model": dataclasses.asdict(model.cfg), "scene": scene_meta}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, KIND, state, config, **extra)


def load_student(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[R2LStudent, dict[str, Any]]:
    """Load a student saved by :func:`save_student`; returns the model (eval mode) and its scene meta.

    Raises:
        CheckpointError: missing, corrupt, or not a student checkpoint of a known shape.
    """
    payload = load_checkpoint(path, kind=KIND)
    if "content_aabb" not in payload.get("config", {}).get("scene", {}):
        raise CheckpointError(f"{path}: a student from an older version (no content box); train it again")
    try:
        cfg = StudentModelConfig.from_dict(payload["config"]["model"])
        scene = payload["config"]["scene"]
        ndc = NDCSpace.from_dict(scene["ndc"]) if scene.get("ndc") is not None else None
        occ = scene.get("occupancy")
        grid = torch.from_numpy(unpack_grid(occ, f"{path}: occupancy")) if occ is not None else None
        model = R2LStudent(cfg, torch.tensor(scene["content_aabb"]), scene["near"], scene["far"],
                           scene["background"], ndc, grid)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: student checkpoint does not match its config ({first})") from None
    return model.to(map_location).eval(), scene
