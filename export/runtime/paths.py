"""Camera paths for rendering, in numpy: the default path around the training rig, and camera-path JSON files.

The rig is the record the export stores in the model's metadata (:attr:`ModelMeta.rig`, computed once by
``core.rig.camera_rig`` at training time); this module only reads it. Two kinds (``rig["kind"]``): an
``object`` rig, whose default path is an orbit around the point the cameras look at
(:func:`orbit_poses`), and a ``forward``-facing rig (an LLFF-style capture: every camera looks the same
way at a scene that fills the frame), whose default path is NeRF's ``render_path_spiral`` without the
depth oscillation: a circle of cameras around the average position, in its image plane, all looking at a
focus point in front (:func:`forward_poses`). An orbit of a forward rig would go behind the scene, where
nothing was seen.

All poses returned are ``[C, 4, 4]`` float32 camera-to-world in the OpenCV convention of ``core.cameras``
(+X right, +Y down, looking along +Z); OpenGL poses from files are converted by :func:`opengl_to_opencv`.
Arithmetic is float64. :func:`look_at` and :func:`orbit_basis` are the numpy twins of
``core.cameras.look_at`` and ``core.rig.orbit_basis`` (``tests/test_runtime_paths.py`` compares them): the
runtime imports neither torch nor our training code.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .cameras import check_pose
from .meta import ModelError

log = logging.getLogger(__name__)

RIG_KINDS = ("object", "forward")  # core.rig.RIG_KINDS
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """``[..., 4, 4]`` OpenGL poses (looking along -Z, +Y up) as OpenCV poses (same centres); the flip is
    its own inverse."""
    return (np.asarray(c2w) @ _GL_TO_CV).astype(np.float32)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """A ``[3, 3]`` float32 pinhole matrix from focal lengths and principal point (pixels)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def look_at(
    eye: np.ndarray,  # [C, 3]
    target: np.ndarray,  # [C, 3] or [3]
    up: np.ndarray,  # [3]
) -> np.ndarray:
    """``[C, 4, 4]`` float32 poses of cameras at ``eye`` looking at ``target``, image up as close to
    ``up`` as possible.

    Raises:
        ValueError: a camera looks along ``up`` or sits on its target (no image up).
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = _unit(np.broadcast_to(np.asarray(target, dtype=np.float64), eye.shape) - eye)
    # right-handed OpenCV frame: right = forward x up, down = forward x right (image up ~ world up)
    side = np.cross(forward, np.asarray(up, dtype=np.float64))
    if (np.linalg.norm(side, axis=-1) < 1e-6).any():
        raise ValueError("look_at: a camera looks along 'up' (or sits on its target): no image up")
    right = _unit(side)
    c2w = np.tile(np.eye(4), (eye.shape[0], 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, np.cross(forward, right), forward, eye
    return c2w.astype(np.float32)


def orbit_basis(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors ``e1``, ``e2`` (``[3]`` each) completing unit ``up`` ``[3]`` to a right-handed
    orthonormal basis: azimuth 0 of an orbit is along ``e1``, azimuth 90 degrees along ``e2`` (as
    ``export/viewer/web/camera.js`` ``orbitBasis``)."""
    up = np.asarray(up, dtype=np.float64)
    helper = np.zeros(3)
    helper[0 if abs(up[0]) < 0.9 else 1] = 1.0
    e1 = _unit(np.cross(up, helper))
    return e1, np.cross(up, e1)


def forward_poses(rig: dict[str, Any], n_frames: int, radius_scale: float = 1.0) -> np.ndarray:
    """``[n_frames, 4, 4]`` poses on a circle around the average position of a forward rig.

    The circle lies in the average pose's image plane (radius ``rig["path_radius"] * radius_scale``,
    starting on its right and turning towards image-down); every pose looks at ``rig["center"]``.

    Args:
        rig: a ``forward`` rig record (``core.rig.forward_rig``).
        n_frames: number of poses (evenly spaced in angle).
        radius_scale: multiplies the rig's path radius.
    """
    avg = np.asarray(rig["c2w"], dtype=np.float64)
    theta = np.arange(n_frames) / n_frames * 2 * math.pi
    r = float(rig["path_radius"]) * radius_scale
    eye = avg[:3, 3] + r * (np.cos(theta)[:, None] * avg[:3, 0] + np.sin(theta)[:, None] * avg[:3, 1])
    return look_at(eye, np.asarray(rig["center"], dtype=np.float64), np.asarray(rig["up"], dtype=np.float64))


def orbit_poses(rig: dict[str, Any], n_frames: int, elevation_deg: float | None = None,
                radius_scale: float = 1.0) -> np.ndarray:
    """``[n_frames, 4, 4]`` poses on a circle around ``rig["center"]``, looking at it.

    Args:
        rig: an ``object`` rig record (``core.rig.object_rig``, stored in the model's metadata).
        n_frames: number of poses (evenly spaced in azimuth).
        elevation_deg: elevation override in degrees (default: the rig's).
        radius_scale: multiplies the rig's radius.

    Raises:
        ModelError: no rig, or ``n_frames < 1``.
    """
    if not rig or n_frames < 1:
        raise ModelError(f"an orbit needs the camera rig in the model metadata and n_frames >= 1 "
                         f"(got {n_frames})")
    center = np.asarray(rig["center"], dtype=np.float64)
    up = _unit(np.asarray(rig["up"], dtype=np.float64))
    e1, e2 = orbit_basis(up)
    el = math.radians(elevation_deg) if elevation_deg is not None else float(rig["elevation"])
    az = np.arange(n_frames) / n_frames * 2 * math.pi
    dirs = math.cos(el) * (np.cos(az)[:, None] * e1 + np.sin(az)[:, None] * e2) + math.sin(el) * up
    return look_at(center + float(rig["radius"]) * radius_scale * dirs, center, up)


