"""``benchmarks.image_train_step``: its three rows (one grid_sample entry, the split, the kernel), the
lookup restored, the RESULTS.md section (written to a temporary path)."""

from __future__ import annotations

from pathlib import Path

import pytest

import student.planes as planes_module
from benchmarks import image_train_step, results


def test_three_rows_and_the_written_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    limit, applies = planes_module.MAX_LOOKUP_BATCHES, planes_module.kernel_applies
    image_train_step.main(["--size", "16", "--steps", "1", "--repeats", "1"])
    assert planes_module.MAX_LOOKUP_BATCHES == limit and planes_module.kernel_applies is applies
    section = (tmp_path / "RESULTS.md").read_text()
    assert "## image_train_step" in section and "16x16 views" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "|---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == [f"| {name}" for name in image_train_step.LOOKUPS]
    assert rows[0].endswith("| 1.00x |")


def test_each_row_runs_the_lookup_it_names() -> None:
    import torch

    planes = torch.zeros(3, 2, 4, 4, requires_grad=True)
    points = torch.zeros(1, 1, 1, 3)
    with image_train_step.lookup_split(2):
        assert planes_module.lookup_batches(24, planes) == 2
        assert not planes_module.kernel_applies(planes, points)
    with image_train_step.lookup_split(2, kernel=True):
        assert planes_module.kernel_applies(planes, points)
    assert planes_module.lookup_batches(24, planes) == planes_module.MAX_LOOKUP_BATCHES
