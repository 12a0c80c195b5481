"""Cameras, ray generation and ray/box intersection against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from core.cameras import (
    focal_from_fov,
    intrinsics_matrix,
    look_at,
    opengl_to_opencv,
    rigidity_error,
    scale_intrinsics,
)
from core.rays import generate_rays, generate_rays_from_pixels, pixel_centers, ray_aabb_intersect

# the first training pose of the NeRF-synthetic "mic" scene (OpenGL, as Blender writes it), facing the origin
MIC_POSE_GL = torch.tensor(
    [
        [-0.9244644045829773, -0.2542489469051361, 0.28411802649497986, 1.1453163623809814],
        [0.38126838207244873, -0.6164793968200684, 0.6889031529426575, 2.777057409286499],
        [0.0, 0.7451903820037842, 0.6668503284454346, 2.688159465789795],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _unit(*v: float) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def _rot_z(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _pose(R: torch.Tensor, t: tuple[float, float, float]) -> torch.Tensor:
    c2w = torch.eye(4)
    c2w[:3, :3] = R
    c2w[:3, 3] = torch.tensor(t)
    return c2w


# ----------------------------------------------------------------------------------------- cameras


def test_intrinsics_and_fov() -> None:
    K = intrinsics_matrix(2.0, 3.0, 4.0, 5.0)
    assert torch.equal(K, torch.tensor([[2.0, 0, 4], [0, 3, 5], [0, 0, 1]]))
    # 90 degrees over 100 px: f = 50 / tan(45 deg) = 50
    assert focal_from_fov(math.pi / 2, 100) == pytest.approx(50.0)
    half = scale_intrinsics(K, 0.5)
    assert torch.allclose(half, torch.tensor([[1.0, 0, 2], [0, 1.5, 2.5], [0, 0, 1]]))
    assert torch.equal(K[2], torch.tensor([0.0, 0, 1]))  # input untouched


def test_opengl_to_opencv_identity_and_involution() -> None:
    out = opengl_to_opencv(torch.eye(4))
    assert torch.equal(out, torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))
    c2w = _pose(_rot_z(30.0), (1.0, 2.0, 3.0))
    assert torch.allclose(opengl_to_opencv(opengl_to_opencv(c2w)), c2w)
    assert torch.equal(opengl_to_opencv(c2w)[:3, 3], c2w[:3, 3])  # centres unchanged


def test_opengl_to_opencv_on_blender_pose() -> None:
    """The first training pose of the NeRF-synthetic "mic" scene: a camera looking at the origin."""
    gl = MIC_POSE_GL.clone()
    cv = opengl_to_opencv(gl)
    centre = cv[:3, 3]
    # OpenCV: the optical axis is +Z of the camera; it must point at the origin
    forward = cv[:3, 2]
    assert torch.dot(forward, -centre / centre.norm()) > 0.9999
    # image "down" (+Y) points down in the world (+Z up), image right is horizontal
    assert cv[2, 1] < -0.7
    assert abs(float(cv[2, 0])) < 1e-6
    assert rigidity_error(cv) < 1e-5
    # the ray through the principal point is the optical axis
    K = intrinsics_matrix(50.0, 50.0, 50.0, 50.0)
    _, d = generate_rays_from_pixels(cv, K, torch.tensor([50.0]), torch.tensor([50.0]))
    assert torch.allclose(d[0], forward, atol=1e-6)


def test_look_at_hand_computed() -> None:
    # camera at +X looking at the origin, world +Z up: right = +Y, down = -Z, forward = -X
    c2w = look_at(torch.tensor([[4.0, 0.0, 0.0]]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    expected = torch.tensor(
        [[0.0, 0.0, -1.0, 4.0], [1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    assert c2w.shape == (1, 4, 4)
    assert torch.allclose(c2w[0], expected, atol=1e-6)


def test_look_at_matches_blender_convention() -> None:
    """look_at from a Blender camera's centre gives that camera's converted pose (no roll)."""
    gl = MIC_POSE_GL.clone()
    cv = opengl_to_opencv(gl)
    mine = look_at(cv[None, :3, 3], torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))[0]
    assert torch.allclose(mine, cv, atol=1e-4)


def test_look_at_random_rigid_and_aimed() -> None:
    eye = torch.randn(16, 3) * 3
    target = torch.randn(3) * 0.1
    c2w = look_at(eye, target, torch.tensor([0.0, 0.0, 1.0]))
    for pose in c2w:
        assert rigidity_error(pose) < 1e-5
    to_target = torch.nn.functional.normalize(target - eye, dim=-1)
    assert torch.allclose(c2w[:, :3, 2], to_target, atol=1e-5)
    assert (c2w[:, 2, 1] <= 1e-6).all()  # image down never points up in the world
    assert c2w[:, 2, 0].abs().max() < 1e-5  # image right is horizontal


def test_look_at_degenerate_raises() -> None:
    up = torch.tensor([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="look_at"):
        look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(3), up)  # looking straight down
    with pytest.raises(ValueError, match="look_at"):
        look_at(torch.tensor([[1.0, 1.0, 1.0]]), torch.ones(3), up)  # eye on the target


# ------------------------------------------------------------------------------------ ray generation


def test_pixel_centers() -> None:
    u, v = pixel_centers(2, 3)
    assert torch.equal(u, torch.tensor([[0.5, 1.5, 2.5], [0.5, 1.5, 2.5]]))
    assert torch.equal(v, torch.tensor([[0.5, 0.5, 0.5], [1.5, 1.5, 1.5]]))


def test_generate_rays_identity_hand_computed() -> None:
    # fx=2, fy=4, principal point (1.5, 1) on a 3x2 image, camera at the origin
    K = intrinsics_matrix(2.0, 4.0, 1.5, 1.0)
    rays_o, rays_d = generate_rays(torch.eye(4), K, 2, 3)
    assert rays_o.shape == (6, 3) and rays_d.shape == (6, 3)
    assert torch.equal(rays_o, torch.zeros(6, 3))
    # row-major: index = v * W + u; x = (u + .5 - cx) / fx, y = (v + .5 - cy) / fy, z = 1
    expected = torch.stack(
        [
            _unit(-0.5, -0.125, 1.0),
            _unit(0.0, -0.125, 1.0),
            _unit(0.5, -0.125, 1.0),
            _unit(-0.5, 0.125, 1.0),
            _unit(0.0, 0.125, 1.0),
            _unit(0.5, 0.125, 1.0),
        ]
    )
    assert torch.allclose(rays_d, expected, atol=1e-6)


def test_generate_rays_rotated_translated_pose() -> None:
    # camera rotated 90 deg about world Z: camera +X -> world +Y, camera +Z stays world +Z
    c2w = _pose(_rot_z(90.0), (1.0, 2.0, 3.0))
    K = intrinsics_matrix(1.0, 1.0, 0.0, 0.0)
    rays_o, rays_d = generate_rays_from_pixels(c2w, K, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert torch.allclose(rays_o, torch.tensor([[1.0, 2.0, 3.0]] * 2))
    # cam (1, 0, 1) -> world (0, 1, 1); cam (0, 1, 1) -> world (-1, 0, 1)
    assert torch.allclose(rays_d, torch.stack([_unit(0.0, 1.0, 1.0), _unit(-1.0, 0.0, 1.0)]), atol=1e-6)


def test_principal_point_ray_is_optical_axis() -> None:
    c2w = look_at(torch.tensor([[1.0, -2.0, 0.5]]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))[0]
    K = intrinsics_matrix(30.0, 40.0, 7.25, 3.5)  # off-centre principal point
    _, d = generate_rays_from_pixels(c2w, K, torch.tensor([7.25]), torch.tensor([3.5]))
    assert torch.allclose(d[0], c2w[:3, 2], atol=1e-6)
    # one pixel right of it moves along the camera's +X by 1/fx
    _, d2 = generate_rays_from_pixels(c2w, K, torch.tensor([8.25]), torch.tensor([3.5]))
    expected = torch.nn.functional.normalize(c2w[:3, 2] + c2w[:3, 0] / 30.0, dim=0)
    assert torch.allclose(d2[0], expected, atol=1e-6)


def test_per_ray_poses_and_intrinsics_match_single() -> None:
    eye = torch.randn(5, 3) * 4
    c2w = look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.stack([intrinsics_matrix(10.0 + i, 12.0 + i, 4.0 + i, 5.0 - i) for i in range(5)])
    u = torch.rand(5) * 10
    v = torch.rand(5) * 10
    rays_o, rays_d = generate_rays_from_pixels(c2w, K, u, v)
    for i in range(5):
        o1, d1 = generate_rays_from_pixels(c2w[i], K[i], u[i : i + 1], v[i : i + 1])
        assert torch.allclose(rays_o[i], o1[0])
        assert torch.allclose(rays_d[i], d1[0], atol=1e-6)
    # the ray through (u, v) projects back onto (u, v)
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    p_cam = torch.einsum("nji,nj->ni", R, rays_o + 2.0 * rays_d - t)
    uv = torch.einsum("nij,nj->ni", K, p_cam)
    assert torch.allclose(uv[:, 0] / uv[:, 2], u, atol=1e-4)
    assert torch.allclose(uv[:, 1] / uv[:, 2], v, atol=1e-4)
    assert torch.allclose(rays_d.norm(dim=-1), torch.ones(5))


# ------------------------------------------------------------------------------------ ray / AABB

BOX = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def _intersect(o: list[float], d: list[float], **kw: float) -> tuple[float, float, bool]:
    tn, tf, hit = ray_aabb_intersect(torch.tensor([o]), torch.tensor([d]), BOX, **kw)
    return float(tn[0]), float(tf[0]), bool(hit[0])


@pytest.mark.parametrize(
    ("o", "d", "expected"),
    [
        ([-3.0, 0.0, 0.0], [1.0, 0.0, 0.0], (2.0, 4.0)),  # axis-parallel hit
        ([3.0, 0.5, 0.5], [-1.0, 0.0, 0.0], (2.0, 4.0)),  # negative direction
        ([0.5, 0.5, -3.0], [0.0, 0.0, 1.0], (2.0, 4.0)),  # along z, off-centre
        ([-3.0, 0.0, 0.0], [2.0, 0.0, 0.0], (1.0, 2.0)),  # distances in units of |d|
        ([-2.0, -2.0, 0.0], [1.0, 1.0, 0.0], (1.0, 3.0)),  # diagonal through the corners
        ([0.0, 0.0, 0.0], [1.0, 0.0, 0.0], (0.0, 1.0)),  # origin inside: entry clamped to near=0
    ],
)
def test_aabb_hits(o: list[float], d: list[float], expected: tuple[float, float]) -> None:
    tn, tf, hit = _intersect(o, d)
    assert hit
    assert tn == pytest.approx(expected[0], abs=1e-6)
    assert tf == pytest.approx(expected[1], abs=1e-6)


@pytest.mark.parametrize(
    ("o", "d"),
    [
        ([-3.0, 2.0, 0.0], [1.0, 0.0, 0.0]),  # passes beside the box, parallel to x
        ([3.0, 0.0, 0.0], [1.0, 0.0, 0.0]),  # box behind the origin
        ([-3.0, 0.0, 0.0], [0.0, 1.0, 0.0]),  # perpendicular, never reaches it
        ([-3.0, -3.0, 0.0], [1.0, -1.0, 0.0]),  # diagonal, away
    ],
)
def test_aabb_misses(o: list[float], d: list[float]) -> None:
    tn, tf, hit = _intersect(o, d)
    assert not hit
    assert tn == tf


def test_aabb_near_far_clamping() -> None:
    assert _intersect([-3.0, 0, 0], [1.0, 0, 0], near=2.5, far=3.5)[:2] == pytest.approx((2.5, 3.5))
    assert _intersect([-3.0, 0, 0], [1.0, 0, 0], near=0.5, far=10.0)[:2] == pytest.approx((2.0, 4.0))
    # far before the entry, near after the exit: both miss
    assert not _intersect([-3.0, 0, 0], [1.0, 0, 0], far=1.5)[2]
    assert not _intersect([-3.0, 0, 0], [1.0, 0, 0], near=4.5)[2]
    # origin inside with near > 0
    assert _intersect([0.0, 0, 0], [0.0, -1.0, 0], near=0.25)[:2] == pytest.approx((0.25, 1.0))


def test_aabb_random_against_dense_marching() -> None:
    """Entry/exit agree with a brute-force march along each ray (within the step)."""
    n, steps, t_max = 256, 4001, 8.0
    aabb = torch.tensor([-0.5, -1.0, -0.2, 1.0, 0.3, 0.7], dtype=torch.float64)
    rays_o = (torch.rand(n, 3, dtype=torch.float64) - 0.5) * 6
    rays_d = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    # aim half of the rays at a random point of the box so that hits and misses both occur
    aim = aabb[:3] + torch.rand(n // 2, 3, dtype=torch.float64) * (aabb[3:] - aabb[:3])
    rays_d[: n // 2] = torch.nn.functional.normalize(aim - rays_o[: n // 2], dim=-1)
    rays_d[:32, 1] = 0.0  # some axis-parallel components
    rays_d[:32] = torch.nn.functional.normalize(rays_d[:32], dim=-1)
    near, far = 0.1, 6.0
    tn, tf, hit = ray_aabb_intersect(rays_o, rays_d, aabb, near=near, far=far)
    t = torch.linspace(0, t_max, steps, dtype=torch.float64)
    pts = rays_o[:, None] + t[None, :, None] * rays_d[:, None]  # [n, steps, 3]
    inside = ((pts >= aabb[:3]) & (pts <= aabb[3:])).all(-1) & (t >= near) & (t <= far)
    step = t_max / (steps - 1)
    ref_hit = inside.any(-1)
    assert 40 < int(ref_hit.sum()) < n - 40  # both cases are exercised
    assert torch.equal(hit, ref_hit)
    t_in = torch.where(inside, t, torch.inf).amin(-1)
    t_out = torch.where(inside, t, -torch.inf).amax(-1)
    assert torch.allclose(tn[hit], t_in[hit], atol=step * 1.01)
    assert torch.allclose(tf[hit], t_out[hit], atol=step * 1.01)
    assert torch.equal(tn[~hit], tf[~hit])


def test_scene_center_of_a_ring_and_parallel_fallback() -> None:
    from core.rig import scene_center
    from testing.scenes.rigs import ring_poses

    poses = ring_poses(6)
    poses[:, :3, 3] += torch.tensor([0.5, -0.25, 1.0])  # move the rig: it looks at the moved point
    assert torch.allclose(scene_center(poses), torch.tensor([0.5, -0.25, 1.0]), atol=1e-4)
    parallel = torch.eye(4).repeat(3, 1, 1)
    parallel[:, 0, 3] = torch.tensor([0.0, 1.0, 2.0])  # all looking along +Z: no common point
    assert torch.allclose(scene_center(parallel), torch.tensor([1.0, 0.0, 0.0]))
