"""Shared fixtures and skip markers (defined once, here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.scenes import make_procedural_scene

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

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic"


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16x16 procedural sphere scene in Blender format (8 train, 2 val, 2 test views)."""
    return make_procedural_scene(tmp_path_factory.mktemp("tiny_scene"))


@pytest.fixture(scope="session")
def tiny_forward_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32x24 forward-facing scene in LLFF layout (``scripts/procedural_scene.py --kind forward``)."""
    from scripts.procedural_scene import main

    root = tmp_path_factory.mktemp("tiny_forward_scene")
    main([str(root), "--kind", "forward", "--size", "32"])
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_tiny_teacher_run(run_dir: Path, scene_path: Path, seed: int = 0) -> Path:
    """Write an untrained (randomly initialised, seeded) tiny teacher of ``scene_path`` to
    ``<run_dir>/teacher/teacher.ckpt`` with a ``metrics.json``; returns the checkpoint path."""
    import json

    from cuda.backend import HashGridConfig
    from scenes.load import SceneConfig, load_scene
    from teacher.checkpoint import save_teacher
    from teacher.field import FieldConfig
    from teacher.model import TeacherModelConfig, build_teacher
    from teacher.occupancy import OccupancyConfig
    from teacher.render import MarchConfig

    scene = load_scene(SceneConfig(path=str(scene_path)), splits=("train",))
    cfg = TeacherModelConfig(
        field=FieldConfig(grid=HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4,
                                              max_resolution=16, backend="torch"), hidden_dim=16),
        occupancy=OccupancyConfig(resolution=8),
        render=MarchConfig(steps_per_diagonal=32, chunk=1024),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = build_teacher(cfg, scene.aabb, scene.near, scene.far)
    ckpt = run_dir / "teacher" / "teacher.ckpt"
    save_teacher(ckpt, teacher)
    (ckpt.parent / "metrics.json").write_text(json.dumps({"test": {"psnr": 12.5, "ssim": 0.5, "n_views": 2}}))
    return ckpt


@pytest.fixture(scope="session")
def tiny_teacher_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a tiny untrained teacher of ``tiny_scene`` (``<run>/teacher/teacher.ckpt``)."""
    run_dir = tmp_path_factory.mktemp("tiny_teacher_run")
    make_tiny_teacher_run(run_dir, tiny_scene)
    return run_dir


@pytest.fixture(scope="session")
def tiny_pseudo_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose ``pseudo/`` holds shards of the tiny scene's train photos (no teacher needed).

    Three shards (3 + 3 + 2 views) on a white background (:func:`tests.scenes.make_photo_pseudo_run`).
    """
    from tests.scenes import make_photo_pseudo_run

    return make_photo_pseudo_run(tmp_path_factory.mktemp("tiny_run"), tiny_scene)


def make_tiny_student_ckpt(path: Path, scene_root: Path, n_freqs: int = 10, encoding: str = "pe") -> Path:
    """Save a small randomly initialised student for ``scene_root`` with its scene facts (export tests).

    A forward-facing scene's student takes its NDC frame and the whole NDC box (as training does); an
    object scene's gets a content box smaller than the scene box and an empty-space grid (a ball of set
    cells in a 9^3 grid), so exports see rays that miss the box, rays the grid skips and rays evaluated.
    """
    from scenes.load import SceneConfig, load_scene
    from student.checkpoint import save_student
    from student.encoding import GridConfig
    from student.model import R2LStudent, StudentModelConfig
    from student.train import scene_meta

    scene = load_scene(SceneConfig(path=str(scene_root)), splits=("train",))
    # a content box smaller than the scene box, so that exports see rays that hit it and rays that miss it
    center, half = (scene.aabb[:3] + scene.aabb[3:]) / 2, (scene.aabb[3:] - scene.aabb[:3]) / 2
    box = torch.cat([center - 0.5 * half, center + 0.5 * half]) if scene.ndc is None else scene.aabb
    grid = GridConfig(n_levels=3, n_features=2, log2_hashmap_size=14, base_resolution=8, max_resolution=64)
    cells = (torch.stack(torch.meshgrid(*[torch.arange(9) + 0.5] * 3, indexing="ij"), -1) - 4.5).norm(dim=-1)
    occupancy = cells < 3.7 if scene.ndc is None else None  # [9, 9, 9]: a ball in the content box
    model = R2LStudent(StudentModelConfig(encoding=encoding, n_points=4, n_freqs=n_freqs, width=32, depth=6,
                                          grid=grid), box, scene.near, scene.far, ndc=scene.ndc,
                       occupancy=occupancy)
    if encoding == "hash":  # features of the size a trained table has, so the output depends on them
        with torch.no_grad():
            model.encoder.grid.params.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(3))
    return save_student(path, model, scene_meta(scene, model, [1.0, 1.0, 1.0], None))


@pytest.fixture()
def run_dir(tiny_teacher_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny teacher's run folder (so each test owns its pseudo/ folder)."""
    import shutil

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
