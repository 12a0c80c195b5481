"""Camera poses for a folder of photos: run COLMAP, or import a COLMAP model, into a scene folder.

::

    python -m scenes.colmap PHOTOS_DIR OUT_DIR [--masks DIR]        # structure from motion (pycolmap, CPU)
    python -m scenes.colmap PHOTOS_DIR OUT_DIR --model SPARSE_DIR    # an existing model (no pycolmap needed)

Writes ``OUT_DIR/transforms.json`` (nerfstudio layout, which :func:`scenes.load.load_scene` reads):
per frame ``file_path`` (``images/<photo>``), ``transform_matrix`` (camera-to-world, OpenGL
convention: COLMAP's world-to-camera inverted, then flipped by :func:`core.cameras.opengl_to_opencv`,
which is its own inverse), ``colmap_im_id``, ``bounds`` (``[near, far]``: the 0.1 and 99.9
percentiles of the depths of the 3D points the photo sees, as LLFF's) and with masks ``mask_path``
(``masks/<stem>.png``, one 8-bit channel, 0 = background); intrinsics ``fl_x fl_y cx cy w h`` once
when all photos share one camera, else per frame. No split lists: the loader holds out every 8th
frame. ``OUT_DIR/images/`` holds the photos (copied, or undistorted) and, after structure from
motion, ``OUT_DIR/sparse/`` the largest reconstruction (COLMAP binary; ``--model`` reads it back).

Lens distortion: a camera whose distortion moves no pixel of the image's border by more than
``NEGLIGIBLE_DISTORTION_PX`` is written as a pinhole with its photos copied unchanged. Any other camera
is undistorted with pycolmap (images and masks resampled to a pinhole camera); without pycolmap such
a model is refused in one line: the loader does not undistort, and writing the coefficients for it to
ignore would give wrong rays.

Photos whose images COLMAP did not register are left out. Bad input prints ``error: <file>: <problem>``
and exits with code 1.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import SceneError, UserError, exit_on_user_error
from core.io import atomic_write, write_json
from scenes.colmap_model import ColmapModel, distortion_pixels, pinhole, read_model
from scenes.colmap_sfm import CAMERA_MODES, MATCHERS, SFM_CAMERA_MODELS, SfmOptions, import_pycolmap, run_sfm
from scenes.images import IMAGE_EXTENSIONS, image_size, is_image_file, read_mask

log = logging.getLogger(__name__)

MIN_REGISTERED = 3
MIN_REGISTERED_FRACTION = 0.5
NEGLIGIBLE_DISTORTION_PX = 0.5  # at the image border; below it resampling would blur more than it fixes
BOUNDS_PERCENTILES = (0.1, 99.9)
MIN_BOUNDS_POINTS = 3


@dataclass
class _Lens:
    """The pinhole camera a COLMAP camera becomes in the scene, and the pycolmap camera to undistort from."""

    fx: float
    fy: float
    cx: float
    cy: float
    w: int
    h: int
    undistort_from: Any = None  # pycolmap.Camera, or None: photos are used as they are


def list_photos(photos_dir: Path) -> list[str]:
    """Names of the photos directly in ``photos_dir``, sorted (the capture order of most cameras)."""
    if not photos_dir.is_dir():
        raise SceneError(f"{photos_dir}: photos folder not found")
    names = sorted((p.name for p in photos_dir.iterdir() if is_image_file(p)), key=natural_key)
    if not names:
        raise SceneError(f"{photos_dir}: no photos ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return names


def natural_key(name: str) -> list[str | int]:
    """Sort key under which ``img2`` comes before ``img10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def find_masks(masks_dir: Path, names: list[str], sizes: dict[str, tuple[int, int]]) -> dict[str, Path]:
    """The mask of each photo: same relative path and stem, any image extension, same size as the photo."""
    if not masks_dir.is_dir():
        raise SceneError(f"{masks_dir}: masks folder not found")
    masks = {}
    by_stem: dict[Path, dict[str, list[Path]]] = {}  # folder -> stem -> mask files
    for name in names:
        stem = masks_dir / Path(name).with_suffix("")
        if stem.parent not in by_stem:
            files = [p for p in stem.parent.iterdir() if is_image_file(p)] if stem.parent.is_dir() else []
            by_stem[stem.parent] = {}
            for p in files:
                by_stem[stem.parent].setdefault(p.stem, []).append(p)
        found = by_stem[stem.parent].get(stem.name, [])
        if len(found) != 1:
            problem = "no mask" if not found else f"{len(found)} masks ({', '.join(p.name for p in found)})"
            raise SceneError(f"{stem}.*: {problem} for photo {name} (masks are named like the photos)")
        if image_size(found[0]) != sizes[name]:
            w, h = image_size(found[0])
            pw, ph = sizes[name]
            raise SceneError(f"{found[0]}: mask is {w}x{h}, its photo {name} is {pw}x{ph}")
        masks[name] = found[0]
    return masks


