"""The data generation stage's config (``conf/data_gen.yaml``): :class:`DataGenConfig` and its checks.

Importing this module registers the stage's schema (``data_gen_schema``); ``data_gen.render`` imports it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from core.checks import ConfigValueError, at_least
from core.errors import UserError
from core.shards import RGB_FORMATS
from data_gen.poses import SamplerConfig, validate_sampler
from pipeline.config import register_stage
from pipeline.run import RunConfig
from teacher.field import validate_backend


@dataclass
class DataGenForwardConfig:
    """What the pseudo-data of a forward-facing scene does differently (:func:`for_scene`; an object scene
    ignores this group): fewer views, at the photos' size, fewer a shard.

    The image student (the CPU profile's student of a forward-facing scene) learns the ray spacing of its
    pseudo-views: on a real LLFF capture (``benchmarks/RESULTS.md``, section ``image_forward``; 504x378
    photos) it ends 3.10 dB below its teacher on the object profile's 1000 views of 115x87, 1.41 dB on
    100 views of 504x378 and 1.23 dB on 200 (443 s of rendering); the ``hash`` student takes either
    (24.51 and 24.44 dB). 100 of those views are 19M rays: the cap below lets them keep their size.

    Attributes:
        n_views: number of pseudo-views, in place of ``n_views``.
        max_rays: the job's ray cap, in place of ``max_rays`` (``None``: no cap). Photos larger than
            ``max_rays / n_views`` pixels still give smaller views (``student.train`` then warns).
        views_per_shard: views per tar file, in place of ``views_per_shard`` (25 views of 504x378: 50 s
            of rendering here, the most a killed job loses).
    """

    n_views: int = 100
    max_rays: int | None = 20_000_000
    views_per_shard: int = 25

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad count."""
        at_least(self, 1, "n_views", "views_per_shard")
        if self.max_rays is not None and self.max_rays < self.n_views:
            raise ConfigValueError("max_rays", f"must be at least n_views ({self.n_views})", self.max_rays)


@dataclass
class DataGenConfig(RunConfig):
    """Settings of the data generation stage (``conf/data_gen.yaml``): the run section (its scene's
    training cameras drive the sampler; ``seed``: view ``i`` of seed ``s`` is always the same camera),
    then the stage's own.

    Attributes:
        teacher_ckpt: teacher checkpoint; ``None`` = ``<run_dir>/teacher/teacher.ckpt``.
        out_dir: output folder; ``None`` = ``<run_dir>/pseudo``.
        n_views: number of pseudo-views.
        views_per_shard: views per tar file.
        sampler: ``auto`` (``forward`` for a forward-facing scene, else ``hemisphere``),
            ``hemisphere``, ``jitter`` or ``forward`` (:mod:`data_gen.poses`).
        sampler_params: sampler settings (zoom range, jitter size, radius).
        image_scale: output size relative to the scene's images.
        image_size: ``[H, W]`` output size; overrides ``image_scale`` and ``max_rays`` when set.
        max_rays: cap on the rays of the whole job (``n_views x H x W``): views of a scene whose images
            are larger are rendered smaller (same field of view, same number of views); ``None``: no cap.
        rgb_format: ``png`` (8-bit) or ``npy16`` (float16 arrays).
        depth: also store ``depth.npy``.
        alpha: also store ``alpha.npy`` (the teacher's opacity).
        batch_rays: rays per teacher call (whole views are batched; at least one view per call).
        occupancy_resolution: cells per axis of the grid over the content box that covers the teacher's
            occupied cells, written to ``meta.json`` (the student shows the background on rays that
            cross none of them: :mod:`core.skipgrid`); ``0``: none. Object scenes only. Odd: a ray
            crossing the box face to face has its K bin centres at ``G (k + 1/2) / K`` cells, which for
            an even ``G`` divisible by ``2K`` fall exactly on cell boundaries, where float32 (the graph)
            and float64 (the page) could pick different cells.
        shards: ``"START:END"`` renders only those shards (Python slice of the shard list).
        verify: only re-hash and decode an existing folder, report problems by file, render nothing.
        backend: hash-grid backend for the teacher (``auto``, ``torch``, ...).
        progress: show a progress bar.
        forward: a forward-facing scene's ``n_views``, ``max_rays`` and ``views_per_shard``
            (:class:`DataGenForwardConfig`).
    """

    teacher_ckpt: str | None = None
    out_dir: str | None = None
    n_views: int = 1000
    views_per_shard: int = 100
    sampler: str = "auto"
    sampler_params: SamplerConfig = field(default_factory=SamplerConfig)
    image_scale: float = 1.0
    image_size: list[int] | None = None
    max_rays: int | None = None
    rgb_format: str = "png"
    depth: bool = False
    alpha: bool = False
    batch_rays: int = 1 << 16
    occupancy_resolution: int = 63
    shards: str | None = None
    verify: bool = False
    backend: str = "auto"
    progress: bool = True
    forward: DataGenForwardConfig = field(default_factory=DataGenForwardConfig)

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for an unknown backend (the other settings:
        :func:`validate`)."""
        validate_backend(self)


def validate(cfg: DataGenConfig) -> None:
    """Raise ``UserError`` (one line) for settings that cannot work."""
    try:
        validate_sampler(cfg.sampler, cfg.sampler_params)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if cfg.n_views < 1 or cfg.views_per_shard < 1 or cfg.batch_rays < 1:
        raise UserError("n_views, views_per_shard and batch_rays must be positive")
    if cfg.rgb_format not in RGB_FORMATS:
        raise UserError(f"rgb_format={cfg.rgb_format!r} is not one of {RGB_FORMATS}")
    if cfg.image_scale <= 0:
        raise UserError(f"image_scale must be positive, got {cfg.image_scale}")
    if not 0 <= cfg.occupancy_resolution <= 256:
        raise UserError(f"occupancy_resolution must be in [0, 256], got {cfg.occupancy_resolution}")
    if cfg.max_rays is not None and cfg.max_rays < cfg.n_views:
        raise UserError(f"max_rays must be at least n_views ({cfg.n_views}), got {cfg.max_rays}")
    if cfg.image_size is not None and (len(cfg.image_size) != 2 or min(cfg.image_size) < 1):
        raise UserError(f"image_size must be [H, W] with positive entries, got {cfg.image_size}")


def for_scene(cfg: DataGenConfig, forward_facing: bool) -> DataGenConfig:
    """The config a scene's pseudo-data is planned with: a forward-facing scene takes the ``forward``
    group's ``n_views``, ``max_rays`` and ``views_per_shard``; an object scene ``cfg`` itself."""
    if not forward_facing:
        return cfg
    f = cfg.forward
    return dataclasses.replace(cfg, n_views=f.n_views, max_rays=f.max_rays, views_per_shard=f.views_per_shard)


register_stage("data_gen", DataGenConfig)
