"""One fault case, and how the pipeline answered it.

Every case runs in its own temporary folder and reports how the pipeline answered it. Acceptable
answers are an exact resume (a rerun after the kill ends identical to an uninterrupted run), a one-line
error (exit 1, the message names the file or key, no traceback), a reuse of an output made from the same
inputs, or a named warning and a fresh start. Anything else (a traceback, a hang, silently wrong
output, lost or duplicated data) fails the case.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KINDS = ("kill", "corrupt file", "stale file", "bad value", "concurrent job")


@dataclass(frozen=True)
class Outcome:
    """How the pipeline answered one fault.

    Attributes:
        answer: what happened, e.g. ``"one-line error"``, ``"exact resume"``, ``"reused"``,
            ``"warning, fresh start"``.
        ok: the answer is one of the acceptable ones and was checked (not assumed).
        detail: the evidence (the error line, the steps compared, the tries).
    """

    answer: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class FaultCase:
    """One fault tried against one stage.

    Attributes:
        stage: ``teacher``, ``teacher (NeRF-XL)``, ``data_gen``, ``student``, ``export``, ``kernels``, ...
        kind: one of :data:`KINDS`.
        what: the fault in a few words (``"SIGKILL during a save, TMPDIR on /dev/shm"``).
        run: tries the fault in the given empty folder and returns the outcome.
        multiprocess: it starts a process group (``torchrun`` or spawned ranks): the test suite marks it so.
    """

    stage: str
    kind: str
    what: str
    run: Callable[[Path], Outcome]
    multiprocess: bool = False

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"{self.what}: unknown kind {self.kind!r}"


def try_case(case: FaultCase) -> tuple[Outcome, float]:
    """Run one case in a fresh folder; returns its outcome and seconds. An exception escaping the case is
    a failed outcome."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault_") as tmp:
        try:
            outcome = case.run(Path(tmp))
        except Exception as exc:  # noqa: BLE001 - the table must show any escape, whatever it is
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            outcome = Outcome("exception in the case", False, last)
    return outcome, time.perf_counter() - start