def _mask_pixels(path: Path) -> np.ndarray:
    """``[H, W]`` uint8 mask, 0 = background: :func:`scenes.images.read_mask`'s alpha x 255, rounded."""
    return np.rint(read_mask(path) * 255.0).astype(np.uint8)


def reconstruct(photos_dir: Path, out_dir: Path, masks_dir: Path | None = None,
                opts: SfmOptions | None = None, min_fraction: float = MIN_REGISTERED_FRACTION) -> Path:
    """Structure from motion on every photo of ``photos_dir``, then :func:`write_scene` into ``out_dir``.

    Raises:
        SceneError: bad photos or masks, or fewer than ``MIN_REGISTERED`` images and ``min_fraction``
            of the photos registered.
    """
    opts = opts or SfmOptions()
    if not 0.0 <= min_fraction <= 1.0:
        raise UserError(f"--min-registered-fraction must be in [0, 1], got {min_fraction}")
    names = list_photos(photos_dir)
    sizes = {name: image_size(photos_dir / name) for name in names}
    masks = find_masks(masks_dir, names, sizes) if masks_dir is not None else None
    log.info("colmap: %d photos in %s (%s)%s", len(names), photos_dir, ", ".join(sorted(
        {f"{w}x{h}" for w, h in sizes.values()})), f", masks in {masks_dir}" if masks else "")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.colmap-", dir=out_dir.parent) as tmp:
        work = Path(tmp)
        mask_dir = None
        if masks:  # COLMAP reads the mask of <name> from <mask_dir>/<name>.png
            mask_dir = work / "masks"
            mask_dir.mkdir()
            for name, path in masks.items():
                Image.fromarray(_mask_pixels(path), "L").save(mask_dir / f"{name}.png")
        result = run_sfm(photos_dir, names, work, mask_dir, set(sizes.values()), opts)
        need = max(MIN_REGISTERED, math.ceil(min_fraction * len(names)))
        if result.n_registered < need:
            raise SceneError(f"{photos_dir}: COLMAP registered {result.n_registered} of {len(names)} images "
                             f"(need {need}: at least {MIN_REGISTERED} and {min_fraction:.0%} of the photos, "
                             f"see --min-registered-fraction)")
        _replace_dir(result.model_dir, out_dir / "sparse")
    model = read_model(out_dir / "sparse")
    provenance = {"source": "sfm", "photos": len(names), "registered": result.n_registered,
                  "reconstructions": result.n_reconstructions,
                  "seconds": {k: round(v, 2) for k, v in result.seconds.items()}}
    return write_scene(model, photos_dir, out_dir, masks, provenance)


