"""Every fault case, area by area (the order of the table in ``benchmarks/RESULTS.md``)."""

from __future__ import annotations

from testing.faults import checkpoints, files, provenance
from testing.faults.harness import FaultCase


def all_cases() -> list[FaultCase]:
    """The ``CASES`` of every case module: checkpoints and locks, files between stages, provenance."""
    return [*checkpoints.CASES, *files.CASES, *provenance.CASES]
