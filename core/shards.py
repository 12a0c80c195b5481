"""The pseudo-data shard format: WebDataset tars of teacher-rendered views plus ``meta.json``.

A folder (by default ``<run_dir>/pseudo/``) holds ``shard-000000.tar``, ``shard-000001.tar``, ... and
``meta.json``. Each tar holds one WebDataset sample per view, its members named
``<key>.<field>`` with ``key = f"{view_index:08d}"``:

* ``rgb.png``: 8-bit RGB composited on ``meta.background``; or, with ``rgb_format: npy16``,
  ``rgb.npy``: float16 ``[H, W, 3]``;
* ``c2w.npy``: float32 ``[4, 4]`` camera-to-world pose in the OpenCV convention of
  :mod:`core.cameras`;
* ``K.npy``: float32 ``[3, 3]`` intrinsics in pixels (per view: samplers may zoom);
* optionally ``depth.npy`` and ``alpha.npy``: float32 ``[H, W]``.

``meta.json`` describes the whole set (see :class:`PseudoMeta`); :func:`read_meta` validates it against
the files on disk, and :func:`decode_sample` turns a raw sample (a dict of bytes, as produced by plain
``webdataset.WebDataset(urls)`` without ``.decode()``) into numpy arrays.

This module only reads; the writer is ``data_gen.shards``.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.cameras import CAMERA_CONVENTION
from core.errors import UserError
from core.io import sha256_file, write_json
from core.skipgrid import unpack_grid

FORMAT = "lightfield-distill/pseudo"
FORMAT_VERSION = 1
META_NAME = "meta.json"
SHARD_GLOB = "shard-*.tar"
SHARD_NAME = re.compile(r"shard-[0-9]{6,}\.tar")  # a plain file of the folder: no path, no URL, no pipe:
VERIFIED_NAME = ".verified.json"  # shards whose sha256 matched, with the size and mtime they had then
RACY_SECONDS = 2.0  # a shard modified this recently is hashed but not remembered (mtime ticks are coarse)
RGB_FORMATS = ("png", "npy16")
OPTIONAL_FIELDS = ("depth", "alpha")


class ShardFormatError(UserError):
    """A shard folder, ``meta.json`` or shard file that does not follow the format; names the file."""


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard-000042.tar``)."""
    return f"shard-{index:06d}.tar"


def view_key(view_index: int) -> str:
    """WebDataset ``__key__`` of view ``view_index`` (``00000042``)."""
    return f"{view_index:08d}"


@dataclass
class ShardInfo:
    """One shard: file name, the views it holds (``first_view .. first_view + n_views - 1``), hash."""

    name: str
    first_view: int
    n_views: int
    sha256: str


