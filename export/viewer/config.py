"""``conf/viewer.yaml``'s dataclass: the viewer stage's keys (registered as ``viewer_schema`` on import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.checks import ConfigValueError, in_range
from pipeline.config import register_stage
from pipeline.run import RunConfig


@dataclass
class ViewerConfig(RunConfig):
    """``conf/viewer.yaml``: the run section (of which the page uses ``run_dir`` and ``scene`` only: the
    browser picks its own device and threads), then the viewer's own."""

    export_dir: str | None = None
    out_dir: str | None = None
    # an image model's: also their files at its other exported sizes (student_<H>x<W>[_fp16|_int8].onnx)
    variants: list[str] = field(default_factory=lambda: ["student.onnx", "student_fp16.onnx",
                                                         "student_int8.onnx"])
    default: str | None = None
    split: bool = True
    checkpoint: str | None = None
    webgpu: bool = True
    ort_dir: str | None = None
    screenshot: bool | None = None
    browser: str | None = None
    serve: bool = False
    host: str = "127.0.0.1"
    port: int = 8000

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        in_range(self, 0, 65535, "port")
        if not self.variants:
            raise ConfigValueError("variants", "must name at least one exported file", [])


register_stage("viewer", ViewerConfig)
