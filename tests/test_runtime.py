"""export.runtime: numpy + onnxruntime only, ray math equal to core.rays, batching, providers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cameras import look_at
from core.rays import generate_rays, ray_aabb_intersect
from export.runtime.cameras import check_pose, rays_from_camera, rays_meet_box
from export.runtime.lightfield import LightField, ModelError, default_providers

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_runtime_imports_neither_torch_nor_training_code(exported_student: tuple[Path, dict]) -> None:
    model = exported_student[0] / "export" / "student.onnx"
    code = (
        "import sys, numpy as np\n"
        "from export.runtime import LightField\n"
        f"field = LightField(r'{model}')\n"
        "c2w = np.eye(4)\n"
        "c2w[2, 3] = -4.0  # at z=-4 looking along +z at the origin\n"
        "img = field.render(c2w)\n"
        "assert img.shape == (16, 16, 3), img.shape\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'core', 'student', 'teacher'))\n"
        "print('LOADED', bad)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout


def test_runtime_folder_runs_copied_under_another_name(exported_student: tuple[Path, dict],
                                                       tmp_path: Path) -> None:
    """``export/runtime`` is self-contained: copied anywhere as ``lfrt``, its render command runs with torch
    and every package of ours (``export`` too) unimportable."""
    import shutil

    from tests.test_imports import OURS, TORCH

    shutil.copytree(REPO / "export" / "runtime", tmp_path / "lfrt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    args = [f"run_dir={exported_student[0]}", f"out_dir={tmp_path / 'out'}", "orbit.n_frames=1", "video=none"]
    code = (
        "import runpy, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {set(TORCH | OURS)!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.argv = ['lfrt.render', *{args!r}]\n"
        "runpy.run_module('lfrt.render', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "frames" / "00000.png").is_file()


def test_missing_onnxruntime_names_the_extra(exported_student: tuple[Path, dict]) -> None:
    model = exported_student[0] / "export" / "student.onnx"
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from export.runtime import LightField, MissingRuntimeError\n"
        f"try:\n    LightField(r'{model}')\nexcept MissingRuntimeError as exc:\n    print('MSG', exc)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "pip install -e .[cpu]" in proc.stdout and ".[gpu]" in proc.stdout


@pytest.mark.parametrize("H,W", [(16, 16), (7, 12)])
def test_rays_match_core_rays(H: int, W: int) -> None:
    gen = torch.Generator().manual_seed(H * W)
    eye = torch.randn(3, 3, generator=gen) * 3
    c2w = look_at(eye, torch.randn(3, generator=gen) * 0.2, torch.tensor([0.0, 0.0, 1.0]))
    for i in range(3):
        K = torch.tensor([[20.0 + i, 0, W / 2 + 0.3], [0, 18.0 + i, H / 2 - 0.7], [0, 0, 1]])
        ref_o, ref_d = generate_rays(c2w[i], K, H, W)
        o, d = rays_from_camera(c2w[i].numpy(), K.numpy(), H, W)
        assert o.shape == d.shape == (H * W, 3) and o.dtype == d.dtype == np.float32
        assert np.abs(o - ref_o.numpy()).max() <= 1e-6 * max(1.0, float(ref_o.abs().max()))
        assert np.abs(d - ref_d.numpy()).max() <= 1e-6
        assert np.abs(d - ref_d.roll(1, 0).numpy()).max() > 1e-3  # row-major order matters


def test_static_model_pads_and_matches_dynamic(exported_student: tuple[Path, dict]) -> None:
    out = exported_student[0] / "export"
    dynamic, static = LightField(out / "student.onnx"), LightField(out / "student_static.onnx")
    assert static.meta.batch == 256 and dynamic.meta.batch == 0
    rng = np.random.default_rng(0)
    d = rng.normal(size=(300, 3)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = (-4 * d + 0.2 * rng.normal(size=(300, 3))).astype(np.float32)
    a, b, c = dynamic(o, d, batch_size=64), static(o, d), dynamic(o, d)
    assert a.shape == (300, 3)
    assert np.abs(a - c).max() <= 1e-6 and np.abs(b - c).max() <= 1e-5
    assert a.std() > 1e-3


def test_render_uses_model_intrinsics_and_checks_poses(exported_student: tuple[Path, dict]) -> None:
    field = LightField(exported_student[0] / "export" / "student.onnx")
    c2w = look_at(torch.tensor([[4.0, 0.0, 1.0]]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))[0].numpy()
    img = field.render(c2w)
    rays_o, rays_d = rays_from_camera(c2w, np.asarray(field.meta.K), 16, 16)
    assert np.array_equal(img.reshape(-1, 3), field(rays_o, rays_d))
    assert field.render(c2w[:3]).shape == (16, 16, 3)  # 3x4 poses accepted
    assert field.render(c2w, image_size=(8, 10)).shape == (8, 10, 3)
    K_half = np.asarray(field.meta.K, dtype=np.float32) * np.array([[0.5], [0.5], [1.0]], dtype=np.float32)
    half = field.render(c2w, image_size=(8, 8))  # default K scaled: same field of view
    assert np.array_equal(half, field.render(c2w, K=K_half, image_size=(8, 8)))
    assert not np.array_equal(half, field.render(c2w, K=np.asarray(field.meta.K), image_size=(8, 8)))
    with pytest.raises(ModelError, match="4x4"):
        field.render(np.eye(3))
    with pytest.raises(ModelError, match="3x3"):
        field.render(c2w, K=np.eye(4))
    with pytest.raises(ModelError, match=r"\[N, 3\]"):
        field(np.zeros((5, 3), np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ModelError, match="not finite"):
        check_pose(np.full((4, 4), np.nan))
    with pytest.raises(ModelError, match="not rigid"):
        field.render(2 * c2w)


def test_check_pose_refuses_the_shared_bad_poses() -> None:
    """The poses every validator refuses (``tests/pose_cases.py``), with the same message as core's."""
    from core.cameras import PoseError, check_c2w
    from tests.pose_cases import BAD_POSES, ROTATED

    for name, value, fragment in BAD_POSES:
        with pytest.raises(ModelError) as info:
            check_pose(value, "cams.json: pose 3")
        with pytest.raises(PoseError) as core_info:
            check_c2w(value, "cams.json: pose 3")
        assert fragment in str(info.value) and str(info.value) == str(core_info.value), name
    np.testing.assert_array_equal(check_pose(ROTATED), check_c2w(ROTATED, "pose").numpy())


