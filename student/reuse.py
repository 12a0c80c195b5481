"""Whether a student stage may reuse or resume from what a run left: the network it was saved by (its
decoder first) and what the stage is made from (:mod:`pipeline.provenance`).

A refusal is one :class:`core.errors.CheckpointError` line naming the first differing ``model.*`` key (or
the saved weights' first differing shape) and how to start fresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.checkpoint import check_state_shapes
from core.errors import CheckpointError
from core.shards import PseudoMeta
from pipeline.provenance import fingerprint, json_sha256, provenance_fields, scene_fingerprint
from scenes.load import Scene
from student.checkpoint import Student
from student.config import StudentConfig
from student.lit_module import DECODER_KEY
from student.model import StudentModelConfig

IMAGE_FIELDS = ("decoder", "encoding", "image")  # what shapes an image student (its ray fields are unused)


def same_model_fields(cfg: StudentModelConfig) -> dict[str, Any]:
    """The fields of a network config that make two students interchangeable: those that count for
    provenance (:func:`pipeline.provenance.provenance_fields`: not the lookup backend).

    An image student's: :data:`IMAGE_FIELDS`. A ray student's: all but ``decoder`` and ``image`` (so that
    its fingerprint is the one recorded before the decoder seam, and runs of then resume), and without the
    grid of a ``pe`` student (which has none).
    """
    fields = provenance_fields(cfg)
    if cfg.decoder == "image":
        return {key: fields[key] for key in IMAGE_FIELDS}
    for key in ("decoder", "image"):
        fields.pop(key)
    if fields["encoding"] == "pe":
        fields.pop("grid")
    return fields  # type: ignore[no-any-return]


def _other_model(path: Path, key: str, saved: Any, wanted: Any, folder: Path) -> CheckpointError:
    return CheckpointError(f"{path}: saved by a student with model.{key}={saved}, but the config asks for "
                           f"model.{key}={wanted}; delete {folder} to start fresh")


def check_same_model(path: Path, saved: StudentModelConfig, wanted: StudentModelConfig) -> None:
    """Refuse, in one line, to resume from a checkpoint of another decoder, network shape or encoding.

    Raises:
        CheckpointError: ``model.decoder`` if it differs, else the first differing ``model.*`` key, both
            values, and how to start fresh.
    """
    if saved.decoder != wanted.decoder:
        raise _other_model(path, "decoder", saved.decoder, wanted.decoder, path.parent)
    a, b = same_model_fields(saved), same_model_fields(wanted)
    for key in a:
        if a[key] != b.get(key):
            raise _other_model(path, key, a[key], b.get(key), path.parent)


def check_resume(last: Path, model: Student, wanted: StudentModelConfig) -> None:
    """A Lightning ``last.ckpt`` of the other decoder (:data:`student.lit_module.DECODER_KEY`; none: a ray
    student's), or whose weights do not fit ``model``: one line instead of a RuntimeError."""
    fresh = last.parent.parent.parent
    saved = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get(DECODER_KEY, "ray")
    if saved != wanted.decoder:
        raise _other_model(last, "decoder", saved, wanted.decoder, fresh)
    check_state_shapes(last, {f"model.{k}": v for k, v in model.state_dict().items()},
                       "a student of another shape or encoding", f"delete {fresh} to start fresh")


def stage_provenance(cfg: StudentConfig, name: str, meta: PseudoMeta | None, scene: Scene,
                     background: list[float], before: dict[str, Any] | None) -> dict[str, Any]:
    """What stage ``name`` is made from (:mod:`pipeline.provenance`).

    Its data (distill: the pseudo-data's ``meta.json``, which lists every shard's sha256, without the
    scene folder's path; finetune: the scene's training views and the background), the network (without
    the unused grid of a ``pe`` student), the stage's optimisation settings (an image student's crops; a ray
    student's hard-ray mining in distill), seed, precision, and
    ``before``, the provenance of the stage it starts from: the fields that count for provenance
    (:func:`pipeline.provenance.provenance_fields`; budgets, validation, devices, workers, caches and the
    lookup backend are marked as not counting).
    """
    train = provenance_fields(cfg.train)
    model = same_model_fields(cfg.model)
    data: dict[str, Any] = {"scene": scene_fingerprint(scene), "background": background}
    image = cfg.model.decoder == "image"
    if name == "distill":
        assert meta is not None
        data = {"pseudo_sha256": json_sha256(provenance_fields(meta))}
        if not image:
            data["hard_mining"] = train["hard_mining"]
    if image:
        data["crops"] = train["crops"]
    return fingerprint(model=model, stage=train[name], seed=cfg.seed, precision=train["precision"],
                       after=before, **data)
