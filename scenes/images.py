"""Image files of a scene: the one extension list, ``image_size``, ``read_image``, ``read_mask``, and the
loaded views of a split (:class:`SceneSplit`). No layout logic here.

Every scene layout (``transforms.json``, LLFF) and the COLMAP command read photos and masks through this
module, so they accept the same files and give a mask the same alpha. torch is imported inside the
functions that return tensors: ``python -m scenes.colmap`` uses this module too, and reports bad input
before the two seconds torch takes to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.errors import SceneError

if TYPE_CHECKING:
    from torch import Tensor

SPLITS = ("train", "val", "test")
# the image files a scene or a photos folder may hold, compared lower-case; the order is the lookup
# order of an extension-less ``file_path`` (PNG first: the NeRF synthetic scenes' format)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_MASK_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's "I" holds 16-bit PNGs on some builds


@dataclass
class SceneSplit:
    """The views of one split.

    Attributes:
        images: ``[C, H, W, 4]`` straight-alpha RGBA float32 in ``[0, 1]``.
        c2w: ``[C, 4, 4]`` poses (OpenCV convention).
        K: ``[C, 3, 3]`` intrinsics in pixels.
        files: image file of each view.
    """

    images: Tensor
    c2w: Tensor
    K: Tensor
    files: list[str]

    @property
    def n_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def has_masks(self) -> bool:
        """Whether any view has alpha below 1 (a mask: the background is not part of the scene)."""
        return bool((self.images[..., 3] < 1.0).any())

    def rgb(self, background: Tensor | list[float]) -> Tensor:
        """``[C, H, W, 3]`` colors composited onto ``background`` (``[3]``)."""
        import torch

        bg = torch.as_tensor(background, dtype=torch.float32)
        alpha = self.images[..., 3:]
        return self.images[..., :3] * alpha + bg * (1.0 - alpha)


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def find_image(base: Path) -> Path | None:
    """The image file ``base`` names: ``base`` itself if it has a suffix and exists, else ``base`` plus
    the first of :data:`IMAGE_EXTENSIONS` that exists, lower or upper case, then in any other case
    (``.Jpg``); ``None`` if there is none."""
    if base.suffix and base.is_file():
        return base
    for ext in IMAGE_EXTENSIONS:
        for variant in (ext, ext.upper()):  # the usual spellings first: no folder listing per frame
            candidate = base.with_name(base.name + variant)
            if candidate.is_file():
                return candidate
    if not base.parent.is_dir():
        return None
    by_ext = {p.name[len(base.name):].lower(): p for p in base.parent.iterdir()
              if p.name.startswith(base.name) and p.is_file()}
    return next((by_ext[ext] for ext in IMAGE_EXTENSIONS if ext in by_ext), None)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header (the pixels are not decoded)."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise SceneError(f"{path}: image not found") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ... on junk
        raise SceneError(f"{path}: cannot decode image ({exc})") from None


def read_image(path: Path) -> Tensor:
    """``[H, W, 4]`` straight-alpha float32 RGBA (alpha 1 for an RGB file) of an 8-bit RGB(A) image."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("RGBA", "RGB"):
                arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            elif mode == "P":  # palette PNG: colors (and transparency) live in the palette
                arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
            elif mode in _MASK_16BIT_MODES:
                raise SceneError(f"{path}: unsupported image mode {mode} (16-bit single channel)")
            else:
                channels = len(img.getbands())
                raise SceneError(f"{path}: unsupported channel count {channels} ({mode}); need RGB or RGBA")
    except SceneError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ... on junk
        raise SceneError(f"{path}: cannot decode image ({exc})") from None
    if arr.shape[-1] == 3:
        arr = np.concatenate([arr, np.ones_like(arr[..., :1])], axis=-1)
    import torch

    return torch.from_numpy(arr)


def downscale_image(img: Tensor, factor: int) -> Tensor:
    """Area-average ``[H, W, 4]`` straight-alpha RGBA by ``factor`` on premultiplied alpha."""
    import torch
    import torch.nn.functional as F

    pre = torch.cat([img[..., :3] * img[..., 3:], img[..., 3:]], dim=-1).permute(2, 0, 1)[None]
    pooled = F.avg_pool2d(pre, factor)[0].permute(1, 2, 0)
    alpha = pooled[..., 3:]
    rgb = torch.where(alpha > 0, pooled[..., :3] / alpha.clamp_min(1e-8), torch.zeros_like(pooled[..., :3]))
    return torch.cat([rgb, alpha], dim=-1)


def read_mask(path: Path) -> np.ndarray:
    """``[H, W]`` float32 alpha in ``[0, 1]`` (0 = background) from a mask image.

    The one mask rule of every layout and of the COLMAP command:

    * one channel, 8-bit (also 1-bit, and a palette without transparency): value / 255;
    * one channel, 16-bit: value / 65535 (Pillow's 32-bit ``I`` mode too, values in 0..65535);
    * with an alpha channel (RGBA, LA, a palette with transparency) that is not opaque everywhere: the
      alpha channel, as background-removal tools write it;
    * otherwise (RGB, or an opaque RGBA / LA): the first channel / 255.

    Soft values are kept. Float masks and 32-bit values beyond 65535 are refused.

    Raises:
        SceneError: one line naming the file, for an undecodable or unsupported mask.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in _MASK_16BIT_MODES:
                values = np.asarray(img).astype(np.float64)
                if values.size and not 0 <= values.min() <= values.max() <= 65535:
                    raise SceneError(f"{path}: unsupported mask: {mode} values "
                                     f"{values.min():g}..{values.max():g} (need 8- or 16-bit)")
                return (values / 65535.0).astype(np.float32)
            if mode == "F":
                raise SceneError(f"{path}: unsupported mask mode F (float); need 8- or 16-bit gray, RGB "
                                 "or RGBA")
            if mode in ("1", "L"):
                return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
            rgba = np.asarray(img.convert("RGBA"))  # LA, P, RGB, CMYK, ... (an opaque alpha if none)
    except SceneError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ... on junk
        raise SceneError(f"{path}: cannot decode mask ({exc})") from None
    alpha = rgba[..., 3]
    channel = alpha if bool((alpha < 255).any()) else rgba[..., 0]
    return channel.astype(np.float32) / 255.0
