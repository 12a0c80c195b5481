"""``scenes.colmap``: COLMAP models (text and binary) and pycolmap's SfM into a scene folder.

A hand-written three-image model has poses worked out by hand: image ``a`` sits at ``(0, 0, -5)``
looking along +Z (identity rotation), ``b`` at ``(0, 0, 5)`` looking along -Z (180 degrees about Y,
quaternion ``(0, 0, 1, 0)``), ``c`` at ``(5, 0, 0)`` looking along -X (90 degrees about Y, quaternion
``(cos 45, 0, sin 45, 0)``); all three have ``t = (0, 0, 5)``. Three points at the origin and at
``+-(1, 0, 1)`` lie at depths 4, 5 and 6 in every image. Bad input goes through the CLI in a subprocess:
exit code 1 and one line on stderr, ``error: <file>: ...``.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.cameras import opengl_to_opencv
from scenes.colmap import main
from scenes.colmap_model import CAMERA_MODELS, read_model
from scenes.load import SceneConfig, load_scene
from testing.scenes.photos import align_similarity, write_photos
from testing.scenes.rigs import CAMERA_RADIUS as RADIUS

REPO = Path(__file__).resolve().parents[1]
S = math.sqrt(0.5)
# id, (qw, qx, qy, qz), t, camera id, name -- ids on purpose neither contiguous nor in name order
IMAGES = [(5, (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 5.0), 7, "a.png"),
          (2, (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 5.0), 3, "b.png"),
          (9, (S, 0.0, S, 0.0), (0.0, 0.0, 5.0), 7, "c.png")]
CAMERAS = [(7, "PINHOLE", 8, 6, (10.0, 11.0, 4.0, 3.0)), (3, "SIMPLE_RADIAL", 8, 6, (12.0, 4.5, 3.0, 0.0))]
POINTS = [(10, (0.0, 0.0, 0.0)), (20, (1.0, 0.0, 1.0)), (30, (-1.0, 0.0, -1.0))]
CENTRES = {"a.png": (0, 0, -5), "b.png": (0, 0, 5), "c.png": (5, 0, 0)}
AXES = {"a.png": (0, 0, 1), "b.png": (0, 0, -1), "c.png": (-1, 0, 0)}  # viewing directions (OpenCV +Z)
INTRINSICS = {"a.png": (10, 11, 4, 3), "b.png": (12, 12, 4.5, 3), "c.png": (10, 11, 4, 3)}


def write_text_model(folder: Path, cameras: list = CAMERAS, images: list = IMAGES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cams = "".join(f"{cid} {model} {w} {h} {' '.join(map(str, p))}\n" for cid, model, w, h, p in cameras)
    (folder / "cameras.txt").write_text("# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n" + cams)
    lines = ["# Image list with two lines of data per image:"]
    for k, (iid, q, t, cid, name) in enumerate(images):
        lines.append(f"{iid} {' '.join(map(str, q))} {' '.join(map(str, t))} {cid} {name}")
        lines.append("" if k == 1 else "1.5 2.5 10 3.0 4.0 -1 0.5 0.5 20 6.0 1.0 30")  # one blank points line
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    track = " ".join(f"{iid} 0" for iid, *_ in images)
    pts = "".join(f"{pid} {x} {y} {z} 128 128 128 0.5 {track}\n" for pid, (x, y, z) in POINTS)
    (folder / "points3D.txt").write_text("# 3D point list\n" + pts)
    return folder


def write_binary_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cams = struct.pack("<Q", len(CAMERAS))
    for cid, model, w, h, params in CAMERAS:
        cams += struct.pack(f"<iiQQ{len(params)}d", cid, CAMERA_MODELS[model][0], w, h, *params)
    (folder / "cameras.bin").write_bytes(cams)
    imgs = struct.pack("<Q", len(IMAGES))
    for iid, q, t, cid, name in IMAGES:
        imgs += struct.pack("<I4d3dI", iid, *q, *t, cid) + name.encode() + b"\0"
        imgs += struct.pack("<Q", 2) + struct.pack("<ddqddq", 1.5, 2.5, 10, 3.0, 4.0, -1)
    (folder / "images.bin").write_bytes(imgs)
    pts = struct.pack("<Q", len(POINTS))
    for pid, xyz in POINTS:
        pts += struct.pack("<Q3d3BdQ", pid, *xyz, 128, 128, 128, 0.5, len(IMAGES))
        pts += b"".join(struct.pack("<II", iid, 0) for iid, *_ in IMAGES)
    (folder / "points3D.bin").write_bytes(pts)
    return folder


def write_small_photos(folder: Path, names: tuple[str, ...] = tuple(CENTRES), size: tuple[int, int] = (8, 6)
                       ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)
    return folder


def run_cli(*args: object, without_pycolmap: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m scenes.colmap ARGS`` (or its ``main`` with pycolmap made unimportable)."""
    prog = (["-c", "import sys; sys.modules['pycolmap'] = None; from scenes.colmap import main; main()"]
            if without_pycolmap else ["-m", "scenes.colmap"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *prog, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *named: object) -> str:
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    for text in named:
        assert str(text) in lines[0], lines[0]
    return lines[0]


def frames_by_name(out: Path) -> tuple[dict, dict[str, dict]]:
    meta = json.loads((out / "transforms.json").read_text())
    return meta, {Path(f["file_path"]).name: f for f in meta["frames"]}


def test_text_model_poses_intrinsics_and_bounds(tmp_path: Path) -> None:
    photos = write_small_photos(tmp_path / "photos")
    out = tmp_path / "scene"
    main([str(photos), str(out), "--model", str(write_text_model(tmp_path / "sparse"))])
    meta, frames = frames_by_name(out)
    assert [f["file_path"] for f in meta["frames"]] == ["images/a.png", "images/b.png", "images/c.png"]
    assert "fl_x" not in meta  # two cameras: intrinsics per frame
    assert not any(k.endswith("_filenames") for k in meta)  # the loader's every-8th holdout applies
    for name, frame in frames.items():
        assert (frame["fl_x"], frame["fl_y"], frame["cx"], frame["cy"]) == INTRINSICS[name]
        assert (frame["w"], frame["h"]) == (8, 6)
        gl = np.array(frame["transform_matrix"])
        np.testing.assert_allclose(gl[:3, 3], CENTRES[name], atol=1e-9)
        np.testing.assert_allclose(-gl[:3, 2], AXES[name], atol=1e-9)  # OpenGL cameras look along -Z
        np.testing.assert_allclose(frame["bounds"], [4.002, 5.998], atol=1e-9)
        assert (out / frame["file_path"]).read_bytes() == (photos / name).read_bytes()

    scene = load_scene(SceneConfig(path=str(out)), splits=("train", "test"))
    views = [(Path(f).name, c2w, K) for split in ("train", "test")
             for f, c2w, K in zip(scene.split(split).files, scene.split(split).c2w, scene.split(split).K)]
    assert sorted(name for name, *_ in views) == ["a.png", "b.png", "c.png"]
    for name, c2w, K in views:  # OpenCV: centre, looking along +Z, image down = world -Y here
        np.testing.assert_allclose(c2w[:3, 3].numpy(), CENTRES[name], atol=1e-5)
        np.testing.assert_allclose(c2w[:3, 2].numpy(), AXES[name], atol=1e-5)
        np.testing.assert_allclose(c2w[:3, 1].numpy(), (0, 1, 0), atol=1e-5)
        fx, fy, cx, cy = INTRINSICS[name]
        np.testing.assert_allclose(K.numpy(), [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], atol=1e-6)


def test_binary_model_gives_the_same_scene(tmp_path: Path) -> None:
    photos = write_small_photos(tmp_path / "photos")
    main([str(photos), str(tmp_path / "from_txt"), "--model", str(write_text_model(tmp_path / "txt"))])
    main([str(photos), str(tmp_path / "from_bin"), "--model", str(write_binary_model(tmp_path / "bin"))])
    assert (tmp_path / "from_bin" / "transforms.json").read_text() == \
        (tmp_path / "from_txt" / "transforms.json").read_text()
    txt, binary = read_model(tmp_path / "txt"), read_model(tmp_path / "bin")
    assert binary.files["cameras"].suffix == ".bin"
    np.testing.assert_array_equal(np.sort(txt.observations, 0), np.sort(binary.observations, 0))


@pytest.mark.slow
def test_import_needs_no_pycolmap_and_refuses_distortion_without_it(tmp_path: Path) -> None:
    photos = write_small_photos(tmp_path / "photos")
    proc = run_cli(photos, tmp_path / "scene", "--model", write_text_model(tmp_path / "sparse"),
                   without_pycolmap=True)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "scene" / "transforms.json").read_text())["frames"]) == 3
    distorted = [(7, "OPENCV", 8, 6, (10.0, 11.0, 4.0, 3.0, 1.0, 0.0, 0.0, 0.0)), CAMERAS[1]]  # ~1 px
    model = write_text_model(tmp_path / "distorted", cameras=distorted)
    proc = run_cli(photos, tmp_path / "scene2", "--model", model, without_pycolmap=True)
    assert "pycolmap" in assert_one_line_error(proc, model / "cameras.txt")


