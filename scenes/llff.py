"""LLFF scene loader: ``poses_bounds.npy`` beside ``images/`` or ``images_<f>/`` (forward-facing captures).

Layout (Mildenhall et al. 2019, "Local Light Field Fusion"; NeRF's real forward-facing scenes):

* ``poses_bounds.npy``: ``N x 17`` floats. Row i holds 15 numbers that reshape to ``[3, 5]`` =
  ``[R | t | hwf]`` (camera-to-world rotation whose columns are the camera's down, right and backwards
  axes, the camera centre, then image height, width and focal length in pixels at FULL resolution),
  then the near and far bounds of image i.
* ``images/`` (full resolution) and/or ``images_<f>/`` (reduced by ``f``): the image files
  (:data:`scenes.images.IMAGE_EXTENSIONS`, any case) sorted by name; the i-th is row i.
* optional ``masks/`` / ``masks_<f>/``, the one named like the image folder used: one mask file per
  image with the image's stem, read by :func:`scenes.images.read_mask` (8- or 16-bit gray, RGB or RGBA;
  soft edges kept). Masks for no image are ignored; an image without a mask is an error.

Poses are converted once, by :func:`llff_to_opencv`, into the OpenCV convention of :mod:`core.cameras`.
The world frame stays the file's (no recentring or rescaling, unlike LLFF's own loader). The bounds are
LLFF's: depths along each camera's optical axis (camera-space z), not distances along unit rays; a ray
at angle ``a`` from the axis reaches depth ``z`` at distance ``z / cos(a)``. Splits follow NeRF: image i
is a test view when ``i % holdout_every == 0``, a train view otherwise, and ``val`` is the test views.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.cameras import PoseError, check_c2w
from core.errors import SceneError
from scenes.images import (
    IMAGE_EXTENSIONS,
    SPLITS,
    SceneSplit,
    downscale_image,
    image_size,
    is_image_file,
    read_image,
    read_mask,
)

LLFF_POSES = "poses_bounds.npy"
AUTO_MAX_SIDE = 640  # auto downscale: the longest image side that is loaded as is
SAME_CENTRE = 1e-6  # camera centres closer than this times the median near bound count as one


def is_llff(root: Path) -> bool:
    """Whether ``root`` holds an LLFF scene (a ``poses_bounds.npy`` file)."""
    return (Path(root) / LLFF_POSES).is_file()


@dataclass
class LLFFData:
    """A loaded LLFF scene.

    Attributes:
        splits: the requested splits (``val`` holds the test views, as NeRF does).
        c2w: ``[N, 4, 4]`` float32 poses of ALL images (OpenCV convention), in file order.
        bounds: ``[N, 2]`` float32 near/far depth of each image (scene units, along the optical axis).
        factor: how many times smaller the loaded images are than the ``hwf`` resolution.
        has_masks: whether alpha came from a mask folder (else it is the images' own: 1 for RGB).
    """

    splits: dict[str, SceneSplit]
    c2w: Tensor
    bounds: Tensor
    factor: int
    has_masks: bool


def llff_to_opencv(poses: np.ndarray) -> Tensor:
    """Convert LLFF poses into this project's OpenCV camera-to-world matrices.

    LLFF's rotation columns are the camera's [down, right, backwards] axes in the world frame; OpenCV's
    are [right, down, forward], so right = column 1, down = column 0, forward = -column 2. Both frames
    are right-handed, so a rigid LLFF rotation stays rigid.

    Args:
        poses: ``[N, 3, 5]`` LLFF rows ``[R | t | hwf]`` (``hwf`` is ignored here).

    Returns:
        ``[N, 4, 4]`` float32 poses: columns right, down, forward and the camera centre ``t``.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (3, 5):
        raise ValueError(f"llff_to_opencv: expected [N, 3, 5] poses, got shape {poses.shape}")
    c2w = np.zeros((poses.shape[0], 4, 4))
    c2w[:, :3, 0] = poses[:, :, 1]  # right
    c2w[:, :3, 1] = poses[:, :, 0]  # down
    c2w[:, :3, 2] = -poses[:, :, 2]  # forward = -backwards
    c2w[:, :3, 3] = poses[:, :, 3]
    c2w[:, 3, 3] = 1.0
    return torch.from_numpy(c2w).float()


def opencv_to_llff(c2w: Tensor, hwf: np.ndarray) -> np.ndarray:
    """The inverse of :func:`llff_to_opencv`, for writing ``poses_bounds.npy``.

    Args:
        c2w: ``[N, 4, 4]`` OpenCV camera-to-world poses.
        hwf: ``[3]`` or ``[N, 3]`` full-resolution height, width and focal length (pixels).

    Returns:
        ``[N, 3, 5]`` float64 LLFF rows ``[down | right | backwards | centre | hwf]``.
    """
    c2w_np = c2w.detach().double().cpu().numpy()
    poses = np.zeros((c2w_np.shape[0], 3, 5))
    poses[:, :, 0] = c2w_np[:, :3, 1]  # down
    poses[:, :, 1] = c2w_np[:, :3, 0]  # right
    poses[:, :, 2] = -c2w_np[:, :3, 2]  # backwards = -forward
    poses[:, :, 3] = c2w_np[:, :3, 3]
    poses[:, :, 4] = np.broadcast_to(np.asarray(hwf, dtype=np.float64), (c2w_np.shape[0], 3))
    return poses


def load_llff(root: Path, splits: tuple[str, ...], downscale: int | None, max_views: int | None,
              holdout_every: int = 8) -> LLFFData:
    """Load an LLFF scene folder.

    Args:
        root: folder holding ``poses_bounds.npy`` and the image folder(s).
        splits: which of ``train``, ``val``, ``test`` to load images for.
        downscale: ``f`` loads ``images_<f>/`` if present, else ``images/`` reduced ``f`` times (area
            average); ``None`` (auto) loads the largest images whose longer side is at most 640 px
            (:func:`choose_image_folder`).
        max_views: cap on the views of each split (``None`` = all); for quick tests only.
        holdout_every: every ``holdout_every``-th image (from image 0) is a test view.

    Raises:
        SceneError: one line naming the file and the problem, for any unusable input.
    """
    root = Path(root)
    poses_path = root / LLFF_POSES
    poses, bounds = read_poses_bounds(poses_path)
    c2w = llff_to_opencv(poses)
    for i, pose in enumerate(c2w):
        try:
            check_c2w(pose, f"{poses_path}: row {i}")
        except PoseError as exc:
            raise SceneError(str(exc)) from None
    folder, extra = choose_image_folder(root, downscale)
    files = _image_files(folder)
    if len(files) != len(poses):
        raise SceneError(f"{folder}: {len(files)} images, but {LLFF_POSES} has {len(poses)} pose rows")
    w, h = _common_size(folder, files)
    if w % extra or h % extra:
        raise SceneError(f"{files[0]}: size {w}x{h} is not divisible by downscale {extra}")
    W, H = w // extra, h // extra
    K = _intrinsics(poses_path, folder, poses[:, :, 4], W, H)
    masks = _mask_files(root, folder, files, (w, h))
    indices = _split_indices(root, len(files), splits, holdout_every, max_views)
    views = {i: _load_view(files[i], masks[i] if masks else None, extra)
             for i in sorted(set().union(*indices.values()))}
    loaded = {}
    for name, idx in indices.items():
        # numpy's stack: torch.stack of many images is slow on a busy CPU (see scenes.blender)
        images = torch.from_numpy(np.stack([views[i].numpy() for i in idx]))
        loaded[name] = SceneSplit(images=images, c2w=c2w[idx], K=K[idx], files=[str(files[i]) for i in idx])
    return LLFFData(splits=loaded, c2w=c2w, bounds=torch.from_numpy(bounds).float(),
                    factor=max(1, round(float(poses[0, 1, 4]) / W)), has_masks=masks is not None)


def read_poses_bounds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check ``poses_bounds.npy``: ``[N, 3, 5]`` poses and ``[N, 2]`` bounds (float64)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":
                raise SceneError(f"{path}: not a .npy file (no NumPy header)")
            fh.seek(0)
            raw = np.load(fh, allow_pickle=False)
    except SceneError:
        raise
    except OSError as exc:
        raise SceneError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, EOFError, ... on junk
        raise SceneError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "fiu":
        raise SceneError(f"{path}: does not hold a numeric array")
    if raw.ndim != 2 or raw.shape[0] == 0 or raw.shape[1] != 17:
        raise SceneError(f"{path}: array of shape {raw.shape}, expected N x 17 (N >= 1)")
    arr = raw.astype(np.float64)
    poses, bounds = arr[:, :15].reshape(-1, 3, 5), arr[:, 15:]
    checks = (  # (bad rows, problem, the values to show)
        (~np.isfinite(arr).all(1), "has non-finite values", arr),
        ((poses[:, :, 4] <= 0).any(1), "has a non-positive height, width or focal (hwf)", poses[:, :, 4]),
        ((bounds <= 0).any(1), "has a non-positive near or far bound", bounds),
        (bounds[:, 0] >= bounds[:, 1], "has near >= far", bounds),
    )
    for bad, problem, values in checks:
        rows = np.flatnonzero(bad)
        if rows.size:
            row = int(rows[0])
            raise SceneError(f"{path}: row {row} {problem} ({' '.join(f'{v:.6g}' for v in values[row])})")
    centres = poses[:, :, 3]
    spread = float(np.abs(centres - centres.mean(0)).max())
    if len(poses) > 1 and spread <= SAME_CENTRE * float(np.median(bounds[:, 0])):
        raise SceneError(f"{path}: all {len(poses)} poses have the same camera centre: a forward-facing "
                         "capture needs photos taken from different positions")
    return poses, bounds


def _factor_folders(root: Path, prefix: str) -> dict[int, Path]:
    """``{1: root/prefix, f: root/prefix_f, ...}`` for the folders present (``f >= 2``)."""
    out = {1: root / prefix} if (root / prefix).is_dir() else {}
    for path in root.glob(f"{prefix}_*"):
        match = re.fullmatch(rf"{prefix}_([1-9][0-9]*)", path.name)
        if match and int(match[1]) > 1 and path.is_dir():
            out[int(match[1])] = path
    return dict(sorted(out.items()))


def _image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` sorted by name (hidden files skipped)."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _common_size(folder: Path, files: list[Path]) -> tuple[int, int]:
    """The one ``(width, height)`` of ``files``; mixed sizes are an error."""
    if not files:
        raise SceneError(f"{folder}: no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    w, h = image_size(files[0])
    for path in files[1:]:
        size = image_size(path)
        if size != (w, h):
            raise SceneError(f"{path}: image is {size[0]}x{size[1]}, but {files[0].name} is {w}x{h} "
                             f"(all images of {folder.name}/ must have one size)")
    return w, h


def choose_image_folder(root: Path, downscale: int | None) -> tuple[Path, int]:
    """The image folder to load and the factor by which to reduce its images further (1 = as is).

    With ``downscale=f``: ``images_<f>/`` (``images/`` for 1) if present, else ``images/`` reduced ``f``
    times. With ``None``: among the folders present, the one with the largest images whose longer
    side is at most :data:`AUTO_MAX_SIDE`; if none is that small, the one with the smallest images,
    reduced by the smallest integer factor that divides both sides and brings the longer side there.
    """
    folders = _factor_folders(root, "images")
    present = ", ".join(f"{p.name}/" for p in folders.values()) or "none"
    if downscale is not None:
        if downscale < 1:
            raise SceneError(f"{root}: downscale must be a positive integer (or auto), got {downscale}")
        if downscale in folders:
            return folders[downscale], 1
        if 1 in folders:
            return folders[1], downscale
        name, also = ("images", "") if downscale == 1 else (f"images_{downscale}", ", nor images/ to reduce")
        raise SceneError(f"{root / name}: image folder not found{also} (image folders here: {present})")
    sizes = {f: image_size(files[0]) for f, folder in folders.items() if (files := _image_files(folder))}
    if not sizes:
        raise SceneError(f"{root}: no images/ or images_<f>/ folder with images "
                         f"(image folders here: {present})")
    small = [f for f, (w, h) in sizes.items() if max(w, h) <= AUTO_MAX_SIDE]
    if small:
        return folders[max(small, key=lambda f: sizes[f][0] * sizes[f][1])], 1
    smallest = min(sizes, key=lambda f: sizes[f][0] * sizes[f][1])
    w, h = sizes[smallest]
    lowest = math.ceil(max(w, h) / AUTO_MAX_SIDE)
    common = math.gcd(w, h)
    for factor in range(lowest, common + 1):
        if common % factor == 0:
            return folders[smallest], factor
    raise SceneError(f"{folders[smallest]}: images are {w}x{h}, longer than {AUTO_MAX_SIDE} px, and no "
                     f"integer factor >= {lowest} divides both sides; choose a downscale factor")


def _intrinsics(poses_path: Path, folder: Path, hwf: np.ndarray, W: int, H: int) -> Tensor:
    """``[N, 3, 3]`` intrinsics at the loaded size ``W x H`` from the full-resolution ``[N, 3]`` hwf."""
    scale = W / hwf[:, 1]
    off = np.abs(hwf[:, 0] * scale - H) > max(1.0, 0.01 * H)
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise SceneError(f"{poses_path}: row {row} hwf is {hwf[row, 1]:g}x{hwf[row, 0]:g} (WxH), but the "
                         f"images of {folder.name}/ are {W}x{H} once loaded: another aspect ratio")
    focal = torch.from_numpy(hwf[:, 2] * scale).float()
    K = torch.zeros(len(hwf), 3, 3)
    K[:, 0, 0], K[:, 1, 1] = focal, focal
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = W / 2, H / 2, 1.0  # LLFF's principal point is the centre
    return K


def _mask_files(root: Path, image_folder: Path, images: list[Path],
                size: tuple[int, int]) -> list[Path] | None:
    """The mask of each image (``None`` without a mask folder), matched by stem and checked in size."""
    folder = root / image_folder.name.replace("images", "masks", 1)
    if not folder.is_dir():
        others = ", ".join(f"{p.name}/" for p in _factor_folders(root, "masks").values())
        if others:
            raise SceneError(f"{folder}: mask folder not found, but {others} exist(s): the masks must "
                             f"match the image folder used ({image_folder.name}/)")
        return None
    by_stem: dict[str, Path] = {}
    for path in _image_files(folder):
        if path.stem in by_stem:
            raise SceneError(f"{path}: a second mask for image stem '{path.stem}' "
                             f"(also {by_stem[path.stem].name})")
        by_stem[path.stem] = path
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        raise SceneError(f"{folder}: no mask for {len(missing)} image(s) of {image_folder.name}/, e.g. "
                         f"{missing[0]} (masks are matched by file stem)")
    masks = [by_stem[p.stem] for p in images]
    for path, image in zip(masks, images):
        if image_size(path) != size:
            w, h = image_size(path)
            raise SceneError(f"{path}: mask is {w}x{h}, but its image {image.name} is {size[0]}x{size[1]}")
    return masks


def _load_view(image: Path, mask: Path | None, factor: int) -> Tensor:
    """``[H, W, 4]`` straight-alpha RGBA of one view, alpha from its mask, reduced ``factor`` times."""
    rgba = read_image(image)
    if mask is not None:
        rgba[..., 3] = torch.from_numpy(read_mask(mask))
    return downscale_image(rgba, factor) if factor > 1 else rgba


def _split_indices(root: Path, n: int, splits: tuple[str, ...], holdout_every: int,
                   max_views: int | None) -> dict[str, list[int]]:
    """Image indices of each requested split (NeRF's LLFF holdout: every ``holdout_every``-th is test)."""
    if holdout_every < 1:
        raise SceneError(f"{root}: holdout_every must be a positive integer, got {holdout_every}")
    held_out = [i for i in range(n) if i % holdout_every == 0]
    train = [i for i in range(n) if i % holdout_every != 0]
    out = {}
    for split in splits:
        if split not in SPLITS:
            raise SceneError(f"{root}: unknown split '{split}' (an LLFF scene has {', '.join(SPLITS)})")
        indices = train if split == "train" else held_out
        indices = indices[:max_views] if max_views else indices
        if not indices:
            raise SceneError(f"{root / LLFF_POSES}: the '{split}' split is empty ({n} images, every "
                             f"{holdout_every}th held out for test)")
        out[split] = indices
    return out
