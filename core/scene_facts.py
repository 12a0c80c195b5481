"""The scene facts that travel from the pseudo-data through the student checkpoint into the ONNX metadata.

One typed record, :class:`SceneFacts`, the one definition of these facts: data generation writes it into
the pseudo-data's ``meta.json`` (key ``scene``, :class:`core.shards.PseudoMeta`), the student stage builds
its own (``student.build.scene_meta``: its content box, ray range and empty-space grid) and
``student.checkpoint`` stores its :meth:`~SceneFacts.to_dict` as ``config["scene"]`` (checkpoints written
before the record existed hold the same keys in a plain dict and load the same way), and
``export.onnx.build_meta`` writes it into the ONNX metadata under one key (``lightfield.scene``).

The ONNX runtime reads it with its own torch-free twin (``export.runtime.meta.SceneFacts``): a test checks
that the two have the same fields (names, order, defaults) and refuse the same bad records.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import numpy as np

from core.cameras import CAMERA_CONVENTION
from core.errors import UserError
from core.ndc import NDCSpace
from core.rig import RIG_KINDS
from core.skipgrid import unpack_grid

FACT_KINDS = ("object", "forward")  # a loaded scene's kind (``scenes.load`` resolves "auto")


@dataclass(frozen=True)
class SceneFacts:
    """What the student's consumers need to know about its scene (JSON-able values).

    Attributes:
        aabb: ``[6]`` scene box (min xyz, max xyz): world frame, or the NDC frame ``ndc``.
        content_aabb: ``[6]`` the student's content box, inside ``aabb``.
        near: start of the student's ray range.
        far: end of the ray range.
        image_size: ``[H, W]`` of the training cameras.
        K: ``[3, 3]`` intrinsics of the training cameras (pixels).
        scene_name: the scene's name.
        background: ``[3]`` RGB the images were composited onto.
        camera_convention: always ``core.cameras.CAMERA_CONVENTION``.
        scene_kind: ``object`` or ``forward``.
        ndc: the NDC frame (:class:`core.ndc.NDCSpace` as a dict) of a forward-facing scene, else ``None``.
        occupancy: the empty-space grid over ``content_aabb`` (:func:`core.skipgrid.bits_record`): in the
            pseudo-data the teacher's occupied cells, covered; in a student checkpoint the student's
            (dilated for its K points). ``None``: not recorded.
        rig: the training camera rig (:mod:`core.rig`); ``None`` in checkpoints written before it
            travelled (export then computes it from the scene).
    """

    aabb: list[float]
    content_aabb: list[float]
    near: float
    far: float
    image_size: list[int]
    K: list[list[float]]
    scene_name: str
    background: list[float]
    camera_convention: str = CAMERA_CONVENTION
    scene_kind: str = "object"
    ndc: dict[str, Any] | None = None
    occupancy: dict[str, Any] | None = None
    rig: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able record (the keys of ``config["scene"]`` in a student checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> SceneFacts:
        """Read and check a record written by :meth:`to_dict` (or an older checkpoint's plain dict).

        Args:
            data: the record.
            source: the file (and key) it came from, named in errors.

        Raises:
            UserError: a missing key, an unknown key, or a value out of range (naming ``source``).
        """
        if not isinstance(data, dict):
            raise UserError(f"{source}: scene facts must be an object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(n for n in required if n not in data)
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise UserError(f"{source}: scene facts " + "; ".join(
                [f"missing {missing}"] * bool(missing) + [f"unknown keys {unknown}"] * bool(unknown)))
        try:
            facts = cls(
                aabb=_numbers(data["aabb"], 6, "aabb"),
                content_aabb=_numbers(data["content_aabb"], 6, "content_aabb"),
                near=float(data["near"]),
                far=float(data["far"]),
                image_size=[int(v) for v in data["image_size"]],
                K=[_numbers(row, 3, "K") for row in data["K"]],
                scene_name=str(data["scene_name"]),
                background=_numbers(data["background"], 3, "background"),
                camera_convention=str(data.get("camera_convention", CAMERA_CONVENTION)),
                scene_kind=str(data.get("scene_kind", "object")),
                ndc=data.get("ndc"),
                occupancy=data.get("occupancy"),
                rig=data.get("rig"),
            )
            facts._check(source)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError(f"{source}: scene facts are malformed ({exc})") from None
        return facts

    def _check(self, source: str) -> None:
        """Raise ``UserError`` for a value out of range."""
        for name in ("aabb", "content_aabb"):
            box = np.asarray(getattr(self, name))
            if not bool((box[:3] < box[3:]).all()):
                raise UserError(f"{source}: scene {name} {list(box)} needs min < max on every axis")
        if not (math.isfinite(self.near) and math.isfinite(self.far) and 0 <= self.near < self.far):
            raise UserError(f"{source}: scene near/far must satisfy 0 <= near < far, got "
                            f"{self.near}, {self.far}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise UserError(f"{source}: scene image_size must be [H, W] >= 1, got {self.image_size}")
        K = np.asarray(self.K)
        if K.shape != (3, 3) or not (K[0, 0] > 0 and K[1, 1] > 0):
            raise UserError(f"{source}: scene K must be 3x3 with positive focal lengths, got {self.K}")
        if self.camera_convention != CAMERA_CONVENTION:
            raise UserError(f"{source}: camera convention {self.camera_convention!r} is not "
                            f"{CAMERA_CONVENTION!r}")
        if self.scene_kind not in FACT_KINDS:
            raise UserError(f"{source}: scene_kind must be one of {list(FACT_KINDS)}, got "
                            f"{self.scene_kind!r}")
        if self.ndc is not None:
            NDCSpace.from_dict(self.ndc)
        if self.occupancy is not None:
            unpack_grid(self.occupancy, f"{source}: occupancy")
        if self.rig is not None and (not isinstance(self.rig, dict) or self.rig.get("kind") not in RIG_KINDS
                                     or len(self.rig.get("center", [])) != 3):
            raise UserError(f"{source}: scene rig must have a kind in {list(RIG_KINDS)} and a center [3]")


def _numbers(values: Any, n: int, name: str) -> list[float]:
    """``n`` finite floats from a list (``ValueError`` otherwise)."""
    out = [float(v) for v in values]
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be {n} finite numbers, got {values}")
    return out