@dataclass
class PseudoMeta:
    """Contents of ``meta.json``.

    Attributes:
        image_size: ``[H, W]`` of every view.
        near: ray start distance used by the teacher.
        far: ray end distance used by the teacher.
        aabb: scene box ``[xmin, ymin, zmin, xmax, ymax, zmax]``.
        content_aabb: box around everything the teacher renders (its occupied cells), inside ``aabb``;
            rays that miss it show the background. ``None``: the whole scene box.
        background: RGB the colors are composited onto.
        n_views: total views over all shards.
        views_per_shard: views per shard (the last shard may hold fewer).
        rgb_format: ``"png"`` (8-bit) or ``"npy16"`` (float16 array).
        fields: field names present in every sample, e.g. ``["rgb", "c2w", "K", "depth"]``.
        shards: one :class:`ShardInfo` per shard, in view order.
        sampler: ``{"name", "seed", ...params}`` of the pose sampler.
        teacher: ``{"checkpoint_sha256", "test_psnr"}``.
        scene: ``{"name", "path"}``.
        ndc: the NDC frame (:class:`core.ndc.NDCSpace` as a dict) of a forward-facing scene, whose
            ``aabb``, ``content_aabb``, ``near`` and ``far`` are then in NDC; ``None``: world frame.
        occupancy: the teacher's occupied cells covered by a coarse grid over ``content_aabb``
            (:func:`core.skipgrid.pack_grid`): rays that cross none of its cells are pure background.
            ``None``: not recorded (every ray that meets the content box may show something).
        folder: the folder the meta was read from (not stored in the file).
    """

    image_size: list[int]
    near: float
    far: float
    aabb: list[float]
    background: list[float]
    n_views: int
    views_per_shard: int
    rgb_format: str = "png"
    fields: list[str] = field(default_factory=lambda: ["rgb", "c2w", "K"])
    shards: list[ShardInfo] = field(default_factory=list)
    content_aabb: list[float] | None = None
    sampler: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    scene: dict[str, Any] = field(default_factory=dict)
    ndc: dict[str, Any] | None = None
    occupancy: dict[str, Any] | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    camera_convention: str = CAMERA_CONVENTION
    folder: Path | None = None

    @property
    def height(self) -> int:
        return int(self.image_size[0])

    @property
    def width(self) -> int:
        return int(self.image_size[1])

    @property
    def content_box(self) -> list[float]:
        """The content box, or the scene box when the pseudo-data does not name one."""
        return list(self.content_aabb) if self.content_aabb is not None else list(self.aabb)

    @property
    def n_rays(self) -> int:
        """Total rays (pixels) over all views."""
        return self.n_views * self.height * self.width

    def shard_paths(self) -> list[Path]:
        """Absolute local paths of the shards, in view order (needs :attr:`folder`)."""
        assert self.folder is not None, "meta was not read from a folder"
        return [self.folder.absolute() / s.name for s in self.shards]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``meta.json`` (keys in the documented order)."""
        d = asdict(self)
        d.pop("folder")
        order = ["format", "format_version", "camera_convention", "image_size", "near", "far", "aabb",
                 "content_aabb", "background", "n_views", "views_per_shard", "rgb_format", "fields", "shards",
                 "sampler", "teacher", "scene", "ndc", "occupancy"]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, d: dict[str, Any], folder: Path | None = None) -> PseudoMeta:
        """Build from a parsed ``meta.json`` (raises ``KeyError``/``TypeError`` on a malformed one)."""
        kwargs = {k: d[k] for k in cls.__dataclass_fields__ if k not in ("folder", "shards") and k in d}
        shards = [ShardInfo(**{k: s[k] for k in ("name", "first_view", "n_views", "sha256")})
                  for s in d["shards"]]
        return cls(**kwargs, shards=shards, folder=folder)


def _load_meta_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ShardFormatError(f"{path}: not found (no pseudo-data here; run data_gen.render first)")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardFormatError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ShardFormatError(f"{path}: malformed JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(d, dict):
        raise ShardFormatError(f"{path}: expected a JSON object")
    return d


def parse_meta(d: dict[str, Any], path: Path, require_shards: bool = True) -> PseudoMeta:
    """Validate a parsed ``meta.json`` on its own (no file checks); ``path`` names it in errors.

    ``require_shards=False`` accepts a job description without a shard list (the writer's record).
    """
    if d.get("format") != FORMAT:
        raise ShardFormatError(f"{path}: unknown format {d.get('format')!r} (expected {FORMAT!r})")
    if d.get("format_version") != FORMAT_VERSION:
        raise ShardFormatError(f"{path}: format version {d.get('format_version')!r} is not supported "
                               f"(expected {FORMAT_VERSION})")
    if d.get("camera_convention") != CAMERA_CONVENTION:
        raise ShardFormatError(f"{path}: camera convention {d.get('camera_convention')!r} does not match "
                               f"this project's {CAMERA_CONVENTION!r}")
    try:
        meta = PseudoMeta.from_dict({"shards": [], **d}, folder=path.parent)
    except (KeyError, TypeError) as exc:
        raise ShardFormatError(f"{path}: missing or malformed entry {exc}") from None
    problems = []
    if len(meta.image_size) != 2 or min(meta.image_size) < 1:
        problems.append(f"image_size {meta.image_size} is not [H, W]")
    if meta.rgb_format not in RGB_FORMATS:
        problems.append(f"rgb_format {meta.rgb_format!r} is not one of {RGB_FORMATS}")
    if not {"rgb", "c2w", "K"} <= set(meta.fields) <= {"rgb", "c2w", "K", *OPTIONAL_FIELDS}:
        problems.append(f"fields {meta.fields} must include rgb, c2w, K and may add {OPTIONAL_FIELDS}")
    if len(meta.aabb) != 6 or len(meta.background) != 3 or not 0 <= meta.near < meta.far:
        problems.append("aabb/background/near/far are malformed")
    elif meta.content_aabb is not None and (len(meta.content_aabb) != 6 or not all(
            lo < hi for lo, hi in zip(meta.content_aabb[:3], meta.content_aabb[3:]))):
        problems.append(f"content_aabb {meta.content_aabb} is not [xmin, ymin, zmin, xmax, ymax, zmax]")
    if meta.occupancy is not None:
        unpack_grid(meta.occupancy, f"{path}: occupancy")
    if require_shards and not meta.shards:
        problems.append("lists no shards")
    expected_first = 0
    names: set[str] = set()
    for s in meta.shards:
        if not isinstance(s.name, str) or not SHARD_NAME.fullmatch(s.name) or s.name in names:
            problems.append(f"shard name {s.name!r} is not a distinct shard-NNNNNN.tar file of this folder")
            break
        names.add(s.name)
        if s.first_view != expected_first or s.n_views < 1:
            problems.append(f"shard {s.name} covers views from {s.first_view}, expected {expected_first}")
            break
        expected_first += s.n_views
    if meta.shards and expected_first != meta.n_views:
        problems.append(f"shards hold {expected_first} views but n_views is {meta.n_views}")
    if problems:
        raise ShardFormatError(f"{path}: {problems[0]}")
    return meta


def read_meta(folder: str | Path, verify_hashes: bool = False) -> PseudoMeta:
    """Read and validate ``<folder>/meta.json`` against the shard files on disk.

    Args:
        folder: the pseudo-data folder.
        verify_hashes: also check every shard's sha256 (:func:`verify_shard_hashes`: each shard is read
            once, and again only after it changed).

    Returns:
        The validated :class:`PseudoMeta` with ``folder`` set.

    Raises:
        ShardFormatError (a ``UserError``): naming the file, for a missing folder or meta, an unknown
            format/version, a camera-convention mismatch, no shards, a listed shard that is missing or of
            another hash, or a ``shard-*.tar`` on disk that the meta does not list.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ShardFormatError(f"{folder}: pseudo-data folder not found (run data_gen.render first)")
    path = folder / META_NAME
    meta = parse_meta(_load_meta_file(path), path)
    listed = {s.name for s in meta.shards}
    for s in meta.shards:
        shard = folder / s.name
        if not shard.is_file():
            raise ShardFormatError(f"{shard}: listed in {path} but missing")
        if shard.stat().st_size == 0:
            raise ShardFormatError(f"{shard}: empty file")
    extra = sorted(p.name for p in folder.glob(SHARD_GLOB) if p.name not in listed)
    if extra:
        raise ShardFormatError(f"{folder / extra[0]}: shard on disk is not listed in {path}")
    if verify_hashes:
        verify_shard_hashes(meta)
    return meta


