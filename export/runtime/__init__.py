"""Run an exported light field with numpy and ONNX Runtime only: no torch, none of our other packages.

:class:`LightField` renders a camera; ``python -m export.runtime.render`` renders a camera path to frames
and a video. A test imports this package with torch and our training packages made unimportable.
"""

from .cameras import (
    check_intrinsics,
    check_pose,
    rays_cross_cells,
    rays_from_camera,
    rays_meet_box,
    scaled_intrinsics,
)
from .lightfield import LightField
from .meta import (
    DEFAULT_BATCH,
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAMES,
    OUTPUT_NAME,
    MissingRuntimeError,
    ModelError,
    ModelMeta,
    occupancy_cells,
)

__all__ = ["DEFAULT_BATCH", "FORMAT", "FORMAT_VERSION", "INPUT_NAMES", "OUTPUT_NAME", "LightField",
           "MissingRuntimeError", "ModelError", "ModelMeta", "occupancy_cells", "rays_cross_cells",
           "rays_from_camera", "rays_meet_box", "check_intrinsics", "check_pose", "scaled_intrinsics"]
