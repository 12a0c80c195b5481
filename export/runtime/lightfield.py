"""Run an exported light field with numpy and ONNX Runtime only (no PyTorch, none of our training code).

Self-contained on purpose: this file and the metadata reader beside it (``meta.py``) import numpy and
ONNX Runtime only, and each other by relative imports, so the ``export/runtime`` folder copied anywhere,
under any name, runs a ``student*.onnx`` wherever ONNX Runtime does. Cameras follow the OpenCV
convention (+X right, +Y down, looking along +Z; ``c2w`` is a 4x4 camera-to-world pose; ``K`` a 3x3
pinhole matrix in pixels, pixel centres at ``+0.5``), the same as the training code.

A ray model (``meta.decoder == "ray"``) maps rays to colors: :meth:`LightField.render` builds a view's
rays here and runs them in batches. An image model (``"image"``) maps one camera to its whole image at the
one size its file draws (``meta.output_size``): :meth:`LightField.render` makes one session call per frame.

Example::

    from export.runtime import LightField
    field = LightField("runs/mic_100/export/student.onnx")
    image = field.render(c2w)            # [H, W, 3] float32 in [0, 1], H, W, K from the model
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cameras import (
    check_intrinsics,
    check_pose,
    rays_cross_cells,
    rays_from_camera,
    rays_meet_box,
    scaled_intrinsics,
)
from .meta import (
    DECODER_INPUTS,
    DEFAULT_BATCH,
    INSTALL_HINT,
    OUTPUT_NAME,
    MissingRuntimeError,
    ModelError,
    ModelMeta,
    occupancy_cells,
)

log = logging.getLogger(__name__)

def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingRuntimeError(INSTALL_HINT) from exc
    return onnxruntime


def default_providers() -> list[str]:
    """CUDA first when this ONNX Runtime build has it (onnxruntime-gpu), always CPU as the fallback."""
    available = _import_onnxruntime().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class LightField:
    """An exported student in an ONNX Runtime session: a ray model or an image model (``meta.decoder``).

    Args:
        path: ``.onnx`` file written by ``python -m export.onnx``.
        providers: execution providers in order of preference; ``None`` picks them
            (:func:`default_providers`).
        threads: intra-op threads (``None``: ONNX Runtime's default, one per physical core).
        options: extra session config entries (``SessionOptions.add_session_config_entry``).
        skip_misses: evaluate only the rays that may meet the content box (:func:`rays_meet_box`) and
            may cross a set cell of the empty-space grid (:func:`rays_cross_cells`); the others show
            the background, as the graph would give them (same output, less work). A
            forward-facing (``ndc``) model has no misses: every ray is evaluated.

    Raises:
        ModelError: missing or unreadable file, or metadata missing / of an unknown version.
        MissingRuntimeError: onnxruntime is not installed.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 options: dict[str, str] | None = None, skip_misses: bool = True):
        ort = _import_onnxruntime()
        self.path = Path(path)
        self.skip_misses = skip_misses
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        for key, value in (options or {}).items():
            so.add_session_config_entry(key, str(value))
        try:
            chosen = list(providers or default_providers())
            self.session = ort.InferenceSession(str(self.path), so, providers=chosen)
        except Exception as exc:  # ORT raises its own pybind exception types for unreadable models
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first})") from None
        self.meta = ModelMeta.from_props(self.session.get_modelmeta().custom_metadata_map, self.path)
        expected = DECODER_INPUTS[self.meta.decoder]
        names = tuple(i.name for i in self.session.get_inputs())
        if names != expected or [o.name for o in self.session.get_outputs()] != [OUTPUT_NAME]:
            raise ModelError(f"{self.path}: a {self.meta.decoder} model needs inputs {list(expected)} and "
                             f"output ['{OUTPUT_NAME}'], found {list(names)}")
        shape = self.session.get_outputs()[0].shape
        if self.meta.decoder == "image" and shape != [*self.meta.output_size, 3]:
            raise ModelError(f"{self.path}: metadata output_size {self.meta.output_size} does not match the "
                             f"graph's output shape {shape}")
        self.providers: list[str] = self.session.get_providers()
        self.cells = occupancy_cells(self.meta.occupancy) if self.meta.occupancy is not None else None
        log.info("loaded %s (%s %s model, %s) on %s", self.path, self.meta.precision, self.meta.decoder,
                 self._shape_note(), self.providers)

    def _shape_note(self) -> str:
        if self.meta.decoder == "image":
            return "{}x{} images".format(*self.meta.output_size)
        return f"batch {self.meta.batch or 'dynamic'}"

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the training cameras."""
        return int(self.meta.image_size[0]), int(self.meta.image_size[1])

    @property
    def view_size(self) -> tuple[int, int]:
        """``(H, W)`` that :meth:`render` draws by default: an image model's output size (the only one it
        draws), a ray model's training image size."""
        if self.meta.decoder == "image":
            return int(self.meta.output_size[0]), int(self.meta.output_size[1])
        return self.image_size

    def default_K(self, size: Sequence[int]) -> np.ndarray:
        """``[3, 3]`` intrinsics of the training cameras (``meta.K``) scaled to ``size = (H, W)`` (same
        field of view)."""
        return scaled_intrinsics(np.asarray(self.meta.K, dtype=np.float32), self.image_size, size)

    def __call__(self, rays_o: np.ndarray, rays_d: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Colors of rays.

        Args:
            rays_o: ``[N, 3]`` origins (world frame).
            rays_d: ``[N, 3]`` unit directions.
            batch_size: rays per call for a dynamic model (a static model uses its own batch, padding
                the last one).

        Returns:
            ``[N, 3]`` float32 RGB in ``[0, 1]``.

        Raises:
            ModelError: rays of the wrong shape, or an image model (it draws whole views: :meth:`render`).
        """
        if self.meta.decoder == "image":
            raise ModelError(f"{self.path}: an image model draws whole views, not rays: use "
                             "render(c2w, K)")
        rays_o = np.ascontiguousarray(rays_o, dtype=np.float32)
        rays_d = np.ascontiguousarray(rays_d, dtype=np.float32)
        if rays_o.ndim != 2 or rays_o.shape[1] != 3 or rays_o.shape != rays_d.shape:
            raise ModelError(f"rays_o and rays_d must both be [N, 3], got {list(rays_o.shape)} and "
                             f"{list(rays_d.shape)}")
        box = self.meta.content_aabb
        if self.skip_misses and box is not None and self.meta.ray_space == "world":
            hit = rays_meet_box(rays_o, rays_d, box, self.meta.near, self.meta.far)
            if self.cells is not None:
                hit[hit] = rays_cross_cells(rays_o[hit], rays_d[hit], box, self.meta.near, self.meta.far,
                                            int(self.meta.student["n_points"]), self.cells)
            out = np.full(rays_o.shape, self.meta.background, dtype=np.float32)
            if hit.any():
                out[hit] = self._run(rays_o[hit], rays_d[hit], batch_size)
            return out
        return self._run(rays_o, rays_d, batch_size)

    def _run(self, rays_o: np.ndarray, rays_d: np.ndarray, batch_size: int) -> np.ndarray:
        """The graph on every ray, in batches (padding the last one for a static-shape model)."""
        step = self.meta.batch or max(int(batch_size), 1)
        out = np.empty_like(rays_o)
        for start in range(0, rays_o.shape[0], step):
            o, d = rays_o[start:start + step], rays_d[start:start + step]
            n = o.shape[0]
            if self.meta.batch and n < step:  # static shape: pad the tail
                o = np.concatenate([o, np.repeat(o[-1:], step - n, 0)])
                d = np.concatenate([d, np.repeat(d[-1:], step - n, 0)])
            out[start:start + n] = self.session.run([OUTPUT_NAME], {"rays_o": o, "rays_d": d})[0][:n]
        return out

    def render(self, c2w: np.ndarray, K: np.ndarray | None = None, image_size: Sequence[int] | None = None,
               batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Render one view.

        Args:
            c2w: ``[4, 4]`` (or ``[3, 4]``) camera-to-world pose, OpenCV convention.
            K: ``[3, 3]`` intrinsics in pixels of the rendered image; defaults to the training cameras'
                (``meta.K``), scaled to ``image_size`` (same field of view).
            image_size: ``(H, W)``; defaults to :attr:`view_size` (an image model draws only that size).
            batch_size: rays per inference call of a ray model (an image model makes one call).

        Returns:
            ``[H, W, 3]`` float32 image in ``[0, 1]``.

        Raises:
            ModelError: a bad pose (:func:`check_pose`) or ``K`` (:func:`check_intrinsics`), or a size
                an image model does not draw (one line each).
        """
        pose = check_pose(c2w)
        H, W = (int(image_size[0]), int(image_size[1])) if image_size is not None else self.view_size
        K_arr = self.default_K((H, W)) if K is None else check_intrinsics(K)
        if self.meta.decoder == "image":
            return self._render_image(pose, K_arr, (H, W))
        rays_o, rays_d = rays_from_camera(pose, K_arr, H, W)
        return self(rays_o, rays_d, batch_size).reshape(H, W, 3)

    def _render_image(self, c2w: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """An image model's view: one session call (``c2w [4, 4]``, ``K [3, 3]`` -> ``rgb [H, W, 3]``)."""
        if size != self.view_size:
            raise ModelError("{}: this image model draws {}x{} images only, not {}x{}: export the size you "
                             "need with python -m export.onnx image_sizes=[[{},{}]]".format(
                                 self.path, *self.view_size, *size, *size))
        feeds = dict(zip(DECODER_INPUTS["image"], (c2w, K)))
        return self.session.run([OUTPUT_NAME], feeds)[0]

    def time_render(self, c2w: np.ndarray, repeats: int = 5) -> float:
        """Best-of-``repeats`` milliseconds to render one view at :attr:`view_size` (after a warm-up)."""
        self.render(c2w)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            self.render(c2w)
            best = min(best, time.perf_counter() - start)
        return best * 1e3
