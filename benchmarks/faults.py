"""Faults: kills, corrupt or stale files and bad values, each tried against the real stages.

Every case runs in its own temporary folder and reports how the pipeline answered it. Acceptable
answers are an exact resume (a rerun after the kill ends identical to an uninterrupted run), a one-line
error (exit 1, the message names the file or key, no traceback), a reuse of an output made from the same
inputs, or a named warning and a fresh start. Anything else (a traceback, a hang, silently wrong
output, lost or duplicated data) fails the case.

The cases live beside this runner, one module per area (``benchmarks/faults_*.py``, each with a
``CASES`` list), so that they are also collected by the test suite (``tests/test_faults.py``).
Prints one table and writes the ``faults`` section of ``benchmarks/RESULTS.md``.

    python -m benchmarks.faults [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.results import markdown_table, write_section

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
        slow: takes more than ~20 s (the test suite still runs it; the marker only documents it).
    """

    stage: str
    kind: str
    what: str
    run: Callable[[Path], Outcome]
    slow: bool = False


def all_cases() -> list[FaultCase]:
    """The cases of every ``benchmarks/faults_*.py`` module, in module order."""
    import benchmarks

    cases: list[FaultCase] = []
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith("faults_"):
            cases += importlib.import_module(f"benchmarks.{info.name}").CASES
    for case in cases:
        assert case.kind in KINDS, f"{case.what}: unknown kind {case.kind!r}"
    return cases


def try_case(case: FaultCase) -> tuple[Outcome, float]:
    """Run one case in a fresh folder; an exception escaping the case is a failed outcome."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault_") as tmp:
        try:
            outcome = case.run(Path(tmp))
        except Exception as exc:  # noqa: BLE001 - the table must show any escape, whatever it is
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            outcome = Outcome("exception in the case", False, last)
    return outcome, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose stage or text contains this")
    args = parser.parse_args()
    rows: list[list[object]] = []
    for case in all_cases():
        if args.only and args.only not in f"{case.stage} {case.what}":
            continue
        outcome, seconds = try_case(case)
        rows.append([case.stage, case.kind, case.what, outcome.answer, "yes" if outcome.ok else "**no**",
                     outcome.detail.replace("|", "/")[:160], f"{seconds:.1f}"])
        print(" | ".join(str(v) for v in rows[-1]), flush=True)
    table = markdown_table(["stage", "fault", "tried", "answer", "acceptable", "evidence", "s"], rows)
    print(table)
    failed = sum(1 for r in rows if r[4] != "yes")
    summary = (f"{len(rows)} faults tried, {len(rows) - failed} answered with an exact resume, a reuse, "
               f"a one-line error or a named warning; {failed} not.")
    if not args.only:
        write_section("faults", table + "\n\n" + summary)
    print(summary)


if __name__ == "__main__":
    main()
