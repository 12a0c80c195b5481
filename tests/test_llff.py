"""LLFF loader: axes conversion, split convention, factor folders and auto choice, masks, bad input."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.cameras import rigidity_error
from core.errors import SceneError
from core.rays import generate_rays_from_pixels
from scenes.llff import LLFF_POSES, choose_image_folder, is_llff, llff_to_opencv, load_llff, opencv_to_llff

FULL_HW = (96, 128)  # full resolution of the tiny scenes: images_8 is 12 x 16
FOCAL = 100.0
ALL = ("train", "val", "test")


def _llff_rows(n: int, hw: tuple[int, int] = FULL_HW, focal: float = FOCAL) -> np.ndarray:
    """``[n, 17]`` poses_bounds: cameras on a line along world +X, looking along world -Z (LLFF back = +Z)."""
    rows = np.zeros((n, 3, 5))
    rows[:, :, 0] = [0, -1, 0]  # down = world -Y
    rows[:, :, 1] = [1, 0, 0]  # right = world +X
    rows[:, :, 2] = [0, 0, 1]  # backwards = world +Z
    rows[:, 0, 3] = 0.1 * np.arange(n)
    rows[:, :, 4] = [hw[0], hw[1], focal]
    bounds = np.stack([np.full(n, 1.0), np.full(n, 5.0 + np.arange(n))], -1)
    return np.concatenate([rows.reshape(n, 15), bounds], -1)


def _write_images(folder: Path, n: int, hw: tuple[int, int]) -> None:
    """``n`` images of ``hw`` whose red channel is the view index (names sorted as the view order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.zeros((*hw, 3), np.uint8)
        arr[..., 0] = 10 * i
        arr[..., 1] = (np.arange(hw[1]) * 255 // max(hw[1] - 1, 1))[None, :]
        Image.fromarray(arr, "RGB").save(folder / f"img_{i:03d}.png")


def _scene(root: Path, n: int = 9, folders: dict[str, tuple[int, int]] | None = None,
           rows: np.ndarray | None = None) -> Path:
    """A tiny LLFF scene: ``poses_bounds.npy`` and image folders (default ``images_8/`` at 12 x 16)."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / LLFF_POSES, _llff_rows(n) if rows is None else rows)
    for name, hw in (folders or {"images_8": (12, 16)}).items():
        _write_images(root / name, n, hw)
    return root


def _raises(path: Path, *words: str) -> AbstractContextManager[object]:
    """Expect a one-line SceneError naming ``path`` and containing ``words``."""
    pattern = "".join(f"(?=.*{re.escape(w)})" for w in (str(path), *words))
    return pytest.raises(SceneError, match=pattern)


# -------------------------------------------------------------------------------- axes conversion


def test_llff_to_opencv_hand_worked_pose() -> None:
    """A camera at (1, 2, 3) looking along world +X with world +Z up: right is -Y, down is -Z."""
    hwf = [120.0, 160.0, 100.0]
    pose = np.array([[0.0, 0.0, -1.0, 1.0, hwf[0]],  # columns: down (0,0,-1), right (0,-1,0), back (-1,0,0)
                     [0.0, -1.0, 0.0, 2.0, hwf[1]],
                     [-1.0, 0.0, 0.0, 3.0, hwf[2]]])
    c2w = llff_to_opencv(pose[None])
    assert c2w.shape == (1, 4, 4) and c2w.dtype == torch.float32
    c2w = c2w[0]
    assert rigidity_error(c2w) < 1e-6
    assert torch.allclose(c2w[:3, 3], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(c2w[:3, 2], torch.tensor([1.0, 0.0, 0.0]))  # forward

    K = torch.tensor([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    w2c = torch.linalg.inv(c2w)

    def project(point: list[float]) -> tuple[float, float]:
        p = w2c[:3, :3] @ torch.tensor(point) + w2c[:3, 3]
        assert p[2] > 0  # in front of the camera
        uv = K @ (p / p[2])
        return float(uv[0]), float(uv[1])

    assert project([6.0, 2.0, 3.0]) == pytest.approx((80.0, 60.0), abs=1e-5)  # on the optical axis
    u, v = project([6.0, 1.0, 3.0])  # world -Y: the camera's right
    assert u > 80.0 and v == pytest.approx(60.0, abs=1e-5)
    u, v = project([6.0, 2.0, 2.0])  # world -Z: below
    assert v > 60.0 and u == pytest.approx(80.0, abs=1e-5)
    # core.rays agrees: the ray through the principal point runs along world +X from the centre
    rays_o, rays_d = generate_rays_from_pixels(c2w, K, torch.tensor([80.0]), torch.tensor([60.0]))
    assert torch.allclose(rays_o[0], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(rays_d[0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


def test_llff_to_opencv_random_rotations_stay_rigid() -> None:
    R = torch.linalg.qr(torch.randn(5, 3, 3, dtype=torch.float64))[0]
    R = R * torch.linalg.det(R)[:, None, None].sign()  # proper rotations
    poses = np.zeros((5, 3, 5))
    poses[:, :, :3] = R.numpy()
    c2w = llff_to_opencv(poses)
    for pose in c2w:
        assert rigidity_error(pose) < 1e-5
    assert torch.allclose(c2w[:, :3, 1], R[:, :, 0].float())  # down = LLFF column 0
    assert torch.allclose(c2w[:, :3, 2], -R[:, :, 2].float())  # forward = -LLFF column 2
    with pytest.raises(ValueError, match="3, 5"):
        llff_to_opencv(np.zeros((2, 4, 4)))
    back = opencv_to_llff(c2w, np.array([10.0, 20.0, 30.0]))
    assert np.allclose(back[:, :, :3], R.numpy(), atol=1e-6) and np.allclose(back[:, :, 4], [10, 20, 30])


# ----------------------------------------------------------------------------------- loading


def test_load_split_convention_poses_and_bounds(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s", n=17)
    assert is_llff(root) and not is_llff(tmp_path)
    data = load_llff(root, ALL, None, None)
    names = [[Path(f).name for f in data.splits[s].files] for s in ALL]
    assert names[0] == [f"img_{i:03d}.png" for i in range(17) if i % 8]
    assert names[1] == names[2] == ["img_000.png", "img_008.png", "img_016.png"]
    test = data.splits["test"]
    assert test.images.shape == (3, 12, 16, 4) and test.images.dtype == torch.float32
    assert torch.allclose(test.images[:, 0, 0, 0] * 255, torch.tensor([0.0, 80.0, 160.0]))  # red = 10 i
    assert bool((test.images[..., 3] == 1).all()) and not data.has_masks
    assert data.c2w.shape == (17, 4, 4) and data.bounds.shape == (17, 2)
    assert data.c2w.dtype == data.bounds.dtype == torch.float32
    assert torch.allclose(data.c2w[:, :3, 2], torch.tensor([0.0, 0.0, -1.0]))  # forward = -back
    assert torch.allclose(test.c2w, data.c2w[[0, 8, 16]])
    assert torch.allclose(data.bounds[3], torch.tensor([1.0, 8.0]))
    assert set(load_llff(root, ("train",), None, None).splits) == {"train"}
    capped = load_llff(root, ("train", "test"), None, 2)
    assert [s.n_views for s in capped.splits.values()] == [2, 2]
    assert [Path(f).name for f in capped.splits["train"].files] == ["img_001.png", "img_002.png"]
    odd = load_llff(root, ("test",), None, None, holdout_every=5)
    assert [Path(f).name for f in odd.splits["test"].files] == [f"img_{i:03d}.png" for i in (0, 5, 10, 15)]


def test_factor_folder_scales_intrinsics(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s", folders={"images": FULL_HW, "images_4": (24, 32), "images_8": (12, 16)})
    for downscale, hw, factor in ((8, (12, 16), 8), (4, (24, 32), 4), (1, FULL_HW, 1)):
        data = load_llff(root, ("test",), downscale, None)
        assert data.factor == factor and data.splits["test"].hw == hw
        f = FOCAL / factor
        expected = torch.tensor([[f, 0, hw[1] / 2], [0, f, hw[0] / 2], [0, 0, 1]])
        assert torch.allclose(data.splits["test"].K[0], expected)


def test_downscale_from_full_images(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s", folders={"images": FULL_HW})
    data = load_llff(root, ("test",), 2, None)
    assert data.factor == 2 and data.splits["test"].hw == (48, 64)
    assert data.splits["test"].K[0, 0, 0] == pytest.approx(FOCAL / 2)
    full = load_llff(root, ("test",), 1, None).splits["test"].images[0]
    pooled = torch.nn.functional.avg_pool2d(full.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
    assert torch.allclose(data.splits["test"].images[0], pooled, atol=1e-6)  # area average
    with _raises(root / "images" / "img_000.png", "not divisible by downscale 3"):
        load_llff(root, ("test",), 3, None)


def test_missing_factor_folder_lists_the_ones_present(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s", folders={"images_4": (24, 32), "images_8": (12, 16)})
    with _raises(root / "images_2", "not found", "images_4/, images_8/"):
        load_llff(root, ("test",), 2, None)
    with _raises(root / "images", "not found", "images_4/"):
        load_llff(root, ("test",), 1, None)


@pytest.mark.parametrize("folders, chosen, extra", [
    ({"images_4": (756, 1008), "images_8": (378, 504)}, "images_8", 1),  # LLFF's standard factor 8
    ({"images_4": (864, 864), "images_8": (432, 432)}, "images_8", 1),
    ({"images": (960, 1280), "images_2": (480, 640), "images_4": (240, 320)}, "images_2", 1),  # <= 640
    ({"images": (960, 1280)}, "images", 2),
    ({"images": (525, 700)}, "images", 5),  # 2 and 3 do not divide 525 x 700; 4 does not divide 525
    ({"images_2": (768, 1024), "images": (1536, 2048)}, "images_2", 2),  # smallest folder, then reduce
])
def test_auto_folder_choice(tmp_path: Path, folders: dict, chosen: str, extra: int) -> None:
    root = _scene(tmp_path / "s", n=2, folders=folders)
    folder, factor = choose_image_folder(root, None)
    assert (folder.name, factor) == (chosen, extra)


def test_auto_loads_largest_small_folder_and_reports_the_hwf_factor(tmp_path: Path) -> None:
    rows = _llff_rows(2, hw=(3024, 4032), focal=3200.0)
    root = _scene(tmp_path / "s", n=2, rows=rows, folders={"images_4": (756, 1008), "images_8": (378, 504)})
    data = load_llff(root, ("test",), None, None)
    assert data.factor == 8 and data.splits["test"].hw == (378, 504)
    assert data.splits["test"].K[0, 0, 0] == pytest.approx(400.0)
    assert data.splits["test"].K[0, 0, 2] == 252.0 and data.splits["test"].K[0, 1, 2] == 189.0


def test_auto_without_a_dividing_factor(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s", n=2, folders={"images": (643, 641)})  # gcd 1
    with _raises(root / "images", "641x643", "no integer factor"):
        choose_image_folder(root, None)


# -------------------------------------------------------------------------------------- masks


def _write_masks(folder: Path, n: int, hw: tuple[int, int], mode: str = "L", ext: str = "png") -> np.ndarray:
    """Masks whose columns ramp 0..255 (soft values) for views 0..n-1; returns the 8-bit ramp."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.broadcast_to((np.arange(hw[1]) * 17 % 256).astype(np.uint8)[None, :], hw).copy()
    for i in range(n):
        if mode == "I;16":  # 16-bit: ramp * 257 / 65535 is the same alpha as ramp / 255
            arr: np.ndarray = ramp.astype(np.uint16) * 257
        elif mode == "RGBA":  # the mask is the alpha channel; the colors are a distraction
            arr = np.stack([255 - ramp, 255 - ramp, np.zeros_like(ramp), ramp], -1)
        else:
            arr = ramp if mode == "L" else np.stack([ramp, 255 - ramp, np.zeros_like(ramp)], -1)
        Image.fromarray(arr, None if mode == "I;16" else mode).save(folder / f"img_{i:03d}.{ext}")
    return ramp


@pytest.mark.parametrize("mode, ext", [("L", "png"), ("RGB", "PNG"), ("I;16", "png"), ("RGBA", "png"),
                                       ("L", "Tif")])
def test_masks_become_soft_alpha(tmp_path: Path, mode: str, ext: str) -> None:
    root = _scene(tmp_path / "s")
    ramp = _write_masks(root / "masks_8", 9, (12, 16), mode, ext)
    data = load_llff(root, ALL, 8, None)
    assert data.has_masks
    alpha = data.splits["train"].images[..., 3]
    assert torch.allclose(alpha, torch.from_numpy(ramp / 255.0).float().expand_as(alpha))
    assert 0 < float(alpha[0, 0, 1]) < 1  # a soft value kept


def test_masks_downscaled_with_full_images(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s", n=2, folders={"images": FULL_HW})
    ramp = _write_masks(root / "masks", 2, FULL_HW)
    data = load_llff(root, ("test",), 4, None)
    expected = torch.from_numpy(ramp / 255.0).float()[None, None]
    expected = torch.nn.functional.avg_pool2d(expected, 4)[0, 0]
    assert torch.allclose(data.splits["test"].images[0, ..., 3], expected, atol=1e-6)


def test_extra_masks_are_ignored(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s")
    _write_masks(root / "masks_8", 12, (12, 16))
    assert load_llff(root, ("test",), 8, None).has_masks


def test_bad_masks(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s")
    _write_masks(root / "masks_8", 9, (12, 16))
    (root / "masks_8" / "img_004.png").unlink()
    with _raises(root / "masks_8", "no mask for 1 image", "img_004.png"):
        load_llff(root, ALL, 8, None)
    Image.fromarray(np.zeros((12, 15), np.uint8)).save(root / "masks_8" / "img_004.png")
    with _raises(root / "masks_8" / "img_004.png", "15x12", "16x12"):
        load_llff(root, ALL, 8, None)
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / "masks_8" / "img_004.jpg")
    with _raises(root / "masks_8", "second mask", "img_004"):
        load_llff(root, ALL, 8, None)
    other = _scene(tmp_path / "other")
    _write_masks(other / "masks", 9, (96, 128))
    with _raises(other / "masks_8", "masks/", "images_8/"):
        load_llff(other, ALL, 8, None)


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("edit, words", [
    (lambda rows: rows[:, :15], ("(9, 15)", "N x 17")),
    (lambda rows: rows[0], ("(17,)", "N x 17")),
    (lambda rows: rows[:0], ("(0, 17)",)),
    (lambda rows: np.where(np.arange(17) == 3, np.nan, rows), ("row 0", "non-finite")),
    (lambda rows: np.where(np.arange(17) == 14, 0.0, rows), ("row 0", "hwf")),
    (lambda rows: np.where(np.arange(17) == 15, -1.0, rows), ("row 0", "non-positive near or far")),
    (lambda rows: np.where(np.arange(17) == 15, 10.0, rows), ("row 0", "near >= far")),
    (lambda rows: np.where(np.arange(17) < 3, 2.0 * rows, rows), ("row 0", "not rigid")),  # R's first row x2
    (lambda rows: rows.astype(str), ("numeric",)),
    (lambda rows: np.broadcast_to(rows[:1], rows.shape), ("all 9 poses", "same camera centre")),
    (lambda rows: np.where(np.isin(np.arange(17), [3, 8, 13]), 0.5, rows), ("all 9", "same camera centre")),
])
def test_bad_poses_bounds(tmp_path: Path, edit, words: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    root = _scene(tmp_path / "s")
    np.save(root / LLFF_POSES, edit(_llff_rows(9)))
    with _raises(root / LLFF_POSES, *words):
        load_llff(root, ALL, None, None)


def test_unreadable_poses_bounds(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s")
    (root / LLFF_POSES).write_bytes(b"not an array")
    with _raises(root / LLFF_POSES, "not a .npy file"):
        load_llff(root, ALL, None, None)
    np.save(root / LLFF_POSES, _llff_rows(9))
    (root / LLFF_POSES).write_bytes((root / LLFF_POSES).read_bytes()[:-20])  # truncated
    with _raises(root / LLFF_POSES, "not a readable .npy"):
        load_llff(root, ALL, None, None)


def test_image_count_and_sizes(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s")
    (root / "images_8" / "img_008.png").unlink()
    with _raises(root / "images_8", "8 images", "9 pose rows"):
        load_llff(root, ALL, 8, None)
    Image.new("RGB", (16, 12)).save(root / "images_8" / "img_008.png")
    Image.new("RGB", (16, 12)).save(root / "images_8" / "img_009.JPG")
    with _raises(root / "images_8", "10 images", "9 pose rows"):
        load_llff(root, ALL, 8, None)
    (root / "images_8" / "img_009.JPG").unlink()
    Image.new("RGB", (16, 13)).save(root / "images_8" / "img_005.png")
    with _raises(root / "images_8" / "img_005.png", "16x13", "16x12"):
        load_llff(root, ALL, 8, None)


def test_hwf_of_another_aspect_ratio(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s", rows=_llff_rows(9, hw=(128, 96)))  # portrait hwf, landscape images
    with _raises(root / LLFF_POSES, "row 0", "aspect"):
        load_llff(root, ALL, 8, None)


def test_bad_split_requests(tmp_path: Path) -> None:
    root = _scene(tmp_path / "s")
    with _raises(root, "unknown split 'holdout'"):
        load_llff(root, ("holdout",), 8, None)
    with _raises(root / LLFF_POSES, "'train' split is empty"):
        load_llff(root, ("train",), 8, None, holdout_every=1)
    with _raises(root, "downscale must be a positive integer"):
        load_llff(root, ALL, 0, None)