def test_distorted_model_is_undistorted_with_pycolmap(tmp_path: Path) -> None:
    photos = write_small_photos(tmp_path / "photos", size=(40, 30))
    masks = write_small_photos(tmp_path / "masks", size=(40, 30))
    cameras = [(7, "OPENCV", 40, 30, (40.0, 40.0, 20.0, 15.0, 0.1, 0.0, 0.0, 0.0)),
               (3, "PINHOLE", 40, 30, (40.0, 40.0, 20.0, 15.0))]
    model = write_text_model(tmp_path / "sparse", cameras=cameras)
    main([str(photos), str(tmp_path / "scene"), "--model", str(model), "--masks", str(masks)])
    meta, frames = frames_by_name(tmp_path / "scene")
    assert [c["undistorted"] for c in meta["colmap"]["cameras"]] == [False, True]  # sorted by id: 3, 7
    w, h = frames["a.png"]["w"], frames["a.png"]["h"]
    assert (w, h) != (40, 30) and (frames["b.png"]["w"], frames["b.png"]["h"]) == (40, 30)
    with Image.open(tmp_path / "scene" / frames["a.png"]["file_path"]) as img:
        assert img.size == (w, h)
    with Image.open(tmp_path / "scene" / frames["a.png"]["mask_path"]) as img:
        assert img.size == (w, h) and img.mode == "L"


