"""Pose samplers: cameras look at the centre, stay in the rig's radius/elevation band, are deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.cameras import rigidity_error
from data_gen.poses import SamplerConfig, build_rig, sample_view, sample_views, validate_sampler
from scenes.load import SceneConfig, load_scene
from testing.scenes.rigs import CAMERA_RADIUS, ring_poses


def _rig_from_ring(elevations: tuple[float, ...] = (20.0, 50.0)):
    poses = torch.cat([ring_poses(6, elevation_deg=e, offset=0.1 * i) for i, e in enumerate(elevations)])
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    return build_rig(poses, K)


def test_pose_samplers_and_export_share_one_rig() -> None:
    """data_gen's sampler rig and the rig export stores (ONNX metadata, default path) are the same
    numbers; on a half ring seen from one side the mean image-up would tilt, the rig's up does not."""
    from core.rig import camera_rig, orbit_basis
    from export.runtime.paths import orbit_poses

    halves = [ring_poses(12, elevation_deg=e, offset=0.05 * i)[:6] for i, e in enumerate((20.0, 50.0))]
    poses = torch.cat(halves)
    tilted = torch.nn.functional.normalize(-poses[:, :3, 1].double().mean(0), dim=0)
    assert float(tilted[2]) < 0.99  # the old export up
    sampler = build_rig(poses, torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]))
    stored = camera_rig(poses)
    assert stored["kind"] == "object" and set(stored) == {"kind", "center", "up", "radius", "elevation"}
    np.testing.assert_array_equal(sampler.center, stored["center"])
    np.testing.assert_array_equal(sampler.up, stored["up"])
    assert sampler.radius == stored["radius"]
    assert sampler.elevation[0] <= stored["elevation"] <= sampler.elevation[1]
    assert np.allclose(stored["up"], [0, 0, 1], atol=1e-6)
    # one orbit basis: azimuth 0 of the export path is where the sampler's basis puts it
    e1, _ = orbit_basis(torch.tensor(stored["up"], dtype=torch.float64))
    eye = torch.from_numpy(orbit_poses(stored, 4, elevation_deg=0.0)[0, :3, 3]).double()
    centre = torch.tensor(stored["center"], dtype=torch.float64)
    assert torch.allclose(eye, centre + stored["radius"] * e1, atol=1e-5)


def test_rig_recovers_up_radius_and_elevation_band() -> None:
    rig = _rig_from_ring((20.0, 50.0))
    assert np.allclose(rig.up, [0, 0, 1], atol=1e-5)
    assert np.allclose(rig.center, 0, atol=1e-4)
    assert rig.radius == pytest.approx(CAMERA_RADIUS, rel=1e-5)
    assert np.degrees(rig.elevation) == pytest.approx([20.0, 50.0], abs=1e-3)


@pytest.mark.parametrize("sampler", ["hemisphere", "jitter"])
def test_cameras_are_rigid_and_look_at_centre(sampler: str) -> None:
    rig = _rig_from_ring()
    cfg = SamplerConfig(jitter_deg=15.0, jitter_radius=0.2)
    c2w, K = sample_views(sampler, 3, range(200), rig, cfg)
    centre = torch.from_numpy(rig.center).float()
    to_centre = torch.nn.functional.normalize(centre - c2w[:, :3, 3], dim=-1)
    cos = (to_centre * c2w[:, :3, 2]).sum(-1)  # OpenCV: the camera looks along +Z (column 2)
    assert cos.min() > 1 - 1e-5
    assert max(rigidity_error(c) for c in c2w) < 1e-5
    assert torch.equal(K, torch.from_numpy(rig.K).float().expand_as(K))


def test_hemisphere_radius_and_elevation_within_range_and_spread() -> None:
    rig = _rig_from_ring((20.0, 50.0))
    c2w, _ = sample_views("hemisphere", 0, range(500), rig, SamplerConfig())
    offsets = c2w[:, :3, 3].double() - torch.from_numpy(rig.center)
    radius = offsets.norm(dim=-1)
    assert torch.allclose(radius, torch.full_like(radius, rig.radius), rtol=1e-5)
    elevation = torch.rad2deg(torch.asin(offsets[:, 2] / radius))
    assert elevation.min() >= 20.0 - 1e-3 and elevation.max() <= 50.0 + 1e-3
    # Uniform over the band: both halves of the band and all azimuth quadrants are populated.
    assert (elevation < 30).sum() > 100 and (elevation > 40).sum() > 100
    quadrant = torch.floor((torch.atan2(offsets[:, 1], offsets[:, 0]) + math.pi) / (math.pi / 2)).clamp(0, 3)
    assert torch.bincount(quadrant.long(), minlength=4).min() > 80


def test_jitter_stays_within_angle_and_radius() -> None:
    rig = _rig_from_ring()
    cfg = SamplerConfig(jitter_deg=10.0, jitter_radius=0.1)
    c2w, _ = sample_views("jitter", 1, range(300), rig, cfg)
    train = torch.from_numpy(rig.c2w[:, :3, 3]).float()
    pos = c2w[:, :3, 3]
    dist = pos.norm(dim=-1)
    assert dist.min() >= CAMERA_RADIUS * 0.9 - 1e-4 and dist.max() <= CAMERA_RADIUS * 1.1 + 1e-4
    cos = torch.nn.functional.normalize(pos, dim=-1) @ torch.nn.functional.normalize(train, dim=-1).T
    nearest_deg = torch.rad2deg(torch.acos(cos.max(dim=1).values.clamp(-1, 1)))
    assert nearest_deg.max() <= 10.0 + 1e-2
    assert nearest_deg.max() > 5.0  # it does move the cameras


def test_view_i_of_seed_s_is_always_the_same_camera() -> None:
    rig = _rig_from_ring()
    cfg = SamplerConfig(focal_scale=[1.0, 2.0])
    batch, K_batch = sample_views("hemisphere", 7, range(10, 20), rig, cfg)
    alone, K_alone = sample_view("hemisphere", 7, 15, rig, cfg)
    assert torch.equal(batch[5], alone) and torch.equal(K_batch[5], K_alone)
    again, _ = sample_views("hemisphere", 7, range(10, 20), rig, cfg)
    assert torch.equal(batch, again)
    other_seed, _ = sample_views("hemisphere", 8, range(10, 20), rig, cfg)
    assert not torch.allclose(batch, other_seed)


def test_focal_scale_zooms_within_range() -> None:
    rig = _rig_from_ring()
    _, K = sample_views("hemisphere", 0, range(200), rig, SamplerConfig(focal_scale=[1.0, 2.0]))
    zoom = K[:, 0, 0] / float(rig.K[0, 0])
    assert zoom.min() >= 1.0 and zoom.max() <= 2.0 and zoom.max() - zoom.min() > 0.8
    assert torch.allclose(K[:, 1, 1] / float(rig.K[1, 1]), zoom)
    assert torch.equal(K[:, :2, 2], torch.from_numpy(rig.K[:2, 2]).float().expand(200, 2))


def test_demo_scene_rig_is_z_up_upper_hemisphere() -> None:
    train = load_scene(SceneConfig(), splits=("train",)).split("train")
    rig = build_rig(train.c2w, train.K[0])
    assert np.allclose(rig.up, [0, 0, 1], atol=1e-3)
    assert 0 < rig.elevation[0] < rig.elevation[1] <= math.radians(89.0) + 1e-9


def test_bad_sampler_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="sampler"):
        validate_sampler("spiral", SamplerConfig())
    with pytest.raises(ValueError, match="focal_scale"):
        validate_sampler("hemisphere", SamplerConfig(focal_scale=[2.0, 1.0]))
