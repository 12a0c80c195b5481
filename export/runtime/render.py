"""``python -m export.runtime.render``: render a camera path with the ONNX runtime to PNG frames and a video.

The default path follows the training camera rig stored in the model's metadata (:attr:`ModelMeta.rig`,
computed once at training time by ``core.rig.camera_rig``; the scene's cameras are not read, so the
old ``orbit.from_scene`` is gone): an orbit around an object scene, a circle around the average camera
of a forward-facing one, looking at its focus point (:func:`export.runtime.paths.default_path`); or the
poses of a JSON file (``poses=...``: nerfstudio camera-path JSON, ``{"c2w": [...]}`` or a list of 4x4
OpenCV poses). Everything that describes the model (image size, intrinsics, rig) comes from its metadata.

Needs numpy, ONNX Runtime, imageio (frames, video) and OmegaConf (the command line), never torch nor our
training code. So the command line is not a Hydra app of ``pipeline.config``: Hydra-style ``key=value``
overrides are merged with OmegaConf onto :class:`PathRenderConfig` (no ``conf/render.yaml``). The run
section's keys (``scene.*``, ``run_dir``, ``seed``, ``device``, ``threads``) and ``profile=`` are accepted
as in every stage, so one command line serves the whole pipeline (``scripts/demo.sh``). A bad override
prints one line, ``error: <key>=<value>: <problem>``, and exits 1.
"""

# no `from __future__ import annotations`: OmegaConf reads the dataclasses' annotations as types, which
# string annotations of a module run by runpy (``python -m``, ``runpy.run_module``) would not resolve
import functools
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .lightfield import LightField
from .meta import DEFAULT_BATCH, MissingRuntimeError, ModelError
from .paths import default_path, read_camera_path

log = logging.getLogger(__name__)

VIDEO_FORMATS = ("mp4", "gif", "none")
PROFILES = ("cpu", "gpu", "paper")  # pipeline.config.PROFILES: accepted, nothing here depends on them
DEFAULT_SCENE = "mic_100"  # the embedded demo scene: run_dir defaults to runs/<scene folder name>


class ConfigError(ValueError):
    """A command-line value the render command cannot use: ``<key>=<value>: <problem>``, one line."""


@dataclass
class OrbitConfig:
    """The default path: ``n_frames`` poses around the rig; elevation (degrees, object rigs only) and
    radius (the orbit's, or the forward circle's) adjustable."""

    n_frames: int = 48
    elevation_deg: float | None = None
    radius_scale: float = 1.0


@dataclass
class PathRenderConfig:
    """The render command's keys.

    Attributes:
        scene: the scene's keys, shared with the training stages: only ``scene.name`` or else the folder
            name of ``scene.path`` is read here (the default ``run_dir``); the others are accepted and
            ignored, so one command line serves every stage.
        run_dir: the run folder (``None``: ``runs/<scene name>``, ``runs/mic_100`` for the demo scene).
        profile: ``cpu``, ``gpu`` or ``paper``, as every stage accepts; nothing here depends on it.
        seed: the run section's seed (accepted; nothing here is random).
        device: ``auto`` (CUDA when this ONNX Runtime build has it, else the CPU), ``cpu``, ``cuda`` or
            ``cuda:N``: ONNX Runtime's execution providers.
        threads: ONNX Runtime's intra-op threads (``None``: its default).
        model: the ``.onnx`` file (``None``: ``<run_dir>/export/student.onnx``).
        poses: a camera-path JSON file (``None``: the default path of the rig, ``orbit.*``).
        orbit: the default path (:class:`OrbitConfig`).
        out_dir: where frames and video go (``None``: ``<run_dir>/render``).
        video: ``mp4``, ``gif`` or ``none``.
        fps: frames per second of the video.
        image_size: ``[H, W]`` (``None``: the model's training size, shrunk to ``max_pixels``, same aspect;
            an image model's: the size its file draws, the only one it can).
        max_pixels: the most pixels of a frame at a ray model's own size (``None``: no limit).
        save_frames: write each frame as ``frames/<i>.png`` too.
        batch_size: rays per ONNX Runtime call (a ray model's; an image model makes one call a frame).
    """

    scene: dict[str, Any] = field(default_factory=lambda: {"path": None, "name": None})
    run_dir: str | None = None
    profile: str = "cpu"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
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
        """Raise :class:`ConfigError` naming the first bad value's dotted key."""
        values = {"fps": self.fps, "max_pixels": self.max_pixels, "batch_size": self.batch_size,
                  "threads": self.threads, "orbit.n_frames": self.orbit.n_frames}
        for key, value in values.items():
            _require(value is None or value >= 1, key, value, "must be >= 1")
        for key, choice, choices in (("video", self.video, VIDEO_FORMATS),
                                     ("profile", self.profile, PROFILES)):
            _require(choice in choices, key, choice, f"must be one of {list(choices)}")
        _require(self.device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
                 "device", self.device, "must be auto, cpu, cuda or cuda:N")
        size = self.image_size
        _require(size is None or (len(size) == 2 and min(size) >= 1), "image_size", size,
                 "must be [H, W] with H, W >= 1")
        el = self.orbit.elevation_deg
        _require(el is None or -90.0 <= el <= 90.0, "orbit.elevation_deg", el, "must be in [-90.0, 90.0]")
        scale = self.orbit.radius_scale
        _require(math.isfinite(scale) and scale > 0, "orbit.radius_scale", scale,
                 "must be a finite number > 0")

    def run_path(self) -> Path:
        """``run_dir``, or ``runs/<scene.name, or the folder name of scene.path, or mic_100>``."""
        if self.run_dir:
            return Path(self.run_dir)
        name, path = self.scene.get("name"), self.scene.get("path")
        if not name:
            name = Path(str(path)).expanduser().resolve().name if path else DEFAULT_SCENE
        return Path("runs") / str(name)


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {rule}")


