"""The metadata of an exported light field: the contract between ``export.onnx`` and every runtime.

:class:`ModelMeta` is the runtime's torch-free reading of the ONNX ``metadata_props`` that
``export.onnx`` writes; it imports nothing of ours, so a copied runtime keeps working on its own.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "lightfield-distill/onnx"
FORMAT_VERSION = 1
META_PREFIX = "lightfield."
INPUT_NAMES = ("rays_o", "rays_d")
OUTPUT_NAME = "rgb"
# Rays per inference call: small enough that the [batch, 960] sine features stay in the L2 cache
# (measured on this project's CPU: 1024 beats 4096 by 10-25% and one 10k-ray call by up to 2x).
DEFAULT_BATCH = 1024
INSTALL_HINT = (
    "onnxruntime is not installed: run `pip install -e .[cpu]` (or `pip install -e .[gpu]` for CUDA; "
    "install exactly one of the two)"
)


class ModelError(ValueError):
    """An exported model or its input that cannot be used; the message is one line naming the file."""


class MissingRuntimeError(ImportError):
    """ONNX Runtime is not installed; the message names the extra to install."""


@dataclass
class ModelMeta:
    """Scene and model facts stored in the ONNX ``metadata_props`` (one JSON value per key).

    Attributes:
        scene_name: name of the scene the student was trained on.
        near: start of the ray range sampled by the student.
        far: end of the ray range.
        aabb: ``[6]`` scene box (min xyz, max xyz) in the world frame of the scene's camera files, or in
            the NDC frame ``ndc`` of a forward-facing scene.
        content_aabb: ``[6]`` the student's content box (inside ``aabb``): rays that miss it show
            ``background`` (the graph does this itself; informational).
        image_size: ``[H, W]`` of the training cameras.
        K: ``[3, 3]`` intrinsics of the training cameras (pixels).
        camera_convention: always ``"opencv"``.
        background: ``[3]`` RGB the training images were composited onto.
        precision: ``fp32``, ``fp16`` or ``int8``.
        batch: fixed number of rays per call for a static-shape model, ``0`` for a dynamic batch.
        opset: ONNX opset of the graph.
        student: network shape (``encoding``, ``n_points``, ``n_freqs``, ``width``, ``depth``,
            ``ray_range``, ``grid``).
        flops_per_ray: multiply-add FLOPs (x2) of the MLP per ray.
        rig: the training camera rig for default paths (``core.rig.camera_rig``): ``kind``
            ``object`` (also when absent) with ``center`` [3], ``up`` [3], ``radius``, ``elevation``
            (radians above the plane normal to ``up``), for an orbit; or ``forward`` with ``c2w`` [4][4]
            (the average pose), ``focus_depth``, ``center`` [3] (the focus point), ``up`` [3] and
            ``path_radius``, for a circle around the average camera looking at the focus point.
        encoding: how the graph encodes rays: ``pe`` (R2L's positional encoding, the student's own
            ops), ``fused`` (the same, folded into matrix products, see ``export/fused.py``; equal up to
            float32 rounding) or ``hash`` (hash-grid features looked up with Gather in the graph).
        ray_space: ``world`` (an object scene: box, near, far in the world frame; rays that miss the
            content box show ``background``) or ``ndc`` (a forward-facing scene: the graph turns world
            rays into NDC rays itself, every ray is evaluated, there is no miss background).
        ndc: the NDC frame (``c2w`` 4x4, ``scale`` [sx, sy], ``near``) when ``ray_space`` is ``ndc``.
        checkpoint_sha256: sha256 of the student checkpoint the file was exported from (provenance;
            ``None`` in files of older exports).
        occupancy: the student's empty-space grid over ``content_aabb`` (``resolution`` G, ``bits``:
            base64 of the G^3 cells, x-major, 8 per byte, first cell in the high bit), or ``None``: a
            ray none of whose ``student["n_points"]`` bin-centre points lies in a set cell shows
            ``background`` (the graph does this itself; runtimes skip those rays: :func:`rays_cross_cells`).
        format_version: version of this metadata layout.
    """

    scene_name: str
    near: float
    far: float
    aabb: list[float]
    image_size: list[int]
    K: list[list[float]]
    content_aabb: list[float] | None = None
    camera_convention: str = "opencv"
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    precision: str = "fp32"
    batch: int = 0
    opset: int = 18
    student: dict[str, Any] = field(default_factory=dict)
    flops_per_ray: int = 0
    rig: dict[str, Any] = field(default_factory=dict)
    encoding: str = "pe"
    ray_space: str = "world"
    ndc: dict[str, Any] | None = None
    checkpoint_sha256: str | None = None
    occupancy: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries: ``lightfield.format`` plus one JSON value per field."""
        props = {f"{META_PREFIX}format": FORMAT}
        props.update({f"{META_PREFIX}{k}": json.dumps(v) for k, v in asdict(self).items()})
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path) -> ModelMeta:
        """Parse and validate ``metadata_props``.

        Raises:
            ModelError: metadata missing, of another format or version, or malformed.
        """
        if props.get(f"{META_PREFIX}format") != FORMAT:
            raise ModelError(f"{source}: no {FORMAT} metadata (not exported by export.onnx?)")
        try:
            version = json.loads(props[f"{META_PREFIX}format_version"])
        except (KeyError, json.JSONDecodeError):
            raise ModelError(f"{source}: metadata has no readable format_version") from None
        if version != FORMAT_VERSION:
            raise ModelError(f"{source}: metadata format version {version!r} is not supported "
                             f"(this runtime reads version {FORMAT_VERSION})")
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            key = f"{META_PREFIX}{name}"
            if key in props:
                try:
                    values[name] = json.loads(props[key])
                except json.JSONDecodeError:
                    raise ModelError(f"{source}: metadata {key} is not valid JSON") from None
        try:
            meta = cls(**values)
        except TypeError as exc:
            raise ModelError(f"{source}: incomplete metadata ({exc})") from None
        if np.asarray(meta.K).shape != (3, 3) or len(meta.image_size) != 2 or len(meta.aabb) != 6:
            raise ModelError(f"{source}: metadata K must be 3x3, image_size [H, W], aabb 6 numbers")
        try:
            _check_numbers(meta, source)
        except (TypeError, ValueError) as exc:  # a string or a nested list where a number belongs
            raise ModelError(f"{source}: metadata numbers are malformed ({exc})") from None
        if meta.camera_convention != "opencv":
            raise ModelError(f"{source}: camera convention {meta.camera_convention!r} is not 'opencv'")
        if meta.ray_space not in ("world", "ndc") or (meta.ray_space == "ndc") != (meta.ndc is not None):
            raise ModelError(f"{source}: metadata ray_space {meta.ray_space!r} must be 'world', or 'ndc' "
                             "with an ndc frame")
        if meta.occupancy is not None:
            try:
                occupancy_cells(meta.occupancy)
                int(meta.student["n_points"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError(f"{source}: metadata occupancy is malformed ({exc})") from None
        return meta


def _check_numbers(meta: ModelMeta, source: str | Path) -> None:
    """Boxes of 6 finite numbers with min < max, ``0 <= near < far``, a finite K with positive focal
    lengths and an image of at least one pixel.

    Raises:
        ModelError: the first metadata key that breaks this, named.
    """
    for name in ("aabb", "content_aabb"):
        box = getattr(meta, name)
        if box is None:
            continue
        arr = np.asarray(box, dtype=np.float64).reshape(-1)
        if arr.shape != (6,) or not np.isfinite(arr).all() or not (arr[:3] < arr[3:]).all():
            raise ModelError(f"{source}: metadata {name} must be 6 finite numbers with min < max, got {box}")
    if not (math.isfinite(meta.near) and math.isfinite(meta.far) and 0 <= meta.near < meta.far):
        raise ModelError(f"{source}: metadata near ({meta.near}) must be >= 0 and below far ({meta.far})")
    K = np.asarray(meta.K, dtype=np.float64)
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        raise ModelError(f"{source}: metadata K must be finite with focal lengths > 0, got {meta.K}")
    if min(int(v) for v in meta.image_size) < 1:
        raise ModelError(f"{source}: metadata image_size must be at least 1x1, got {meta.image_size}")


def occupancy_cells(record: dict[str, Any]) -> np.ndarray:
    """The ``[G, G, G]`` bool cells of an empty-space record ``{"resolution": G, "bits": base64}``.

    Raises:
        ValueError: malformed record.
    """
    G = int(record["resolution"])
    raw = np.frombuffer(base64.b64decode(record["bits"], validate=True), dtype=np.uint8)
    if G < 1 or raw.size != (G**3 + 7) // 8:
        raise ValueError(f"resolution {G} needs {(G**3 + 7) // 8} bytes, bits hold {raw.size}")
    return np.unpackbits(raw, count=G**3).astype(bool).reshape(G, G, G)
