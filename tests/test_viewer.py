"""The web viewer: the folder its writer makes, its config, and the page in real headless Chromium (frames
equal to the Python runtime's, the query interface, errors, the split student, a forward-facing rig).

The JS and WebAssembly alone, in node: tests/test_viewer_js.py. The browser tests need Debian's Chromium
(``apt-get install chromium``, done by ``.ci/run``) and Python playwright: they fail, never skip, when
either is missing.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import UserError
from core.metrics import psnr
from export.runtime import LightField
from export.viewer.browser import canvas_pixels, chromium_page, find_browser, wait_for_frame
from export.viewer.page import ORT_PACKAGE_DIST, ViewerConfig, run, write_viewer
from export.viewer.server import serving
from tests.test_viewer_js import check_near_the_rig

# --- the folder -----------------------------------------------------------------------------------


def test_viewer_folder_is_complete(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = exported_student
    res = write_viewer(ViewerConfig(run_dir=str(run_dir), out_dir=str(tmp_path / "viewer")))
    out = Path(res["out_dir"])
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "viewer.js", "camera.js", "models.json", "ort.wasm.min.js",
            "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm", "student.onnx"} <= names
    manifest = json.loads((out / "models.json").read_text())
    assert [m["file"] for m in manifest["models"]] == ["student.onnx", "student_fp16.onnx",
                                                       "student_int8.onnx"]
    field = LightField(out / "student.onnx")
    assert manifest["models"][0]["meta"]["K"] == field.meta.K
    assert manifest["models"][0]["meta"]["content_aabb"] == field.meta.content_aabb
    html = (out / "index.html").read_text() + (out / "viewer.js").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    # writing again replaces the folder and leaves no temporary folder beside it
    write_viewer(ViewerConfig(run_dir=str(run_dir), out_dir=str(out), variants=["student.onnx"]))
    assert not (out / "student_int8.onnx").exists()
    assert [p.name for p in out.parent.iterdir()] == ["viewer"]


def test_viewer_without_runtime_says_so(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = exported_student
    with pytest.raises(UserError, match="onnxruntime-web is not installed") as exc:
        write_viewer(ViewerConfig(run_dir=str(run_dir), out_dir=str(tmp_path / "v"), ort_dir=str(tmp_path)))
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="no exported model"):
        write_viewer(ViewerConfig(run_dir=str(tmp_path / "nothing")))


@pytest.mark.parametrize("profile", ["cpu", "gpu", "paper"])
def test_viewer_config_accepts_every_profile(profile: str) -> None:
    """``profile=`` composes for the viewer as for every stage (``scripts/demo.sh profile=gpu``); no
    profile changes it."""
    from pipeline.config import compose, to_dataclass

    default = to_dataclass(compose("viewer"), ViewerConfig)
    assert to_dataclass(compose("viewer", [f"profile={profile}"]), ViewerConfig) == default


def test_viewer_cli_refuses_an_unknown_profile(tmp_path: Path) -> None:
    from testing.cli import one_line_error, run_cli

    proc = run_cli("export.viewer", tmp_path, [f"run_dir={tmp_path / 'run'}", "profile=tpu"], timeout=120)
    assert "profile/tpu" in one_line_error(proc)
    assert not (tmp_path / "run").exists()


def test_viewer_refuses_a_corrupt_model(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = exported_student
    bad = tmp_path / "export"
    bad.mkdir()
    (bad / "student.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="student.onnx: not a readable ONNX file"):
        write_viewer(ViewerConfig(run_dir=str(run_dir), export_dir=str(bad), out_dir=str(tmp_path / "v")))


# --- the page in Chromium -------------------------------------------------------------------------


@pytest.mark.browser
def test_browser_is_installed() -> None:
    """CI installs Debian's Chromium and playwright: a missing one is a failure, never a skip."""
    assert find_browser() is not None, "Chromium not found: apt-get install chromium (see .ci/run)"
    assert ORT_PACKAGE_DIST.is_dir(), "onnxruntime-web not installed: scripts/setup.sh runs npm ci"


