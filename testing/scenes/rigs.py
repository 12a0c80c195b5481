"""Camera rigs of the procedural scenes: OpenCV camera-to-world poses (``core.cameras``' convention).

Object rigs look at the origin from a sphere around it, world +Z up: :func:`ring_poses` (the tiny test
scene), :func:`synthetic_poses` (NeRF-synthetic's radius, random upper-hemisphere views) and
:func:`photo_poses` (the photos of :mod:`testing.scenes.photos`). The forward-facing rig
(:func:`forward_poses`) is a jittered grid of cameras in a plane, turned into a random world frame by
:func:`world_from_rig`. Each draws its random numbers in its own order: the scenes written with them are
reproducible from their seeds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from core.cameras import look_at

FOV_X = 0.69  # radians: the tiny scene's and the photos' horizontal field of view
CAMERA_RADIUS = 4.0  # the tiny scene's and the photos' camera distance from the origin
SYNTHETIC_FOV_X = 0.6911112070083618  # NeRF synthetic's camera_angle_x
SYNTHETIC_RADIUS = 4.031  # NeRF synthetic's camera distance
FORWARD_GRID = (7, 5)  # forward rig: cameras per row, rows
_Z_UP = torch.tensor([0.0, 0.0, 1.0])


def ring_poses(n: int, elevation_deg: float = 30.0, offset: float = 0.0) -> torch.Tensor:
    """``[n, 4, 4]`` poses evenly spaced on a ring at :data:`CAMERA_RADIUS`, looking at the origin.

    Args:
        n: cameras.
        elevation_deg: the ring's height above the XY plane, in degrees.
        offset: azimuth of the first camera, radians (another split's cameras sit between the training ones).
    """
    az = torch.arange(n, dtype=torch.float32) / n * 2 * math.pi + offset
    el = math.radians(elevation_deg)
    eye = CAMERA_RADIUS * torch.stack(
        [torch.cos(az) * math.cos(el), torch.sin(az) * math.cos(el), torch.full_like(az, math.sin(el))], -1
    )
    return look_at(eye, torch.zeros(3), _Z_UP)


def synthetic_poses(n: int, rng: np.random.Generator) -> torch.Tensor:
    """``[n, 4, 4]`` poses at NeRF synthetic's radius, azimuth uniform, elevation 6-75 degrees.

    Each camera draws its azimuth then its elevation from ``rng``: one generator serves several splits in
    turn (the object scene's train, val and test views).
    """
    poses = []
    for _ in range(n):
        az, el = rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 1.3)
        eye = SYNTHETIC_RADIUS * torch.tensor([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el),
                                               math.sin(el)])
        poses.append(look_at(eye[None], torch.zeros(3), _Z_UP)[0])
    return torch.stack(poses) if poses else torch.zeros(0, 4, 4)


def photo_poses(n: int, seed: int = 0) -> torch.Tensor:
    """``[n, 4, 4]`` poses at :data:`CAMERA_RADIUS`, azimuth uniform, elevation 6-75 degrees (+Z up)."""
    rng = np.random.default_rng(seed)
    az = rng.uniform(0, 2 * math.pi, n)
    el = rng.uniform(0.1, 1.3, n)
    eye = CAMERA_RADIUS * np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)], -1)
    return look_at(torch.from_numpy(eye).float(), torch.zeros(3), _Z_UP)


def world_from_rig(seed: int) -> torch.Tensor:
    """``[4, 4]`` float64 random rigid transform from the forward rig's frame to the world frame written to
    the files (so that nothing downstream can rely on the rig's axes)."""
    rng = np.random.default_rng(seed + 1000)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # a uniformly random orthogonal matrix ...
    q[:, 0] *= np.linalg.det(q)  # ... turned into a rotation
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = q, rng.normal(scale=2.0, size=3)
    return torch.from_numpy(T)


def forward_poses(seed: int) -> torch.Tensor:
    """``[C, 4, 4]`` float64 poses in the rig frame: a jittered grid in the plane z = 0, looking along +Z
    (+Y up), each axis turned by a few degrees and rolled about the optical axis."""
    rng = np.random.default_rng(seed)
    cols, rows = FORWARD_GRID
    gx, gy = np.meshgrid(np.linspace(-0.3, 0.3, cols), np.linspace(0.2, -0.2, rows))
    n = cols * rows
    jitter = rng.uniform(-1, 1, (n, 3)) * [0.04, 0.04, 0.05]
    eye = np.stack([gx.ravel(), gy.ravel(), np.zeros(n)], -1) + jitter
    yaw, pitch, roll = (np.radians(rng.uniform(-a, a, n)) for a in (3.0, 3.0, 1.5))
    axis = np.stack([np.tan(yaw), np.tan(pitch), np.ones(n)], -1)
    c2w = look_at(torch.from_numpy(eye), torch.from_numpy(eye + axis), torch.tensor([0.0, 1.0, 0.0])).double()
    cos, sin = torch.from_numpy(np.cos(roll)), torch.from_numpy(np.sin(roll))
    spin = torch.zeros(n, 3, 3, dtype=torch.float64)  # roll about the optical axis
    spin[:, 0, 0], spin[:, 0, 1], spin[:, 1, 0], spin[:, 1, 1], spin[:, 2, 2] = cos, -sin, sin, cos, 1.0
    c2w[:, :3, :3] = c2w[:, :3, :3] @ spin
    return c2w
