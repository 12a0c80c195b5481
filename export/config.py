"""The export stage's config (``conf/export.yaml``): :class:`ExportConfig` and its sub-configs.

Importing this module registers the stage's schema (``export_schema``); ``export.onnx`` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.checks import at_least, positive
from export.variants import PRECISIONS
from pipeline.config import register_stage
from pipeline.run import RunConfig


@dataclass
class Int8Config:
    """int8 quantization: ``mode`` qdq (static, calibrated) or dynamic; calibration rays from train views."""

    mode: str = "dynamic"
    calib_rays: int = 16384
    calib_batches: int = 4
    per_channel: bool = True

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value (``mode``: checked at export)."""
        at_least(self, 1, "calib_rays", "calib_batches")


@dataclass
class ParityConfig:
    """Checks at export: random rays in the scene, the test split (``max_test_views``: None = all; at
    most ``max_test_rays`` rays over the views checked, at least one view; None = no cap)."""

    n_rays: int = 4096
    fp32_tol: float = 1e-4
    max_test_views: int | None = None
    max_test_rays: int | None = None
    batch_size: int = 1024

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        at_least(self, 1, "n_rays", "max_test_views", "max_test_rays", "batch_size")
        positive(self, "fp32_tol")


@dataclass
class ExportConfig(RunConfig):
    """``conf/export.yaml``: the run section (``threads``: ONNX Runtime's in the parity checks; ``seed``:
    their random rays; ``device``: unused, the export and its checks run on the CPU), then the export's
    own."""

    checkpoint: str | None = None
    out_dir: str | None = None
    opset: int = 18
    variants: list[str] = field(default_factory=lambda: list(PRECISIONS))
    static_variants: list[str] = field(default_factory=lambda: ["fp32"])
    static_max_batch: int = 65536
    fused_encoding: list[str] = field(default_factory=lambda: ["fp16", "int8"])
    int8: Int8Config = field(default_factory=Int8Config)
    parity: ParityConfig = field(default_factory=ParityConfig)

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value (variant names: checked at export)."""
        at_least(self, 1, "opset")


register_stage("export", ExportConfig)