def config_from_overrides(args: Sequence[str]) -> PathRenderConfig:
    """:class:`PathRenderConfig` with Hydra-style ``key=value`` overrides applied (values read as YAML:
    ``image_size=[200,200]``, ``orbit.elevation_deg=null``), then checked.

    Raises:
        ConfigError: an argument that is not ``key=value``, an unknown key, a value of the wrong type or
            out of range; the message names it.
    """
    cfg = OmegaConf.structured(PathRenderConfig)
    for arg in args:
        key, eq, _ = arg.partition("=")
        key = key.removeprefix("+")
        if not eq or not key or key.startswith("~"):
            raise ConfigError(f"{arg}: expected key=value (keys: python -m export.runtime.render --help)")
        if key.startswith("hydra."):  # the training stages' Hydra settings: this command runs no Hydra app
            log.info("%s ignored: export.runtime.render is not a Hydra app", arg)
            continue
        try:
            cfg.merge_with(OmegaConf.from_dotlist([arg.removeprefix("+")]))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{arg}: {str(exc).strip().splitlines()[0]}") from None
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:  # an interpolation that does not resolve
        raise ConfigError(f"invalid config: {str(exc).strip().splitlines()[0]}") from None
    assert isinstance(obj, PathRenderConfig)
    obj.validate()
    return obj


def providers_for(device: str) -> list[str] | None:
    """ONNX Runtime execution providers for a ``device`` value (``None`` for ``auto``: the runtime picks
    CUDA when its build has it, else the CPU)."""
    if device == "auto":
        return None
    return ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]


def load_field(cfg: PathRenderConfig) -> LightField:
    """The model (``model``, else ``<run_dir>/export/student.onnx``) in an ONNX Runtime session."""
    path = Path(cfg.model) if cfg.model else cfg.run_path() / "export" / "student.onnx"
    return LightField(path, providers=providers_for(cfg.device), threads=cfg.threads)


def camera_path(cfg: PathRenderConfig, field: LightField) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """``c2w [C, 4, 4]``, ``K [C, 3, 3]`` and ``(H, W)`` of the frames to render (an image model's default:
    the one size its file draws, whatever ``max_pixels``)."""
    H, W = (int(cfg.image_size[0]), int(cfg.image_size[1])) if cfg.image_size else field.view_size
    shrinks = field.meta.decoder == "ray" and not cfg.image_size
    if shrinks and cfg.max_pixels and H * W > cfg.max_pixels:  # same aspect, fewer pixels
        shrink = math.sqrt(cfg.max_pixels / (H * W))
        H, W = max(1, round(H * shrink)), max(1, round(W * shrink))
    K_model = field.default_K((H, W))  # same field of view at this resolution
    if cfg.poses:
        c2w, K, (H, W) = read_camera_path(cfg.poses, (H, W))
        return c2w, K if K is not None else np.broadcast_to(K_model, (c2w.shape[0], 3, 3)), (H, W)
    c2w = default_path(field.meta.rig, cfg.orbit.n_frames, cfg.orbit.elevation_deg, cfg.orbit.radius_scale)
    return c2w, np.broadcast_to(K_model, (c2w.shape[0], 3, 3)), (H, W)


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a hidden name beside ``path`` (same suffix: imageio and ffmpeg pick the format by
    it), then rename it into place: a killed render leaves the old file or none, never half of one."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_png(path: Path, image: np.ndarray) -> None:
    imageio.imwrite(path, image, format="PNG")


