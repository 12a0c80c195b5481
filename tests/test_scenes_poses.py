"""The one pose check (:func:`core.cameras.check_c2w`) over the shared bad poses, and the loaders using it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cameras import RIGIDITY_TOLERANCE, PoseError, check_c2w, rigidity_error
from core.errors import SceneError, UserError
from scenes.load import SceneConfig, load_scene
from testing.scenes.objects import make_procedural_scene
from tests.pose_cases import BAD_POSES, ROTATED

SOURCE = "cams.json: pose 7"


def _random_rigid(rng: np.random.Generator) -> np.ndarray:
    """A ``[4, 4]`` rigid pose: a random rotation (QR of a Gaussian, determinant +1) and translation."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = q, rng.normal(scale=5.0, size=3)
    return pose


@pytest.mark.parametrize("name, value, fragment", BAD_POSES, ids=[case[0] for case in BAD_POSES])
def test_bad_pose_refused_in_one_line_naming_the_source(name: str, value: object, fragment: str) -> None:
    with pytest.raises(PoseError) as err:
        check_c2w(value, SOURCE)
    message = str(err.value)
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    assert message.startswith(f"{SOURCE} "), message
    assert fragment in message, message
    assert "\n" not in message


def test_bad_pose_cases_are_distinct_and_cover_every_check() -> None:
    names = [name for name, _, _ in BAD_POSES]
    assert len(set(names)) == len(names)
    fragments = " | ".join(fragment for _, _, fragment in BAD_POSES)
    for check in ("not finite", "shape", "matrix of numbers", "not rigid (last row", "not rigid"):
        assert check in fragments, check


def test_pose_cases_import_nothing_of_ours() -> None:
    """The runtime's torch-free copy of the check is to be tested against the same list."""
    tree = ast.parse((Path(__file__).parent / "pose_cases.py").read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules <= {"__future__", "math"}, modules


@pytest.mark.parametrize("kind", ["list", "numpy", "tensor32", "tensor64"])
def test_random_rigid_poses_pass_unchanged_as_float32(kind: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        pose = _random_rigid(rng)
        value = {"list": pose.tolist(), "numpy": pose, "tensor32": torch.from_numpy(pose).float(),
                 "tensor64": torch.from_numpy(pose)}[kind]
        out = check_c2w(value, SOURCE)
        assert out.shape == (4, 4) and out.dtype == torch.float32
        assert torch.allclose(out.double(), torch.from_numpy(pose), rtol=1e-6, atol=1e-7)
        if isinstance(value, torch.Tensor):
            assert out.data_ptr() != value.data_ptr()  # a new tensor: the caller's is never aliased


def test_three_by_four_gains_the_last_row() -> None:
    pose = _random_rigid(np.random.default_rng(4))
    out = check_c2w(pose[:3].tolist(), SOURCE)
    assert torch.allclose(out.double(), torch.from_numpy(pose), rtol=1e-6, atol=1e-7)
    assert out[3].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_tolerance_accepts_rounded_matrices_and_refuses_beyond_it() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        rounded = np.round(_random_rigid(rng), 4)  # a file's rounded pose: error ~1e-4
        assert rigidity_error(torch.from_numpy(rounded)) < RIGIDITY_TOLERANCE
        check_c2w(rounded, SOURCE)
    inside = np.array(ROTATED)
    inside[:3, :3] *= 1 + RIGIDITY_TOLERANCE / 4
    check_c2w(inside, SOURCE)
    beyond = np.array(ROTATED)
    beyond[:3, :3] *= 1 + 2 * RIGIDITY_TOLERANCE
    with pytest.raises(PoseError, match="not rigid"):
        check_c2w(beyond, SOURCE)


@pytest.mark.parametrize("name, value, fragment", BAD_POSES, ids=[case[0] for case in BAD_POSES])
def test_transforms_loader_refuses_each_bad_pose(tmp_path: Path, name: str, value: object, fragment: str
                                                 ) -> None:
    """The loader's message is the check's, with the file and frame as its source."""
    root = make_procedural_scene(tmp_path / "scene")
    path = root / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["frames"][1]["transform_matrix"] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(SceneError) as err:
        load_scene(SceneConfig(path=str(root)))
    message = str(err.value)
    frame = meta["frames"][1]["file_path"]
    assert message.startswith(f"{path}: frame 1 ({frame}) transform_matrix "), message
    assert fragment in message, message
