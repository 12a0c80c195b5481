"""The training camera rig: where the cameras look, which way is up, how far away and how high they are.

One definition for every user: the pose samplers of the pseudo-data (``data_gen.poses.build_rig``), the
default render path (``export.runtime.paths``) and the ``rig`` record that travels in the student checkpoint's
scene facts (:class:`core.scene_facts.SceneFacts`) into the ONNX metadata, where the web viewer reads it
(``export/viewer/web/camera.js``: ``rigOf``, ``rigView``).

The record is a JSON-able dict of one of two kinds (``kind``):

* ``object`` (cameras around a thing): ``center`` [3] (the point the cameras look at,
  :func:`scenes.load.scene_center`), ``up`` [3] (:func:`rig_up`), ``radius`` (median camera distance to
  the centre) and ``elevation`` (median camera angle above the plane normal to ``up``, radians);
* ``forward`` (an LLFF-style capture, every camera looking the same way): ``c2w`` [4][4] (the average
  pose, :func:`core.ndc.average_pose`), ``focus_depth`` (:func:`focus_depth`), ``center`` [3] (the focus
  point), ``up`` [3] (its image-up direction) and ``path_radius``.

Poses are ``[C, 4, 4]`` camera-to-world in the OpenCV convention of :mod:`core.cameras` (column 1 points
down in the image). Arithmetic is float64.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from core.ndc import NDCSpace, average_pose

RIG_KINDS = ("object", "forward")
NDC_NEAR_FRACTION = 0.75  # NeRF's bd_factor: the NDC near plane sits at 3/4 of the nearest content
# NeRF's render_path_spiral focuses at the depth whose disparity mixes the nearest content's (weight
# 1 - FOCUS_DT) and the far bound's (FOCUS_DT); with the far bound at infinity that is the nearest
# depth (FOCUS_NEAR_MARGIN of the smallest near bound) / (1 - FOCUS_DT).
FOCUS_DT = 0.75
FOCUS_NEAR_MARGIN = 0.9
PATH_RADIUS_QUANTILE = 0.9  # of the training centres' distances from their mean, in the image plane


def scene_center(c2w: Tensor) -> Tensor:
    """Least-squares point closest to all optical axes of ``[C, 4, 4]`` cameras (``[3]``).

    Falls back to the mean camera centre when the axes are (nearly) parallel.
    """
    origins = c2w[:, :3, 3].double()
    dirs = torch.nn.functional.normalize(c2w[:, :3, 2].double(), dim=-1)
    proj = torch.eye(3, dtype=torch.float64) - dirs[:, :, None] * dirs[:, None, :]  # [C, 3, 3]
    A = proj.sum(0)
    b = (proj @ origins[:, :, None]).sum(0)[:, 0]
    if torch.linalg.cond(A) > 1e6:
        return origins.mean(0).float()
    return torch.linalg.solve(A, b).float()


def rig_up(c2w: Tensor) -> Tensor:
    """Up direction of a rig: the axis most perpendicular to every camera's right vector.

    Cameras without roll have their right vector horizontal, so this recovers the world up exactly for
    such rigs (the mean of the cameras' up vectors would tilt toward the rig's average view direction).
    The sign follows the cameras' mean up vector.

    Args:
        c2w: ``[C, 4, 4]`` poses.

    Returns:
        ``[3]`` unit vector, float64.
    """
    poses = c2w.double()
    right = poses[:, :3, 0]  # [C, 3]
    _, vecs = torch.linalg.eigh(right.T @ right)
    up = vecs[:, 0]  # eigenvalues ascend: the smallest
    if float(up @ -poses[:, :3, 1].mean(0)) < 0:
        up = -up
    return up / up.norm()


def orbit_basis(up: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit vectors ``e1``, ``e2`` (``[3]`` each, ``up``'s dtype) completing unit ``up`` ``[3]`` to a
    right-handed orthonormal basis: azimuth 0 of an orbit is along ``e1``, azimuth 90 degrees along ``e2``.

    ``export/viewer/web/camera.js`` ``orbitBasis`` does the same arithmetic.
    """
    helper = torch.zeros_like(up)
    helper[0 if abs(float(up[0])) < 0.9 else 1] = 1.0
    e1 = torch.nn.functional.normalize(torch.linalg.cross(up, helper), dim=0)
    return e1, torch.linalg.cross(up, e1)


