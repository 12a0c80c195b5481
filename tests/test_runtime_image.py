"""export.runtime on an image model: one session call a frame, equal to PyTorch's render, one-line errors for
bad input, the render command, and no torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from export.parity import random_poses
from export.runtime import LightField, ModelError, ModelMeta, scaled_intrinsics
from export.runtime.render import config_from_overrides
from export.runtime.render import run as render_path
from export.variants import set_metadata
from scenes.load import SceneConfig, load_scene
from student.checkpoint import load_student
from student.image_model import ImageStudent
from testing.cli import REPO, blocking_imports
from testing.runs import export_tiny_image_run
from tests.test_imports import OURS, TORCH


@pytest.fixture(scope="module")
def image_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a tiny image student of ``tiny_scene`` (16x16) exported in fp32, plus 12x20."""
    run_dir = tmp_path_factory.mktemp("image_runtime")
    export_tiny_image_run(run_dir, tiny_scene, variants=["fp32"], image_sizes=[[12, 20]])
    return run_dir


def _poses(tiny_scene: Path, n: int = 3) -> torch.Tensor:
    train = load_scene(SceneConfig(path=str(tiny_scene)), splits=("train",)).split("train")
    return torch.cat([train.c2w[:1], random_poses(train.c2w, n - 1, torch.Generator().manual_seed(2))])


@pytest.mark.parametrize("stem, size", [("student", (16, 16)), ("student_12x20", (12, 20))])
def test_render_equals_pytorch_render(image_run: Path, tiny_scene: Path, stem: str,
                                      size: tuple[int, int]) -> None:
    model, facts = load_student(image_run / "student" / "student.ckpt")
    assert isinstance(model, ImageStudent)
    field = LightField(image_run / "export" / f"{stem}.onnx")
    assert field.view_size == size and field.image_size == (16, 16) and field.meta.decoder == "image"
    K_default = scaled_intrinsics(np.asarray(facts.K, np.float32), (16, 16), size)
    K_wide = K_default * np.array([[0.7], [0.7], [1.0]], np.float32)  # another field of view
    for c2w in _poses(tiny_scene):
        for K, got in ((K_default, field.render(c2w.numpy())), (K_wide, field.render(c2w.numpy(), K_wide))):
            with torch.no_grad():
                want = model.render(c2w[None], torch.from_numpy(K)[None], *size)[0].numpy()
            assert got.shape == (*size, 3) and got.dtype == np.float32
            assert want.std() > 1e-3, "degenerate reference: the comparison would prove nothing"
            assert np.abs(got - want).max() <= 1e-4
    c2w = _poses(tiny_scene)[0].numpy()
    assert np.array_equal(field.render(c2w[:3]), field.render(c2w))  # 3x4 poses accepted
    assert not np.array_equal(field.render(c2w, K_wide), field.render(c2w))


class _CountingSession:
    """An ONNX Runtime session that counts its ``run`` calls."""

    def __init__(self, session: Any):
        self.session, self.calls = session, 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.session.run(*args, **kwargs)


def test_one_session_call_per_frame_and_timing(image_run: Path, tiny_scene: Path) -> None:
    field = LightField(image_run / "export" / "student.onnx")
    counter = _CountingSession(field.session)
    field.session = counter
    for c2w in _poses(tiny_scene):
        field.render(c2w.numpy())
    assert counter.calls == 3
    assert field.time_render(_poses(tiny_scene)[0].numpy(), repeats=2) > 0 and counter.calls == 3 + 3


BAD_INPUTS = [
    ({"c2w": np.eye(3)}, "pose must be 4x4 (or 3x4), got shape [3, 3]"),
    ({"c2w": np.full((4, 4), np.nan)}, "pose is not finite"),
    ({"c2w": 2 * np.eye(4)}, "pose is not rigid"),
    ({"K": np.eye(4)}, "intrinsics K must be 3x3, got shape [4, 4]"),
    ({"K": [[16.0, 0, 8], [0, np.inf, 8], [0, 0, 1]]}, "intrinsics K is not finite"),
    ({"K": [[0.0, 0, 8], [0, 16, 8], [0, 0, 1]]}, "K needs positive focal lengths, got fx=0, fy=16"),
    ({"K": [[16.0, 0, 8], [0, -16, 8], [0, 0, 1]]}, "needs positive focal lengths"),
    ({"K": "sixteen"}, "intrinsics K is not a 3x3 matrix of numbers"),
    ({"image_size": (8, 8)}, "this image model draws 16x16 images only, not 8x8: export the size you need "
                             "with python -m export.onnx image_sizes=[[8,8]]"),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS)