def default_path(rig: dict[str, Any], n_frames: int, elevation_deg: float | None = None,
                 radius_scale: float = 1.0) -> np.ndarray:
    """``[n_frames, 4, 4]`` the default render path of a rig: :func:`orbit_poses` of an object rig
    (also a rig without ``kind``, as older exports wrote), :func:`forward_poses` of a forward one
    (``elevation_deg`` does not apply there and is ignored with a warning).

    Raises:
        ModelError: no rig, an unknown kind, or ``n_frames < 1``.
    """
    kind = rig.get("kind", "object") if rig else "object"
    if kind not in RIG_KINDS:
        raise ModelError(f"camera rig kind must be one of {list(RIG_KINDS)}, got {kind!r}")
    if kind == "object":
        return orbit_poses(rig, n_frames, elevation_deg, radius_scale)
    if n_frames < 1:
        raise ModelError(f"a camera path needs n_frames >= 1 (got {n_frames})")
    if elevation_deg is not None:
        log.warning("orbit.elevation_deg=%s ignored: a forward-facing rig's path is a circle in the image "
                    "plane (orbit.radius_scale sizes it)", elevation_deg)
    return forward_poses(rig, n_frames, radius_scale)


def _pose(value: Any, source: str, index: int) -> np.ndarray:
    """One pose of a file: 16 (or 12) numbers in a row, as nerfstudio writes them, or a nested list;
    checked by the runtime's one pose validator, :func:`export.runtime.cameras.check_pose`."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):  # not numbers: check_pose says so
        m = None
    if m is not None and m.size in (12, 16) and m.ndim <= 2:
        value = m.reshape(-1, 4)
    return check_pose(value, f"{source}: pose {index}")


def _image_size(size: Any, source: str) -> tuple[int, int]:
    """``(H, W)`` of a camera path: two whole numbers >= 1."""
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ModelError(f"{source}: image size must be [H, W], got {size}") from None
    if min(H, W) < 1:
        raise ModelError(f"{source}: image size must be at least 1x1, got {[H, W]}")
    return H, W


def read_camera_path(path: str | Path, image_size: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
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
        ``c2w [C, 4, 4]`` (OpenCV), ``K [C, 3, 3]`` or ``None`` (use the model's), ``(H, W)``; float32.

    Raises:
        ModelError: unreadable file, unknown layout, or a bad pose (one line naming the file).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: camera path file not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a readable JSON file ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and "camera_path" in data:
        return _read_nerfstudio(data, str(path), image_size)
    if isinstance(data, list):
        data = {"c2w": data, "convention": "opencv"}
    if not isinstance(data, dict) or not isinstance(data.get("c2w"), list) or not data["c2w"]:
        raise ModelError(f"{path}: expected a nerfstudio camera path, a {{'c2w': [...]}} object "
                         "or a list of poses")
    c2w = np.stack([_pose(p, str(path), i) for i, p in enumerate(data["c2w"])])
    convention = data.get("convention", "opencv")
    if convention not in ("opencv", "opengl"):
        raise ModelError(f"{path}: convention must be 'opencv' or 'opengl', got {convention!r}")
    if convention == "opengl":
        c2w = opengl_to_opencv(c2w)
    K = None
    if "K" in data:
        try:
            K_one = np.asarray(data["K"], dtype=np.float32)
        except (TypeError, ValueError):
            K_one = np.zeros(0, dtype=np.float32)
        if K_one.shape != (3, 3):
            raise ModelError(f"{path}: K must be 3x3, got shape {list(K_one.shape)}")
        if not (np.isfinite(K_one).all() and K_one[0, 0] > 0 and K_one[1, 1] > 0):
            raise ModelError(f"{path}: K must be finite with positive focal lengths, got {K_one.tolist()}")
        K = np.repeat(K_one[None], c2w.shape[0], axis=0)
    return c2w, K, _image_size(data.get("image_size", image_size), str(path))


def _read_nerfstudio(data: dict[str, Any], source: str, image_size: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    frames = data["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise ModelError(f"{source}: camera_path must be a non-empty list")
    H, W = _image_size([data.get("render_height", image_size[0]), data.get("render_width", image_size[1])],
                       source)
    fps = data.get("fps")
    if fps is not None and not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ModelError(f"{source}: fps must be a number > 0, got {fps}")
    poses, Ks = [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "camera_to_world" not in frame:
            raise ModelError(f"{source}: camera_path[{i}] has no camera_to_world")
        poses.append(_pose(frame["camera_to_world"], source, i))
        try:
            fov = math.radians(float(frame.get("fov", data.get("default_fov", 50.0))))
        except (TypeError, ValueError):
            fov = math.nan
        if not 0.0 < fov < math.pi:  # also false for NaN
            raise ModelError(f"{source}: camera_path[{i}] fov must be in (0, 180) degrees, got "
                             f"{frame.get('fov', data.get('default_fov'))}")
        f = 0.5 * H / math.tan(0.5 * fov)  # nerfstudio's fov is vertical
        Ks.append(intrinsics_matrix(f, f, W / 2, H / 2))
    return opengl_to_opencv(np.stack(poses)), np.stack(Ks), (H, W)