def test_providers_auto_and_override(exported_student: tuple[Path, dict]) -> None:
    providers = default_providers()
    assert providers[-1] == "CPUExecutionProvider"
    field = LightField(exported_student[0] / "export" / "student.onnx", providers=["CPUExecutionProvider"],
                       threads=1)
    assert field.providers == ["CPUExecutionProvider"]


def _rays_around_box(box: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays from a sphere around ``box`` aimed at random points near it, some grazing its faces."""
    rng = np.random.default_rng(seed)
    center, half = (box[:3] + box[3:]) / 2, (box[3:] - box[:3]) / 2
    d = rng.normal(size=(n, 3))
    o = center + 4 * np.abs(half).max() * d / np.linalg.norm(d, axis=1, keepdims=True)
    target = center + half * rng.uniform(-1.6, 1.6, size=(n, 3))
    face = rng.integers(0, 3, n)  # a quarter of the targets exactly on a face plane: grazing rays
    graze = rng.random(n) < 0.25
    target[graze, face[graze]] = (center + half)[face[graze]]
    rays_d = target - o
    rays_d /= np.linalg.norm(rays_d, axis=1, keepdims=True)
    return o.astype(np.float32), rays_d.astype(np.float32)


def test_box_test_is_a_superset_of_the_graphs(exported_student: tuple[Path, dict]) -> None:
    meta = LightField(exported_student[0] / "export" / "student.onnx").meta
    box = np.asarray(meta.content_aabb, dtype=np.float32)
    o, d = _rays_around_box(box, 20000, seed=1)
    ours = rays_meet_box(o, d, box, meta.near, meta.far)
    ref = ray_aabb_intersect(torch.from_numpy(o), torch.from_numpy(d), torch.from_numpy(box),
                             meta.near, meta.far)[2].numpy()
    assert 0.2 < ref.mean() < 0.8
    assert not (ref & ~ours).any()  # never rejects a ray the graph would evaluate
    assert (ours & ~ref).mean() < 0.01  # and widens the test only at the edges


@pytest.mark.parametrize("name", ["student.onnx", "student_int8.onnx", "student_static.onnx"])
def test_skipping_misses_changes_no_output(exported_student: tuple[Path, dict], name: str) -> None:
    path = exported_student[0] / "export" / name
    fast, full = LightField(path), LightField(path, skip_misses=False)
    o, d = _rays_around_box(np.asarray(fast.meta.content_aabb, dtype=np.float32), 3000, seed=2)
    a, b = fast(o, d, batch_size=128), full(o, d, batch_size=128)
    bg = np.asarray(fast.meta.background, dtype=np.float32)
    shown_bg = (b == bg).all(-1)
    assert 0.2 < shown_bg.mean() < 0.8 and b[~shown_bg].std() > 1e-3
    tol = 1e-6 if "int8" not in name else 1e-2  # int8: dynamic activation ranges depend on the batch
    assert np.abs(a - b).max() <= tol
    assert np.array_equal(a[shown_bg], b[shown_bg])
