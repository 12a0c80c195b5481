"""Provenance: what an output was made from, recorded beside it and compared when a stage is rerun.

A *fingerprint* is a JSON-able dict of the inputs that shape an output: hashes of input files (a scene's
cameras and image list, a checkpoint, the pseudo-data's ``meta.json``) and the part of the config that
changes the result -- not budgets (``max_steps``, ``max_seconds``), devices, backends, progress bars or
evaluation settings. Which fields those are is said where each field is declared, in its dataclass:
``field(default=..., metadata={"provenance": False})`` marks a field that does not change the output
(written as that literal, also in ``core`` and ``cuda``, which cannot import this module), and
:func:`provenance_fields` walks a config and leaves those out (a stage's fingerprint picks its parts from
what that returns). A stage stores the fingerprint in the checkpoints it
writes (key ``provenance``) and in ``<folder>/provenance.json`` (which also covers Lightning's
``last.ckpt``). On a rerun an output is reused only if its recorded fingerprint equals the requested one;
otherwise the stage stops with one line naming the first difference and how to start fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError
from core.io import write_json

log = logging.getLogger(__name__)

PROVENANCE_NAME = "provenance.json"
_REPR_CHARS = 80  # values are cut in messages: a camera list would not fit on one line
PROVENANCE_KEY = "provenance"  # field metadata key: False for a field that does not change the output


def counts_for_provenance(f: dataclasses.Field[Any]) -> bool:
    """Whether a dataclass field changes the output (it is not marked ``metadata={"provenance": False}``)."""
    return bool(f.metadata.get(PROVENANCE_KEY, True))


def provenance_fields(obj: Any) -> Any:
    """A config as plain JSON-able values without the fields that do not change the output.

    Dataclasses become dicts of their fields minus those marked ``metadata={"provenance": False}``, at every
    depth; lists, tuples and dicts are walked; other values are kept as they are.

    Args:
        obj: a config dataclass (or any value inside one).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: provenance_fields(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if counts_for_provenance(f)}
    if isinstance(obj, (list, tuple)):
        return [provenance_fields(v) for v in obj]
    if isinstance(obj, dict):
        return {k: provenance_fields(v) for k, v in obj.items()}
    return obj


def ignored_fields(cls: type) -> set[tuple[str, str]]:
    """``("", name)`` of every top-level field of dataclass ``cls`` marked ``provenance: False``: the
    ``ignore`` of :func:`first_difference` for records of ``cls``."""
    return {("", f.name) for f in dataclasses.fields(cls) if not counts_for_provenance(f)}


def fingerprint(**parts: Any) -> dict[str, Any]:
    """A fingerprint of ``parts``, normalised through JSON (tuples become lists) so it compares equal to
    its stored copy."""
    return json.loads(json.dumps(parts, sort_keys=True))  # type: ignore[no-any-return]


def json_sha256(obj: Any) -> str:
    """Hex sha256 of ``obj`` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def scene_fingerprint(scene: Any) -> dict[str, Any]:
    """The training views of a loaded :class:`scenes.load.Scene`: hashes of their cameras (poses,
    intrinsics, image size) and of their image list (names relative to the scene folder), the scene kind
    and the resolved box and ray range. The folder's location is not part of it."""
    train = scene.split("train")
    root = Path(scene.root).resolve()

    def relative(file: str) -> str:
        path = Path(file).resolve()
        return str(path.relative_to(root)) if path.is_relative_to(root) else path.name

    def rounded(t: torch.Tensor) -> list[float]:
        return [round(float(v), 6) for v in t.flatten().tolist()]

    cameras = {"c2w": rounded(train.c2w), "K": rounded(train.K), "hw": list(train.hw)}
    return {"kind": scene.kind, "cameras_sha256": json_sha256(cameras),
            "images_sha256": json_sha256([relative(f) for f in train.files]),
            "aabb": rounded(scene.aabb), "near": round(float(scene.near), 6),
            "far": round(float(scene.far), 6)}


def first_difference(recorded: dict[str, Any], wanted: dict[str, Any], prefix: str = "",
                     ignore: Iterable[tuple[str, str]] = ()) -> str | None:
    """The first key (dotted path) whose values differ: ``"key: <recorded> on disk vs <wanted> requested"``.

    Args:
        recorded: the stored fingerprint.
        wanted: the requested one.
        prefix: dotted path of the dicts compared (for recursion).
        ignore: ``(parent path, key)`` pairs left out of the comparison (``("scene", "path")``).
    """
    ignore = set(ignore)
    for key in list(recorded) + [k for k in wanted if k not in recorded]:
        if (prefix.rstrip("."), key) in ignore:
            continue
        a, b = recorded.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff = first_difference(a, b, f"{prefix}{key}.", ignore)
            if diff:
                return diff
        elif a != b:
            return f"{prefix}{key}: {_short(a)} on disk vs {_short(b)} requested"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_CHARS else text[: _REPR_CHARS - 3] + "..."


def embedded_provenance(path: Path) -> dict[str, Any] | None:
    """The ``provenance`` entry of a checkpoint (``None``: none recorded, or not readable here -- the
    stage's own loader reports a corrupt file)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the unpickler raises almost anything on junk; the loader reports it
        return None
    value = payload.get("provenance") if isinstance(payload, dict) else None
    return value if isinstance(value, dict) else None


def check_or_record(folder: Path, wanted: dict[str, Any], outputs: Iterable[Path], fresh: str,
                    record: bool = True) -> None:
    """Refuse the outputs of ``folder`` made from other inputs; then record ``wanted`` as its provenance.

    Each existing output is compared with the fingerprint stored in it (a checkpoint's ``provenance``
    entry), else with ``<folder>/provenance.json``. An output with neither (written by an older
    version) is reused with a warning.

    Args:
        folder: the stage's output folder.
        wanted: the fingerprint of this run.
        outputs: the files a rerun would reuse (checkpoints, resume points).
        fresh: how to start fresh, e.g. ``"delete runs/x/teacher or use another run_dir"``.
        record: write ``<folder>/provenance.json`` (only one process of a distributed run needs to).

    Raises:
        CheckpointError: one line: the output, the first difference, and ``fresh``.
    """
    path = folder / PROVENANCE_NAME
    on_disk = _read(path)
    for output in outputs:
        if not output.is_file():
            continue
        recorded = embedded_provenance(output) if output.suffix == ".ckpt" else None
        recorded = recorded if recorded is not None else on_disk
        if recorded is None:
            log.warning("%s: no provenance recorded (written by an older version); reused unchecked", output)
            continue
        diff = first_difference(recorded, wanted)
        if diff:
            raise CheckpointError(f"{output}: made from other inputs than requested ({diff}); {fresh}")
    if record and on_disk != wanted:
        write_json(path, wanted)


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable provenance record ({exc}); delete it to start fresh") \
            from None
    return value if isinstance(value, dict) else None
