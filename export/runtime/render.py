"""``python -m export.runtime.render``: render a camera path with the ONNX runtime to PNG frames and a video.

The default path follows the training camera rig (read from the model's metadata, or from the scene's
training cameras with ``orbit.from_scene=true``): an orbit around an object scene, a circle around the
average camera of a forward-facing one, looking at its focus point
(:func:`export.runtime.paths.default_path`);
or the poses of a JSON file (``poses=...``:
nerfstudio camera-path JSON, ``{"c2w": [...]}`` or a list of 4x4 OpenCV poses). Inference runs in
:mod:`export.runtime` (numpy + ONNX Runtime); torch is only used here to build the camera path.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import imageio.v2 as imageio
import numpy as np
from omegaconf import DictConfig

from core.checks import ConfigValueError, at_least, in_range, one_of, positive
from core.errors import UserError, exit_on_user_error
from core.io import atomic_write
from core.rig import camera_rig
from export.runtime import DEFAULT_BATCH, LightField, MissingRuntimeError, ModelError
from export.runtime.paths import default_path, read_camera_path
from pipeline.config import check_command_line, register_stage, to_dataclass
from pipeline.run import RunConfig, ort_providers
from scenes.load import load_scene

log = logging.getLogger(__name__)

VIDEO_FORMATS = ("mp4", "gif", "none")


@dataclass
class OrbitConfig:
    """Default path: ``n_frames`` poses around the rig; elevation (degrees, object rigs) and radius
    (the orbit's, or the forward circle's) adjustable."""

    n_frames: int = 48
    from_scene: bool = False
    elevation_deg: float | None = None
    radius_scale: float = 1.0

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        at_least(self, 1, "n_frames")
        in_range(self, -90.0, 90.0, "elevation_deg")
        positive(self, "radius_scale")


@dataclass
class PathRenderConfig(RunConfig):
    """``conf/render.yaml``: the run section (``device``: the ONNX Runtime providers, ``threads``: its
    intra-op threads), then the camera path's own."""

    model: str | None = None
    poses: str | None = None
    orbit: OrbitConfig = field(default_factory=OrbitConfig)
    out_dir: str | None = None
    video: str = "mp4"
    fps: int = 24
    image_size: list[int] | None = None
    max_pixels: int | None = 40000
    save_frames: bool = True
    batch_size: int = DEFAULT_BATCH

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        one_of(self, "video", VIDEO_FORMATS)
        at_least(self, 1, "fps", "max_pixels", "batch_size")
        size = self.image_size
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ConfigValueError("image_size", "must be [H, W] with H, W >= 1", list(size))


def load_field(cfg: PathRenderConfig) -> LightField:
    """Open the model; runtime errors become one-line :class:`UserError` s."""
    path = Path(cfg.model or Path(cfg.run_dir) / "export" / "student.onnx")
    try:
        return LightField(path, providers=ort_providers(cfg.device), threads=cfg.threads)
    except (ModelError, MissingRuntimeError) as exc:
        raise UserError(str(exc)) from None


def camera_path(cfg: PathRenderConfig, field: LightField) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """``c2w [C, 4, 4]``, ``K [C, 3, 3]`` and ``(H, W)`` of the frames to render."""
    H, W = (int(cfg.image_size[0]), int(cfg.image_size[1])) if cfg.image_size else field.image_size
    if not cfg.image_size and cfg.max_pixels and H * W > cfg.max_pixels:  # same aspect, fewer pixels
        shrink = math.sqrt(cfg.max_pixels / (H * W))
        H, W = max(1, round(H * shrink)), max(1, round(W * shrink))
    K_model = np.asarray(field.meta.K, dtype=np.float32).copy()
    if (H, W) != field.image_size:  # same field of view at another resolution
        K_model[0] *= W / field.image_size[1]
        K_model[1] *= H / field.image_size[0]
    if cfg.poses:
        poses, K, (H, W) = read_camera_path(cfg.poses, (H, W))
        K_arr = K.numpy() if K is not None else np.broadcast_to(K_model, (poses.shape[0], 3, 3))
        return poses.numpy(), K_arr, (H, W)
    if cfg.orbit.from_scene:
        scene = load_scene(cfg.scene, splits=("train",))
        rig = camera_rig(scene.split("train").c2w, scene.ndc)
    else:
        rig = field.meta.rig
    c2w = default_path(rig, cfg.orbit.n_frames, cfg.orbit.elevation_deg, cfg.orbit.radius_scale).numpy()
    return c2w, np.broadcast_to(K_model, (c2w.shape[0], 3, 3)), (H, W)


