"""export.runtime.render and export.runtime.paths: orbits from the rig, camera-path JSON, frames and video,
the command line (OmegaConf overrides, one-line errors) and the command run with torch unimportable."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from core.ndc import NDCSpace, average_pose
from core.rig import camera_rig, focus_depth
from export.runtime import LightField, ModelError
from export.runtime.paths import default_path, forward_poses, opengl_to_opencv, orbit_poses, read_camera_path
from export.runtime.render import (
    PROFILES,
    ConfigError,
    OrbitConfig,
    PathRenderConfig,
    camera_path,
    config_from_overrides,
    run,
)
from testing.cli import one_line_error
from testing.scenes.rigs import CAMERA_RADIUS, ring_poses

REPO = Path(__file__).resolve().parents[1]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_rig_of_a_ring_and_its_orbit() -> None:
    rig = camera_rig(ring_poses(8, elevation_deg=30.0))
    assert np.allclose(rig["center"], 0, atol=1e-4) and np.allclose(rig["up"], [0, 0, 1], atol=1e-4)
    assert rig["radius"] == pytest.approx(CAMERA_RADIUS, rel=1e-4)
    assert rig["elevation"] == pytest.approx(math.radians(30.0), abs=1e-4)
    poses = orbit_poses(rig, 6, elevation_deg=10.0, radius_scale=1.5)
    assert poses.shape == (6, 4, 4) and poses.dtype == np.float32
    eye, forward = poses[:, :3, 3], poses[:, :3, 2]
    np.testing.assert_allclose(np.linalg.norm(eye, axis=-1), 1.5 * CAMERA_RADIUS, rtol=1e-4)
    np.testing.assert_allclose(forward, _unit(-eye), atol=1e-5)  # looks at the centre
    np.testing.assert_allclose(np.arcsin(eye[:, 2] / np.linalg.norm(eye, axis=-1)), math.radians(10.0),
                               atol=1e-4)
    assert float((poses[:, :3, 1] @ [0.0, 0.0, 1.0]).max()) < 0  # image +Y (down) is world down
    assert len({tuple(np.round(e, 4)) for e in eye}) == 6


def test_default_path_of_an_object_rig_is_the_orbit() -> None:
    rig = camera_rig(ring_poses(8, elevation_deg=30.0))
    assert rig["kind"] == "object"
    assert np.array_equal(default_path(rig, 5, 10.0, 1.5), orbit_poses(rig, 5, 10.0, 1.5))
    old = {k: v for k, v in rig.items() if k != "kind"}  # the rig of exports made before rig kinds
    assert np.array_equal(default_path(old, 5), orbit_poses(rig, 5))
    with pytest.raises(ModelError, match="rig kind"):
        default_path({**rig, "kind": "spiral"}, 5)
    with pytest.raises(ModelError, match="n_frames >= 1"):
        default_path(rig, 0)


def test_forward_rig_and_its_circle() -> None:
    from testing.scenes.rigs import forward_poses as rig_poses
    from testing.scenes.rigs import world_from_rig

    c2w = (world_from_rig(3) @ rig_poses(3)).float()  # a jittered grid of cameras, randomly placed and turned
    avg = average_pose(c2w)
    rig = camera_rig(c2w, NDCSpace(c2w=avg.tolist(), scale=[1.0, 1.0], near=1.5))
    avg, c2w = avg.double().numpy(), c2w.double().numpy()
    assert rig["kind"] == "forward" and np.allclose(rig["c2w"], avg, atol=1e-6)
    assert rig["focus_depth"] == pytest.approx(focus_depth(1.5)) == pytest.approx(0.9 * 2.0 / 0.25)
    focus = avg[:3, 3] + rig["focus_depth"] * avg[:3, 2]
    np.testing.assert_allclose(rig["center"], focus, atol=1e-5)
    # the path radius: within the spread of the training centres in the average image plane
    spread = np.linalg.norm((c2w[:, :3, 3] - c2w[:, :3, 3].mean(0)) @ avg[:3, :2], axis=-1)
    assert float(np.median(spread)) < rig["path_radius"] < float(spread.max())
    poses = default_path(rig, 12)
    assert np.array_equal(poses, forward_poses(rig, 12))
    offset = poses[:, :3, 3] - avg[:3, 3]
    # a circle of that radius around the average centre, in its image plane
    np.testing.assert_allclose(np.linalg.norm(offset, axis=-1), rig["path_radius"], rtol=1e-4)
    assert float(np.abs(offset @ avg[:3, 2]).max()) < 1e-5
    # looking forward, at the focus point, image down kept
    angle = np.degrees(np.arccos(np.minimum(poses[:, :3, 2] @ avg[:3, 2], 1.0)))
    assert float(angle.max()) < 5.0
    tilt = math.degrees(math.atan(rig["path_radius"] / rig["focus_depth"]))
    assert float(angle.max()) == pytest.approx(tilt, abs=1e-2)
    np.testing.assert_allclose(poses[:, :3, 2], _unit(focus - poses[:, :3, 3]), atol=1e-5)
    assert float((poses[:, :3, 1] @ avg[:3, 1]).min()) > 0.99
    assert len({tuple(np.round(e, 4)) for e in poses[:, :3, 3]}) == 12
    wider = default_path(rig, 12, radius_scale=2.0)
    np.testing.assert_allclose(np.linalg.norm(wider[:, :3, 3] - avg[:3, 3], axis=-1),
                               2 * np.linalg.norm(offset, axis=-1), rtol=1e-4)


def test_render_forward_default_path(exported_forward: Path, tmp_path: Path) -> None:
    res = run(PathRenderConfig(run_dir=str(exported_forward), out_dir=str(tmp_path), video="none",
                               orbit=OrbitConfig(n_frames=3)))
    field = LightField(exported_forward / "export" / "student.onnx")
    assert field.meta.rig["kind"] == "forward" and res["n_frames"] == 3
    first = forward_poses(field.meta.rig, 3)[0]
    expected = (np.clip(field.render(first), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(imageio.imread(tmp_path / "frames" / "00000.png"), expected)
    cfg = PathRenderConfig(run_dir=str(exported_forward), orbit=OrbitConfig(n_frames=3))
    np.testing.assert_array_equal(camera_path(cfg, field)[0], forward_poses(field.meta.rig, 3))


def test_render_two_orbit_frames(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = exported_student
    res = run(PathRenderConfig(run_dir=str(run_dir), out_dir=str(tmp_path), orbit=OrbitConfig(n_frames=2)))
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert [f.name for f in frames] == ["00000.png", "00001.png"]
    assert not list(tmp_path.rglob(".*"))  # no temporary file left behind
    assert imageio.imread(frames[0]).shape == (16, 16, 3)
    assert res["n_frames"] == 2 and res["ms_per_frame"] > 0 and res["fps"] > 0
    video = imageio.mimread(tmp_path / "render.mp4", format="FFMPEG")
    assert len(video) == 2 and video[0].shape == (16, 16, 3)
    field = LightField(run_dir / "export" / "student.onnx")
    first = orbit_poses(field.meta.rig, 2)[0]
    expected = (np.clip(field.render(first), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(imageio.imread(frames[0]), expected)


def test_render_nerfstudio_camera_path_gif(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = exported_student
    c2w_cv = ring_poses(2, elevation_deg=20.0).numpy()
    c2w_gl = opengl_to_opencv(c2w_cv)  # the flip is its own inverse
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps({"render_height": 12, "render_width": 18, "camera_path": [
        {"camera_to_world": m.reshape(-1).tolist(), "fov": 40.0, "aspect": 1.5} for m in c2w_gl]}))
    c2w, K, hw = read_camera_path(path, (16, 16))
    assert hw == (12, 18) and np.allclose(c2w, c2w_cv, atol=1e-6)
    assert K is not None and float(K[0, 1, 1]) == pytest.approx(6 / math.tan(math.radians(20.0)))
    res = run(PathRenderConfig(run_dir=str(run_dir), out_dir=str(tmp_path / "out"), poses=str(path),
                               video="gif", save_frames=False))
    assert res["n_frames"] == 2 and res["image_size"] == [12, 18] and res["frames_dir"] is None
    assert len(imageio.mimread(tmp_path / "out" / "render.gif")) == 2


@pytest.mark.parametrize("content,message", [
    ({"c2w": [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]]}, "pose 0 must be 4x4"),
    ({"c2w": [np.eye(4).tolist(), [["a"] * 4] * 4]}, "pose 1 is not a 4x4 \\(or 3x4\\) matrix of numbers"),
    ({"c2w": [(2 * np.eye(4)).tolist()]}, "pose 0 is not rigid"),
    ({"camera_path": [{"fov": 50}]}, "has no camera_to_world"),
    ({"c2w": [np.eye(4).tolist()], "convention": "blender"}, "convention"),
    ({"c2w": [np.eye(4).tolist()], "K": [[1, 0], [0, 1]]}, "K must be 3x3"),
    ({"frames": []}, "expected a nerfstudio camera path"),
])
def test_bad_camera_paths(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "poses.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ModelError, match=message) as info:
        read_camera_path(path, (16, 16))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_overrides_read_onto_the_dataclass() -> None:
    cfg = config_from_overrides(["orbit.n_frames=3", "orbit.elevation_deg=null", "image_size=[20,30]",
                                 "video=gif", "device=cuda:1", "threads=2", "model=a/b=c.onnx",
                                 "scene.downscale=2", "+fps=12", "seed=3"])
    assert cfg.orbit.n_frames == 3 and cfg.orbit.elevation_deg is None and cfg.image_size == [20, 30]
    assert (cfg.video, cfg.device, cfg.threads, cfg.model, cfg.fps) == ("gif", "cuda:1", 2, "a/b=c.onnx", 12)
    assert config_from_overrides([]) == PathRenderConfig()


def test_default_run_dir_follows_the_scene(tmp_path: Path) -> None:
    assert config_from_overrides([]).run_path() == Path("runs/mic_100")
    assert config_from_overrides([f"scene.path={tmp_path / 'tankard'}/"]).run_path() == Path("runs/tankard")
    assert config_from_overrides([f"scene.path={tmp_path}", "scene.name=x"]).run_path() == Path("runs/x")
    assert config_from_overrides(["scene.path=y", "run_dir=elsewhere"]).run_path() == Path("elsewhere")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_accepted(profile: str) -> None:
    assert config_from_overrides([f"profile={profile}"]) == PathRenderConfig(profile=profile)


# (overrides, the start of the one-line message)
BAD_OVERRIDES = [
    (["fps=0"], "fps=0: must be >= 1"),
    (["video=avi"], "video=avi: must be one of ['mp4', 'gif', 'none']"),
    (["image_size=[0,64]"], "image_size=[0, 64]: must be [H, W] with H, W >= 1"),
    (["image_size=[64]"], "image_size=[64]: must be [H, W] with H, W >= 1"),
    (["max_pixels=-1"], "max_pixels=-1: must be >= 1"),
    (["orbit.n_frames=0"], "orbit.n_frames=0: must be >= 1"),
    (["orbit.elevation_deg=120"], "orbit.elevation_deg=120.0: must be in [-90.0, 90.0]"),
    (["orbit.radius_scale=0"], "orbit.radius_scale=0.0: must be a finite number > 0"),
    (["batch_size=0"], "batch_size=0: must be >= 1"),
    (["threads=0"], "threads=0: must be >= 1"),
    (["device=tpu"], "device=tpu: must be auto, cpu, cuda or cuda:N"),
    (["profile=tpu"], "profile=tpu: must be one of ['cpu', 'gpu', 'paper']"),
    (["orbit.frames=3"], "orbit.frames=3: Key 'frames' not in 'OrbitConfig'"),
    (["orbit.from_scene=true"], "orbit.from_scene=true: Key 'from_scene' not in 'OrbitConfig'"),
    (["fps=many"], "fps=many: Value 'many' of type 'str' could not be converted to Integer"),
    (["run_dir"], "run_dir: expected key=value"),
    (["~fps"], "~fps: expected key=value"),
]


@pytest.mark.parametrize("overrides, message", BAD_OVERRIDES, ids=[" ".join(o) for o, _ in BAD_OVERRIDES])
def test_bad_override_is_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_overrides(overrides)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def _render_cli(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "export.runtime.render", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_render_cli_errors_are_one_line(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    bad = tmp_path / "poses.json"
    bad.write_text(json.dumps([np.eye(3).tolist()]))
    cases = (([f"run_dir={tmp_path}", f"model={tmp_path / 'none.onnx'}"], "model file not found"),
             ([f"run_dir={exported_student[0]}", f"poses={bad}", f"out_dir={tmp_path}"], "4x4"),
             ([f"run_dir={tmp_path / 'run'}", "orbit.frames=3"], "'frames' not in 'OrbitConfig'"),
             ([f"run_dir={tmp_path / 'run'}", "fps=0"], "fps=0: must be >= 1"))
    for args, message in cases:
        line = one_line_error(_render_cli(args))
        assert message in line, line
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_render_cli_help_lists_the_keys() -> None:
    proc = _render_cli(["--help"])
    assert proc.returncode == 0 and "orbit:" in proc.stdout and "n_frames: 48" in proc.stdout, proc.stderr


_BLOCKED_RENDER = """
import runpy
sys.argv = ["export.runtime.render", *{args!r}]
runpy.run_module("export.runtime.render", run_name="__main__")
ours = sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r} or m.startswith("export.") and
              not m.startswith("export.runtime"))
print("LOADED", ours)
"""


def test_render_command_runs_with_torch_unimportable(exported_student: tuple[Path, dict],
                                                     tmp_path: Path) -> None:
    """``python -m export.runtime.render`` on an exported model with torch, Lightning and every package of
    ours but ``export`` made unimportable (the runtime's promise: numpy + ONNX Runtime)."""
    from testing.cli import blocking_imports
    from tests.test_imports import OURS, TORCH

    blocked = set(TORCH | (OURS - {"export"}))
    args = [f"run_dir={exported_student[0]}", f"out_dir={tmp_path}", "orbit.n_frames=2", "video=gif",
            "profile=gpu", "scene.downscale=2", "device=cpu", "threads=1"]
    code = blocking_imports(blocked) + _BLOCKED_RENDER.format(blocked=blocked, args=args)
    proc = subprocess.run([sys.executable, "-c", code],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout and "rendered 2 frames of 16x16 on CPUExecutionProvider" in proc.stdout
    assert len(list((tmp_path / "frames").glob("*.png"))) == 2 and (tmp_path / "render.gif").is_file()
