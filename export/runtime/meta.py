"""The metadata of an exported light field: the contract between ``export.onnx`` and every runtime.

:class:`ModelMeta` is the runtime's torch-free reading of the ONNX ``metadata_props`` that
``export.onnx`` writes: the scene facts under one key (``lightfield.scene``, read by :class:`SceneFacts`,
the twin of ``core.scene_facts.SceneFacts``) beside the model's own facts. It imports nothing of ours, so a
copied runtime keeps working on its own.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "lightfield-distill/onnx"
FORMAT_VERSION = 2  # 2: the scene facts under one key (lightfield.scene); 1: top-level keys
META_PREFIX = "lightfield."
INPUT_NAMES = ("rays_o", "rays_d")
OUTPUT_NAME = "rgb"
# decoder -> the graph's inputs: a ray model maps rays [N, 3] to colors [N, 3]; an image model maps one
# camera (c2w [4, 4], K [3, 3], float32) to its image rgb [H, W, 3] (H, W: ModelMeta.output_size)
DECODER_INPUTS = {"ray": INPUT_NAMES, "image": ("c2w", "K")}
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


# The scene facts' vocabulary, as core.scene_facts has it (this package imports nothing of ours).
CAMERA_CONVENTION = "opencv"
SCENE_KINDS = ("object", "forward")
RIG_KINDS = ("object", "forward")


@dataclass(frozen=True)
class SceneFacts:
    """The scene facts of an exported student, as the metadata key ``lightfield.scene`` holds them.

    The torch-free twin of :class:`core.scene_facts.SceneFacts` (the one definition, which ``export.onnx``
    writes): the same fields in the same order with the same defaults, and the same records refused
    (``tests/test_scene_facts.py`` checks both against one list of bad records). Kept apart so that a copied
    runtime needs nothing but numpy and ONNX Runtime.

    Attributes:
        aabb: ``[6]`` scene box (min xyz, max xyz) in the world frame of the scene's camera files, or in
            the NDC frame ``ndc`` of a forward-facing scene.
        content_aabb: ``[6]`` the student's content box (inside ``aabb``): rays that miss it show
            ``background`` (the graph does this itself; informational).
        near: start of the ray range sampled by the student.
        far: end of the ray range.
        image_size: ``[H, W]`` of the training cameras.
        K: ``[3, 3]`` intrinsics of the training cameras (pixels).
        scene_name: name of the scene the student was trained on.
        background: ``[3]`` RGB the training images were composited onto.
        camera_convention: always ``"opencv"``.
        scene_kind: ``object`` or ``forward``.
        ndc: the NDC frame (``c2w`` 4x4, ``scale`` [sx, sy], ``near``) of a forward-facing scene, whose
            rays the graph turns into NDC rays itself (every ray is evaluated: no miss background);
            ``None``: the world frame.
        occupancy: the student's empty-space grid over ``content_aabb`` (``resolution`` G, ``bits``:
            base64 of the G^3 cells, x-major, 8 per byte, first cell in the high bit), or ``None``: a
            ray none of whose ``student["n_points"]`` bin-centre points lies in a set cell shows
            ``background`` (the graph does this itself; runtimes skip those rays: ``rays_cross_cells``).
        rig: the training camera rig for default paths: ``kind`` ``object`` with ``center`` [3], ``up``
            [3], ``radius``, ``elevation`` (radians above the plane normal to ``up``), for an orbit; or
            ``forward`` with ``c2w`` [4][4] (the average pose), ``focus_depth``, ``center`` [3] (the focus
            point), ``up`` [3] and ``path_radius``, for a circle around the average camera looking at the
            focus point. ``None``: none recorded.
    """

    # field for field core.scene_facts.SceneFacts (a deliberate twin: this package imports no torch);
    # tests/test_scene_facts.py checks names, order and defaults, and one list of bad records against both
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

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> SceneFacts:
        """Read and check a record (the value of ``lightfield.scene``).

        Raises:
            ModelError: a missing or unknown key, or a value out of range (one line naming ``source``).
        """
        if not isinstance(data, dict):
            raise ModelError(f"{source}: metadata scene must be an object, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
        unknown = sorted(set(data) - set(names))
        if missing:
            raise ModelError(f"{source}: incomplete metadata (scene facts missing {missing})")
        if unknown:
            raise ModelError(f"{source}: metadata scene facts have unknown keys {unknown}")
        facts = cls(**{k: data[k] for k in names if k in data})
        if np.asarray(facts.K).shape != (3, 3) or len(facts.image_size) != 2 or len(facts.aabb) != 6:
            raise ModelError(f"{source}: metadata K must be 3x3, image_size [H, W], aabb 6 numbers")
        try:
            facts._check_numbers(source)
        except (TypeError, ValueError) as exc:  # a string or a nested list where a number belongs
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"{source}: metadata numbers are malformed ({exc})") from None
        facts._check_records(source)
        return facts

    def _check_numbers(self, source: str | Path) -> None:
        """Boxes of 6 finite numbers with min < max, ``0 <= near < far`` (finite), a finite K with positive
        focal lengths, an image of at least one pixel and a background of 3 finite numbers.

        Raises:
            ModelError: the first metadata key that breaks this, named.
        """
        for name in ("aabb", "content_aabb"):
            box = getattr(self, name)
            arr = np.asarray(box, dtype=np.float64).reshape(-1)
            if arr.shape != (6,) or not np.isfinite(arr).all() or not (arr[:3] < arr[3:]).all():
                raise ModelError(f"{source}: metadata {name} must be 6 finite numbers with min < max, "
                                 f"got {box}")
        near, far = float(self.near), float(self.far)
        if not (math.isfinite(near) and math.isfinite(far) and 0 <= near < far):
            raise ModelError(f"{source}: metadata near ({self.near}) must be >= 0 and below far ({self.far})")
        K = np.asarray(self.K, dtype=np.float64)
        if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
            raise ModelError(f"{source}: metadata K must be finite with focal lengths > 0, got {self.K}")
        if min(int(v) for v in self.image_size) < 1:
            raise ModelError(f"{source}: metadata image_size must be at least 1x1, got {self.image_size}")
        background = np.asarray(self.background, dtype=np.float64).reshape(-1)
        if background.shape != (3,) or not np.isfinite(background).all():
            raise ModelError(f"{source}: metadata background must be 3 finite numbers, got {self.background}")

    def _check_records(self, source: str | Path) -> None:
        """The convention, the scene kind and the nested records (NDC frame, empty-space grid, rig).

        Raises:
            ModelError: the first that is malformed, named.
        """
        if self.camera_convention != CAMERA_CONVENTION:
            raise ModelError(f"{source}: camera convention {self.camera_convention!r} is not "
                             f"{CAMERA_CONVENTION!r}")
        if self.scene_kind not in SCENE_KINDS:
            raise ModelError(f"{source}: metadata scene_kind must be one of {list(SCENE_KINDS)}, got "
                             f"{self.scene_kind!r}")
        if self.ndc is not None:
            try:
                _check_ndc(self.ndc)
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError(f"{source}: metadata ndc is malformed ({exc})") from None
        if self.occupancy is not None:
            try:
                occupancy_cells(self.occupancy)
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError(f"{source}: metadata occupancy is malformed ({exc})") from None
        rig = self.rig
        if rig is not None and (not isinstance(rig, dict) or rig.get("kind") not in RIG_KINDS
                                or len(rig.get("center", [])) != 3):
            raise ModelError(f"{source}: metadata rig must have a kind in {list(RIG_KINDS)} and a center [3]")


def _check_ndc(ndc: Any) -> None:
    """An NDC frame record: ``c2w`` 4x4, ``scale`` [sx, sy] and ``near``, scale and near positive."""
    c2w = np.asarray(ndc["c2w"], dtype=np.float64)
    scale = np.asarray(ndc["scale"], dtype=np.float64)
    near = float(ndc["near"])
    if c2w.shape != (4, 4) or scale.shape != (2,):
        raise ValueError("ndc record needs c2w (4x4), scale [sx, sy] and near")
    if not (near > 0 and scale.min() > 0):
        raise ValueError(f"ndc near and scale must be positive, got near={near}, scale={scale.tolist()}")


@dataclass
class ModelMeta:
    """The ONNX ``metadata_props`` of an exported student: its scene facts under one key
    (``lightfield.scene``), then the model's own facts, one JSON value per key.

    The scene facts read as attributes too (``meta.aabb``, ``meta.near``, ``meta.K``, ``meta.rig``, ...:
    the properties below), as the runtime and the web page's ``models.json`` use them.

    Attributes:
        scene: the scene facts (:class:`SceneFacts`).
        precision: ``fp32``, ``fp16`` or ``int8``.
        batch: fixed number of rays per call for a static-shape model, ``0`` for a dynamic batch.
        opset: ONNX opset of the graph.
        student: network shape: a ray model's (``encoding``, ``n_points``, ``n_freqs``, ``width``,
            ``depth``, ``ray_range``, ``grid``), an image model's (``scale``, ``n_points``, ``channels``,
            ``resolutions``, ``width``, ``depth``, ``tail``, ``activation``: its ImageStudentConfig).
        flops_per_ray: multiply-add FLOPs (x2) of the MLP per ray (``0`` for an image model: not counted).
        encoding: how the graph encodes rays: ``pe`` (R2L's positional encoding, the student's own
            ops), ``fused`` (the same, folded into matrix products, see ``export/fused.py``; equal up to
            float32 rounding), ``hash`` (hash-grid features looked up with Gather in the graph) or
            ``planes`` (an image model's tri-plane features, read with GridSample in the graph).
        checkpoint_sha256: sha256 of the student checkpoint the file was exported from (provenance).
        decoder: ``ray`` (inputs ``rays_o``, ``rays_d`` ``[N, 3]``, output ``rgb [N, 3]``) or ``image``
            (inputs ``c2w [4, 4]`` and ``K [3, 3]`` float32, intrinsics in pixels of the output image;
            output ``rgb [H, W, 3]``; rays are built inside the graph).
        output_size: ``[H, W]`` an image model draws (its shapes are static: one file per size);
            ``[]`` for a ray model.
        format_version: version of this metadata layout (2: the scene facts under one key; 1: as
            top-level keys).
    """

    scene: SceneFacts
    precision: str = "fp32"
    batch: int = 0
    opset: int = 18
    student: dict[str, Any] = field(default_factory=dict)
    flops_per_ray: int = 0
    encoding: str = "pe"
    checkpoint_sha256: str | None = None
    decoder: str = "ray"
    output_size: list[int] = field(default_factory=list)
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
            ModelError: metadata missing, of another format or version (an older one: export again), or
                malformed.
        """
        if props.get(f"{META_PREFIX}format") != FORMAT:
            raise ModelError(f"{source}: no {FORMAT} metadata (not exported by export.onnx?)")
        try:
            version = json.loads(props[f"{META_PREFIX}format_version"])
        except (KeyError, json.JSONDecodeError):
            raise ModelError(f"{source}: metadata has no readable format_version") from None
        if isinstance(version, int) and not isinstance(version, bool) and version < FORMAT_VERSION:
            raise ModelError(f"{source}: exported by an older version (metadata format version {version}): "
                             "export again (python -m export.onnx)")
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
        if "scene" not in values:
            raise ModelError(f"{source}: incomplete metadata (no {META_PREFIX}scene)")
        values["scene"] = SceneFacts.from_dict(values["scene"], source)
        try:
            meta = cls(**values)
        except TypeError as exc:
            raise ModelError(f"{source}: incomplete metadata ({exc})") from None
        if meta.decoder not in DECODER_INPUTS:
            raise ModelError(f"{source}: metadata {META_PREFIX}decoder={meta.decoder!r} is not one of "
                             f"{list(DECODER_INPUTS)}")
        size = meta.output_size
        if meta.decoder == "image" and not (isinstance(size, list) and len(size) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise ModelError(f"{source}: metadata {META_PREFIX}output_size={size!r}: an image model needs "
                             "[H, W], two positive integers")
        if meta.occupancy is not None:
            try:
                int(meta.student["n_points"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError(f"{source}: metadata occupancy needs student.n_points ({exc})") from None
        return meta

    # The scene facts as attributes (what the runtime and the page read): one read-only property each,
    # spelled out (not __getattr__) so that type checkers know them.
    scene_name = property(lambda self: self.scene.scene_name, doc="Name of the scene.")
    near = property(lambda self: self.scene.near, doc="Start of the ray range.")
    far = property(lambda self: self.scene.far, doc="End of the ray range.")
    aabb = property(lambda self: self.scene.aabb, doc="``[6]`` scene box.")
    content_aabb = property(lambda self: self.scene.content_aabb, doc="``[6]`` the student's content box.")
    image_size = property(lambda self: self.scene.image_size, doc="``[H, W]`` of the training cameras.")
    K = property(lambda self: self.scene.K, doc="``[3, 3]`` intrinsics of the training cameras.")
    camera_convention = property(lambda self: self.scene.camera_convention, doc="Always ``opencv``.")
    background = property(lambda self: self.scene.background, doc="``[3]`` RGB of the background.")
    scene_kind = property(lambda self: self.scene.scene_kind, doc="``object`` or ``forward``.")
    ndc = property(lambda self: self.scene.ndc, doc="The NDC frame of a forward-facing scene, or None.")
    occupancy = property(lambda self: self.scene.occupancy, doc="The empty-space grid record, or None.")

    @property
    def rig(self) -> dict[str, Any]:
        """The training camera rig (``{}``: none recorded: the page makes one from the content box)."""
        return dict(self.scene.rig or {})

    @property
    def ray_space(self) -> str:
        """``world`` (box, near and far in the world frame; rays that miss the content box show the
        background) or ``ndc`` (a forward-facing scene: the graph turns world rays into NDC rays)."""
        return "ndc" if self.scene.ndc is not None else "world"


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