def _write_png(path: Path, image: np.ndarray) -> None:
    imageio.imwrite(path, image, format="PNG")


def write_video(frames: list[Any], path: Path, fps: int) -> Path:
    """Atomically write ``[H, W, 3]`` uint8 frames as MP4 (imageio-ffmpeg, H.264) or GIF (by suffix)."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")  # ffmpeg picks the container by suffix
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.suffix == ".gif":
            imageio.mimsave(tmp, frames, format="GIF", duration=1000 / fps, loop=0)
        else:  # H.264 in yuv420p needs even sizes (macro_block_size=2 keeps 100 px as is; default is 16)
            imageio.mimsave(tmp, frames, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=2)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run(cfg: PathRenderConfig) -> dict[str, Any]:
    """Render the path.

    Returns:
        ``n_frames``, ``image_size``, ``ms_per_frame``, ``fps``, ``first_frame_ms``, ``video``,
        ``frames_dir``, ``providers``.
    """
    field = load_field(cfg)
    c2w, K, (H, W) = camera_path(cfg, field)
    out_dir = Path(cfg.out_dir or Path(cfg.run_dir) / "render")
    frames_dir = out_dir / "frames"
    frames: list[Any] = []
    seconds: list[float] = []
    for i in range(c2w.shape[0]):
        start = time.perf_counter()
        try:
            img = field.render(c2w[i], K[i], (H, W), cfg.batch_size)
        except ModelError as exc:
            raise UserError(f"{cfg.poses or 'orbit'}: frame {i}: {exc}") from None
        seconds.append(time.perf_counter() - start)
        frame = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        frames.append(frame)
        if cfg.save_frames:
            atomic_write(frames_dir / f"{i:05d}.png", functools.partial(_write_png, image=frame))
    video = None
    if cfg.video != "none":
        video = write_video(frames, out_dir / f"render.{cfg.video}", cfg.fps)
    # the first frame includes ONNX Runtime's warm-up; report the steady state when there is one
    steady = seconds[1:] or seconds
    ms = 1e3 * float(np.mean(steady))
    return {"n_frames": len(frames), "image_size": [H, W], "ms_per_frame": ms, "fps": 1e3 / ms,
            "first_frame_ms": 1e3 * seconds[0], "video": str(video) if video else None,
            "frames_dir": str(frames_dir) if cfg.save_frames else None, "providers": field.providers}


register_stage("render", PathRenderConfig)


@hydra.main(config_path="../../conf", config_name="render", version_base="1.3")
@exit_on_user_error
def main(dcfg: DictConfig) -> None:
    """Hydra entry point: ``python -m export.runtime.render [overrides]``."""
    res = run(to_dataclass(dcfg, PathRenderConfig))
    print(f"rendered {res['n_frames']} frames of {res['image_size'][0]}x{res['image_size'][1]} on "
          f"{res['providers'][0]}: {res['ms_per_frame']:.2f} ms per frame, {res['fps']:.1f} FPS "
          f"(first frame {res['first_frame_ms']:.1f} ms)")
    print(f"video: {res['video']}  frames: {res['frames_dir']}")


if __name__ == "__main__":
    check_command_line("render")
    main()
