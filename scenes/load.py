"""Scene loading: Blender / NeRF-synthetic and nerfstudio / instant-ngp ``transforms.json``.

Every pose is converted once into the OpenCV convention of :mod:`core.cameras`. Images are kept as
straight-alpha RGBA float32 in ``[0, 1]`` (alpha is 1 for RGB files) so a stage can composite them
onto any background (:meth:`SceneSplit.rgb`).

Layouts understood:

* Blender / NeRF synthetic: ``transforms_{train,val,test}.json`` with a global ``camera_angle_x``.
* nerfstudio / instant-ngp: one ``transforms.json``; intrinsics as ``camera_angle_x`` (optionally
  ``camera_angle_y``) or ``fl_x fl_y cx cy w h``, globally or per frame. Splits come from
  ``train_filenames``/``test_filenames``/``val_filenames`` if present, else every 8th frame is held
  out for test and val. A frame may name a ``mask_path`` (single channel, 0 = background: the alpha
  channel) and ``bounds`` (``[near, far]`` depths of its content, as LLFF's).
* LLFF: ``poses_bounds.npy`` with ``images[_<f>]/`` and optional ``masks[_<f>]/`` (:mod:`scenes.llff`).

``file_path`` is relative to the JSON file, with or without extension.

Scene kinds (``scene.kind``, ``auto`` by default): an **object** capture (cameras around an object,
possibly with masks: a box around the object, near/far from the rig) or a **forward**-facing one (all
cameras look the same way at a scene that fills the frame, no masks: rays in NDC, :mod:`core.ndc`).
``auto`` picks ``forward`` when no view has an alpha mask and every viewing axis lies within
``FORWARD_MAX_ANGLE_DEG`` of the mean one.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.cameras import (
    CAMERA_CONVENTION,
    RIGIDITY_TOLERANCE,
    focal_from_fov,
    intrinsics_matrix,
    opengl_to_opencv,
    rigidity_error,
)
from core.checks import ConfigValueError, at_least, positive
from core.errors import SceneError
from core.ndc import NDCSpace, average_pose, ndc_box
from core.rig import NDC_NEAR_FRACTION, scene_center
from scenes.images import SceneSplit, downscale_image, read_image, read_mask
from scenes.llff import is_llff, load_llff

log = logging.getLogger(__name__)

DEMO_SCENE = Path(__file__).resolve().parent / "data" / "mic_100"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".exr")
SPLITS = ("train", "val", "test")
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
        frames_by_split = _read_frames(root, need, cfg.holdout_every)
        loaded = {
            name: _load_split(root, json_path, meta, frames, cfg.downscale or 1, cfg.max_views)
            for name, (json_path, meta, frames) in frames_by_split.items()
        }
        bounds = _frame_bounds(frames_by_split)
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except OSError as exc:
        raise SceneError(f"{path}: cannot read camera file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SceneError(f"{path}: malformed JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise SceneError(f"{path}: malformed JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise SceneError(f"{path}: camera file has no 'frames' list")
    return meta


def _read_frames(root: Path, splits: tuple[str, ...], holdout_every: int
                 ) -> dict[str, tuple[Path, dict, list]]:
    """Map each split to ``(json file, its top-level dict, its frames)``."""
    out: dict[str, tuple[Path, dict, list]] = {}
    if any((root / f"transforms_{s}.json").exists() for s in SPLITS):
        for s in splits:
            path = root / f"transforms_{s}.json"
            if not path.exists():
                if s == "val":
                    continue
                raise SceneError(f"{path}: camera file not found")
            meta = _read_json(path)
            out[s] = (path, meta, meta["frames"])
    else:
        path = root / "transforms.json"
        if not path.exists():
            raise SceneError(f"{root}: no transforms.json or transforms_<split>.json found")
        meta = _read_json(path)
        for s in splits:
            selected = _select_split(path, meta, s, holdout_every)
            if selected is not None:
                out[s] = (path, meta, selected)
    for s, (path, _, frames) in out.items():
        if not frames:
            raise SceneError(f"{path}: the '{s}' split is empty")
    return out


def _stem(file_path: Any) -> str:
    return str(Path(str(file_path)).with_suffix(""))


def _select_split(path: Path, meta: dict[str, Any], split: str, holdout_every: int
                  ) -> list[dict[str, Any]] | None:
    """Frames of ``split`` in a single ``transforms.json`` (``None``: the file defines no such split).

    With ``<split>_filenames`` lists (nerfstudio), a split without a list is an error (``val`` is
    optional), and a listed name that matches no frame too; otherwise every ``holdout_every``-th frame
    is held out.
    """
    frames = meta["frames"]
    listed = meta.get(f"{split}_filenames")
    has_lists = any(f"{s}_filenames" in meta for s in SPLITS)
    if listed is None and has_lists:
        if split == "val":
            return None
        raise SceneError(f"{path}: has split filename lists but no '{split}_filenames'")
    if listed is not None:
        if not isinstance(listed, list):
            raise SceneError(f"{path}: '{split}_filenames' is not a list")
        wanted = {_stem(p) for p in listed}
        chosen = [f for f in frames if isinstance(f, dict) and _stem(f.get("file_path", "")) in wanted]
        missing = wanted - {_stem(f.get("file_path", "")) for f in chosen}
        if missing:
            raise SceneError(f"{path}: '{split}_filenames' names {len(missing)} file(s) that no frame has, "
                             f"e.g. {sorted(missing)[0]!r}")
        return chosen
    if split == "train":
        return [f for i, f in enumerate(frames) if i % holdout_every != 0]
    return [f for i, f in enumerate(frames) if i % holdout_every == 0]


def _resolve_image(json_path: Path, file_path: str) -> Path:
    base = (json_path.parent / file_path).resolve()
    if base.suffix and base.is_file():
        return base
    for ext in IMAGE_EXTENSIONS:
        candidate = base.with_name(base.name + ext)
        if candidate.is_file():
            return candidate
    raise SceneError(f"{json_path}: image '{file_path}' not found (looked for {base}[.png|.jpg|...])")


def _read_mask(path: Path, hw: tuple[int, int]) -> Tensor:
    """``[H, W]`` alpha in ``[0, 1]`` from a mask image (first channel; 0 = background)."""
    mask = read_mask(path)
    if tuple(mask.shape) != hw:
        raise SceneError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {hw[1]}x{hw[0]}")
    return mask


def _frame_bounds(frames_by_split: dict[str, tuple[Path, dict, list]]) -> Tensor | None:
    """``[M, 2]`` per-frame ``bounds`` ([near, far]) of a transforms.json scene, None if any lacks them."""
    rows = []
    for path, _, frames in frames_by_split.values():
        for frame in frames:
            b = frame.get("bounds") if isinstance(frame, dict) else None
            if b is None:
                return None
            try:
                near, far = (float(v) for v in b)
            except (TypeError, ValueError):
                raise SceneError(f"{path}: frame {frame.get('file_path')} 'bounds' is not [near, far]"
                                 ) from None
            if not 0 < near < far < math.inf:
                raise SceneError(f"{path}: frame {frame.get('file_path')} bounds {b} need 0 < near < far")
            rows.append([near, far])
    return torch.tensor(rows, dtype=torch.float32)


def _focal(json_path: Path, angle: float, size: float) -> float:
    if not 0.0 < angle < math.pi:
        raise SceneError(f"{json_path}: field of view {angle} is not in (0, pi) radians")
    return focal_from_fov(angle, int(size))


def _frame_intrinsics(json_path: Path, meta: dict, frame: dict, w: int, h: int) -> Tensor:
    """Intrinsics of one frame at the image's stored size ``w x h``."""
    def get(key: str) -> Any:
        return frame.get(key, meta.get(key))

    try:
        ref_w = float(get("w") or w)
        ref_h = float(get("h") or h)
        if get("fl_x") is not None:
            fx = float(get("fl_x"))
            fy = float(get("fl_y") if get("fl_y") is not None else fx)
        elif get("camera_angle_x") is not None:
            fx = _focal(json_path, float(get("camera_angle_x")), ref_w)
            fy = _focal(json_path, float(get("camera_angle_y")), ref_h) if get("camera_angle_y") else fx
        else:
            raise SceneError(f"{json_path}: no intrinsics (need camera_angle_x or fl_x/fl_y)")
        cx = float(get("cx") if get("cx") is not None else ref_w / 2)
        cy = float(get("cy") if get("cy") is not None else ref_h / 2)
    except SceneError:
        raise
    except (TypeError, ValueError, OverflowError):  # SceneError (a ValueError) is re-raised above
        raise SceneError(f"{json_path}: intrinsics are not numbers") from None
    if not all(math.isfinite(v) and v > 0 for v in (fx, fy, ref_w, ref_h)):
        raise SceneError(f"{json_path}: intrinsics must be finite and positive")
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise SceneError(f"{json_path}: principal point cx={cx}, cy={cy} is not finite")
    sx, sy = w / ref_w, h / ref_h
    return intrinsics_matrix(fx * sx, fy * sy, cx * sx, cy * sy)


