"""NDC rays against their closed form, the forward-facing scene kind and the forward pose sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.cameras import intrinsics_matrix, look_at
from core.ndc import NDCSpace, average_pose, ndc_box, ndc_points, ndc_rays, to_ndc
from core.rays import generate_rays
from data_gen.poses import SamplerConfig, build_rig, grown_box, sample_view
from scenes.images import SceneSplit
from scenes.load import scene_kind


def _random_pose(gen: torch.Generator) -> torch.Tensor:
    q = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))[0]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3], c2w[:3, 3] = q, torch.randn(3, generator=gen, dtype=torch.float64)
    return c2w


def test_ndc_rays_match_the_projection_of_points_along_the_ray() -> None:
    gen = torch.Generator().manual_seed(0)
    ref = _random_pose(gen)
    scale, near = torch.tensor([1.3, 1.7], dtype=torch.float64), 0.8
    # rays from near the reference camera, looking roughly along its axis
    n = 64
    o_cam = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.2
    d_cam = torch.cat([torch.randn(n, 2, generator=gen, dtype=torch.float64) * 0.3,
                       torch.ones(n, 1, dtype=torch.float64)], -1)
    k = torch.rand(n, 1, generator=gen, dtype=torch.float64).add(0.5)  # any direction length
    rays_o = o_cam @ ref[:3, :3].T + ref[:3, 3]
    rays_d = d_cam @ ref[:3, :3].T * k
    o_ndc, d_ndc = ndc_rays(rays_o, rays_d, ref, scale, near)
    # o' is the ray's crossing of the near plane: NDC z = -1
    assert torch.allclose(o_ndc[:, 2], torch.full((n,), -1.0, dtype=torch.float64), atol=1e-12)
    # every world point s further along the ray maps onto o' + t d' with t = 1 - near_depth / depth
    for s in (0.5, 2.0, 10.0, 1e4):
        s0 = (near - o_cam[:, 2:3]) / k  # where the ray crosses the near plane (camera z of rays_d is k)
        x = rays_o + (s0 + s) * rays_d
        p = ndc_points(x, ref, scale, near)
        t = (p[:, 2:3] - o_ndc[:, 2:3]) / d_ndc[:, 2:3]
        assert torch.allclose(o_ndc + t * d_ndc, p, rtol=1e-9, atol=1e-9)
        assert bool(((t > 0) & (t < 1)).all())
    # the point at infinity is o' + d'
    far = rays_o + 1e9 * rays_d
    assert torch.allclose(ndc_points(far, ref, scale, near), o_ndc + d_ndc, atol=1e-6)


def test_to_ndc_unit_directions_and_the_reference_axis() -> None:
    space = NDCSpace(c2w=torch.eye(4).tolist(), scale=[2.0, 2.0], near=1.0)
    o, d = to_ndc(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), space)
    assert torch.allclose(o, torch.tensor([[0.0, 0.0, -1.0]]))
    assert torch.allclose(d, torch.tensor([[0.0, 0.0, 1.0]]))
    o, d = to_ndc(torch.zeros(3, 3), torch.randn(3, 3).abs() + 0.1, space)
    assert torch.allclose(d.norm(dim=-1), torch.ones(3))


def test_ndc_record_round_trip_and_errors() -> None:
    space = NDCSpace(c2w=torch.eye(4).tolist(), scale=[1.0, 1.5], near=0.5)
    assert NDCSpace.from_dict(space.to_dict()) == space
    with pytest.raises(ValueError, match="ndc record"):
        NDCSpace.from_dict({"c2w": [[1, 0]], "scale": [1, 1], "near": 1})
    with pytest.raises(ValueError, match="positive"):
        NDCSpace.from_dict({**space.to_dict(), "near": 0.0})


def _forward_rig(n: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    eye = torch.randn(n, 3, generator=gen) * torch.tensor([0.3, 0.2, 0.05])
    target = torch.tensor([0.0, 0.0, 5.0]) + torch.randn(n, 3, generator=gen) * 0.2
    c2w = torch.stack([look_at(eye[i:i + 1], target[i], torch.tensor([0.0, -1.0, 0.0]))[0] for i in range(n)])
    return c2w, intrinsics_matrix(40.0, 40.0, 24.0, 16.0).expand(n, 3, 3)


def test_average_pose_of_a_forward_rig_and_the_ndc_box_holds_training_rays() -> None:
    c2w, K = _forward_rig()
    avg = average_pose(c2w)
    assert torch.allclose(avg[:3, :3].T @ avg[:3, :3], torch.eye(3), atol=1e-5)
    assert float(avg[:3, 2] @ torch.tensor([0.0, 0.0, 1.0])) > 0.99
    space = NDCSpace(c2w=avg.tolist(), scale=[2 * 40.0 / 48, 2 * 40.0 / 32], near=1.0)
    box = ndc_box(space, c2w, K, (32, 48), margin=0.0)
    for i in range(c2w.shape[0]):
        o, d = generate_rays(c2w[i], K[i], 32, 48)
        on, dn = ndc_rays(o, d, torch.tensor(space.c2w), torch.tensor(space.scale), space.near)
        for end in (on, on + dn):
            assert bool((end >= box[:3] - 1e-4).all() and (end <= box[3:] + 1e-4).all())


def test_scene_kind_masks_and_axis_spread() -> None:
    c2w, K = _forward_rig()
    opaque = torch.ones(c2w.shape[0], 4, 4, 4)
    assert scene_kind(SceneSplit(opaque, c2w, K, [""] * 9)) == "forward"
    masked = opaque.clone()
    masked[:, 0, 0, 3] = 0.0
    assert scene_kind(SceneSplit(masked, c2w, K, [""] * 9)) == "object"
    ring = torch.stack([look_at(torch.tensor([[4 * math.cos(a), 4 * math.sin(a), 1.0]]), torch.zeros(3),
                                torch.tensor([0.0, 0.0, 1.0]))[0] for a in np.linspace(0, 6, 9)])
    assert scene_kind(SceneSplit(opaque, ring, K, [""] * 9)) == "object"
    assert scene_kind(SceneSplit(opaque, ring, K, [""] * 9), "forward") == "forward"


def test_forward_sampler_stays_inside_its_boxes() -> None:
    c2w, K = _forward_rig(12)
    rig = build_rig(c2w, K[0])
    cfg = SamplerConfig(box_scale=1.1)
    c_lo, c_hi = grown_box(rig.c2w[:, :3, 3], 1.1)
    a_lo, a_hi = grown_box(rig.c2w[:, :3, 2], 1.1)
    for i in range(200):
        pose, _ = sample_view("forward", 3, i, rig, cfg)
        p = pose.double().numpy()
        assert np.all(p[:3, 3] >= c_lo - 1e-6) and np.all(p[:3, 3] <= c_hi + 1e-6)
        assert np.allclose(p[:3, :3].T @ p[:3, :3], np.eye(3), atol=1e-5)
        assert np.linalg.det(p[:3, :3]) > 0
        # the viewing axis is a normalised point of the axes' box: some positive multiple lies in it
        axis = p[:3, 2]
        lo = np.max(np.where(axis > 0, a_lo / axis, -np.inf))
        hi = np.min(np.where(axis > 0, a_hi / axis, np.inf))
        assert lo <= hi + 1e-6
        assert float(p[:3, 1] @ rig.down) > 0.9  # image "down" follows the rig's