def test_scene_folder_holding_its_photos_is_written_in_place(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    scene = tmp_path / "scene"
    photos = write_small_photos(scene / "images")
    masks = scene / "masks"
    masks.mkdir()
    for name in CENTRES:
        Image.fromarray(np.full((6, 8), 255, np.uint8), "L").save(masks / name)
    before = {p: p.read_bytes() for p in [*photos.iterdir(), *masks.iterdir()]}
    model = write_text_model(tmp_path / "sparse")
    main([str(photos), str(scene), "--model", str(model), "--masks", str(masks)])
    _, frames = frames_by_name(scene)
    assert [frames[n]["mask_path"] for n in CENTRES] == [f"masks/{n}" for n in CENTRES]
    assert {p: p.read_bytes() for p in before} == before  # referenced where they are, not rewritten
    assert len(list(photos.iterdir())) + len(list(masks.iterdir())) == len(before)

    Image.fromarray(np.full((6, 8, 3), 255, np.uint8)).save(masks / "b.png")  # would be converted: refused
    with pytest.raises(SystemExit):
        main([str(photos), str(scene), "--model", str(model), "--masks", str(masks)])
    assert capsys.readouterr().err.startswith(f"error: {masks / 'b.png'}: the scene would overwrite")


def test_masks_of_every_kind_reach_the_scene_as_the_loader_reads_them(tmp_path: Path) -> None:
    """16-bit, RGBA-alpha and 8-bit TIFF masks: the scene's 8-bit masks are ``read_mask``'s alpha, rounded."""
    from scenes.images import read_mask

    photos = write_small_photos(tmp_path / "photos")
    masks = tmp_path / "masks"
    masks.mkdir()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 65536, (6, 8), dtype=np.uint16)).save(masks / "a.png")
    rgba = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # not opaque: the alpha channel is the mask
    Image.fromarray(rgba, "RGBA").save(masks / "b.png")
    Image.fromarray(rng.integers(0, 256, (6, 8), dtype=np.uint8), "L").save(masks / "c.TIF")
    out = tmp_path / "scene"
    model = write_text_model(tmp_path / "sparse")
    main([str(photos), str(out), "--model", str(model), "--masks", str(masks)])
    scene = load_scene(SceneConfig(path=str(out)), splits=("train", "test"))
    alpha = {Path(f).name: images[..., 3] for split in ("train", "test")
             for f, images in zip(scene.split(split).files, scene.split(split).images)}
    assert sorted(alpha) == ["a.png", "b.png", "c.png"]
    for name, mask in (("a.png", "a.png"), ("b.png", "b.png"), ("c.png", "c.TIF")):
        want = torch.from_numpy(read_mask(masks / mask))
        assert torch.equal(alpha[name], torch.round(want * 255) / 255), name
        assert float((alpha[name] - want).abs().max()) <= 0.5 / 255 + 1e-6
    assert torch.equal(alpha["b.png"], torch.from_numpy(rgba[..., 3] / 255.0).float())
    assert torch.equal(alpha["c.png"], torch.from_numpy(read_mask(masks / "c.TIF")))  # 8-bit: unchanged


