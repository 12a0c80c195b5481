"""The teacher CLI on bad input: exit code 1, one line on stderr naming the file, no traceback
(:func:`testing.cli.one_line_error`).

Runs ``python -m teacher.train`` in a subprocess from an empty working directory, which must stay
empty (Hydra's output goes under ``run_dir``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from testing.cli import one_line_error, run_cli
from testing.runs import TINY_TEACHER
from testing.scenes.forward import write_forward_scene
from testing.scenes.objects import make_procedural_scene

pytestmark = pytest.mark.slow


def _run_teacher(cwd: Path, overrides: list[str]) -> subprocess.CompletedProcess[str]:
    return run_cli("teacher.train", cwd, overrides)


def _missing_image(root: Path) -> str:
    (root / "train" / "r_3.png").unlink()
    return "transforms_train.json"


def _non_rigid(root: Path) -> str:
    path = root / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["frames"][1]["transform_matrix"][0][0] *= 3.0
    path.write_text(json.dumps(meta))
    return "transforms_train.json"


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [(_missing_image, "not found"), (_non_rigid, "not rigid")],
    ids=["missing-image", "non-rigid-pose"],
)
def test_bad_scene_exits_1_with_one_line(tmp_path: Path, mutate: Callable[[Path], str], problem: str) -> None:
    scene = make_procedural_scene(tmp_path / "scene")
    named = mutate(scene)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _run_teacher(cwd, [f"scene.path={scene}", f"run_dir={tmp_path / 'run'}", *TINY_TEACHER])
    line = one_line_error(proc)
    assert named in line and problem in line, line
    assert list(cwd.iterdir()) == []


def test_missing_scene_folder(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    missing = tmp_path / "no_such_scene"
    proc = _run_teacher(cwd, [f"scene.path={missing}", f"run_dir={tmp_path / 'run'}", *TINY_TEACHER])
    assert one_line_error(proc) == f"error: {missing}: scene folder not found"
    assert list(cwd.iterdir()) == []


def test_good_tiny_run_writes_only_into_run_dir(tmp_path: Path, tiny_scene: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    run_dir = tmp_path / "run"
    proc = _run_teacher(cwd, [f"scene.path={tiny_scene}", f"run_dir={run_dir}", *TINY_TEACHER])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(cwd.iterdir()) == [], [p.name for p in cwd.iterdir()]
    metrics = json.loads((run_dir / "teacher" / "metrics.json").read_text())
    assert metrics["steps"] >= 1 and metrics["test"]["n_views"] == 2
    assert (run_dir / "teacher" / "teacher.ckpt").is_file()


@pytest.mark.parametrize("override, message", [
    ("model.encoding=triplane", "model.encoding=triplane: must be one of"),
    ("model.grid.log2_hashmap_size=40", "model.grid.log2_hashmap_size=40: invalid hash grid"),
])
def test_student_bad_encoding_is_one_line(tmp_path: Path, tiny_pseudo_run: Path, tiny_scene: Path,
                                          override: str, message: str) -> None:
    proc = run_cli("student.train", tmp_path, [f"scene.path={tiny_scene}", f"run_dir={tmp_path / 'run'}",
                                               f"pseudo_dir={tiny_pseudo_run / 'pseudo'}", override,
                                               "train.progress_bar=false"])
    assert message in one_line_error(proc)


def _llff_wrong_shape(root: Path) -> tuple[str, list[str]]:
    np.save(root / "poses_bounds.npy", np.load(root / "poses_bounds.npy")[:, :15])
    return "poses_bounds.npy", []


def _llff_non_finite(root: Path) -> tuple[str, list[str]]:
    poses = np.load(root / "poses_bounds.npy")
    poses[3, 4] = np.nan
    np.save(root / "poses_bounds.npy", poses)
    return "poses_bounds.npy", []


def _llff_image_missing(root: Path) -> tuple[str, list[str]]:
    sorted((root / "images_8").iterdir())[-1].unlink()
    return "images_8", []


def _llff_factor_folder_missing(root: Path) -> tuple[str, list[str]]:
    return "images_4", ["scene.downscale=4"]


def _llff_mask_missing(root: Path) -> tuple[str, list[str]]:
    masks = root / "masks_8"
    masks.mkdir()
    for image in sorted((root / "images_8").iterdir())[1:]:
        Image.new("L", Image.open(image).size, 255).save(masks / image.name)
    return "masks_8", []


@pytest.mark.parametrize("mutate", [_llff_wrong_shape, _llff_non_finite, _llff_image_missing,
                                    _llff_factor_folder_missing, _llff_mask_missing],
                         ids=["wrong-shape", "non-finite", "image-missing", "factor-folder", "mask-missing"])
def test_bad_llff_scene_exits_1_with_one_line(tmp_path: Path, mutate: Callable[[Path], tuple[str, list[str]]]
                                              ) -> None:
    scene = write_forward_scene(tmp_path / "scene", 32)
    named, extra = mutate(scene)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _run_teacher(cwd, [f"scene.path={scene}", f"run_dir={tmp_path / 'run'}", *TINY_TEACHER, *extra])
    assert named in one_line_error(proc)


def test_gpu_profile_without_a_gpu_stops_before_training(tiny_scene: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``scripts/demo.sh profile=gpu`` on a machine without CUDA: the first stage stops with one line and
    trains nothing (CUDA_VISIBLE_DEVICES hides any GPU, so this holds on every machine)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    run_dir = tmp_path / "run"
    line = one_line_error(_run_teacher(tmp_path, ["profile=gpu", f"scene.path={tiny_scene}",
                                                  f"run_dir={run_dir}"]))
    assert "device=cuda: no CUDA GPU" in line
    assert not list(run_dir.rglob("*.ckpt"))


def test_resolve_device_refuses_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from core.errors import UserError
    from pipeline.run import lightning_accelerator, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match=f"device={name}: no CUDA GPU"):
            resolve_device(name)
    with pytest.raises(UserError):
        lightning_accelerator("cuda")
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
