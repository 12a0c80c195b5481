"""Save and load the student: weights, network shape and the scene facts export needs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import load_checkpoint, save_checkpoint
from core.checks import validate
from core.errors import CheckpointError, UserError
from core.ndc import NDCSpace
from core.scene_facts import SceneFacts
from core.skipgrid import unpack_grid
from student.image_model import ImageStudent
from student.model import R2LStudent, StudentModelConfig

KIND = "student"
Student = R2LStudent | ImageStudent  # the two decoders (StudentModelConfig.decoder: ray, image)


def model_config(model: Student) -> StudentModelConfig:
    """The ``model`` section that builds ``model`` again (an image student's ray fields: defaults)."""
    if isinstance(model, ImageStudent):
        return StudentModelConfig(decoder="image", encoding="planes", image=model.cfg)
    return model.cfg


def build_model(cfg: StudentModelConfig, facts: SceneFacts, occupancy: torch.Tensor | None = None) -> Student:
    """The network ``cfg`` describes, over the box and ray range of ``facts``.

    Both cover ``facts.content_aabb`` (a forward-facing scene's: its NDC box); ``occupancy``: the ray
    student's empty-space grid over it.

    Raises:
        core.checks.ConfigValueError: an image student with a detail head for a forward-facing scene.
    """
    validate(cfg, "model.")
    ndc = NDCSpace.from_dict(facts.ndc) if facts.ndc is not None else None
    if cfg.decoder == "image":
        return ImageStudent(cfg.image, list(facts.content_aabb), ndc)
    return R2LStudent(cfg, torch.tensor(facts.content_aabb), facts.near, facts.far, facts.background, ndc,
                      occupancy)


def save_student(path: str | Path, model: Student, facts: SceneFacts, **extra: Any) -> Path:
    """Atomically save a student.

    Args:
        path: checkpoint file.
        model: the network (either decoder).
        facts: its scene facts (stored as ``config["scene"]``, :meth:`core.scene_facts.SceneFacts.to_dict`).
        extra: more JSON-able entries (e.g. ``metrics``).
    """
    config = {"model": dataclasses.asdict(model_config(model)), "scene": facts.to_dict()}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, KIND, state, config, **extra)


def load_student(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Student, SceneFacts]:
    """Load a student saved by :func:`save_student`; returns the model (eval mode) and its scene facts.

    A checkpoint of before :class:`core.scene_facts.SceneFacts` (a plain dict of the same keys, without
    ``rig``) loads the same way.

    Raises:
        CheckpointError: missing, corrupt, or not a student checkpoint of a known shape.
    """
    payload = load_checkpoint(path, kind=KIND)
    if "content_aabb" not in payload.get("config", {}).get("scene", {}):
        raise CheckpointError(f"{path}: a student from an older version (no content box); train it again")
    try:
        facts = SceneFacts.from_dict(payload["config"]["scene"], f"{path}: config.scene")
    except UserError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        cfg = StudentModelConfig.from_dict(payload["config"]["model"])
        occ = facts.occupancy
        grid = torch.from_numpy(unpack_grid(occ, f"{path}: occupancy")) if occ is not None else None
        model = build_model(cfg, facts, grid)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: student checkpoint does not match its config ({first})") from None
    return model.to(map_location).eval(), facts
