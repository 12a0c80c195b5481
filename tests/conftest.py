"""Shared fixtures, and the markers defined once, here: the skip markers (``requires_*``), and the rule that
a ``browser`` or ``multiprocess`` test is also ``slow`` (a Chromium start or a process group costs
seconds), so that ``-m "not slow"`` is a quick selection. Helpers live in :mod:`testing`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from testing.runs import make_photo_pseudo_run, make_tiny_student_ckpt, make_tiny_teacher_run
from testing.scenes.forward import write_forward_scene
from testing.scenes.objects import make_procedural_scene

HAS_CUDA = torch.cuda.is_available()
HAS_NVCC = shutil.which("nvcc") is not None
HAS_CXX = shutil.which("c++") is not None or shutil.which("g++") is not None

try:  # tiny-cuda-nn raises OSError, not ImportError, when CUDA is missing
    import tinycudann  # noqa: F401

    HAS_TCNN = HAS_CUDA
except (ImportError, OSError):
    HAS_TCNN = False

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
requires_tcnn = pytest.mark.skipif(not HAS_TCNN, reason="needs tiny-cuda-nn and a CUDA GPU")
requires_nvcc = pytest.mark.skipif(not HAS_NVCC, reason="needs nvcc on the PATH")
requires_cxx = pytest.mark.skipif(not HAS_CXX, reason="needs a C++ compiler")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``browser`` and ``multiprocess`` tests are ``slow`` too (never skipped: CI runs them all)."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("multiprocess"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16x16 procedural sphere scene in Blender format (8 train, 2 val, 2 test views)."""
    return make_procedural_scene(tmp_path_factory.mktemp("tiny_scene"))


@pytest.fixture(scope="session")
def tiny_forward_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32x24 forward-facing scene in LLFF layout (``scripts/procedural_scene.py --kind forward``)."""
    return write_forward_scene(tmp_path_factory.mktemp("tiny_forward_scene"), 32)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_teacher_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a tiny untrained teacher of ``tiny_scene`` (``<run>/teacher/teacher.ckpt``)."""
    run_dir = tmp_path_factory.mktemp("tiny_teacher_run")
    make_tiny_teacher_run(run_dir, tiny_scene)
    return run_dir


@pytest.fixture(scope="session")
def tiny_pseudo_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose ``pseudo/`` holds shards of the tiny scene's train photos (no teacher needed).

    Three shards (3 + 3 + 2 views) on a white background (:func:`testing.runs.make_photo_pseudo_run`).
    """
    return make_photo_pseudo_run(tmp_path_factory.mktemp("tiny_run"), tiny_scene)


@pytest.fixture()
def run_dir(tiny_teacher_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny teacher's run folder (so each test owns its pseudo/ folder)."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_teacher_run / "teacher", dst / "teacher")
    return dst


@pytest.fixture(scope="session")
def exported_student(tmp_path_factory: pytest.TempPathFactory, tiny_scene: Path) -> tuple[Path, dict]:
    """A run dir with a tiny student exported by ``export.onnx.run`` (all variants, static fp32 + int8)."""
    from export.onnx import ExportConfig, run
    from scenes.load import SceneConfig

    run_dir = tmp_path_factory.mktemp("export_run")
    make_tiny_student_ckpt(run_dir / "student" / "student.ckpt", tiny_scene)
    report = run(ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(run_dir),
                              static_variants=["fp32", "int8"]))
    return run_dir, report


@pytest.fixture(scope="session")
def exported_forward(tmp_path_factory: pytest.TempPathFactory, tiny_forward_scene: Path) -> Path:
    """A run dir with a tiny hash-grid student of ``tiny_forward_scene`` (rays in NDC) exported in fp32."""
    from export.onnx import ExportConfig, run
    from scenes.load import SceneConfig

    run_dir = tmp_path_factory.mktemp("forward_run")
    make_tiny_student_ckpt(run_dir / "student" / "student.ckpt", tiny_forward_scene, encoding="hash")
    run(ExportConfig(scene=SceneConfig(path=str(tiny_forward_scene)), run_dir=str(run_dir), variants=["fp32"],
                     static_variants=[]))
    return run_dir