def import_model(model_dir: Path, photos_dir: Path, out_dir: Path, masks_dir: Path | None = None) -> Path:
    """Convert an existing COLMAP sparse model (``.bin`` or ``.txt``) with :func:`write_scene`."""
    model = read_model(model_dir)
    if len(model.images) < MIN_REGISTERED:
        raise SceneError(f"{model.files['images']}: the model has {len(model.images)} images; "
                         f"need at least {MIN_REGISTERED}")
    if not photos_dir.is_dir():
        raise SceneError(f"{photos_dir}: photos folder not found")
    names = sorted((image.name for image in model.images.values()), key=natural_key)
    sizes = {name: image_size(photos_dir / name) for name in names}
    masks = find_masks(masks_dir, names, sizes) if masks_dir is not None else None
    log.info("colmap: importing %s: %d cameras, %d images, %d points", model_dir, len(model.cameras),
             len(model.images), len(model.points))
    provenance = {"source": "model", "registered": len(model.images)}
    return write_scene(model, photos_dir, out_dir, masks, provenance)


def write_scene(model: ColmapModel, photos_dir: Path, out_dir: Path, masks: dict[str, Path] | None,
                provenance: dict[str, Any]) -> Path:
    """Write ``out_dir/transforms.json``, ``images/`` and ``masks/`` for every image of ``model``."""
    start = time.perf_counter()
    images = sorted(model.images.values(), key=lambda image: natural_key(image.name))
    lenses = {cid: _lens(model, cid) for cid in sorted({image.camera_id for image in images})}
    for image in images:
        camera = model.cameras[image.camera_id]
        w, h = image_size(photos_dir / image.name)
        if (w, h) != (camera.width, camera.height):
            raise SceneError(f"{photos_dir / image.name}: photo is {w}x{h}, but its COLMAP camera "
                             f"{camera.camera_id} ({model.files['cameras'].name}) is "
                             f"{camera.width}x{camera.height}")
    plan = [_plan_frame(image.name, photos_dir, out_dir, masks, lenses[image.camera_id]) for image in images]
    bounds = _depth_bounds(model, images)
    frames = []
    for image, (photo, photo_out, mask, mask_out) in zip(images, plan):
        lens = lenses[image.camera_id]
        if photo_out is not None:
            _write_photo(photo, photo_out, lens)
        frame: dict[str, Any] = {"file_path": f"images/{image.name}",
                                 "transform_matrix": _opengl_c2w(image.world_to_camera()).tolist(),
                                 "colmap_im_id": image.image_id}
        if mask is not None:
            if mask_out is not None:
                _save(mask_out, _undistort(_mask_pixels(mask), lens))
            frame["mask_path"] = f"masks/{Path(image.name).with_suffix('.png').as_posix()}"
        if bounds is not None:
            frame["bounds"] = bounds[image.image_id]
        if len(lenses) > 1:
            frame.update(_intrinsics(lens))
        frames.append(frame)
    if len({(lens.w, lens.h) for lens in lenses.values()}) > 1:
        log.warning("the photos' cameras have different sizes: the loader needs one size per split "
                    "(with distortion, --camera-mode single gives one)")
    meta: dict[str, Any] = {"camera_model": "PINHOLE"}
    if len(lenses) == 1:
        meta.update(_intrinsics(next(iter(lenses.values()))))
    provenance["cameras"] = [{"id": cid, "model": model.cameras[cid].model,
                              "distortion_px": round(distortion_pixels(model.cameras[cid]), 3),
                              "undistorted": lenses[cid].undistort_from is not None} for cid in lenses]
    path = write_json(out_dir / "transforms.json", {**meta, "frames": frames, "colmap": provenance})
    log.info("wrote %s: %d frames, %d camera(s)%s%s [%.1f s]", path, len(frames), len(lenses),
             ", masks" if masks else "", ", depth bounds" if bounds else "", time.perf_counter() - start)
    return path