def verify_shard_hashes(meta: PseudoMeta) -> None:
    """Check every shard's sha256 against ``meta.json``, reading each shard once over many runs.

    A shard whose size, mtime and expected hash are those recorded at an earlier match (in
    ``<folder>/.verified.json``) is not read again; a truncated or rewritten shard, or a new ``meta.json``,
    is hashed again. A shard modified less than :data:`RACY_SECONDS` ago is hashed but not recorded (a
    rewrite within the same timestamp tick would keep its mtime). A read-only folder records nothing.

    Raises:
        ShardFormatError: naming the first shard whose bytes do not match.
    """
    assert meta.folder is not None, "meta was not read from a folder"
    marker = meta.folder / VERIFIED_NAME
    try:
        seen = json.loads(marker.read_text())
    except (OSError, ValueError):
        seen = {}
    verified = {}
    for s in meta.shards:
        shard = meta.folder / s.name
        st = shard.stat()
        key = [st.st_size, st.st_mtime_ns, s.sha256]
        if not isinstance(seen, dict) or seen.get(s.name) != key:
            if sha256_file(shard) != s.sha256:
                raise ShardFormatError(f"{shard}: sha256 does not match {meta.folder / META_NAME} "
                                       "(truncated, corrupt or from another job)")
        if time.time() - st.st_mtime_ns / 1e9 >= RACY_SECONDS:
            verified[s.name] = key
    if verified != seen:
        try:
            write_json(marker, verified)
        except OSError:  # a read-only copy of the pseudo-data: hash again next time
            pass


