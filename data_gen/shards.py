"""Writing pseudo-data shards: deterministic WebDataset tars (same inputs, same bytes, same sha256).

The format is described in :mod:`core.shards` (which reads it). Determinism comes from fixed tar
headers (mtime 0, uid/gid 0, empty user/group names, mode 0444), members sorted by name within a
sample (``webdataset.TarWriter`` does this), PNG written by Pillow with a fixed compression level and
no metadata chunks, and ``.npy`` written by ``numpy.lib.format``.

A shard is written under a temporary name and renamed into place when complete (``core.io``), so a
file named ``shard-*.tar`` is always a whole tar.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image

from core.errors import UserError
from core.io import atomic_write, sha256_file
from core.shards import (
    OPTIONAL_FIELDS,
    RGB_FORMATS,
    ShardFormatError,
    decode_optional,
    decode_sample,
    view_key,
)

TAR_MTIME = 0.0
TAR_MODE = 0o444
PNG_COMPRESS_LEVEL = 6


def _np(x: Any, dtype: type) -> np.ndarray:
    """A contiguous numpy array of ``dtype`` from a numpy array or a (CPU or GPU) tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


def npy_bytes(arr: np.ndarray) -> bytes:
    """``.npy`` file bytes of ``arr`` (deterministic: header and data only)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    """8-bit RGB PNG bytes of ``[H, W, 3]`` colors (float in ``[0, 1]`` rounded, or uint8)."""
    if rgb.dtype != np.uint8:
        rgb = np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def encode_view(
    view_index: int,
    rgb: Any,  # [H, W, 3] in [0, 1]
    c2w: Any,  # [4, 4]
    K: Any,  # [3, 3]
    depth: Any | None = None,  # [H, W]
    alpha: Any | None = None,  # [H, W]
    rgb_format: str = "png",
) -> dict[str, Any]:
    """Encode one view into a WebDataset sample ``{"__key__": ..., "<field>.<ext>": bytes}``.

    Arrays may be numpy arrays or torch tensors. Colors are rounded to 8 bits (``png``) or stored as
    float16 (``npy16``).
    """
    if rgb_format not in RGB_FORMATS:
        raise ValueError(f"rgb_format must be one of {RGB_FORMATS}, got {rgb_format!r}")
    rgb_np = _np(rgb, np.float32) if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8) else rgb
    if rgb_np.ndim != 3 or rgb_np.shape[-1] != 3:
        raise ValueError(f"rgb must be [H, W, 3], got {tuple(rgb_np.shape)}")
    sample: dict[str, Any] = {"__key__": view_key(view_index)}
    if rgb_format == "png":
        sample["rgb.png"] = png_bytes(rgb_np)
    else:
        sample["rgb.npy"] = npy_bytes(rgb_np.astype(np.float16))
    sample["c2w.npy"] = npy_bytes(_np(c2w, np.float32).reshape(4, 4))
    sample["K.npy"] = npy_bytes(_np(K, np.float32).reshape(3, 3))
    for name, value in (("depth", depth), ("alpha", alpha)):
        if value is not None:
            sample[f"{name}.npy"] = npy_bytes(_np(value, np.float32).reshape(rgb_np.shape[:2]))
    return sample


def write_encoded(path: str | Path, samples: Iterable[dict[str, Any]]) -> str:
    """Write already-encoded samples (see :func:`encode_view`) into a tar at ``path``, atomically.

    Returns:
        The sha256 of the written file.
    """
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            writer = wds.TarWriter(fh, user="", group="", mode=TAR_MODE, mtime=TAR_MTIME, encoder=False)
            for sample in samples:
                writer.write(sample)
            writer.close()

    atomic_write(path, write)
    return sha256_file(path)


def write_shard(path: str | Path, samples: Iterable[dict[str, Any]], rgb_format: str = "png") -> str:
    """Write views into a deterministic WebDataset tar at ``path`` (temporary name, then rename).

    Args:
        path: the shard file, e.g. ``<folder>/shard-000000.tar``.
        samples: dicts with ``view_index`` (int), ``rgb`` ([H, W, 3] in [0, 1]), ``c2w`` ([4, 4]),
            ``K`` ([3, 3]) and optionally ``depth`` / ``alpha`` ([H, W]); numpy arrays or tensors.
        rgb_format: ``"png"`` or ``"npy16"``.

    Returns:
        The sha256 of the shard (the value ``meta.json`` lists).
    """
    return write_encoded(path, (
        encode_view(s["view_index"], s["rgb"], s["c2w"], s["K"], s.get("depth"), s.get("alpha"), rgb_format)
        for s in samples
    ))


def read_shard(path: str | Path) -> Iterator[dict[str, Any]]:
    """Raw samples of a shard read with ``tarfile`` (keys as written, e.g. ``K.npy``; plus ``__url__``).

    Raises:
        ShardFormatError: a truncated or malformed tar, or members not grouped by key, naming the file.
    """
    path = Path(path)
    current: dict[str, Any] | None = None
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": str(path)}
                data = tar.extractfile(member)
                assert data is not None
                current[ext] = data.read()
                if len(current[ext]) != member.size:
                    raise ShardFormatError(f"{path}: truncated in member {member.name}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardFormatError(f"{path}: not a readable tar ({exc})") from None
    if current is not None:
        yield current


def check_shard(path: str | Path, expected_sha256: str | None, first_view: int, n_views: int,
                image_size: tuple[int, int] | list[int], fields: list[str]) -> str | None:
    """Re-hash and decode every sample of one shard.

    Returns:
        ``None`` if the shard is sound, else a one-line problem naming the file.
    """
    path = Path(path)
    if not path.is_file():
        return f"{path}: missing"
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        return f"{path}: sha256 differs from the recorded one (corrupt, truncated or modified)"
    try:
        keys = []
        for sample in read_shard(path):
            rgb, _, _ = decode_sample(sample)
            if list(rgb.shape[:2]) != list(image_size):
                return f"{path}: sample {sample['__key__']} is {rgb.shape[:2]}, expected {list(image_size)}"
            for name in OPTIONAL_FIELDS:
                if name in fields and decode_optional(sample, name) is None:
                    return f"{path}: sample {sample['__key__']} has no {name}.npy"
            keys.append(sample["__key__"])
    except UserError as exc:
        return str(exc) if str(path) in str(exc) else f"{path}: {exc}"
    expected = [view_key(i) for i in range(first_view, first_view + n_views)]
    if keys != expected:
        return f"{path}: holds {len(keys)} samples, expected views {first_view}..{first_view + n_views - 1}"
    return None