@pytest.fixture(scope="module")
def viewer_dirs(exported_student: tuple[Path, dict], tiny_scene: Path,
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Viewers of the tiny pe student and of a tiny hash-grid student (Gather, BitwiseXor in the graph)."""
    from export.onnx import ExportConfig
    from export.onnx import run as export_run
    from scenes.load import SceneConfig
    from testing.runs import make_tiny_student_ckpt

    run_dir, _ = exported_student
    pe_dir = tmp_path_factory.mktemp("v") / "pe"
    out = {"pe": Path(write_viewer(ViewerConfig(run_dir=str(run_dir), webgpu=False,
                                                out_dir=str(pe_dir)))["out_dir"])}
    hash_run = tmp_path_factory.mktemp("hash_run")
    make_tiny_student_ckpt(hash_run / "student" / "student.ckpt", tiny_scene, encoding="hash")
    export_run(ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(hash_run),
                            static_variants=[]))
    out["hash"] = Path(write_viewer(ViewerConfig(run_dir=str(hash_run), webgpu=False,
                                                 out_dir=str(hash_run / "viewer")))["out_dir"])
    return out


def _pose_query(c2w: np.ndarray) -> str:
    return ",".join(f"{x:.9g}" for x in np.asarray(c2w, dtype=np.float64).reshape(-1))


def _rig_pose(field: LightField, az: float) -> np.ndarray:
    from export.runtime.paths import orbit_poses

    return orbit_poses(field.meta.rig, 8)[int(az)]


def _assert_same_frame(pixels: np.ndarray, want: np.ndarray) -> None:
    """The page's ``[H, W, 4]`` bytes show the runtime's ``[H, W, 3]`` frame: at most one byte off and
    PSNR >= 40 dB, on a frame with content (not a flat background)."""
    want_u8 = (np.clip(want, 0, 1) * 255 + 0.5).astype(np.uint8)
    assert want_u8.std() > 3
    diff = np.abs(pixels[..., :3].astype(int) - want_u8.astype(int))
    assert diff.max() <= 1, f"max byte difference {diff.max()}"
    assert psnr(torch.tensor(pixels[..., :3] / 255.0), torch.tensor(want)) >= 40.0


def _page_frame(folder: Path, query: str, isolate: bool = True, frames: int = 1) -> tuple[dict, np.ndarray]:
    with serving(folder, isolate=isolate) as url, chromium_page() as page:
        page.goto(f"{url}index.html?{query}")
        state = wait_for_frame(page, frames)
        pixels = np.array(canvas_pixels(page), dtype=np.uint8).reshape(state["height"], state["width"], 4) \
            if state["frame"] else np.zeros((0, 0, 4), np.uint8)
        state["hud"] = page.inner_text("#hud")
    return state, pixels


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["pe", "hash"])
def test_page_frame_equals_python_runtime(viewer_dirs: dict[str, Path], kind: str) -> None:
    folder = viewer_dirs[kind]
    field = LightField(folder / "student.onnx")
    c2w = _rig_pose(field, 3)
    W, H = 40, 28  # not square, not the training size: orientation and intrinsics scaling both matter
    state, pixels = _page_frame(folder, f"pose={_pose_query(c2w)}&size={W}x{H}&threads=2")
    assert state["error"] is None, state["error"]
    assert (state["width"], state["height"], state["frame"]) == (W, H, 1)
    assert (pixels[..., 3] == 255).all()
    _assert_same_frame(pixels, field.render(c2w, image_size=(H, W)))


@pytest.mark.browser
def test_page_query_interface(viewer_dirs: dict[str, Path]) -> None:
    folder = viewer_dirs["pe"]
    field = LightField(folder / "student_int8.onnx")
    c2w = _rig_pose(field, 1)
    state, pixels = _page_frame(folder, f"pose={_pose_query(c2w)}&size=23x17&model=student_int8.onnx"
                                        "&threads=1&frames=3", frames=3)
    assert state["error"] is None and state["frame"] == 3 and (state["width"], state["height"]) == (23, 17)
    assert state["ms"] > 0 and math.isfinite(state["load_ms"])
    assert "student_int8.onnx" in state["hud"] and "int8" in state["hud"]
    want = (np.clip(field.render(c2w, image_size=(17, 23)), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.abs(pixels[..., :3].astype(int) - want).max() <= 1


@pytest.mark.browser
def test_page_starts_on_the_rig(viewer_dirs: dict[str, Path]) -> None:
    folder = viewer_dirs["pe"]
    field = LightField(folder / "student.onnx")
    state, pixels = _page_frame(folder, "threads=1")
    H, W = field.image_size
    assert state["frame"] >= 1 and (state["height"], state["width"]) == (H, W)
    want = (np.clip(field.render(_rig_pose(field, 0)), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.abs(pixels[..., :3].astype(int) - want).max() <= 2


@pytest.mark.browser
def test_page_errors_are_one_line(viewer_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "viewer"
    shutil.copytree(viewer_dirs["pe"], folder)
    state, _ = _page_frame(folder, "model=missing.onnx")
    assert state["frame"] == 0 and "model=missing.onnx: not in this viewer" in state["error"]
    state, _ = _page_frame(folder, "size=12")
    assert state["frame"] == 0 and state["error"].startswith("size= must be WxH")
    (folder / "student_fp16.onnx").write_bytes(b"garbage")
    state, _ = _page_frame(folder, "model=student_fp16.onnx")
    assert state["frame"] == 0 and "student_fp16.onnx: the model failed to load" in state["error"]
    assert "\n" not in state["error"]
    (folder / "ort.wasm.min.js").unlink()
    state, _ = _page_frame(folder, "")
    assert state["frame"] == 0 and "runtime file ort.wasm.min.js is missing" in state["error"]


@pytest.mark.browser
def test_page_without_isolation_headers_warns_and_runs_on_one_thread(viewer_dirs: dict[str, Path]) -> None:
    state, _ = _page_frame(viewer_dirs["pe"], "threads=2&size=8x8", isolate=False)
    assert state["frame"] == 1
    assert state["error"].startswith("no WebAssembly threads") and "1 thread(s)" in state["hud"]


@pytest.mark.browser
def test_viewer_stage_takes_a_screenshot(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = exported_student
    res = run(ViewerConfig(run_dir=str(run_dir), out_dir=str(tmp_path / "viewer"), screenshot=True,
                           webgpu=False))
    shot = Path(res["screenshot"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and res["first_frame"]["frame"] >= 1
    # the report links the viewer and shows the screenshot
    from report.build import viewer_lines

    run_copy = tmp_path / "run"
    shutil.copytree(shot.parent, run_copy / "viewer")
    text = "\n".join(viewer_lines(run_copy))
    assert "](viewer/screenshot.png)" in text and "serve=true" in text and "ms from page load" in text
    assert viewer_lines(tmp_path / "no_run") == []


# --- the split student in the page (JS encoding + ONNX MLP) -------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize(("threads", "wasm"), [(1, True), (2, True), (2, False)])
def test_page_split_model_equals_python_runtime(viewer_dirs: dict[str, Path], threads: int, wasm: bool,
                                                tmp_path: Path) -> None:
    """1 thread: encoding on the page's thread; 2: in two workers; without hashgrid.wasm: the JS lookup."""
    folder = viewer_dirs["hash"]
    if not wasm:
        folder = Path(shutil.copytree(folder, tmp_path / "viewer"))
        (folder / "hashgrid.wasm").unlink()
    field = LightField(folder / "student.onnx")
    c2w = _rig_pose(field, 5)
    W, H = 36, 30
    state, pixels = _page_frame(folder, f"pose={_pose_query(c2w)}&size={W}x{H}&threads={threads}&batch=300"
                                        "&model=student_mlp.onnx")
    lookup = "wasm encoding" if wasm else "JS encoding"
    assert state["error"] is None and lookup in state["hud"] and f"{threads} thread(s)" in state["hud"]
    _assert_same_frame(pixels, field.render(c2w, image_size=(H, W)))


@pytest.mark.browser
def test_viewer_default_is_the_fp32_split_model(viewer_dirs: dict[str, Path], tmp_path: Path) -> None:
    """With `default` null, a hash-grid student's page opens the split model with the fp32 MLP (written
    first: exact, and the int8 one was no faster across scenes); `default` picks any other, and the int8
    page's frame is the student's; a student without the split model opens its first variant."""
    folder = viewer_dirs["hash"]
    manifest = json.loads((folder / "models.json").read_text())
    assert [(m["file"], m.get("kind")) for m in manifest["models"][:2]] == [
        ("student_mlp.onnx", "split"), ("student_mlp_int8.onnx", "split")]
    assert manifest["default"] == "student_mlp.onnx"
    assert json.loads((viewer_dirs["pe"] / "models.json").read_text())["default"] == "student.onnx"
    field = LightField(folder / "student_int8.onnx")
    c2w = _rig_pose(field, 3)
    query = f"pose={_pose_query(c2w)}&size=36x30&threads=2&model=student_mlp_int8.onnx"
    state, pixels = _page_frame(folder, query)
    assert state["error"] is None and "student_mlp_int8.onnx (int8, wasm encoding" in state["hud"]
    # int8 activations are quantized per call: the page's calls are not the runtime's, so not bit-level
    want = torch.tensor(field.render(c2w, image_size=(30, 36)))
    assert psnr(torch.tensor(pixels[..., :3] / 255.0), want) >= 35
    int8 = write_viewer(ViewerConfig(run_dir=str(folder.parent), webgpu=False, out_dir=str(tmp_path / "v"),
                                     default="student_mlp_int8.onnx"))
    chosen = json.loads((Path(int8["out_dir"]) / "models.json").read_text())["default"]
    assert chosen == "student_mlp_int8.onnx"


def test_split_refuses_a_checkpoint_other_than_the_exports(viewer_dirs: dict[str, Path],
                                                           tmp_path: Path) -> None:
    hash_run = viewer_dirs["hash"].parent
    other = tmp_path / "other.ckpt"
    shutil.copy(hash_run / "student" / "student.ckpt", other)
    with other.open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(UserError, match="not the checkpoint"):
        write_viewer(ViewerConfig(run_dir=str(hash_run), checkpoint=str(other), out_dir=str(tmp_path / "v")))


# --- a forward-facing model (rays in NDC) ----------------------------------------------------------


@pytest.fixture(scope="module")
def forward_viewer(exported_forward: Path) -> Path:
    """The viewer of a tiny forward-facing hash-grid student: split model (the default) and whole graph."""
    return Path(write_viewer(ViewerConfig(run_dir=str(exported_forward), webgpu=False,
                                          out_dir=str(exported_forward / "viewer")))["out_dir"])


@pytest.mark.browser
@pytest.mark.parametrize("model", ["student_mlp.onnx", "student.onnx"])  # split (JS encoding), whole graph
def test_page_forward_frame_equals_python_runtime(forward_viewer: Path, model: str) -> None:
    from export.runtime.paths import default_path

    manifest = json.loads((forward_viewer / "models.json").read_text())
    entry = next(m for m in manifest["models"] if m["file"] == model)
    assert entry["meta"]["ray_space"] == "ndc" and entry["meta"]["rig"]["kind"] == "forward"
    assert manifest["models"][0]["encoder"]["ndc"] == entry["meta"]["ndc"]
    field = LightField(forward_viewer / "student.onnx")
    c2w = default_path(field.meta.rig, 4)[1]  # on the render path, not a training pose
    W, H = 36, 20
    query = f"pose={_pose_query(c2w)}&size={W}x{H}&threads=2&model={model}"
    state, pixels = _page_frame(forward_viewer, query)
    assert state["error"] is None, state["error"]
    assert (state["width"], state["height"], state["frame"]) == (W, H, 1)
    assert f"({W * H} rays evaluated)" in state["hud"]  # no ray skipped as a miss
    _assert_same_frame(pixels, field.render(c2w, image_size=(H, W)))


def _page_pose(page: Any) -> np.ndarray:
    """The pose of the page's last full frame (its canvas's ``data-pose``), ``[4, 4]``."""
    pose = page.evaluate("() => document.getElementById('view').dataset.pose")
    return np.array(pose.split(","), dtype=np.float64).reshape(4, 4)


@pytest.mark.browser
def test_page_forward_starts_on_the_average_pose_and_stays_near_it(forward_viewer: Path) -> None:
    field = LightField(forward_viewer / "student.onnx")
    rig = field.meta.rig
    with serving(forward_viewer) as url, chromium_page() as page:
        page.goto(f"{url}index.html?threads=1")
        state = wait_for_frame(page, 1)
        assert state["error"] is None and state["frame"] == 1
        start = _page_pose(page)
        np.testing.assert_allclose(start, np.array(rig["c2w"]), atol=1e-5)
        H, W = field.image_size
        pixels = np.array(canvas_pixels(page), dtype=np.uint8).reshape(H, W, 4)
        _assert_same_frame(pixels, field.render(start))
        box = page.locator("#view").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        frame = 1
        for dx, dy, shift in ((400, 300, False), (-300, 250, True)):  # a wide orbit, then a wide pan
            page.mouse.move(x, y)
            if shift:
                page.keyboard.down("Shift")
            page.mouse.down()
            page.mouse.move(x + dx, y + dy, steps=5)
            page.mouse.up()
            if shift:
                page.keyboard.up("Shift")
            page.mouse.wheel(0, 3000)  # and far out
            frame = wait_for_frame(page, frame + 1)["frame"]
            moved = _page_pose(page)
            assert np.abs(moved - start).max() > 1e-3
            check_near_the_rig(moved, rig)


@pytest.mark.browser
def test_page_orbits_and_zooms_with_the_mouse(viewer_dirs: dict[str, Path]) -> None:
    with serving(viewer_dirs["pe"]) as url, chromium_page() as page:
        page.goto(f"{url}index.html?size=32x32&threads=1")
        assert wait_for_frame(page, 1)["frame"] == 1
        first = np.array(canvas_pixels(page))
        box = page.locator("#view").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 60, y + 10, steps=5)
        page.mouse.up()
        state = wait_for_frame(page, 2)
        orbited = np.array(canvas_pixels(page))
        assert state["frame"] >= 2 and np.abs(orbited - first).max() > 20  # a new view, at full resolution
        page.mouse.wheel(0, 400)  # zoom out
        state = wait_for_frame(page, state["frame"] + 1)
        zoomed = np.array(canvas_pixels(page))
        assert np.abs(zoomed - orbited).max() > 20
