"""``scenes.images``: the one mask rule, the one extension list (any case) and ``image_size``, and every
reader of photos and masks (transforms.json, LLFF, the COLMAP command) using them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import SceneError
from scenes.colmap import list_photos
from scenes.images import IMAGE_EXTENSIONS, find_image, image_size, is_image_file, read_mask
from scenes.llff import choose_image_folder
from scenes.load import SceneConfig, load_scene
from testing.scenes.objects import make_procedural_scene

REPO = Path(__file__).resolve().parents[1]
HW = (5, 7)  # [H, W] of the masks of the read_mask tests


def _rng() -> np.random.Generator:
    return np.random.default_rng(11)


def _gray8(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    v = _rng().integers(0, 256, hw, dtype=np.uint8)
    Image.fromarray(v, "L").save(path.with_suffix(".png"))
    return v / 255.0


def _gray16(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    v = _rng().integers(0, 65536, hw, dtype=np.uint16)
    Image.fromarray(v).save(path.with_suffix(".png"))
    return v / 65535.0


def _gray16_tiff(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    v = _rng().integers(0, 65536, hw, dtype=np.uint16)
    Image.fromarray(v).save(path.with_suffix(".tif"))
    return v / 65535.0


def _rgb(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    v = _rng().integers(0, 256, (*hw, 3), dtype=np.uint8)
    Image.fromarray(v, "RGB").save(path.with_suffix(".png"))
    return v[..., 0] / 255.0


def _rgba_alpha(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    v = _rng().integers(0, 256, (*hw, 4), dtype=np.uint8)
    v[0, 0, 3] = 17  # not opaque: the alpha channel is the mask
    Image.fromarray(v, "RGBA").save(path.with_suffix(".png"))
    return v[..., 3] / 255.0


def _rgba_opaque(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    v = _rng().integers(0, 256, (*hw, 4), dtype=np.uint8)
    v[..., 3] = 255  # opaque everywhere: a gray mask saved with an alpha channel, read like RGB
    Image.fromarray(v, "RGBA").save(path.with_suffix(".png"))
    return v[..., 0] / 255.0


def _gray_alpha(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    v = _rng().integers(0, 256, (*hw, 2), dtype=np.uint8)
    v[0, 0, 1] = 0
    Image.fromarray(v, "LA").save(path.with_suffix(".png"))
    return v[..., 1] / 255.0


def _palette_transparent(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    idx = _rng().integers(0, 4, hw, dtype=np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette([200, 10, 10] * 4)
    img.save(path.with_suffix(".png"), transparency=bytes([0, 85, 170, 255]))  # alpha per palette entry
    return np.array([0, 85, 170, 255])[idx] / 255.0


def _bilevel(path: Path, hw: tuple[int, int] = HW) -> np.ndarray:
    v = _rng().integers(0, 2, hw).astype(bool)
    Image.fromarray(v).save(path.with_suffix(".png"))
    return v.astype(np.float64)


MASKS: dict[str, Callable[..., np.ndarray]] = {  # writer(path, hw) -> the alpha read_mask must give
    "8-bit gray": _gray8,
    "16-bit gray": _gray16,
    "16-bit gray tiff": _gray16_tiff,
    "RGB: first channel": _rgb,
    "RGBA: alpha": _rgba_alpha,
    "opaque RGBA: first channel": _rgba_opaque,
    "gray+alpha: alpha": _gray_alpha,
    "palette with transparency: alpha": _palette_transparent,
    "1-bit": _bilevel,
}


@pytest.mark.parametrize("kind", list(MASKS))
def test_read_mask_rule(tmp_path: Path, kind: str) -> None:
    want = MASKS[kind](tmp_path / "m")
    got = read_mask(next(tmp_path.iterdir()))
    assert got.dtype == np.float32 and got.shape == HW
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    assert 0.0 <= got.min() and got.max() <= 1.0


def _write_float(path: Path) -> None:
    Image.fromarray(np.full(HW, 0.5, np.float32)).save(path)


def _write_int32(path: Path) -> None:
    Image.fromarray(np.full(HW, 70000, np.int32)).save(path)


@pytest.mark.parametrize("write, name, problem", [
    (_write_float, "m.tif", "unsupported mask mode F"),
    (_write_int32, "m.tif", "values 70000..70000"),
    (lambda p: p.write_bytes(b"\x89PNG not really"), "m.png", "cannot decode mask"),
    (lambda p: None, "missing.png", "cannot decode mask"),
])
def test_unusable_masks_are_one_line_scene_errors(tmp_path: Path, write: Callable[[Path], None], name: str,
                                                  problem: str) -> None:
    path = tmp_path / name
    write(path)
    with pytest.raises(SceneError) as err:
        read_mask(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_transforms_mask_path_follows_the_rule(tmp_path: Path) -> None:
    """A ``mask_path`` of each kind becomes the view's alpha, as :func:`read_mask` reads it."""
    root = make_procedural_scene(tmp_path / "scene", n_train=len(MASKS), size=16)
    meta = json.loads((root / "transforms_train.json").read_text())
    wants = []
    for i, (frame, write) in enumerate(zip(meta["frames"], MASKS.values())):
        wants.append(write(root / "train" / f"mask_{i}", (16, 16)))
        frame["mask_path"] = f"./train/mask_{i}"  # extension-less: found by the one list
    (root / "transforms_train.json").write_text(json.dumps(meta))
    train = load_scene(SceneConfig(path=str(root), holdout_every=100), splits=("train",)).split("train")
    for i, want in enumerate(wants):
        np.testing.assert_allclose(train.images[i, ..., 3].numpy(), want, rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------- extensions, sizes


def _touch_images(folder: Path, names: list[str], size: tuple[int, int] = (7, 5)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")  # .txt: PNG bytes
        Image.new("RGB", size, (10, 20, 30)).save(path, format=fmt)


def test_one_extension_list_any_case(tmp_path: Path) -> None:
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    assert len(set(IMAGE_EXTENSIONS)) == len(IMAGE_EXTENSIONS)
    names = [f"p{i}{ext.upper() if i % 2 else ext}" for i, ext in enumerate(IMAGE_EXTENSIONS)] + ["q.Jpg"]
    _touch_images(tmp_path / "photos", names)
    (tmp_path / "photos" / "notes.txt").write_text("not a photo")
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"")
    (tmp_path / "photos" / "dir.png").mkdir()
    assert sorted(p.name for p in (tmp_path / "photos").iterdir() if is_image_file(p)) == sorted(names)
    assert list_photos(tmp_path / "photos") == names  # p0 .. p5, q: already in natural order


def test_colmap_and_llff_accept_the_same_files(tmp_path: Path) -> None:
    names = ["a.PNG", "b.jpeg", "c.Tiff", "d.bmp"]
    _touch_images(tmp_path / "images", names, size=(8, 6))
    (tmp_path / "images" / "e.gif").write_bytes(b"GIF89a")
    assert list_photos(tmp_path / "images") == names
    folder, factor = choose_image_folder(tmp_path, None)
    assert folder == tmp_path / "images" and factor == 1


def test_find_image_in_list_order_any_case(tmp_path: Path) -> None:
    _touch_images(tmp_path, ["r_0.JPG", "r_0.png", "r_1.TIFF", "r_2.txt", "r_3x.png", "r_4.Jpg"])
    assert find_image(tmp_path / "r_0") == tmp_path / "r_0.png"  # .png before .jpg
    assert find_image(tmp_path / "r_1") == tmp_path / "r_1.TIFF"
    assert find_image(tmp_path / "r_4") == tmp_path / "r_4.Jpg"
    assert find_image(tmp_path / "r_3") is None  # another stem
    assert find_image(tmp_path / "r_0.JPG") == tmp_path / "r_0.JPG"  # an existing file with a suffix
    assert find_image(tmp_path / "r_2") is None  # not an image extension
    assert find_image(tmp_path / "nowhere" / "r_0") is None


def test_image_size_from_the_header(tmp_path: Path) -> None:
    rng = _rng()
    for i in range(5):
        w, h = (int(v) for v in rng.integers(1, 50, 2))
        _touch_images(tmp_path, [f"i{i}.png"], size=(w, h))
        assert image_size(tmp_path / f"i{i}.png") == (w, h)
    with pytest.raises(SceneError, match="image not found"):
        image_size(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(SceneError, match=r"junk\.png: cannot decode image"):
        image_size(tmp_path / "junk.png")


def test_colmap_command_reports_bad_input_without_loading_torch(tmp_path: Path) -> None:
    """The COLMAP command reads photos and masks through ``scenes.images`` without importing torch."""
    code = ("import sys; from scenes.colmap import main; import scenes.images, scenes.colmap_model; "
            "assert 'torch' not in sys.modules, 'torch imported'; main()")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none"), str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "torch imported" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / 'none'}: photos folder not found")