def _get(sample: dict[str, Any], name: str) -> Any:
    """A field of a raw sample; webdataset lower-cases extensions by default (``K.npy`` -> ``k.npy``)."""
    if name in sample:
        return sample[name]
    if name.lower() in sample:
        return sample[name.lower()]
    raise ShardFormatError(f"{_where(sample)}: sample has no '{name}' field")


def _where(sample: dict[str, Any]) -> str:
    return f"{sample.get('__url__', '<shard>')} sample {sample.get('__key__', '?')}"


def _npy(sample: dict[str, Any], name: str, shape: tuple[int, ...] | None) -> np.ndarray:
    raw = _get(sample, name)
    try:
        arr = raw if isinstance(raw, np.ndarray) else np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a junk .npy header raises ValueError, EOFError, TokenError, ...
        raise ShardFormatError(f"{_where(sample)}: cannot decode {name} ({exc})") from None
    if shape is not None and arr.shape != shape:
        raise ShardFormatError(f"{_where(sample)}: {name} has shape {arr.shape}, expected {shape}")
    return arr


def decode_rgb(sample: dict[str, Any]) -> np.ndarray:
    """``[H, W, 3]`` float32 colors in ``[0, 1]`` from ``rgb.png`` or ``rgb.npy`` of a raw sample."""
    if "rgb.png" in sample:
        try:
            with Image.open(io.BytesIO(sample["rgb.png"])) as img:
                if img.mode != "RGB":
                    raise ShardFormatError(f"{_where(sample)}: rgb.png has mode {img.mode}, expected RGB")
                return np.asarray(img, dtype=np.float32) / 255.0
        except ShardFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types on junk bytes
            raise ShardFormatError(f"{_where(sample)}: cannot decode rgb.png ({exc})") from None
    rgb = _npy(sample, "rgb.npy", None)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ShardFormatError(f"{_where(sample)}: rgb.npy has shape {rgb.shape}, expected [H, W, 3]")
    return rgb.astype(np.float32)


def decode_sample(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a raw WebDataset sample (``dict`` of bytes) into numpy arrays.

    Args:
        sample: as yielded by ``webdataset.WebDataset(urls)`` (no ``.decode()``), or by
            ``data_gen.shards.read_shard``: keys ``rgb.png`` | ``rgb.npy``, ``c2w.npy``, ``K.npy``
            (or lower-cased ``k.npy``).

    Returns:
        ``rgb`` float32 ``[H, W, 3]`` in ``[0, 1]``, ``c2w`` float32 ``[4, 4]`` (OpenCV convention),
        ``K`` float32 ``[3, 3]``.

    Raises:
        ShardFormatError: a missing or undecodable field, named with the shard and key.
    """
    rgb = decode_rgb(sample)
    c2w = _npy(sample, "c2w.npy", (4, 4)).astype(np.float32)
    K = _npy(sample, "K.npy", (3, 3)).astype(np.float32)
    if not np.isfinite(c2w).all():
        raise ShardFormatError(f"{_where(sample)}: c2w.npy is not finite")
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        raise ShardFormatError(f"{_where(sample)}: K.npy must be finite with focal lengths > 0, got "
                               f"fx={K[0, 0]}, fy={K[1, 1]}")
    return rgb, c2w, K


def decode_optional(sample: dict[str, Any], name: str) -> np.ndarray | None:
    """``[H, W]`` float32 ``depth`` or ``alpha`` of a raw sample, or ``None`` if it has none."""
    if name not in OPTIONAL_FIELDS:
        raise ValueError(f"unknown optional field {name!r}; expected one of {OPTIONAL_FIELDS}")
    key = f"{name}.npy"
    if key not in sample:
        return None
    arr = _npy(sample, key, None)
    if arr.ndim != 2:
        raise ShardFormatError(f"{_where(sample)}: {key} has shape {arr.shape}, expected [H, W]")
    return arr.astype(np.float32)