def test_bad_inputs_are_one_line_errors(image_run: Path, kwargs: dict, message: str) -> None:
    field = LightField(image_run / "export" / "student.onnx")
    c2w = np.eye(4, dtype=np.float32)
    c2w[2, 3] = -4.0
    with pytest.raises(ModelError) as info:
        field.render(**({"c2w": c2w} | kwargs))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_rays_into_an_image_model_are_refused(image_run: Path) -> None:
    path = image_run / "export" / "student.onnx"
    rays = np.zeros((4, 3), np.float32)
    with pytest.raises(ModelError, match=r"student\.onnx: an image model draws whole views, not rays: use "
                                         r"render\(c2w, K\)$"):
        LightField(path)(rays, rays)


def test_inputs_are_checked_against_the_decoder(image_run: Path, tmp_path: Path) -> None:
    """An image graph whose metadata calls it a ray model is refused at load, naming the inputs that decoder
    needs; so is one whose metadata names another output size than its graph draws."""
    proto = onnx.load(str(image_run / "export" / "student.onnx"))
    meta = ModelMeta.from_props({p.key: p.value for p in proto.metadata_props}, "student.onnx")
    bad = tmp_path / "mislabelled.onnx"
    bad.write_bytes(set_metadata(proto, dataclasses.replace(meta, decoder="ray", output_size=[]))
                    .SerializeToString())
    with pytest.raises(ModelError, match=r"mislabelled\.onnx: a ray model needs inputs \['rays_o', "
                                         r"'rays_d'\] and output \['rgb'\], found \['c2w', 'K'\]"):
        LightField(bad)
    bad.write_bytes(set_metadata(proto, dataclasses.replace(meta, output_size=[8, 8])).SerializeToString())
    with pytest.raises(ModelError, match=r"mislabelled\.onnx: metadata output_size \[8, 8\] does not match "
                                         r"the graph's output shape \[16, 16, 3\]$"):
        LightField(bad)


def test_render_command_draws_an_image_model(image_run: Path, tmp_path: Path) -> None:
    base = [f"run_dir={image_run}", "orbit.n_frames=2", "video=gif", "max_pixels=100"]
    res = render_path(config_from_overrides([*base, f"out_dir={tmp_path / 'a'}"]))
    assert res["n_frames"] == 2 and res["image_size"] == [16, 16]  # max_pixels does not shrink it
    assert len(list((tmp_path / "a" / "frames").glob("*.png"))) == 2
    assert (tmp_path / "a" / "render.gif").is_file()
    model = image_run / "export" / "student_12x20.onnx"
    res = render_path(config_from_overrides([*base, f"model={model}", f"out_dir={tmp_path / 'b'}"]))
    assert res["image_size"] == [12, 20]
    with pytest.raises(ModelError, match=r"^orbit: frame 0: .*draws 16x16 images only, not 8x8: .*"
                                         r"image_sizes=\[\[8,8\]\]$"):
        render_path(config_from_overrides([*base, "image_size=[8,8]", f"out_dir={tmp_path / 'c'}"]))


def test_image_model_runs_with_torch_unimportable(image_run: Path) -> None:
    """The runtime draws an image model with torch and every package of ours but ``export`` unimportable."""
    code = blocking_imports(set(TORCH | (OURS - {"export"}))) + (
        "import numpy as np\n"
        "from export.runtime import LightField\n"
        f"field = LightField(r'{image_run / 'export' / 'student_12x20.onnx'}')\n"
        "c2w = np.eye(4)\n"
        "c2w[2, 3] = -4.0\n"
        "img = field.render(c2w)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'core', 'student', 'teacher'))\n"
        "print('SHAPE', img.shape, 'LOADED', bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHAPE (12, 20, 3) LOADED []" in proc.stdout
