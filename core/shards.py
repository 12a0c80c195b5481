"""The pseudo-data shard format: WebDataset tars of teacher-rendered views plus ``meta.json``.

A folder (by default ``<run_dir>/pseudo/``) holds ``shard-000000.tar``, ``shard-000001.tar``, ... and
``meta.json``. Each tar holds one WebDataset sample per view, its members named
``<key>.<field>`` with ``key = f"{view_index:08d}"``:

* ``rgb.png``: 8-bit RGB composited on ``meta.scene.background``; or, with ``rgb_format: npy16``,
  ``rgb.npy``: float16 ``[H, W, 3]``;
* ``c2w.npy``: float32 ``[4, 4]`` camera-to-world pose in the OpenCV convention of
  :mod:`core.cameras`;
* ``K.npy``: float32 ``[3, 3]`` intrinsics in pixels (per view: samplers may zoom);
* optionally ``depth.npy`` and ``alpha.npy``: float32 ``[H, W]``.

``meta.json`` describes the whole set and the scene facts of the teacher that rendered it (see
:class:`PseudoMeta`, which holds a :class:`core.scene_facts.SceneFacts`); :func:`read_meta` validates it
against the files on disk, and :func:`decode_sample` turns a raw sample (a dict of bytes, as produced by plain
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

from core.cameras import PoseError, check_c2w
from core.errors import UserError
from core.io import sha256_file, write_json
from core.scene_facts import SceneFacts

FORMAT = "lightfield-distill/pseudo"
FORMAT_VERSION = 2  # 2: the scene facts as one record (``scene``); 1 held them as top-level keys
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
        scene: the scene facts of the teacher that rendered the views (:class:`core.scene_facts.SceneFacts`):
            its box, content box (around everything it renders: rays that miss it show the background),
            near/far (all in the NDC frame ``scene.ndc`` of a forward-facing scene), background, the
            empty-space grid over the content box (the teacher's occupied cells, covered: rays that cross
            none of its cells are pure background; ``None``: not recorded), and the scene's training
            cameras (image size, intrinsics, rig).
        image_size: ``[H, W]`` of every view (the rendered size; ``scene.image_size`` is the training
            cameras').
        n_views: total views over all shards.
        views_per_shard: views per shard (the last shard may hold fewer).
        rgb_format: ``"png"`` (8-bit) or ``"npy16"`` (float16 array).
        fields: field names present in every sample, e.g. ``["rgb", "c2w", "K", "depth"]``.
        shards: one :class:`ShardInfo` per shard, in view order.
        sampler: ``{"name", "seed", ...params}`` of the pose sampler.
        teacher: ``{"checkpoint_sha256", "test_psnr"}``.
        scene_path: the scene folder the job read (where it ran, not what it made: a shared folder may be
            mounted at different paths, so it counts for no comparison).
        folder: the folder the meta was read from (not stored in the file).
    """

    scene: SceneFacts
    image_size: list[int]
    n_views: int
    views_per_shard: int
    rgb_format: str = "png"
    fields: list[str] = field(default_factory=lambda: ["rgb", "c2w", "K"])
    shards: list[ShardInfo] = field(default_factory=list)
    sampler: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    scene_path: str | None = field(default=None, metadata={"provenance": False})
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    folder: Path | None = field(default=None, metadata={"provenance": False})

    @property
    def height(self) -> int:
        return int(self.image_size[0])

    @property
    def width(self) -> int:
        return int(self.image_size[1])

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
        d = asdict(self)  # a deep copy: the scene facts and shards as plain dicts
        return {k: d[k] for k in META_KEYS}

    @classmethod
    def from_dict(cls, d: dict[str, Any], folder: Path | None = None, source: str = META_NAME) -> PseudoMeta:
        """Build from a parsed ``meta.json``.

        Raises:
            UserError: scene facts that :meth:`core.scene_facts.SceneFacts.from_dict` refuses (naming
                ``source``).
            KeyError, TypeError: another missing or malformed entry.
        """
        kwargs = {k: d[k] for k in META_KEYS if k not in ("scene", "shards") and k in d}
        shards = [ShardInfo(**{k: s[k] for k in ("name", "first_view", "n_views", "sha256")})
                  for s in d["shards"]]
        return cls(scene=SceneFacts.from_dict(d["scene"], source), **kwargs, shards=shards, folder=folder)


META_KEYS = ("format", "format_version", "scene", "scene_path", "image_size", "n_views", "views_per_shard",
             "rgb_format", "fields", "shards", "sampler", "teacher")  # meta.json's keys, in order


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


def check_format(d: dict[str, Any], path: Path) -> None:
    """``format`` and ``format_version`` of a parsed ``meta.json`` (or job record) are this reader's.

    Raises:
        ShardFormatError: another format, an older version (render again) or an unknown one.
    """
    if d.get("format") != FORMAT:
        raise ShardFormatError(f"{path}: unknown format {d.get('format')!r} (expected {FORMAT!r})")
    version = d.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version < FORMAT_VERSION:
        raise ShardFormatError(f"{path}: written by an older version (format version {version}): delete "
                               f"{path.parent} and run data_gen.render again")
    if version != FORMAT_VERSION:
        raise ShardFormatError(f"{path}: format version {version!r} is not supported "
                               f"(expected {FORMAT_VERSION})")


def parse_meta(d: dict[str, Any], path: Path, require_shards: bool = True) -> PseudoMeta:
    """Validate a parsed ``meta.json`` on its own (no file checks); ``path`` names it in errors.

    ``require_shards=False`` accepts a job description without a shard list (the writer's record).
    """
    check_format(d, path)
    unknown = sorted(set(d) - set(META_KEYS))
    if unknown:
        raise ShardFormatError(f"{path}: unknown entries {unknown}")
    try:
        meta = PseudoMeta.from_dict({"shards": [], **d}, folder=path.parent, source=str(path))
    except UserError as exc:  # the scene facts' own one-line error, naming the file
        raise ShardFormatError(str(exc)) from None
    except (KeyError, TypeError) as exc:
        raise ShardFormatError(f"{path}: missing or malformed entry {exc}") from None
    problems = []
    if len(meta.image_size) != 2 or min(meta.image_size) < 1:
        problems.append(f"image_size {meta.image_size} is not [H, W]")
    if meta.rgb_format not in RGB_FORMATS:
        problems.append(f"rgb_format {meta.rgb_format!r} is not one of {RGB_FORMATS}")
    if not {"rgb", "c2w", "K"} <= set(meta.fields) <= {"rgb", "c2w", "K", *OPTIONAL_FIELDS}:
        problems.append(f"fields {meta.fields} must include rgb, c2w, K and may add {OPTIONAL_FIELDS}")
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
        ShardFormatError: a missing or undecodable field, a pose that is not finite and rigid
            (:func:`core.cameras.check_c2w`) or intrinsics without positive focal lengths, named with the
            shard and key.
    """
    rgb = decode_rgb(sample)
    raw_c2w = _npy(sample, "c2w.npy", (4, 4))
    try:  # the one pose check: finite and rigid
        c2w = check_c2w(raw_c2w, f"{_where(sample)}: c2w.npy").numpy()
    except PoseError as exc:
        raise ShardFormatError(str(exc)) from None
    K = _npy(sample, "K.npy", (3, 3)).astype(np.float32)
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
