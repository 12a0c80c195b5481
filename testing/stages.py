"""Every stage's config, composable by name: importing this module imports each stage's module, which
registers its schema (``pipeline`` names no stage, so that no stage import closes a cycle).

    from testing.stages import compose, stage_schema
    cfg = to_dataclass(compose("teacher", ["scene.path=..."]), stage_schema("teacher"))
"""

from __future__ import annotations

import data_gen.render
import export.onnx
import export.viewer.page
import student.config
import teacher.config
from pipeline.config import STAGES, compose, stage_schema

# the module that registers each stage's schema (literal imports above: the import rules can read them)
STAGE_MODULES = {"teacher": teacher.config, "data_gen": data_gen.render, "student": student.config,
                 "export": export.onnx, "viewer": export.viewer.page}
assert set(STAGE_MODULES) == set(STAGES), "testing.stages and pipeline.config.STAGES name the same stages"

__all__ = ["STAGES", "STAGE_MODULES", "compose", "stage_schema"]
