"""The web viewer of an image model (camera in, image out: one ``session.run`` a frame, no JS encoding):
``models.json`` lists its file of every exported output size, and the page in real headless Chromium draws
the frame of the Python runtime, picks the file of ``size=`` (a size with none is a one-line error naming
the export command) and reports its execution provider. The ray models' page: tests/test_viewer.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export.runtime import LightField
from export.viewer.browser import chromium_page, wait_for_frame
from export.viewer.page import ViewerConfig, write_viewer
from export.viewer.server import serving
from testing.cli import run_js
from tests.test_viewer import _assert_same_frame, _page_frame, _pose_query, _rig_pose

SIZES = {"student.onnx": [16, 16], "student_12x20.onnx": [12, 20]}  # the training size, one exported
# navigator.gpu with an adapter whose device fails (a browser whose WebGPU does not work)
BROKEN_WEBGPU = """Object.defineProperty(navigator, 'gpu', {configurable: true, value: {requestAdapter:
  async () => ({ features: new Set(), requestDevice: async () => { throw new Error('no device') } })}})"""


@pytest.fixture(scope="module")
def image_viewer(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The viewer (written as by default: webgpu=true) of a tiny image run exported at 16x16 and 12x20."""
    from testing.runs import export_tiny_image_run

    run_dir = tmp_path_factory.mktemp("image_viewer")
    export_tiny_image_run(run_dir, tiny_scene, image_sizes=[[12, 20]])
    return Path(write_viewer(ViewerConfig(run_dir=str(run_dir), out_dir=str(run_dir / "viewer")))["out_dir"])


def test_models_json_lists_every_size_and_precision(image_viewer: Path) -> None:
    manifest = json.loads((image_viewer / "models.json").read_text())
    rows = [(m["file"], m["precision"], m["meta"]["decoder"], m["meta"]["output_size"])
            for m in manifest["models"]]
    assert rows == [(f"{stem}{suffix}.onnx", precision, "image", size)
                    for stem, size in (("student", [16, 16]), ("student_12x20", [12, 20]))
                    for suffix, precision in (("", "fp32"), ("_fp16", "fp16"), ("_int8", "int8"))]
    assert manifest["default"] == "student.onnx"
    assert not (image_viewer / "student_grid.bin").exists()  # no split model: the page needs no encoder


def test_image_inputs_are_the_runtimes(image_viewer: Path) -> None:
    """The page's ``c2w`` and ``K`` of a pose are the runtime's (K scaled to the file's output size)."""
    manifest = json.loads((image_viewer / "models.json").read_text())
    field = LightField(image_viewer / "student_12x20.onnx")
    c2w = _rig_pose(field, 2)
    meta = next(m["meta"] for m in manifest["models"] if m["file"] == "student_12x20.onnx")
    got = run_js("import {imageFeeds} from './image.js';"
                 f"const f = imageFeeds({c2w.reshape(-1).tolist()}, {json.dumps(meta)});"
                 "console.log(JSON.stringify({c2w: Array.from(f.c2w), K: Array.from(f.K)}))")
    np.testing.assert_array_equal(np.array(got["c2w"], np.float32).reshape(4, 4), c2w.astype(np.float32))
    np.testing.assert_allclose(np.array(got["K"], np.float32).reshape(3, 3), field.default_K((12, 20)),
                               rtol=1e-7)


@pytest.mark.browser
@pytest.mark.parametrize(("query", "file"), [
    ("size=20x12&threads=2", "student_12x20.onnx"),  # not square, not the training size
    ("model=student_int8.onnx&threads=1&frames=2", "student_int8.onnx"),  # the training size by default
])
def test_page_image_frame_equals_python_runtime(image_viewer: Path, query: str, file: str) -> None:
    field = LightField(image_viewer / file)
    c2w = _rig_pose(field, 3)
    frames = 2 if "frames=2" in query else 1
    state, pixels = _page_frame(image_viewer, f"pose={_pose_query(c2w)}&{query}", frames=frames)
    H, W = SIZES.get(file, [16, 16])
    assert state["error"] is None, state["error"]
    assert (state["width"], state["height"], state["frame"]) == (W, H, frames) and state["ms"] > 0
    assert state["provider"] == "wasm"  # headless Chromium here has no WebGPU adapter
    assert f"{W}x{H} (one call) · {file}" in state["hud"] and "wasm" in state["hud"]
    assert (pixels[..., 3] == 255).all()
    _assert_same_frame(pixels, field.render(c2w))


@pytest.mark.browser
def test_page_image_size_without_a_file_names_the_export(image_viewer: Path) -> None:
    state, _ = _page_frame(image_viewer, "size=40x30&model=student_fp16.onnx")
    assert state["frame"] == 0 and state["provider"] is None
    error = state["error"]
    assert error.startswith("size=40x30: no fp16 image model of that size") and "have 16x16, 20x12" in error
    assert "python -m export.onnx image_sizes=[[30,40]]" in error and "\n" not in error


@pytest.mark.browser
def test_page_without_working_webgpu_runs_on_wasm(image_viewer: Path) -> None:
    """A browser whose WebGPU adapter gives no device: the page loads the wasm build and says so."""
    with serving(image_viewer) as url, chromium_page() as page:
        page.add_init_script(BROKEN_WEBGPU)
        page.goto(f"{url}index.html?threads=2")
        state = wait_for_frame(page, 1)
        assert state["error"] is None and state["frame"] == 1 and state["provider"] == "wasm"
        scripts = page.evaluate("() => Array.from(document.scripts, (s) => s.src.split('/').pop())")
        assert "ort.wasm.min.js" in scripts and "ort.webgpu.min.js" not in scripts


@pytest.mark.browser
def test_page_image_model_orbits_at_its_size(image_viewer: Path) -> None:
    """Moving the camera draws new frames at the file's output size (no coarse frames: its shape is
    static), the one the runtime draws for the pose the page reports."""
    field = LightField(image_viewer / "student_12x20.onnx")
    with serving(image_viewer) as url, chromium_page() as page:
        page.goto(f"{url}index.html?size=20x12&threads=1")
        assert wait_for_frame(page, 1)["frame"] == 1
        view = page.locator("#view")  # 80x48 CSS pixels: the 20x12 canvas shown 4x
        view.drag_to(view, source_position={"x": 10, "y": 24}, target_position={"x": 70, "y": 28})
        state = wait_for_frame(page, 2)
        # one evaluation: the pixels and the pose of the same frame
        frame = page.evaluate("() => { const c = document.getElementById('view');"
                              " return {pose: c.dataset.pose,"
                              " rgba: Array.from(c.getContext('2d').getImageData(0, 0, 20, 12).data)} }")
    assert (state["width"], state["height"]) == (20, 12)
    pixels = np.array(frame["rgba"], dtype=np.uint8).reshape(12, 20, 4)
    pose = np.array(frame["pose"].split(","), dtype=np.float64).reshape(4, 4)
    _assert_same_frame(pixels, field.render(pose))