def _lens(model: ColmapModel, camera_id: int) -> _Lens:
    camera = model.cameras[camera_id]
    shift = distortion_pixels(camera)
    if shift <= NEGLIGIBLE_DISTORTION_PX:
        log.info("camera %d: %s %dx%d, distortion at most %.2f px: used as a pinhole", camera_id,
                 camera.model, camera.width, camera.height, shift)
        return _Lens(*pinhole(camera), camera.width, camera.height)
    what = f"distortion up to {shift:.2f} px" if math.isfinite(shift) else "a fisheye or other lens"
    pycolmap = import_pycolmap(f"{model.files['cameras']}: camera {camera_id} ({camera.model}, {what}): "
                               f"undistorting its photos")
    distorted = pycolmap.Camera(model=camera.model, width=camera.width, height=camera.height,
                                params=camera.params.tolist())
    undistorted = pycolmap.undistort_camera(pycolmap.UndistortCameraOptions(), distorted)
    fx, fy, cx, cy = (float(v) for v in undistorted.params)  # pycolmap undistorts to PINHOLE
    log.info("camera %d: %s %dx%d, %s: undistorted to a %dx%d pinhole", camera_id, camera.model, camera.width,
             camera.height, what, undistorted.width, undistorted.height)
    return _Lens(fx, fy, cx, cy, int(undistorted.width), int(undistorted.height), distorted)


def _plan_frame(name: str, photos_dir: Path, out_dir: Path, masks: dict[str, Path] | None,
                lens: _Lens) -> tuple[Path, Path | None, Path | None, Path | None]:
    """``(photo, where to write it, mask, where to write it)``; a ``None`` target: already there."""
    photo = photos_dir / name
    photo_out = _target(photo, out_dir / "images" / name, lambda: lens.undistort_from is None)
    mask = masks[name] if masks else None
    mask_out = None
    if mask is not None:
        mask_out = _target(mask, out_dir / "masks" / Path(name).with_suffix(".png"), lambda: (
            lens.undistort_from is None and mask.suffix == ".png" and _mode(mask) == "L"))
    return photo, photo_out, mask, mask_out


def _target(source: Path, target: Path, unchanged: Callable[[], bool]) -> Path | None:
    """``target``, or ``None`` when it is ``source`` itself and would be written ``unchanged``.

    Input files are never overwritten: when ``OUT_DIR/images`` is the photos folder, a photo that must be
    undistorted (or a mask converted) is refused.
    """
    if target.resolve() != source.resolve():
        return target
    if unchanged():
        return None
    raise UserError(f"{source}: the scene would overwrite this input file (undistorted or converted); "
                    f"choose another OUT_DIR")


def _mode(path: Path) -> str:
    with Image.open(path) as img:
        return str(img.mode)


def _depth_bounds(model: ColmapModel, images: list) -> dict[int, list[float]] | None:
    """Per image ``[near, far]`` depths of the points it sees; ``None`` unless every image sees enough."""
    seen = model.points_by_image()
    out = {}
    for image in images:
        w2c = image.world_to_camera()
        depth = (seen.get(image.image_id, np.zeros((0, 3))) @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]
        depth = depth[depth > 0]
        if len(depth) < MIN_BOUNDS_POINTS:
            log.info("no depth bounds: image %s sees %d 3D points in front of it", image.name, len(depth))
            return None
        near, far = np.percentile(depth, BOUNDS_PERCENTILES)
        if not far > near:
            return None
        out[image.image_id] = [float(near), float(far)]
    return out


def _opengl_c2w(w2c: np.ndarray) -> np.ndarray:
    """``[4, 4]`` OpenGL camera-to-world pose of a COLMAP (OpenCV) world-to-camera transform."""
    import torch  # here, not at the top: bad input is reported without the second it takes to load

    from core.cameras import opengl_to_opencv

    c2w = torch.from_numpy(np.linalg.inv(w2c))
    return opengl_to_opencv(c2w).numpy()  # the axis flip is its own inverse: OpenCV -> OpenGL


