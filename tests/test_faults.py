"""Every fault case of :mod:`testing.faults` (kills, corrupt/stale files, bad values) must be answered
acceptably: an exact resume, a reuse, a one-line error or a named warning. Each takes seconds (a stage
run or a subprocess): all are ``slow``; those that start a process group are ``multiprocess`` too."""

from __future__ import annotations

import pytest

from testing.faults.cases import all_cases
from testing.faults.harness import FaultCase, try_case

CASES = all_cases()


def test_cases_exist() -> None:
    assert len(CASES) >= 1
    assert len({(c.stage, c.what) for c in CASES}) == len(CASES), "two cases of one name"


def _param(case: FaultCase) -> object:
    marks = [pytest.mark.slow, *([pytest.mark.multiprocess] if case.multiprocess else [])]
    return pytest.param(case, marks=marks, id=f"{case.stage}: {case.what}")


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_fault_is_answered(case: FaultCase) -> None:
    outcome, _ = try_case(case)
    assert outcome.ok, f"{case.stage} / {case.what}: {outcome.answer}: {outcome.detail}"
