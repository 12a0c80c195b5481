"""Checkpoint I/O: a dict of tensors plus a JSON-able config, loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError
from core.io import atomic_write

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, kind: str, state_dict: dict[str, Any], config: dict[str, Any],
                    **extra: Any) -> Path:
    """Atomically save ``{"kind", "format_version", "state_dict", "config", **extra}``.

    Only tensors and plain Python containers/scalars may be stored, so that loading never executes code.
    """
    payload = {"kind": kind, "format_version": FORMAT_VERSION, "state_dict": state_dict, "config": config}
    payload.update(extra)
    return atomic_write(path, lambda p: torch.save(payload, p))


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Raises:
        CheckpointError: missing file, unreadable/corrupt file, or a checkpoint of another ``kind``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises almost anything (IndexError, KeyError, ...) on junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no state_dict)")
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{path}: expected a {kind} checkpoint, found {payload.get('kind')!r}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    return payload


def check_state_shapes(path: str | Path, state: dict[str, Any], what: str, fresh: str) -> None:
    """Refuse, in one line, a checkpoint (Lightning's ``last.ckpt`` too) whose weights do not fit a model.

    Args:
        path: the checkpoint (its ``state_dict`` entry is compared).
        state: the model's ``state_dict`` with the keys the checkpoint uses.
        what: who wrote it, for the message (``"a student of another shape or encoding"``).
        fresh: how to start fresh (``"delete runs/x/student to start fresh"``).

    Raises:
        CheckpointError: ``<path>: saved by <what> (<first differing key> differs); <fresh>``.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("state_dict", {})
    have = {k: tuple(v.shape) for k, v in saved.items()}
    want = {k: tuple(v.shape) for k, v in state.items()}
    if have != want:
        diff = sorted(set(have.items()) ^ set(want.items()))[0][0]
        raise CheckpointError(f"{path}: saved by {what} ({diff} differs); {fresh}")
