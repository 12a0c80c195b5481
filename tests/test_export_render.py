"""export.runtime.render and export.runtime.paths: orbits from the rig, camera-path JSON, frames and video."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from core.cameras import opengl_to_opencv
from core.errors import UserError
from core.ndc import NDCSpace, average_pose
from core.rig import camera_rig, focus_depth
from export.runtime import LightField
from export.runtime.paths import default_path, forward_poses, orbit_poses, read_camera_path
from export.runtime.render import OrbitConfig, PathRenderConfig, camera_path, run
from tests.scenes import CAMERA_RADIUS, ring_poses

REPO = Path(__file__).resolve().parents[1]


def test_rig_of_a_ring_and_its_orbit() -> None:
    rig = camera_rig(ring_poses(8, elevation_deg=30.0))
    assert np.allclose(rig["center"], 0, atol=1e-4) and np.allclose(rig["up"], [0, 0, 1], atol=1e-4)
    assert rig["radius"] == pytest.approx(CAMERA_RADIUS, rel=1e-4)
    assert rig["elevation"] == pytest.approx(math.radians(30.0), abs=1e-4)
    poses = orbit_poses(rig, 6, elevation_deg=10.0, radius_scale=1.5)
    eye, forward = poses[:, :3, 3], poses[:, :3, 2]
    assert torch.allclose(eye.norm(dim=-1), torch.full((6,), 1.5 * CAMERA_RADIUS), rtol=1e-4)
    assert torch.allclose(forward, torch.nn.functional.normalize(-eye, dim=-1), atol=1e-5)  # looks at centre
    assert torch.allclose(torch.asin(eye[:, 2] / eye.norm(dim=-1)), torch.full((6,), math.radians(10.0)),
                          atol=1e-4)
    assert float((poses[:, :3, 1] @ torch.tensor([0.0, 0.0, 1.0])).max()) < 0  # image +Y (down) is world down
    assert len({tuple(np.round(e.tolist(), 4)) for e in eye}) == 6


def test_default_path_of_an_object_rig_is_the_orbit() -> None:
    rig = camera_rig(ring_poses(8, elevation_deg=30.0))
    assert rig["kind"] == "object"
    assert torch.equal(default_path(rig, 5, 10.0, 1.5), orbit_poses(rig, 5, 10.0, 1.5))
    old = {k: v for k, v in rig.items() if k != "kind"}  # the rig of exports made before rig kinds
    assert torch.equal(default_path(old, 5), orbit_poses(rig, 5))
    with pytest.raises(UserError, match="rig kind"):
        default_path({**rig, "kind": "spiral"}, 5)


def test_forward_rig_and_its_circle() -> None:
    from scripts.procedural_scene import forward_poses as rig_poses
    from scripts.procedural_scene import world_from_rig

    c2w = (world_from_rig(3) @ rig_poses(3)).float()  # a jittered grid of cameras, randomly placed and turned
    avg = average_pose(c2w)
    rig = camera_rig(c2w, NDCSpace(c2w=avg.tolist(), scale=[1.0, 1.0], near=1.5))
    assert rig["kind"] == "forward" and torch.allclose(torch.tensor(rig["c2w"]), avg, atol=1e-6)
    assert rig["focus_depth"] == pytest.approx(focus_depth(1.5)) == pytest.approx(0.9 * 2.0 / 0.25)
    focus = avg[:3, 3] + rig["focus_depth"] * avg[:3, 2]
    assert torch.allclose(torch.tensor(rig["center"]).float(), focus, atol=1e-5)
    # the path radius: within the spread of the training centres in the average image plane
    spread = ((c2w[:, :3, 3] - c2w[:, :3, 3].mean(0)) @ avg[:3, :2]).norm(dim=-1)
    assert float(spread.median()) < rig["path_radius"] < float(spread.max())
    poses = default_path(rig, 12)
    assert torch.allclose(poses, forward_poses(rig, 12))
    offset = poses[:, :3, 3] - avg[:3, 3]
    # a circle of that radius around the average centre, in its image plane
    assert torch.allclose(offset.norm(dim=-1), torch.full((12,), rig["path_radius"]), rtol=1e-4)
    assert float((offset @ avg[:3, 2]).abs().max()) < 1e-5
    # looking forward, at the focus point, image down kept
    angle = torch.rad2deg(torch.acos((poses[:, :3, 2] @ avg[:3, 2]).clamp(max=1)))
    assert float(angle.max()) < 5.0
    tilt = math.degrees(math.atan(rig["path_radius"] / rig["focus_depth"]))
    assert float(angle.max()) == pytest.approx(tilt, abs=1e-2)
    to_focus = torch.nn.functional.normalize(focus - poses[:, :3, 3], dim=-1)
    assert torch.allclose(poses[:, :3, 2], to_focus, atol=1e-5)
    assert float((poses[:, :3, 1] @ avg[:3, 1]).min()) > 0.99
    assert len({tuple(np.round(e.tolist(), 4)) for e in poses[:, :3, 3]}) == 12
    wider = default_path(rig, 12, radius_scale=2.0)
    assert torch.allclose((wider[:, :3, 3] - avg[:3, 3]).norm(dim=-1), 2 * offset.norm(dim=-1), rtol=1e-4)


def test_render_forward_default_path(exported_forward: Path, tiny_forward_scene: Path,
                                     tmp_path: Path) -> None:
    from scenes.load import SceneConfig

    res = run(PathRenderConfig(run_dir=str(exported_forward), out_dir=str(tmp_path), video="none",
                               orbit=OrbitConfig(n_frames=3)))
    field = LightField(exported_forward / "export" / "student.onnx")
    assert field.meta.rig["kind"] == "forward" and res["n_frames"] == 3
    first = forward_poses(field.meta.rig, 3)[0].numpy()
    expected = (np.clip(field.render(first), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(imageio.imread(tmp_path / "frames" / "00000.png"), expected)
    # the same path from the scene's training cameras
    cfg = PathRenderConfig(scene=SceneConfig(path=str(tiny_forward_scene)), run_dir=str(exported_forward),
                           orbit=OrbitConfig(n_frames=3, from_scene=True))
    want = forward_poses(field.meta.rig, 3).numpy()
    np.testing.assert_allclose(camera_path(cfg, field)[0], want, atol=1e-5)


def test_render_two_orbit_frames(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = exported_student
    res = run(PathRenderConfig(run_dir=str(run_dir), out_dir=str(tmp_path), orbit=OrbitConfig(n_frames=2)))
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert [f.name for f in frames] == ["00000.png", "00001.png"]
    assert imageio.imread(frames[0]).shape == (16, 16, 3)
    assert res["n_frames"] == 2 and res["ms_per_frame"] > 0 and res["fps"] > 0
    video = imageio.mimread(tmp_path / "render.mp4", format="FFMPEG")
    assert len(video) == 2 and video[0].shape == (16, 16, 3)
    field = LightField(run_dir / "export" / "student.onnx")
    first = orbit_poses(field.meta.rig, 2)[0].numpy()
    expected = (np.clip(field.render(first), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(imageio.imread(frames[0]), expected)


def test_render_nerfstudio_camera_path_gif(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = exported_student
    c2w_cv = ring_poses(2, elevation_deg=20.0)
    c2w_gl = opengl_to_opencv(c2w_cv)  # the flip is its own inverse
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps({"render_height": 12, "render_width": 18, "camera_path": [
        {"camera_to_world": m.reshape(-1).tolist(), "fov": 40.0, "aspect": 1.5} for m in c2w_gl]}))
    c2w, K, hw = read_camera_path(path, (16, 16))
    assert hw == (12, 18) and torch.allclose(c2w, c2w_cv, atol=1e-6)
    assert float(K[0, 1, 1]) == pytest.approx(6 / math.tan(math.radians(20.0)))
    res = run(PathRenderConfig(run_dir=str(run_dir), out_dir=str(tmp_path / "out"), poses=str(path),
                               video="gif", save_frames=False))
    assert res["n_frames"] == 2 and res["image_size"] == [12, 18] and res["frames_dir"] is None
    assert len(imageio.mimread(tmp_path / "out" / "render.gif")) == 2


@pytest.mark.parametrize("content,message", [
    ({"c2w": [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]]}, "pose 0 must be 4x4"),
    ({"camera_path": [{"fov": 50}]}, "has no camera_to_world"),
    ({"c2w": [np.eye(4).tolist()], "convention": "blender"}, "convention"),
    ({"frames": []}, "expected a nerfstudio camera path"),
])
def test_bad_camera_paths(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "poses.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=message) as info:
        read_camera_path(path, (16, 16))
    assert str(path) in str(info.value)


def test_render_cli_errors_are_one_line(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    bad = tmp_path / "poses.json"
    bad.write_text(json.dumps([np.eye(3).tolist()]))
    cases = (([f"run_dir={tmp_path}", f"model={tmp_path / 'none.onnx'}"], "model file not found"),
             ([f"run_dir={exported_student[0]}", f"poses={bad}", f"out_dir={tmp_path}"], "4x4"))
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-m", "export.runtime.render", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1] and "Traceback" not in proc.stderr