def _intrinsics(lens: _Lens) -> dict[str, float | int]:
    return {"fl_x": lens.fx, "fl_y": lens.fy, "cx": lens.cx, "cy": lens.cy, "w": lens.w, "h": lens.h}


def _undistort(pixels: np.ndarray, lens: _Lens) -> np.ndarray:
    """``pixels`` ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` uint8 resampled to the lens's pinhole camera."""
    if lens.undistort_from is None:
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return np.dstack([_undistort(pixels[..., :3], lens), _undistort(pixels[..., 3], lens)])
    pycolmap = import_pycolmap("undistorting")
    bitmap = pycolmap.Bitmap.from_array(np.ascontiguousarray(pixels))
    out, _ = pycolmap.undistort_image(pycolmap.UndistortCameraOptions(), bitmap, lens.undistort_from)
    return np.asarray(out.to_array()).reshape((lens.h, lens.w, *pixels.shape[2:]))


def _write_photo(photo: Path, target: Path, lens: _Lens) -> None:
    if lens.undistort_from is None:
        atomic_write(target, lambda tmp: shutil.copyfile(photo, tmp))
        return
    try:
        with Image.open(photo) as img:
            kept = img.mode in ("L", "RGB", "RGBA")
            mode = img.mode if kept else "RGBA" if "A" in img.getbands() else "RGB"
            pixels = np.asarray(img.convert(mode))
    except Exception as exc:  # noqa: BLE001 - Pillow's many exception types on junk
        raise SceneError(f"{photo}: cannot read image ({exc})") from None
    _save(target, _undistort(pixels, lens))


def _save(path: Path, pixels: np.ndarray) -> None:
    """Atomically save ``pixels`` in the format of ``path``'s extension (JPEG at quality 95)."""
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    extra = {"quality": 95} if fmt == "JPEG" else {}
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format=fmt, **extra))


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the folder ``src`` to ``dst``, replacing what was there (a crash leaves one or the other)."""
    staged = dst.with_name(f".{dst.name}.new")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(src, staged)
    old = dst.with_name(f".{dst.name}.old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(staged, dst)
    shutil.rmtree(old, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scenes.colmap", description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, metavar="PHOTOS_DIR", help="folder of the photos")
    parser.add_argument("out", type=Path, metavar="OUT_DIR", help="scene folder to write (transforms.json)")
    parser.add_argument("--masks", type=Path, metavar="DIR",
                        help="masks named like the photos (same stem, any image extension), 0 = background; "
                             "8- or 16-bit gray, RGB, or RGBA (its alpha unless opaque)")
    parser.add_argument("--model", type=Path, metavar="SPARSE_DIR",
                        help="import this COLMAP sparse model instead of running COLMAP")
    parser.add_argument("--min-registered-fraction", type=float, default=MIN_REGISTERED_FRACTION,
                        help="fail unless COLMAP registers this fraction of the photos (and at least 3)")
    parser.add_argument("--camera-model", choices=SFM_CAMERA_MODELS, default=SfmOptions.camera_model)
    parser.add_argument("--camera-mode", choices=CAMERA_MODES, default=SfmOptions.camera_mode,
                        help="auto: one shared camera when all photos have the same size")
    parser.add_argument("--matcher", choices=MATCHERS, default=SfmOptions.matcher,
                        help="auto: exhaustive up to 150 photos, else sequential (photos in capture order)")
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"{args.out}: OUT_DIR exists and is not a folder")
    try:
        if args.model is not None:
            return import_model(args.model, args.photos, args.out, args.masks)
        opts = SfmOptions(camera_model=args.camera_model, camera_mode=args.camera_mode, matcher=args.matcher,
                          verbose=args.verbose)
        return reconstruct(args.photos, args.out, args.masks, opts, args.min_registered_fraction)
    except OSError as exc:  # a full disk, a folder we may not write: one line, not a traceback
        raise UserError(f"{exc.filename or args.out}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    main()
