"""Scene loading: one entry point (:func:`load_scene`) for every layout, the scene kind and its bounds.

Every pose is converted once into the OpenCV convention of :mod:`core.cameras`. Images are kept as
straight-alpha RGBA float32 in ``[0, 1]`` (alpha is 1 for RGB files) so a stage can composite them
onto any background (:meth:`SceneSplit.rgb`).

Layouts understood:

* Blender / NeRF synthetic ``transforms_{train,val,test}.json`` and nerfstudio / instant-ngp
  ``transforms.json`` (:mod:`scenes.blender`).
* LLFF: ``poses_bounds.npy`` with ``images[_<f>]/`` and optional ``masks[_<f>]/`` (:mod:`scenes.llff`).

Scene kinds (``scene.kind``, ``auto`` by default): an **object** capture (cameras around an object,
possibly with masks: a box around the object, near/far from the rig) or a **forward**-facing one (all
cameras look the same way at a scene that fills the frame, no masks: rays in NDC, :mod:`core.ndc`).
``auto`` picks ``forward`` when no view has an alpha mask and every viewing axis lies within
``FORWARD_MAX_ANGLE_DEG`` of the mean one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from core.cameras import CAMERA_CONVENTION
from core.checks import ConfigValueError, at_least, positive
from core.errors import SceneError
from core.ndc import NDCSpace, average_pose, ndc_box
from core.rig import NDC_NEAR_FRACTION, scene_center
from scenes.blender import load_transforms
from scenes.images import SPLITS, SceneSplit
from scenes.llff import is_llff, load_llff

__all__ = ["DEMO_SCENE", "FORWARD_MAX_ANGLE_DEG", "SCENE_KINDS", "SPLITS", "Scene", "SceneConfig",
           "SceneSplit", "load_scene", "scene_kind"]

log = logging.getLogger(__name__)

DEMO_SCENE = Path(__file__).resolve().parent / "data" / "mic_100"
SCENE_KINDS = ("auto", "object", "forward")
FORWARD_MAX_ANGLE_DEG = 40.0  # LLFF captures stay within ~20 deg; object rigs span 90 deg and more
# object box <= this x the median view's half-width: with 1.1, 0.8% of the tankard's masked rays
# had their depth range outside the box (its handle was clipped); none with 1.25
FRUSTUM_MARGIN = 1.5


@dataclass
class SceneConfig:
    """Which scene to load and how.

    Attributes:
        path: scene folder; ``None`` means the embedded demo scene.
        name: short name for run folders; ``None`` takes the folder name.
        downscale: integer factor by which images are reduced (area average on premultiplied alpha);
            ``None``: 1 for ``transforms.json`` scenes, for LLFF the factor folder that fits a CPU
            (:func:`scenes.llff.load_llff`).
        kind: ``auto``, ``object`` or ``forward`` (see the module docstring).
        holdout_every: every n-th view is a test (and val) view when the scene names no split.
        background: RGB in ``[0, 1]`` that evaluation composites RGBA images onto.
        aabb: scene box ``[xmin, ymin, zmin, xmax, ymax, zmax]``; ``None`` derives it from the cameras.
        near: ray start distance; ``None`` derives it from the cameras and the box.
        far: ray end distance; ``None`` derives it from the cameras and the box.
        max_views: cap on the views loaded per split (``None`` = all); for quick tests only.
    """

    path: str | None = None
    name: str | None = None
    downscale: int | None = None
    kind: str = "auto"
    holdout_every: int = 8
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    aabb: list[float] | None = None
    near: float | None = None
    far: float | None = None
    max_views: int | None = None

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad box, near/far or view cap (the folder
        dependent checks are :func:`load_scene`'s)."""
        at_least(self, 1, "max_views")
        positive(self, "near", "far")
        if self.near is not None and self.far is not None and self.near >= self.far:
            raise ConfigValueError("near", f"must be below far ({self.far})", self.near)
        box = self.aabb
        if box is not None and (len(box) != 6 or not all(math.isfinite(v) for v in box)
                                or not all(box[i] < box[i + 3] for i in range(3))):
            raise ConfigValueError("aabb", "must be 6 finite numbers [xmin, ymin, zmin, xmax, ymax, zmax] "
                                   "with min < max", list(box))


