"""Loaded views of a scene and image decoding shared by every scene layout (no layout logic here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from core.errors import SceneError


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
        bg = torch.as_tensor(background, dtype=torch.float32)
        alpha = self.images[..., 3:]
        return self.images[..., :3] * alpha + bg * (1.0 - alpha)


def read_image(path: Path) -> Tensor:
    """``[H, W, 4]`` straight-alpha float32 RGBA."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("RGBA", "RGB"):
                arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            elif mode == "P":  # palette PNG: colors (and transparency) live in the palette
                arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
            elif mode in ("I;16", "I;16B", "I"):
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
    return torch.from_numpy(arr)


def downscale_image(img: Tensor, factor: int) -> Tensor:
    """Area-average ``[H, W, 4]`` straight-alpha RGBA by ``factor`` on premultiplied alpha."""
    pre = torch.cat([img[..., :3] * img[..., 3:], img[..., 3:]], dim=-1).permute(2, 0, 1)[None]
    pooled = F.avg_pool2d(pre, factor)[0].permute(1, 2, 0)
    alpha = pooled[..., 3:]
    rgb = torch.where(alpha > 0, pooled[..., :3] / alpha.clamp_min(1e-8), torch.zeros_like(pooled[..., :3]))
    return torch.cat([rgb, alpha], dim=-1)


def read_mask(path: Path) -> Tensor:
    """``[H, W]`` float32 alpha in ``[0, 1]`` from the first channel of an 8-bit mask image."""
    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise SceneError(f"{path}: unsupported mask mode {img.mode} (need 8-bit gray or RGB)")
            arr = np.asarray(img.convert("RGB"), dtype=np.float32)[..., 0] / 255.0
    except SceneError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ... on junk
        raise SceneError(f"{path}: cannot decode mask ({exc})") from None
    return torch.from_numpy(arr)