def camera_elevations(c2w: Tensor, center: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    """Distances and elevations of cameras about a centre.

    Args:
        c2w: ``[C, 4, 4]`` poses.
        center: ``[3]`` the centre.
        up: ``[3]`` unit up direction.

    Returns:
        ``[C]`` distances of the camera centres to ``center`` and ``[C]`` their elevations (radians above
        the plane through ``center`` normal to ``up``), float64.
    """
    offsets = c2w[:, :3, 3].double() - center.double()  # [C, 3]
    dist = offsets.norm(dim=-1)
    elevation = torch.asin((offsets @ up.double() / dist.clamp_min(1e-9)).clamp(-1, 1))
    return dist, elevation


def _median(values: Tensor) -> float:
    """The median (mean of the two middle values of an even count, as ``numpy.median``)."""
    return float(torch.quantile(values.double(), 0.5))


def object_rig(c2w: Tensor) -> dict[str, Any]:
    """The ``object`` rig record of ``[C, 4, 4]`` poses (see the module docstring)."""
    center = scene_center(c2w).double()
    up = rig_up(c2w)
    dist, elevation = camera_elevations(c2w, center, up)
    return {
        "kind": "object",
        "center": center.tolist(),
        "up": up.tolist(),
        "radius": _median(dist),
        "elevation": _median(elevation),
    }


def focus_depth(ndc_near: float) -> float:
    """NeRF's focus depth of a forward-facing rig from the NDC near plane (``scenes.load`` puts it
    at ``NDC_NEAR_FRACTION`` of the nearest content), with the far bound at infinity."""
    nearest = ndc_near / NDC_NEAR_FRACTION
    return FOCUS_NEAR_MARGIN * nearest / (1.0 - FOCUS_DT)


def forward_rig(c2w: Tensor, ndc: NDCSpace) -> dict[str, Any]:
    """The ``forward`` rig record of ``[C, 4, 4]`` forward-facing poses.

    Args:
        c2w: ``[C, 4, 4]`` training poses.
        ndc: the scene's NDC frame (its near plane sets the focus depth, :func:`focus_depth`).

    Returns:
        ``kind`` ``"forward"``, ``c2w`` [4][4] (the average pose), ``focus_depth`` (along its viewing
        axis), ``center`` [3] (the focus point: what the path looks at), ``up`` [3] (its image-up
        direction) and ``path_radius`` (the ``PATH_RADIUS_QUANTILE`` quantile of the camera centres'
        distances from their mean, measured in its image plane).
    """
    avg = average_pose(c2w).double()
    offsets = (c2w[:, :3, 3].double() - avg[:3, 3]) @ avg[:3, :2]  # [C, 2]: right, down
    depth = focus_depth(ndc.near)
    return {
        "kind": "forward",
        "c2w": avg.tolist(),
        "center": (avg[:3, 3] + depth * avg[:3, 2]).tolist(),
        "up": (-avg[:3, 1]).tolist(),
        "focus_depth": depth,
        "path_radius": float(torch.quantile(offsets.norm(dim=-1), PATH_RADIUS_QUANTILE)),
    }


def camera_rig(c2w: Tensor, ndc: NDCSpace | None = None) -> dict[str, Any]:
    """The rig record of ``[C, 4, 4]`` training poses: :func:`forward_rig` for a scene with an NDC frame
    ``ndc`` (forward-facing), else :func:`object_rig`."""
    return forward_rig(c2w, ndc) if ndc is not None else object_rig(c2w)