@dataclass
class Scene:
    """A loaded scene: its splits, its box and its ray range.

    Poses are in the scene's world frame. For an ``object`` scene the box and ray range are too; for
    a ``forward`` scene (``ndc`` set) they are in its NDC frame, where models take rays
    (:func:`core.ndc.to_ndc`).
    """

    name: str
    root: Path
    splits: dict[str, SceneSplit]
    aabb: Tensor  # [6]
    near: float
    far: float
    background: list[float]
    convention: str = CAMERA_CONVENTION
    kind: str = "object"
    ndc: NDCSpace | None = None

    def split(self, name: str) -> SceneSplit:
        if name not in self.splits:
            raise SceneError(f"{self.root}: scene has no '{name}' split")
        return self.splits[name]


def load_scene(cfg: SceneConfig | None = None, splits: tuple[str, ...] = SPLITS) -> Scene:
    """Load a scene folder (or the embedded demo scene) into the OpenCV convention.

    Raises:
        SceneError: naming the file and the problem, for any unusable input.
    """
    cfg = cfg or SceneConfig()
    root = Path(cfg.path).expanduser() if cfg.path else DEMO_SCENE
    if not root.is_dir():
        raise SceneError(f"{root}: scene folder not found")
    if cfg.downscale is not None and cfg.downscale < 1:
        raise SceneError(f"{root}: downscale must be a positive integer, got {cfg.downscale}")
    if cfg.holdout_every < 2:
        raise SceneError(f"{root}: scene.holdout_every must be >= 2, got {cfg.holdout_every}")
    if cfg.kind not in SCENE_KINDS:
        raise SceneError(f"{root}: scene.kind must be one of {list(SCENE_KINDS)}, got {cfg.kind!r}")
    background = list(cfg.background)
    if len(background) != 3 or not all(0.0 <= float(c) <= 1.0 for c in background):
        raise SceneError(f"{root}: scene.background must be 3 numbers in [0, 1], got {background}")
    need = tuple(dict.fromkeys(("train", *splits)))  # the rig (box, kind) always comes from train
    bounds: Tensor | None
    if is_llff(root):
        data = load_llff(root, need, cfg.downscale, cfg.max_views, cfg.holdout_every)
        loaded, bounds = data.splits, data.bounds
    else:
        loaded, bounds = load_transforms(root, need, cfg.downscale or 1, cfg.max_views, cfg.holdout_every)
    train = loaded["train"]
    kind = scene_kind(train, cfg.kind)
    log.info("scene %s: %s capture (scene.kind=%s)", root.name, kind, cfg.kind)
    ndc = None
    if kind == "forward":
        ndc, aabb, near, far = _forward_bounds(bounds, train, cfg)
    else:
        aabb, near, far = _scene_bounds(train.c2w, cfg, train.K, train.hw)
    return Scene(
        name=cfg.name or root.name,
        root=root,
        splits={k: v for k, v in loaded.items() if k in splits},
        aabb=aabb,
        near=near,
        far=far,
        background=background,
        kind=kind,
        ndc=ndc,
    )


def scene_kind(train: SceneSplit, requested: str = "auto") -> str:
    """``object`` or ``forward`` for a training split (``requested`` wins unless ``auto``).

    Masks (alpha below 1 anywhere) mean an object capture; otherwise the spread of the viewing axes
    decides: all within ``FORWARD_MAX_ANGLE_DEG`` of their mean is a forward-facing capture.
    """
    if requested != "auto":
        return requested
    if train.has_masks:
        return "object"
    axes = torch.nn.functional.normalize(train.c2w[:, :3, 2].double(), dim=-1)
    mean = torch.nn.functional.normalize(axes.mean(0), dim=0)
    spread = math.degrees(math.acos(float((axes @ mean).clamp(-1, 1).min())))
    return "forward" if spread < FORWARD_MAX_ANGLE_DEG else "object"



