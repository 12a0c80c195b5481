"""Camera paths for rendering: the default path around the training rig, and camera-path JSON files.

Two kinds of rig (``rig["kind"]``, :mod:`core.rig`, stored in the ONNX metadata): an ``object`` rig,
whose default path is an orbit around the point the cameras look at (:func:`orbit_poses`), and a
``forward``-facing rig (an LLFF-style capture: every camera looks the same way at a scene that fills the
frame), whose default path is NeRF's ``render_path_spiral`` without the depth oscillation: a circle of
cameras around the average position, in its image plane, all looking at a focus point in front
(:func:`forward_poses`).
An orbit of a forward rig would go behind the scene, where nothing was seen.

All poses returned are ``[C, 4, 4]`` camera-to-world in the OpenCV convention of ``core.cameras``;
OpenGL poses from files are converted by ``core.cameras.opengl_to_opencv``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.cameras import RIGIDITY_TOLERANCE, intrinsics_matrix, look_at, opengl_to_opencv, rigidity_error
from core.errors import UserError
from core.rig import RIG_KINDS, orbit_basis
from core.rig import camera_rig as camera_rig  # re-exported: the rig is defined in core.rig
from core.rig import focus_depth as focus_depth

log = logging.getLogger(__name__)


def forward_poses(rig: dict[str, Any], n_frames: int, radius_scale: float = 1.0) -> Tensor:
    """``[n_frames, 4, 4]`` poses on a circle around the average position of a forward rig.

    The circle lies in the average pose's image plane (radius ``rig["path_radius"] * radius_scale``,
    starting on its right and turning towards image-down); every pose looks at ``rig["center"]``.

    Args:
        rig: from :func:`core.rig.forward_rig`.
        n_frames: number of poses (evenly spaced in angle).
        radius_scale: multiplies the rig's path radius.
    """
    avg = torch.tensor(rig["c2w"], dtype=torch.float64)
    theta = torch.arange(n_frames, dtype=torch.float64) / n_frames * 2 * math.pi
    r = float(rig["path_radius"]) * radius_scale
    eye = avg[:3, 3] + r * (torch.cos(theta)[:, None] * avg[:3, 0] + torch.sin(theta)[:, None] * avg[:3, 1])
    return look_at(eye, torch.tensor(rig["center"], dtype=torch.float64), torch.tensor(rig["up"]))


def default_path(rig: dict[str, Any], n_frames: int, elevation_deg: float | None = None,
                 radius_scale: float = 1.0) -> Tensor:
    """``[n_frames, 4, 4]`` the default render path of a rig: :func:`orbit_poses` of an object rig
    (also a rig without ``kind``, as older exports wrote), :func:`forward_poses` of a forward one
    (``elevation_deg`` does not apply there and is ignored with a warning).

    Raises:
        UserError: no rig, an unknown kind, or ``n_frames < 1``.
    """
    kind = rig.get("kind", "object") if rig else "object"
    if kind not in RIG_KINDS:
        raise UserError(f"camera rig kind must be one of {list(RIG_KINDS)}, got {kind!r}")
    if kind == "object":
        return orbit_poses(rig, n_frames, elevation_deg, radius_scale)
    if n_frames < 1:
        raise UserError(f"a camera path needs n_frames >= 1 (got {n_frames})")
    if elevation_deg is not None:
        log.warning("orbit.elevation_deg=%s ignored: a forward-facing rig's path is a circle in the image "
                    "plane (orbit.radius_scale sizes it)", elevation_deg)
    return forward_poses(rig, n_frames, radius_scale)


def orbit_poses(rig: dict[str, Any], n_frames: int, elevation_deg: float | None = None,
                radius_scale: float = 1.0) -> Tensor:
    """``[n_frames, 4, 4]`` poses on a circle around ``rig["center"]``, looking at it.

    Args:
        rig: from :func:`core.rig.camera_rig` (also stored in the ONNX metadata).
        n_frames: number of poses (evenly spaced in azimuth).
        elevation_deg: elevation override in degrees (default: the rig's).
        radius_scale: multiplies the rig's radius.
    """
    if not rig or n_frames < 1:
        raise UserError(f"an orbit needs the camera rig in the model metadata and n_frames >= 1 "
                        f"(got {n_frames})")
    center = torch.tensor(rig["center"], dtype=torch.float32)
    up = torch.nn.functional.normalize(torch.tensor(rig["up"], dtype=torch.float32), dim=0)
    e1, e2 = orbit_basis(up)
    el = math.radians(elevation_deg) if elevation_deg is not None else float(rig["elevation"])
    az = torch.arange(n_frames, dtype=torch.float32) / n_frames * 2 * math.pi
    dirs = math.cos(el) * (torch.cos(az)[:, None] * e1 + torch.sin(az)[:, None] * e2) + math.sin(el) * up
    eye = center + float(rig["radius"]) * radius_scale * dirs
    return look_at(eye, center, up)


def _matrix(value: Any, source: str, index: int) -> Tensor:
    try:
        m = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError):
        raise UserError(f"{source}: pose {index} is not a list of numbers") from None
    if m.numel() in (12, 16) and m.dim() <= 2:
        m = m.reshape(-1, 4)
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]])])
    if m.shape != (4, 4):
        raise UserError(f"{source}: pose {index} must be 4x4 (or 16 numbers), got shape {list(m.shape)}")
    if not torch.isfinite(m).all():
        raise UserError(f"{source}: pose {index} is not finite")
    err = rigidity_error(m)
    if err > RIGIDITY_TOLERANCE:
        raise UserError(f"{source}: pose {index} is not rigid (rotation not orthonormal with det 1, last row "
                        f"0 0 0 1; error {err:.3g})")
    return m


def _image_size(size: Any, source: str) -> tuple[int, int]:
    """``(H, W)`` of a camera path: two whole numbers >= 1."""
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"{source}: image size must be [H, W], got {size}") from None
    if min(H, W) < 1:
        raise UserError(f"{source}: image size must be at least 1x1, got {[H, W]}")
    return H, W


def read_camera_path(path: str | Path, image_size: tuple[int, int]
                     ) -> tuple[Tensor, Tensor | None, tuple[int, int]]:
    """Read poses from a JSON file.

    Accepted layouts:

    * nerfstudio camera path: ``{"camera_path": [{"camera_to_world": [16 numbers], "fov": degrees}],
      "render_height", "render_width"}``; poses OpenGL, ``fov`` vertical (as nerfstudio writes it);
    * ``{"convention": "opencv" | "opengl", "c2w": [[4x4], ...], "K": [3x3] (optional),
      "image_size": [H, W] (optional)}``;
    * a bare list of 4x4 OpenCV poses.

    Args:
        path: the JSON file.
        image_size: ``(H, W)`` used when the file gives none.

    Returns:
        ``c2w [C, 4, 4]`` (OpenCV), ``K [C, 3, 3]`` or ``None`` (use the model's), ``(H, W)``.

    Raises:
        UserError: unreadable file, unknown layout, or a pose of the wrong shape (naming the file).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: camera path file not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and "camera_path" in data:
        return _read_nerfstudio(data, str(path), image_size)
    if isinstance(data, list):
        data = {"c2w": data, "convention": "opencv"}
    if not isinstance(data, dict) or not isinstance(data.get("c2w"), list) or not data["c2w"]:
        raise UserError(f"{path}: expected a nerfstudio camera path, a {{'c2w': [...]}} object "
                        "or a list of poses")
    c2w = torch.stack([_matrix(p, str(path), i) for i, p in enumerate(data["c2w"])])
    convention = data.get("convention", "opencv")
    if convention not in ("opencv", "opengl"):
        raise UserError(f"{path}: convention must be 'opencv' or 'opengl', got {convention!r}")
    if convention == "opengl":
        c2w = opengl_to_opencv(c2w)
    K = None
    if "K" in data:
        K_one = torch.tensor(data["K"], dtype=torch.float32)
        if K_one.shape != (3, 3):
            raise UserError(f"{path}: K must be 3x3, got shape {list(K_one.shape)}")
        if not (torch.isfinite(K_one).all() and K_one[0, 0] > 0 and K_one[1, 1] > 0):
            raise UserError(f"{path}: K must be finite with positive focal lengths, got {K_one.tolist()}")
        K = K_one.expand(c2w.shape[0], 3, 3)
    return c2w, K, _image_size(data.get("image_size", image_size), str(path))


def _read_nerfstudio(data: dict[str, Any], source: str, image_size: tuple[int, int]
                     ) -> tuple[Tensor, Tensor, tuple[int, int]]:
    frames = data["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{source}: camera_path must be a non-empty list")
    H, W = _image_size([data.get("render_height", image_size[0]), data.get("render_width", image_size[1])],
                       source)
    fps = data.get("fps")
    if fps is not None and not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise UserError(f"{source}: fps must be a number > 0, got {fps}")
    poses, Ks = [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "camera_to_world" not in frame:
            raise UserError(f"{source}: camera_path[{i}] has no camera_to_world")
        poses.append(_matrix(frame["camera_to_world"], source, i))
        try:
            fov = math.radians(float(frame.get("fov", data.get("default_fov", 50.0))))
        except (TypeError, ValueError):
            fov = math.nan
        if not 0.0 < fov < math.pi:  # also false for NaN
            raise UserError(f"{source}: camera_path[{i}] fov must be in (0, 180) degrees, got "
                            f"{frame.get('fov', data.get('default_fov'))}")
        f = 0.5 * H / math.tan(0.5 * fov)  # nerfstudio's fov is vertical
        Ks.append(intrinsics_matrix(f, f, W / 2, H / 2))
    return opengl_to_opencv(torch.stack(poses)), torch.stack(Ks), (H, W)
