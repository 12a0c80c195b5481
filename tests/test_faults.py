"""Every fault case of ``benchmarks/faults_*.py`` (kills, corrupt/stale files, bad values) must be
answered acceptably: an exact resume, a reuse, a one-line error or a named warning."""

from __future__ import annotations

import pytest

from benchmarks.faults import FaultCase, all_cases, try_case

CASES = all_cases()


def test_cases_exist() -> None:
    assert len(CASES) >= 1


@pytest.mark.parametrize("case", CASES, ids=[f"{c.stage}: {c.what}" for c in CASES])
def test_fault_is_answered(case: FaultCase) -> None:
    outcome, _ = try_case(case)
    assert outcome.ok, f"{case.stage} / {case.what}: {outcome.answer}: {outcome.detail}"