def write_video(frames: list[Any], path: Path, fps: int) -> Path:
    """Atomically write ``[H, W, 3]`` uint8 frames as MP4 (imageio-ffmpeg, H.264) or GIF (by suffix)."""
    if path.suffix == ".gif":
        return write_atomic(path, lambda tmp: imageio.mimsave(tmp, frames, format="GIF", duration=1000 / fps,
                                                              loop=0))
    # H.264 in yuv420p needs even sizes (macro_block_size=2 keeps 100 px as is; the default is 16)
    return write_atomic(path, lambda tmp: imageio.mimsave(tmp, frames, format="FFMPEG", fps=fps,
                                                          codec="libx264", macro_block_size=2))


def run(cfg: PathRenderConfig) -> dict[str, Any]:
    """Render the path.

    Returns:
        ``n_frames``, ``image_size``, ``ms_per_frame``, ``fps``, ``first_frame_ms``, ``video``,
        ``frames_dir``, ``providers``.

    Raises:
        ModelError: an unusable model, camera path or frame (one line naming the file).
        MissingRuntimeError: ONNX Runtime is not installed.
    """
    field = load_field(cfg)
    c2w, K, (H, W) = camera_path(cfg, field)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else cfg.run_path() / "render"
    frames_dir = out_dir / "frames"
    frames: list[np.ndarray] = []
    seconds: list[float] = []
    for i in range(c2w.shape[0]):
        start = time.perf_counter()
        try:
            img = field.render(c2w[i], K[i], (H, W), cfg.batch_size)
        except ModelError as exc:
            raise ModelError(f"{cfg.poses or 'orbit'}: frame {i}: {exc}") from None
        seconds.append(time.perf_counter() - start)
        frame = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        frames.append(frame)
        if cfg.save_frames:
            write_atomic(frames_dir / f"{i:05d}.png", functools.partial(_write_png, image=frame))
    video = write_video(frames, out_dir / f"render.{cfg.video}", cfg.fps) if cfg.video != "none" else None
    # the first frame includes ONNX Runtime's warm-up; report the steady state when there is one
    ms = 1e3 * float(np.mean(seconds[1:] or seconds))
    return {"n_frames": len(frames), "image_size": [H, W], "ms_per_frame": ms, "fps": 1e3 / ms,
            "first_frame_ms": 1e3 * seconds[0], "video": str(video) if video else None,
            "frames_dir": str(frames_dir) if cfg.save_frames else None, "providers": field.providers}


def usage() -> str:
    """``--help``: the command line and every key with its default."""
    keys = OmegaConf.to_yaml(OmegaConf.structured(PathRenderConfig))
    return ("usage: python -m export.runtime.render [key=value ...]   (e.g. orbit.n_frames=96 video=gif)\n"
            f"keys and defaults (run_dir null: runs/<scene name>; see export/runtime/render.py):\n{keys}")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m export.runtime.render [key=value ...]``: a bad value or input prints one line,
    ``error: ...``, and exits 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in args):
        print(usage())
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        res = run(config_from_overrides(args))
    except (ConfigError, ModelError, MissingRuntimeError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(1)
    print(f"rendered {res['n_frames']} frames of {res['image_size'][0]}x{res['image_size'][1]} on "
          f"{res['providers'][0]}: {res['ms_per_frame']:.2f} ms per frame, {res['fps']:.1f} FPS "
          f"(first frame {res['first_frame_ms']:.1f} ms)")
    print(f"video: {res['video']}  frames: {res['frames_dir']}")


if __name__ == "__main__":
    main()