def _frame_pose(json_path: Path, frame: dict, index: int) -> Tensor:
    index_label = f"{index} ({frame.get('file_path')})"  # the split's index; the path finds it in the file
    try:
        c2w = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
    except (KeyError, TypeError, ValueError):
        raise SceneError(f"{json_path}: frame {index_label} has no valid 4x4 'transform_matrix'") from None
    if c2w.shape == (3, 4):
        c2w = torch.cat([c2w, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if c2w.shape != (4, 4):
        raise SceneError(f"{json_path}: frame {index_label} transform_matrix has shape {tuple(c2w.shape)}")
    if not torch.isfinite(c2w).all():
        raise SceneError(f"{json_path}: frame {index_label} transform_matrix is not finite")
    err = rigidity_error(c2w)
    if err > RIGIDITY_TOLERANCE:
        raise SceneError(f"{json_path}: frame {index_label} transform_matrix is not rigid (error {err:.3g})")
    return opengl_to_opencv(c2w.float())


def _load_split(root: Path, json_path: Path, meta: dict, frames: list, downscale: int,
                max_views: int | None) -> SceneSplit:
    frames = frames[:max_views] if max_views else frames
    images, poses, Ks, files = [], [], [], []
    size: tuple[int, int] | None = None
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame:
            raise SceneError(f"{json_path}: frame {i} has no 'file_path'")
        img_path = _resolve_image(json_path, str(frame["file_path"]))
        img = read_image(img_path)
        h, w = img.shape[:2]
        if frame.get("mask_path") is not None:
            img[..., 3] = _read_mask(_resolve_image(json_path, str(frame["mask_path"])), (h, w))
        if size is None:
            size = (h, w)
        elif (h, w) != size:
            raise SceneError(f"{img_path}: image is {w}x{h}, but earlier images of this split are "
                             f"{size[1]}x{size[0]}")
        K = _frame_intrinsics(json_path, meta, frame, w, h)
        if downscale > 1:
            if h % downscale or w % downscale:
                raise SceneError(f"{img_path}: size {w}x{h} is not divisible by downscale {downscale}")
            img = downscale_image(img, downscale)
            K = K.clone()
            K[:2] /= downscale
        images.append(img)
        poses.append(_frame_pose(json_path, frame, i))
        Ks.append(K)
        files.append(str(img_path))
    # numpy's stack: torch.stack of many images took seconds here (thread contention on a busy CPU)
    stacked = torch.from_numpy(np.stack([img.numpy() for img in images]))
    return SceneSplit(images=stacked, c2w=torch.stack(poses), K=torch.stack(Ks), files=files)


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
