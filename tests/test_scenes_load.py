"""Scene loaders: the embedded demo scene, the transforms.json variants, downscale, and bad input."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.cameras import focal_from_fov, rigidity_error
from core.errors import SceneError, UserError
from scenes.load import SceneConfig, load_scene
from testing.scenes.objects import make_procedural_scene
from testing.scenes.rigs import FOV_X

SIZE = 16


def _scene(tmp_path: Path, **kw: int) -> Path:
    return make_procedural_scene(tmp_path / "scene", **kw)


def _load(root: Path, **kw: object):  # type: ignore[no-untyped-def]
    return load_scene(SceneConfig(path=str(root), **kw))  # type: ignore[arg-type]


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _to_single_file(root: Path, **top: object) -> list[dict]:
    """Merge the per-split files into one nerfstudio-style ``transforms.json`` (train, val, test order)."""
    frames: list[dict] = []
    for split in ("train", "val", "test"):
        path = root / f"transforms_{split}.json"
        frames += json.loads(path.read_text())["frames"]
        path.unlink()
    (root / "transforms.json").write_text(json.dumps({**top, "frames": frames}))
    return frames


def _stems(files: list[str], root: Path) -> list[str]:
    return [str(Path(f).relative_to(root.resolve()).with_suffix("")) for f in files]


# ----------------------------------------------------------------------------------- demo scene


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    return load_scene()


def test_demo_scene_loads(demo) -> None:  # type: ignore[no-untyped-def]
    counts = {name: split.n_views for name, split in demo.splits.items()}
    assert counts == {"train": 100, "val": 100, "test": 200}
    for split in demo.splits.values():
        assert split.hw == (100, 100)
        assert split.images.dtype == torch.float32 and split.images.shape[-1] == 4
        assert 0.0 <= float(split.images.min()) and float(split.images.max()) <= 1.0
        f = focal_from_fov(0.6911112070083618, 100)
        assert torch.allclose(split.K[0], torch.tensor([[f, 0, 50.0], [0, f, 50.0], [0, 0, 1]]))
    assert demo.convention == "opencv"
    assert demo.name == "mic_100"


def test_demo_scene_poses_rigid_and_aimed_at_origin(demo) -> None:  # type: ignore[no-untyped-def]
    for split in demo.splits.values():
        for c2w in split.c2w:
            assert rigidity_error(c2w) < 1e-4
        centres = split.c2w[:, :3, 3]
        to_origin = -torch.nn.functional.normalize(centres, dim=-1)
        # OpenCV: the optical axis is the camera's +Z; after conversion it points at the origin
        cos = (split.c2w[:, :3, 2] * to_origin).sum(-1)
        assert float(cos.min()) > 0.999
        # image "down" points down in the world (+Z up), never up
        assert float(split.c2w[:, 2, 1].max()) < 0.0


def test_demo_scene_bounds(demo) -> None:  # type: ignore[no-untyped-def]
    # NeRF synthetic framing: box about [-1.5, 1.5]^3 around the origin, cameras ~4 away
    assert torch.allclose(demo.aabb, torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]), atol=0.1)
    assert 0.0 < demo.near < 4.0 - 1.5 < 4.0 + 1.5 < demo.far
    assert demo.background == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------ procedural scene


def test_procedural_blender_scene(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    scene = _load(root)
    assert {k: v.n_views for k, v in scene.splits.items()} == {"train": 8, "val": 2, "test": 2}
    train = scene.split("train")
    assert train.hw == (SIZE, SIZE)
    f = focal_from_fov(FOV_X, SIZE)
    assert torch.allclose(train.K, torch.tensor([[f, 0, 8.0], [0, f, 8.0], [0, 0, 1]]).expand(8, 3, 3))
    assert _stems(train.files, root) == [f"train/r_{i}" for i in range(8)]
    # the sphere is in the middle of every view and the corners are empty
    assert (train.images[:, SIZE // 2, SIZE // 2, 3] == 1).all()
    assert (train.images[:, 0, 0, 3] == 0).all()
    with pytest.raises(SceneError, match="no 'nope' split"):
        scene.split("nope")


def test_max_views_and_configured_bounds(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    scene = _load(root, max_views=3, aabb=[-1.0, -1, -1, 1, 1, 1], near=0.5, far=9.0)
    assert scene.split("train").n_views == 3
    assert scene.aabb.tolist() == [-1.0, -1, -1, 1, 1, 1]
    assert (scene.near, scene.far) == (0.5, 9.0)
    with pytest.raises(SceneError, match="max corner"):
        _load(root, aabb=[1.0, -1, -1, -1, 1, 1])
    with pytest.raises(SceneError, match="near < far"):
        _load(root, near=3.0, far=2.0)


def test_file_path_with_extension(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    reference = _load(root)

    def add_ext(meta: dict) -> None:
        for f in meta["frames"]:
            f["file_path"] = f["file_path"] + ".png"

    _edit_json(root / "transforms_train.json", add_ext)
    scene = _load(root)
    assert torch.equal(scene.split("train").images, reference.split("train").images)
    assert scene.split("train").files == reference.split("train").files


# ---------------------------------------------------------------------------- transforms.json


def test_single_file_camera_angle_x_and_holdout(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    frames = _to_single_file(root, camera_angle_x=FOV_X)
    assert len(frames) == 12
    scene = _load(root)
    stems = [str(Path(f["file_path"])) for f in frames]
    test_idx = [i for i in range(12) if i % 8 == 0]
    assert _stems(scene.split("test").files, root) == [stems[i] for i in test_idx]
    assert _stems(scene.split("val").files, root) == [stems[i] for i in test_idx]
    assert _stems(scene.split("train").files, root) == [s for i, s in enumerate(stems) if i % 8]
    f = focal_from_fov(FOV_X, SIZE)
    assert torch.allclose(scene.split("train").K[0], torch.tensor([[f, 0, 8.0], [0, f, 8.0], [0, 0, 1]]))


def test_single_file_camera_angle_y(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    _to_single_file(root, camera_angle_x=FOV_X, camera_angle_y=0.5)
    K = _load(root).split("train").K[0]
    assert float(K[0, 0]) == pytest.approx(focal_from_fov(FOV_X, SIZE), rel=1e-6)
    assert float(K[1, 1]) == pytest.approx(0.5 * SIZE / math.tan(0.25), rel=1e-6)


def test_single_file_global_focal_and_principal_point(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    _to_single_file(root, fl_x=20.0, fl_y=22.0, cx=7.0, cy=9.5, w=SIZE, h=SIZE)
    K = _load(root).split("train").K
    assert torch.allclose(K, torch.tensor([[20.0, 0, 7.0], [0, 22.0, 9.5], [0, 0, 1]]).expand_as(K))


def test_single_file_intrinsics_given_for_another_size_are_rescaled(tmp_path: Path) -> None:
    # intrinsics stated for 32x32 images while the files are 16x16: everything halves
    root = _scene(tmp_path)
    _to_single_file(root, fl_x=40.0, fl_y=44.0, cx=14.0, cy=19.0, w=2 * SIZE, h=2 * SIZE)
    K = _load(root).split("train").K[0]
    assert torch.allclose(K, torch.tensor([[20.0, 0, 7.0], [0, 22.0, 9.5], [0, 0, 1]]))


def test_single_file_per_frame_intrinsics(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    frames = _to_single_file(root)
    for i, f in enumerate(frames):
        f.update(fl_x=10.0 + i, fl_y=11.0 + i, cx=8.0 - 0.1 * i, cy=7.0 + 0.1 * i, w=SIZE, h=SIZE)
    (root / "transforms.json").write_text(json.dumps({"frames": frames}))
    scene = _load(root)
    train_idx = [i for i in range(12) if i % 8]
    for K, i in zip(scene.split("train").K, train_idx):
        expected = torch.tensor([[10.0 + i, 0, 8.0 - 0.1 * i], [0, 11.0 + i, 7.0 + 0.1 * i], [0, 0, 1]])
        assert torch.allclose(K, expected)


def test_single_file_per_frame_overrides_global(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    frames = _to_single_file(root)
    frames[1]["fl_x"] = 99.0
    (root / "transforms.json").write_text(json.dumps({"fl_x": 20.0, "frames": frames}))
    K = _load(root).split("train").K
    assert float(K[0, 0, 0]) == 99.0  # frame 1 is the first training frame
    assert float(K[0, 1, 1]) == 99.0  # fl_y defaults to fl_x
    assert float(K[1, 0, 0]) == 20.0


def test_single_file_filename_lists(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    frames = _to_single_file(root)
    names = [str(Path(f["file_path"])) for f in frames]
    train = [n + ".png" for n in names[:9]]  # lists with and without extension both match
    test = names[9:]
    meta = {"camera_angle_x": FOV_X, "train_filenames": train, "test_filenames": test, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    scene = _load(root)
    assert _stems(scene.split("train").files, root) == names[:9]
    assert _stems(scene.split("test").files, root) == names[9:]
    assert "val" not in scene.splits  # no val list: no val split (never a silent overlap)


# -------------------------------------------------------------------------- downscale / background


def _crafted_image(rng: np.random.Generator) -> np.ndarray:
    """Random RGBA, plus a 2x2 block with one opaque red pixel among transparent green ones."""
    img = rng.integers(0, 256, size=(SIZE, SIZE, 4), dtype=np.uint8)
    img[:2, :2] = [0, 255, 0, 0]
    img[0, 0] = [255, 0, 0, 255]
    return img


def test_downscale_area_average_on_premultiplied_alpha(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    img = _crafted_image(np.random.default_rng(0))
    Image.fromarray(img, "RGBA").save(root / "train" / "r_0.png")
    full = _load(root)
    half = _load(root, downscale=2)
    train = half.split("train")
    assert train.hw == (SIZE // 2, SIZE // 2)
    assert torch.allclose(train.K, full.split("train").K * torch.tensor([[0.5], [0.5], [1.0]]))
    # hand-written reference: average premultiplied color and alpha over each 2x2 block
    x = img.astype(np.float64) / 255.0
    ref = np.zeros((SIZE // 2, SIZE // 2, 4))
    for r in range(SIZE // 2):
        for c in range(SIZE // 2):
            block = x[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(4, 4)
            a = block[:, 3].mean()
            ref[r, c, 3] = a
            ref[r, c, :3] = (block[:, :3] * block[:, 3:]).mean(0) / a if a > 0 else 0.0
    assert np.allclose(train.images[0].numpy(), ref, atol=1e-5)
    # the crafted block: a quarter-covered pure red pixel, no green bleeding in
    assert np.allclose(train.images[0, 0, 0].numpy(), [1.0, 0.0, 0.0, 0.25], atol=1e-6)


def test_downscale_must_divide_size(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    with pytest.raises(SceneError, match="not divisible by downscale 3") as err:
        _load(root, downscale=3)
    assert "r_0.png" in str(err.value)
    with pytest.raises(SceneError, match="downscale must be a positive integer"):
        _load(root, downscale=0)


def test_background_compositing(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    img = _crafted_image(np.random.default_rng(1))
    Image.fromarray(img, "RGBA").save(root / "train" / "r_0.png")
    train = _load(root).split("train")
    rgb = train.rgb([0.0, 0.0, 1.0])
    assert rgb.shape == (8, SIZE, SIZE, 3)
    assert torch.allclose(rgb[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # opaque: its own color
    assert torch.allclose(rgb[0, 0, 1], torch.tensor([0.0, 0.0, 1.0]))  # transparent: background
    x = torch.from_numpy(img.astype(np.float32) / 255.0)
    expected = x[..., :3] * x[..., 3:] + torch.tensor([0.0, 0.0, 1.0]) * (1 - x[..., 3:])
    assert torch.allclose(rgb[0], expected, atol=1e-6)
    half = _load(root, downscale=2).split("train").rgb(torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(half[0, 0, 0], torch.tensor([0.25, 0.0, 0.75]), atol=1e-6)


def test_rgb_images_get_opaque_alpha(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    rgb = np.random.default_rng(2).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(root / "train" / "r_2.png")
    Image.fromarray(rgb, "RGB").save(root / "train" / "r_3.jpg", quality=100)
    (root / "train" / "r_3.png").unlink()  # extension-less file_path finds the .jpg
    train = _load(root).split("train")
    assert torch.equal(train.images[2, ..., 3], torch.ones(SIZE, SIZE))
    assert torch.allclose(train.images[2, ..., :3], torch.from_numpy(rgb / 255.0).float())
    assert train.files[3].endswith("r_3.jpg")
    assert torch.equal(train.images[3, ..., 3], torch.ones(SIZE, SIZE))


# ------------------------------------------------------------------------------------ bad input


def _gray(root: Path) -> str:
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8), "L").save(root / "train" / "r_0.png")
    return "r_0.png"


def _gray_alpha(root: Path) -> str:
    Image.fromarray(np.zeros((SIZE, SIZE, 2), np.uint8), "LA").save(root / "train" / "r_0.png")
    return "r_0.png"


def _gray16(root: Path) -> str:
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint16)).save(root / "train" / "r_0.png")
    return "r_0.png"


def _mismatched(root: Path) -> str:
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(root / "train" / "r_1.png")
    return "r_1.png"


def _pose_edit(value: Callable[[list], None]) -> Callable[[Path], str]:
    def mutate(root: Path) -> str:
        _edit_json(root / "transforms_train.json", lambda m: value(m["frames"][2]["transform_matrix"]))
        return "transforms_train.json"

    return mutate


def _set(row: int, col: int, v: float) -> Callable[[list], None]:
    def f(m: list) -> None:
        m[row][col] = v

    return f


def _scale_rotation(m: list) -> None:
    for r in range(3):
        for c in range(3):
            m[r][c] *= 2.0


def _write(rel: str, data: bytes) -> Callable[[Path], str]:
    def mutate(root: Path) -> str:
        (root / rel).write_bytes(data)
        return Path(rel).name

    return mutate


def _remove(rel: str, named: str | None = None) -> Callable[[Path], str]:
    def mutate(root: Path) -> str:
        (root / rel).unlink()
        return named or Path(rel).name

    return mutate


def _empty_test(root: Path) -> str:
    _edit_json(root / "transforms_test.json", lambda m: m.update(frames=[]))
    return "transforms_test.json"


def _no_folder(root: Path) -> str:
    import shutil

    shutil.rmtree(root)
    return str(root)


def _no_json_at_all(root: Path) -> str:
    for s in ("train", "val", "test"):
        (root / f"transforms_{s}.json").unlink()
    return str(root)


def _edit_train(edit: Callable[[dict], None]) -> Callable[[Path], str]:
    def mutate(root: Path) -> str:
        _edit_json(root / "transforms_train.json", edit)
        return "transforms_train.json"

    return mutate


def _single_file(**top: object) -> Callable[[Path], str]:
    def mutate(root: Path) -> str:
        frames = _to_single_file(root)
        names = [f["file_path"] for f in frames]
        lists = {k: names[:2] + (["./train/missing"] if v == "missing" else []) for k, v in top.items()}
        meta = {"camera_angle_x": FOV_X, **lists, "frames": frames}
        (root / "transforms.json").write_text(json.dumps(meta))
        return "transforms.json"

    return mutate


BAD_INPUTS: dict[str, tuple[Callable[[Path], str], str]] = {
    "missing folder": (_no_folder, "scene folder not found"),
    "no camera file": (_no_json_at_all, "no transforms.json"),
    "missing split json": (_remove("transforms_test.json"), "camera file not found"),
    "malformed json": (_write("transforms_train.json", b'{"frames": [,]}'), "malformed JSON"),
    "binary json": (_write("transforms_train.json", b"\xff\xfe\x00garbage"), "malformed JSON"),
    "json without frames": (_write("transforms_train.json", b'{"camera_angle_x": 0.7}'), "no 'frames' list"),
    "missing image": (_remove("train/r_3.png", "r_3"), "not found"),
    "undecodable image": (_write("train/r_0.png", b"\x89PNG not really"), "cannot decode image"),
    "truncated image": (lambda r: _write("train/r_0.png", (r / "train/r_0.png").read_bytes()[:60])(r),
                        "cannot decode image"),
    "mismatched sizes": (_mismatched, "8x8"),
    "grayscale": (_gray, "channel count 1"),
    "gray+alpha": (_gray_alpha, "channel count 2"),
    "16-bit grayscale": (_gray16, "unsupported image mode"),
    "nan pose": (_pose_edit(_set(0, 3, float("nan"))), "frame 2 (./train/r_2) transform_matrix is not"),
    "inf pose": (_pose_edit(_set(1, 1, float("inf"))), "not finite"),
    "non-rigid pose": (_pose_edit(_scale_rotation), "not rigid"),
    "sheared pose": (_pose_edit(_set(0, 1, 0.5)), "not rigid"),
    "bad bottom row": (_pose_edit(_set(3, 0, 0.3)), "not rigid"),
    "pose wrong shape": (_edit_train(lambda m: m["frames"][0].update(transform_matrix=[[1, 0], [0, 1]])),
                         "shape"),
    "pose missing": (_edit_train(lambda m: m["frames"][0].pop("transform_matrix")), "transform_matrix"),
    "frame without file_path": (_edit_train(lambda m: m["frames"][0].pop("file_path")), "no 'file_path'"),
    "no intrinsics": (_edit_train(lambda m: m.pop("camera_angle_x")), "no intrinsics"),
    "intrinsics not numbers": (_edit_train(lambda m: m.update(camera_angle_x="wide")), "not numbers"),
    "zero field of view": (_edit_train(lambda m: m.update(camera_angle_x=0)), "field of view 0"),
    "infinite width": (_edit_train(lambda m: m.update(fl_x=10.0, w=float("inf"))), "intrinsics"),
    "empty split": (_empty_test, "'test' split is empty"),
    "list names a missing frame": (_single_file(train_filenames="missing", test_filenames="ok"),
                                   "no frame has"),
    "lists without test list": (_single_file(train_filenames="ok"), "no 'test_filenames'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_scene_error(tmp_path: Path, case: str) -> None:
    root = _scene(tmp_path)
    mutate, problem = BAD_INPUTS[case]
    named = mutate(root)
    with pytest.raises(SceneError) as err:
        _load(root)
    message = str(err.value)
    assert isinstance(err.value, UserError)
    assert named in message, message
    assert problem in message, message
    assert "\n" not in message


def test_bad_background_rejected(tmp_path: Path) -> None:
    root = _scene(tmp_path)
    with pytest.raises(SceneError, match="background must be 3 numbers"):
        _load(root, background=[1.0, 1.0])
    with pytest.raises(SceneError, match="background must be 3 numbers"):
        _load(root, background=[0.0, 2.0, 0.0])