@pytest.mark.slow
def test_pycolmap_recovers_known_poses(tmp_path: Path) -> None:
    n = 30
    true_c2w, _, names = write_photos(tmp_path / "capture", n_views=n, size=320, seed=1)
    out = tmp_path / "scene"
    proc = run_cli(tmp_path / "capture" / "images", out, "--masks", tmp_path / "capture" / "masks")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    assert "registers" in proc.stdout and "features:" in proc.stdout
    meta, frames = frames_by_name(out)
    assert len(frames) >= 0.9 * n
    assert meta["colmap"]["source"] == "sfm" and "fl_x" in meta  # one shared camera
    index = [names.index(name) for name in frames]
    gl = torch.tensor([f["transform_matrix"] for f in frames.values()], dtype=torch.float64)
    c2w = opengl_to_opencv(gl)
    truth = true_c2w.double()[index].numpy()
    aligned, scale, R, _ = align_similarity(c2w[:, :3, 3].numpy(), truth[:, :3, 3])
    for frame in frames.values():
        with Image.open(out / frame["mask_path"]) as img:
            assert img.mode == "L"
        near, far = scale * np.array(frame["bounds"])
        assert RADIUS - 1.6 < near < far < RADIUS + 1.6  # every surface point is within 1.6 of the origin
    error = np.linalg.norm(aligned - truth[:, :3, 3], axis=-1) / RADIUS  # measured: mean 0.3%, max 0.8%
    assert error.mean() < 0.01 and error.max() < 0.02
    cos = ((c2w[:, :3, :3].numpy().transpose(0, 2, 1) @ R.T) * truth[:, :3, :3].transpose(0, 2, 1)).sum(-1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 1.0  # every camera axis within a degree

    again = tmp_path / "again"  # COLMAP's own binary output through our reader: the same scene
    main([str(tmp_path / "capture" / "images"), str(again), "--model", str(out / "sparse"),
          "--masks", str(tmp_path / "capture" / "masks")])
    assert frames_by_name(again)[1] == frames


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def _bad_models(tmp: Path) -> list[tuple[str, Path, Path]]:
    """``(case, model folder, the file the error must name)``."""
    cases = []
    for name in ("cameras", "images", "points3D"):
        model = write_binary_model(tmp / f"trunc_{name}")
        _truncate(model / f"{name}.bin")
        cases.append((f"truncated {name}.bin", model, model / f"{name}.bin"))
    model = write_binary_model(tmp / "trailing")
    (model / "images.bin").write_bytes((model / "images.bin").read_bytes() + b"\0\0")
    cases.append(("trailing bytes", model, model / "images.bin"))
    model = write_binary_model(tmp / "model_id")
    data = bytearray((model / "cameras.bin").read_bytes())
    data[12:16] = struct.pack("<i", 99)
    (model / "cameras.bin").write_bytes(bytes(data))
    cases.append(("unknown model id", model, model / "cameras.bin"))
    model = write_text_model(tmp / "bad_name", cameras=[(7, "PINHOL", 8, 6, (10.0, 11, 4, 3)), CAMERAS[1]])
    cases.append(("unknown model name", model, model / "cameras.txt"))
    model = write_text_model(tmp / "n_params", cameras=[(7, "PINHOLE", 8, 6, (10.0, 11.0, 4.0)), CAMERAS[1]])
    cases.append(("wrong parameter count", model, model / "cameras.txt"))
    model = write_text_model(tmp / "no_camera", cameras=CAMERAS[:1])
    cases.append(("image of a missing camera", model, model / "images.txt"))
    model = write_text_model(tmp / "bad_points")
    (model / "images.txt").write_text((model / "images.txt").read_text().replace(" 30\n", "\n", 1))
    cases.append(("points not in triples", model, model / "images.txt"))
    model = write_text_model(tmp / "bad_number")
    (model / "images.txt").write_text((model / "images.txt").read_text().replace("5 1.0", "5 one", 1))
    cases.append(("not a number", model, model / "images.txt"))
    model = write_text_model(tmp / "no_points")
    (model / "points3D.txt").unlink()
    cases.append(("missing points3D.txt", model, model / "points3D.txt"))
    cases.append(("missing folder", tmp / "nowhere", tmp / "nowhere"))
    model = write_text_model(tmp / "two_images", images=IMAGES[:2])
    cases.append(("two images", model, model / "images.txt"))
    return cases


@pytest.mark.slow
def test_bad_models_exit_1_with_one_line_naming_the_file(tmp_path: Path) -> None:
    photos = write_small_photos(tmp_path / "photos")
    for case, model, named in _bad_models(tmp_path):
        proc = run_cli(photos, tmp_path / "out", "--model", model)
        assert_one_line_error(proc, named), case
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bad_photos_and_masks_exit_1_with_one_line(tmp_path: Path) -> None:
    model = write_text_model(tmp_path / "sparse")
    photos = write_small_photos(tmp_path / "photos")
    out = tmp_path / "out"
    (photos / "b.png").unlink()
    assert_one_line_error(run_cli(photos, out, "--model", model), photos / "b.png")
    write_small_photos(photos, ("b.png",), size=(9, 6))
    assert_one_line_error(run_cli(photos, out, "--model", model), photos / "b.png", "9x6")
    write_small_photos(photos, ("b.png",))

    masks = write_small_photos(tmp_path / "masks", ("a.jpg", "c.png"))
    assert_one_line_error(run_cli(photos, out, "--model", model, "--masks", masks), masks / "b")
    write_small_photos(masks, ("b.png",), size=(6, 8))
    assert_one_line_error(run_cli(photos, out, "--model", model, "--masks", masks), masks / "b.png", "6x8")
    no_masks = tmp_path / "none"
    assert_one_line_error(run_cli(photos, out, "--model", model, "--masks", no_masks), no_masks)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    assert_one_line_error(run_cli(empty, out), empty, "no photos")
    assert_one_line_error(run_cli(tmp_path / "missing", out), tmp_path / "missing")
    assert not out.exists()


@pytest.mark.slow
def test_too_few_registered_exits_1_with_one_line(tmp_path: Path) -> None:
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(noise / f"n{i}.png")
    line = assert_one_line_error(run_cli(noise, tmp_path / "out"), noise)
    assert "COLMAP registered 0 of 5 images" in line

    write_photos(tmp_path / "pair", n_views=2, size=160, seed=2, masks=False)
    line = assert_one_line_error(run_cli(tmp_path / "pair" / "images", tmp_path / "out"), tmp_path / "pair")
    assert "of 2 images (need 3" in line
    assert not (tmp_path / "out").exists()


def test_registered_fraction_must_be_a_fraction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), str(tmp_path / "out"), "--min-registered-fraction", "1.5"])
    assert exc.value.code == 1
    assert capsys.readouterr().err.startswith("error: --min-registered-fraction must be in [0, 1]")