def _scene_bounds(c2w: Tensor, cfg: SceneConfig, K: Tensor, hw: tuple[int, int]
                  ) -> tuple[Tensor, float, float]:
    """Object scene box and near/far: configured values win; otherwise derived from the camera rig.

    The derived box is centred on the point the cameras look at, with half-size 0.375 x the median
    camera distance (the framing of an object capture such as the NeRF synthetic scenes:
    box [-1.5, 1.5]^3 for cameras 4.03 away), or less when the lenses are long: at most
    ``FRUSTUM_MARGIN`` x the half-width of the median view's frustum at that distance (an object seen
    whole by the cameras fits in it, even off the rig's centre). near/far bound that box's
    circumscribed sphere.
    """
    centers = c2w[:, :3, 3]
    if cfg.aabb is not None:
        if len(cfg.aabb) != 6:
            raise SceneError(f"scene.aabb must have 6 numbers, got {len(cfg.aabb)}")
        aabb = torch.tensor(cfg.aabb, dtype=torch.float32)
        if not bool((aabb[3:] > aabb[:3]).all()):
            raise SceneError(f"scene.aabb {cfg.aabb}: max corner must exceed min corner")
    else:
        center = scene_center(c2w)
        radius = float((centers - center).norm(dim=-1).median())
        H, W = hw
        tan_half_fov = float(torch.maximum(W / 2 / K[:, 0, 0], H / 2 / K[:, 1, 1]).median())
        half = min(0.375 * radius, FRUSTUM_MARGIN * radius * tan_half_fov)
        aabb = torch.cat([center - half, center + half])
    box_center = (aabb[:3] + aabb[3:]) / 2
    box_radius = float((aabb[3:] - aabb[:3]).norm() / 2)
    dist = (centers - box_center).norm(dim=-1)
    near = cfg.near if cfg.near is not None else max(float(dist.min()) - box_radius, 0.05 * float(dist.min()))
    far = cfg.far if cfg.far is not None else float(dist.max()) + box_radius
    if not 0 <= near < far:
        raise SceneError(f"scene near/far must satisfy 0 <= near < far, got {near}, {far}")
    return aabb, float(near), float(far)


def _forward_bounds(bounds: Tensor | None, train: SceneSplit, cfg: SceneConfig
                    ) -> tuple[NDCSpace, Tensor, float, float]:
    """NDC frame, NDC box and ray range of a forward-facing scene.

    The reference camera is the training views' average pose with the first one's lens; its near plane
    sits at ``NDC_NEAR_FRACTION`` of the nearest content (the smallest per-view near bound, else
    ``scene.near``). The box holds every training ray (:func:`core.ndc.ndc_box`) unless ``scene.aabb``
    (NDC) is set; rays run from the near plane (``near = 0``) to the far side of the box.
    """
    nearest = cfg.near
    if nearest is None and bounds is not None:
        nearest = float(bounds[:, 0].min())
    if nearest is None or not nearest > 0:
        raise SceneError(f"forward-facing scene without depth bounds: set scene.near (world units, > 0), "
                         f"got {nearest}")
    H, W = train.hw
    K = train.K[0]
    scale = [float(2 * K[0, 0] / W), float(2 * K[1, 1] / H)]
    space = NDCSpace(c2w=average_pose(train.c2w).tolist(), scale=scale, near=NDC_NEAR_FRACTION * nearest)
    if cfg.aabb is not None:
        aabb, _, _ = _scene_bounds(train.c2w, cfg, train.K, train.hw)
    else:
        aabb = ndc_box(space, train.c2w, train.K, train.hw)
    far = float((aabb[3:] - aabb[:3]).norm())  # longer than any ray's path through the box
    return space, aabb, 0.0, far
