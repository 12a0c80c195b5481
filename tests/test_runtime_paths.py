"""export.runtime's numpy camera math against its torch originals in core (the runtime imports neither
torch nor core, so each twin is checked here), and the one pose validator of the runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import core.cameras
import core.rig
from export.runtime import ModelError, check_pose
from export.runtime import cameras as runtime_cameras
from export.runtime import paths as runtime_paths
from testing.scenes.rigs import ring_poses


def _random_cameras(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    eye = gen.normal(size=(n, 3)) * 3
    return eye, gen.normal(size=3) * 0.2, np.array([0.1, -0.2, 0.97])


def test_constants_match_core() -> None:
    assert runtime_cameras.RIGIDITY_TOLERANCE == core.cameras.RIGIDITY_TOLERANCE
    assert runtime_paths.RIG_KINDS == core.rig.RIG_KINDS


def test_look_at_matches_core() -> None:
    eye, target, up = _random_cameras(16, 0)
    want = core.cameras.look_at(torch.tensor(eye), torch.tensor(target), torch.tensor(up)).numpy()
    got = runtime_paths.look_at(eye, target, up)
    assert got.shape == (16, 4, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)
    with pytest.raises(ValueError, match="no image up"):
        runtime_paths.look_at(np.array([[0.0, 0.0, 2.0]]), np.zeros(3), np.array([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("up", [[0.0, 0.0, 1.0], [0.95, 0.1, 0.3], [-0.2, 0.9, 0.1]])
def test_orbit_basis_matches_core(up: list[float]) -> None:
    unit = np.asarray(up) / np.linalg.norm(up)
    want = core.rig.orbit_basis(torch.tensor(unit, dtype=torch.float64))
    for got, ref in zip(runtime_paths.orbit_basis(unit), want, strict=True):
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-12)


def test_opengl_flip_and_rigidity_match_core() -> None:
    c2w = ring_poses(4).numpy()
    np.testing.assert_array_equal(runtime_paths.opengl_to_opencv(c2w),
                                  core.cameras.opengl_to_opencv(torch.from_numpy(c2w)).numpy())
    np.testing.assert_array_equal(runtime_paths.intrinsics_matrix(20, 21, 8, 9),
                                  core.cameras.intrinsics_matrix(20, 21, 8, 9).numpy())
    for m in (c2w[0], 1.001 * c2w[1], np.diag([1.0, 1.0, -1.0, 1.0]), c2w[2] + np.eye(4) * 0.3):
        assert runtime_cameras.rigidity_error(m) == pytest.approx(
            core.cameras.rigidity_error(torch.tensor(m)), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("value, message", [
    (np.eye(3), "pose must be 4x4 (or 3x4), got shape [3, 3]"),
    ([["a"] * 4] * 4, "pose is not a 4x4 (or 3x4) matrix of numbers"),
    ([[1, 0, 0, 0], [0, 1, 0]], "pose is not a 4x4 (or 3x4) matrix of numbers"),  # ragged
    (np.full((4, 4), np.nan), "pose is not finite"),
    (np.diag([1.0, 1.0, 1.0, 2.0]), "pose is not rigid (last row 0 0 0 2, need 0 0 0 1)"),
    (np.diag([2.0, 1.0, 1.0, 1.0]), "pose is not rigid (rotation not orthonormal"),
    (np.diag([-1.0, 1.0, 1.0, 1.0]), "pose is not rigid"),  # a reflection: det -1
])
def test_check_pose_refuses(value: object, message: str) -> None:
    with pytest.raises(ModelError) as info:
        check_pose(value)
    assert str(info.value).startswith(message), str(info.value)


def test_check_pose_accepts_3x4_and_rounded_rigid_poses() -> None:
    c2w = ring_poses(1)[0].numpy()
    assert np.array_equal(check_pose(c2w[:3]), c2w)
    rounded = np.round(c2w, 3)  # as camera files store them
    assert check_pose(rounded.tolist()).dtype == np.float32

