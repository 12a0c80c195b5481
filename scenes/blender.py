"""Blender / NeRF-synthetic and nerfstudio / instant-ngp ``transforms.json`` scenes.

Layouts understood:

* Blender / NeRF synthetic: ``transforms_{train,val,test}.json`` with a global ``camera_angle_x``.
* nerfstudio / instant-ngp: one ``transforms.json``; intrinsics as ``camera_angle_x`` (optionally
  ``camera_angle_y``) or ``fl_x fl_y cx cy w h``, globally or per frame. Splits come from
  ``train_filenames``/``test_filenames``/``val_filenames`` if present, else every ``holdout_every``-th
  frame (8 by default) is held out for test and val. A frame may name a ``mask_path`` (read by
  :func:`scenes.images.read_mask`, 0 = background: the alpha channel) and ``bounds`` (``[near, far]``
  depths of its content, as LLFF's).

``file_path`` is relative to the JSON file, with or without extension (then the first of
:data:`scenes.images.IMAGE_EXTENSIONS` found, any case). Poses are OpenGL-style camera-to-world
matrices, checked by :func:`core.cameras.check_c2w` and converted once by
:func:`core.cameras.opengl_to_opencv`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.cameras import PoseError, check_c2w, focal_from_fov, intrinsics_matrix, opengl_to_opencv
from core.errors import SceneError
from scenes.images import SPLITS, SceneSplit, downscale_image, find_image, read_image, read_mask


def load_transforms(root: Path, splits: tuple[str, ...], downscale: int, max_views: int | None,
                    holdout_every: int) -> tuple[dict[str, SceneSplit], Tensor | None]:
    """Load the ``splits`` of a ``transforms*.json`` scene folder.

    Args:
        root: the scene folder.
        splits: which of ``train``, ``val``, ``test`` to load (``val`` is skipped when the scene has none).
        downscale: integer factor by which images are reduced (area average on premultiplied alpha).
        max_views: cap on the views of each split (``None`` = all); for quick tests only.
        holdout_every: every n-th frame is a test (and val) frame when the scene names no split.

    Returns:
        The loaded splits, and the ``[M, 2]`` per-frame ``bounds`` of every loaded frame (``None``
        unless every frame has them).

    Raises:
        SceneError: naming the file and the problem, for any unusable input.
    """
    frames_by_split = _read_frames(root, splits, holdout_every)
    loaded = {name: _load_split(json_path, meta, frames, downscale, max_views)
              for name, (json_path, meta, frames) in frames_by_split.items()}
    return loaded, _frame_bounds(frames_by_split)


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
    path = find_image((json_path.parent / file_path).resolve())
    if path is None:
        raise SceneError(f"{json_path}: image '{file_path}' not found (looked for "
                         f"{(json_path.parent / file_path).resolve()}[.png|.jpg|...])")
    return path


def _read_mask(path: Path, hw: tuple[int, int]) -> Tensor:
    """``[H, W]`` alpha in ``[0, 1]`` from a mask image (:func:`scenes.images.read_mask`; 0 = background)."""
    mask = read_mask(path)
    if tuple(mask.shape) != hw:
        raise SceneError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {hw[1]}x{hw[0]}")
    return torch.from_numpy(mask)


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
    if "transform_matrix" not in frame:
        raise SceneError(f"{json_path}: frame {index_label} has no valid 4x4 'transform_matrix'")
    try:
        c2w = check_c2w(frame["transform_matrix"], f"{json_path}: frame {index_label} transform_matrix")
    except PoseError as exc:
        raise SceneError(str(exc)) from None
    return opengl_to_opencv(c2w)


def _load_split(json_path: Path, meta: dict, frames: list, downscale: int, max_views: int | None
                ) -> SceneSplit:
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
