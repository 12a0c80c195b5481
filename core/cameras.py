"""The one camera convention of this project, and the conversion into it.

Convention (OpenCV, "RDF"): in camera space +X points right, +Y points **down**, and the camera looks
along **+Z**. Poses are 4x4 camera-to-world matrices ``c2w`` (float32, rigid: orthonormal rotation with
determinant +1, last row ``0 0 0 1``). Intrinsics are 3x3 pinhole matrices ``K`` in pixels,

    K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],

with pixel ``(u, v)`` covering ``[u, u+1) x [v, v+1)``, so the centre of the top-left pixel is
``(0.5, 0.5)``. The world frame is whatever the scene's own camera files use (for the NeRF synthetic
scenes, +Z up).

Blender / NeRF-synthetic / nerfstudio / instant-ngp files store OpenGL-style poses (+Y up, looking
along -Z). They are converted once, at load time, by :func:`opengl_to_opencv`; LLFF's
``poses_bounds.npy`` (rotation columns down, right, backwards) by :func:`scenes.llff.llff_to_opencv`. No
other module flips axes. Every pose read from a file goes through :func:`check_c2w`, the one pose check.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from core.errors import UserError

CAMERA_CONVENTION = "opencv"
# largest rigidity_error a pose read from a scene file may have (files store rounded matrices)
RIGIDITY_TOLERANCE = 1e-2

_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert OpenGL camera-to-world poses into this project's OpenCV convention.

    Args:
        c2w: ``[..., 4, 4]`` poses whose camera looks along -Z with +Y up.

    Returns:
        ``[..., 4, 4]`` poses whose camera looks along +Z with +Y down (same centres).
    """
    return c2w @ _GL_TO_CV.to(c2w)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> Tensor:
    """Build a ``[3, 3]`` float32 pinhole matrix from focal lengths and principal point (pixels)."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def focal_from_fov(fov_x: float, width: int) -> float:
    """Focal length in pixels from the horizontal field of view ``fov_x`` (radians)."""
    return 0.5 * width / math.tan(0.5 * fov_x)


def scale_intrinsics(K: Tensor, scale: float) -> Tensor:
    """Intrinsics of the same camera with the image resized by ``scale`` (``[..., 3, 3]``)."""
    out = K.clone()
    out[..., :2, :] *= scale
    return out


def rigidity_error(c2w: Tensor) -> float:
    """Largest deviation of a ``[4, 4]`` pose from a rigid transform (0 for a perfect one)."""
    R = c2w[:3, :3].double()
    eye = torch.eye(3, dtype=torch.float64)
    ortho = (R.T @ R - eye).abs().max().item()
    det = abs(torch.linalg.det(R).item() - 1.0)
    bottom = (c2w[3].double() - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)).abs().max().item()
    return max(ortho, det, bottom)


class PoseError(UserError):
    """A camera pose that is not a rigid 4x4 (or 3x4) camera-to-world matrix; the message names its source."""


def check_c2w(c2w: Any, source: str) -> Tensor:
    """The one check of a camera-to-world pose read from a file or handed in by a caller.

    A pose must be a 4x4 or 3x4 matrix of finite numbers whose rotation is orthonormal with
    determinant +1 and whose last row is ``0 0 0 1``, both within :data:`RIGIDITY_TOLERANCE` (files
    store rounded matrices). The convention is not checked: convert before or after, as the format says.

    Args:
        c2w: ``[4, 4]`` or ``[3, 4]`` matrix (nested lists, a numpy array or a tensor).
        source: what the pose is, the start of the message (``"cams.json: frame 3 transform_matrix"``).

    Returns:
        ``[4, 4]`` float32 pose on the CPU, a new tensor (a 3x4 gains the row ``0 0 0 1``; values are
        not changed).

    Raises:
        PoseError: one line, ``"<source> <problem>"``.
    """
    try:
        m = torch.as_tensor(c2w, dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError):  # ragged lists, text, None, objects
        raise PoseError(f"{source} is not a 4x4 (or 3x4) matrix of numbers") from None
    if m.shape == (3, 4):
        m = torch.cat([m, m.new_tensor([[0.0, 0.0, 0.0, 1.0]])])
    if m.shape != (4, 4):
        raise PoseError(f"{source} must be 4x4 (or 3x4), got shape {list(m.shape)}")
    if not bool(torch.isfinite(m).all()):
        raise PoseError(f"{source} is not finite")
    bottom = float((m[3] - m.new_tensor([0.0, 0.0, 0.0, 1.0])).abs().max())
    if bottom > RIGIDITY_TOLERANCE:
        raise PoseError(f"{source} is not rigid (last row {' '.join(f'{v:g}' for v in m[3].tolist())}, "
                        f"need 0 0 0 1)")
    err = rigidity_error(m)
    if err > RIGIDITY_TOLERANCE:
        raise PoseError(f"{source} is not rigid (rotation not orthonormal with determinant +1; "
                        f"error {err:.3g})")
    return m.float()


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """Camera-to-world poses (OpenCV convention) of cameras at ``eye`` looking at ``target``.

    Args:
        eye: ``[C, 3]`` camera centres.
        target: ``[C, 3]`` or ``[3]`` points looked at.
        up: ``[3]`` world up direction (the image's "up" is as close to it as possible).

    Returns:
        ``[C, 4, 4]`` float32 poses.
    """
    eye = eye.float()
    forward = torch.nn.functional.normalize(target.float().expand_as(eye) - eye, dim=-1)
    # right-handed OpenCV frame: right = forward x up, down = forward x right (image up ~ world up)
    side = torch.cross(forward, up.float().expand_as(eye), dim=-1)
    if bool((side.norm(dim=-1) < 1e-6).any()):
        raise ValueError("look_at: a camera looks along 'up' (or sits on its target): no image up")
    right = torch.nn.functional.normalize(side, dim=-1)
    down = torch.cross(forward, right, dim=-1)
    c2w = torch.eye(4).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = down
    c2w[:, :3, 2] = forward
    c2w[:, :3, 3] = eye
    return c2w
