"""The export stage's config (``conf/export.yaml``): :class:`ExportConfig` and its sub-configs.

Importing this module registers the stage's schema (``export_schema``); ``export.onnx`` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from core.checks import ConfigValueError, at_least, positive
from core.errors import UserError
from export.variants import PRECISIONS
from pipeline.config import register_stage
from pipeline.run import RunConfig

# The keys whose default depends on the checkpoint's decoder (``None`` in the dataclass: "the decoder's
# own"), and those defaults: an image graph has static shapes already and no ray encoding to fuse, and its
# convolutions quantize only as calibrated QDQ pairs (dynamic int8 makes ConvInteger, outside the portable
# op set of export/image.py).
DECODER_DEFAULTS: dict[str, dict[str, Any]] = {
    "ray": {"static_variants": ["fp32"], "fused_encoding": ["fp16", "int8"], "int8.mode": "dynamic"},
    "image": {"static_variants": [], "fused_encoding": [], "int8.mode": "qdq"},
}
RAY_ONLY = {"static_variants": "static-batch", "fused_encoding": "fused-encoding",
            "int8.mode": "dynamic int8"}  # what each key asks of a ray model, in words


@dataclass
class Int8Config:
    """int8 quantization: ``mode`` qdq (static, calibrated) or dynamic (``None``: the decoder's own, see
    :data:`DECODER_DEFAULTS`); calibration data from the train views: ``calib_batches`` batches of
    ``calib_rays`` rays in all for a ray model, ``calib_batches`` training cameras (one frame each) for an
    image model. ``max_psnr_drop_db``: an image model's int8 files are published only when their test PSNR
    is at most this below the fp32 file's (ray models: always published, as before)."""

    mode: str | None = None
    calib_rays: int = 16384
    calib_batches: int = 4
    per_channel: bool = True
    max_psnr_drop_db: float = 0.3

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value (``mode``: checked at export)."""
        at_least(self, 1, "calib_rays", "calib_batches")
        at_least(self, 0, "max_psnr_drop_db")


@dataclass
class ParityConfig:
    """Checks at export: random rays in the scene (an image model: ``n_poses`` random poses near the
    training cameras and as many training poses), the test split (``max_test_views``: None = all; at
    most ``max_test_rays`` rays over the views checked, at least one view; None = no cap)."""

    n_rays: int = 4096
    n_poses: int = 3
    fp32_tol: float = 1e-4
    max_test_views: int | None = None
    max_test_rays: int | None = None
    batch_size: int = 1024

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        at_least(self, 1, "n_rays", "n_poses", "max_test_views", "max_test_rays", "batch_size")
        positive(self, "fp32_tol")


@dataclass
class ExportConfig(RunConfig):
    """``conf/export.yaml``: the run section (``threads``: ONNX Runtime's in the parity checks; ``seed``:
    their random rays; ``device``: unused, the export and its checks run on the CPU), then the export's
    own.

    ``static_variants`` (static-batch ray files), ``fused_encoding`` and ``int8.mode``: ``None`` takes the
    checkpoint decoder's default (:data:`DECODER_DEFAULTS`, applied by :func:`for_decoder`).
    ``image_sizes``: extra ``[H, W]`` output sizes of an image model (``student_<H>x<W>.onnx``, each
    precision of ``variants``); its training image size is always exported (``student.onnx``).
    """

    checkpoint: str | None = None
    out_dir: str | None = None
    opset: int = 18
    variants: list[str] = field(default_factory=lambda: list(PRECISIONS))
    static_variants: list[str] | None = None
    static_max_batch: int = 65536
    fused_encoding: list[str] | None = None
    image_sizes: list[list[int]] = field(default_factory=list)
    int8: Int8Config = field(default_factory=Int8Config)
    parity: ParityConfig = field(default_factory=ParityConfig)

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value (variant names: checked at export)."""
        at_least(self, 1, "opset")
        for size in self.image_sizes:
            if len(size) != 2 or min(size) < 1:
                raise ConfigValueError("image_sizes", "must be [H, W] pairs, H and W >= 1", self.image_sizes)


def for_decoder(cfg: ExportConfig, decoder: str, source: str) -> ExportConfig:
    """``cfg`` with its decoder-dependent keys set (:data:`DECODER_DEFAULTS` where ``None``).

    Args:
        cfg: the export config.
        decoder: the checkpoint's decoder, ``ray`` or ``image``.
        source: the checkpoint, named in errors.

    Raises:
        UserError: a key set to a value the decoder cannot export (a ray-model file asked of an image
            model, or ``image_sizes`` of a ray model), one line naming the key.
    """
    defaults = DECODER_DEFAULTS[decoder]
    given: dict[str, Any] = {"static_variants": cfg.static_variants, "fused_encoding": cfg.fused_encoding,
                             "int8.mode": cfg.int8.mode}
    if decoder == "image":
        for key, value in given.items():
            if value is not None and value != defaults[key]:
                raise UserError(f"{key}={value}: {source} is an image model, which has no {RAY_ONLY[key]} "
                                f"files (leave {key} out)")
    elif cfg.image_sizes:
        raise UserError(f"image_sizes={cfg.image_sizes}: {source} is a ray model, which draws any size "
                        "(image_sizes is for image models)")
    out: dict[str, Any] = {key: defaults[key] if value is None else value for key, value in given.items()}
    return replace(cfg, static_variants=list(out["static_variants"]),
                   fused_encoding=list(out["fused_encoding"]), int8=replace(cfg.int8, mode=out["int8.mode"]))


register_stage("export", ExportConfig)
